"""The Large Execution Model (paper §2.2-2.3) and the factory the Trainer and benchmarks share.

Inputs (dict, see docs/example-contract.md):
  - `bars`: float32 [B, L+N, F], rows = lookback bars W..W+L-1 then execution bars o..o+N-1 (F inferred
    when the model is built);
  - `min_rate`, `max_rate`: float32 [B, 1], fractions of the order per bar (clipped to [0, 1]; non-finite
    values mean "no constraint": 0 and 1).
Output: allocations float32 [B, N, N+1, 4, 2] (`lem_model.layout`): >= 0, summing to 1 over the N steps.

Causality by construction: the context block runs over bars 0..L+N-2 only (causal recurrent layer, causal
attention, position-wise layers), and step k reads position L+k-1, i.e. bars < L+k = bars before its own
execution bar o+k: the realized bars o..o+k-1 feed later steps, the bar it trades in never does.
Non-finite bar values are replaced by 0 and bars are clipped to +-`input_clip`, so placeholders in not yet
realized bars cannot poison earlier steps through NaN arithmetic.
"""
from __future__ import annotations

import os

import keras
from keras import ops

from lem_model import layout
from lem_model.presets import PAPER_CONFIG, SMALL_CONFIG  # noqa: F401 - SMALL_CONFIG re-exported: lem_model.model.SMALL_CONFIG
from lem_model.presets import RECURRENT_CHOICES  # noqa: F401 - defined there so configs can check it without Keras
from lem_model.layers import (CausalAttention, FeatureEmbedding, GateAddNorm, GatedResidualNetwork,
                              StepwiseFusedAllocator, VariableSelectionNetwork, dense, soft_clip_tolerance)


def _fix_kan_grid_initializer() -> None:
    """Compatibility shim for keras_efficient_kan 0.1.8: its GridInitializer returns [1, n] for the declared
    [1, in_features, n] grid weight; recent Keras checks shapes on load, so `.keras` files with TKAN would
    not load. Return the declared shape instead (same values, broadcast over in_features). Idempotent."""
    from keras_efficient_kan import kan

    cls = kan.GridInitializer
    if getattr(cls, "_lem_declared_shape", False):
        return
    original = cls.__call__

    def __call__(self, shape, dtype=None):
        grid = original(self, shape, dtype)
        if len(shape) == 3 and len(grid.shape) == 2:
            grid = ops.tile(ops.expand_dims(grid, 1), [1, shape[1], 1])
        return grid

    cls.__call__ = __call__
    cls._lem_declared_shape = True


def make_recurrent(kind: str, units: int, dropout: float = 0.0) -> keras.layers.Layer:
    """Recurrent block: "tkan" (paper default; the `tkan` package is CC BY-NC-SA 4.0, which bars commercial
    use), or the licence-clean Keras "lstm" / "gru". Returns a layer [B, T, d] -> [B, T, units]."""
    if kind == "tkan":
        from tkan import TKAN  # imported only when chosen (licence, import time)
        _fix_kan_grid_initializer()
        layer = TKAN(units, return_sequences=True, dropout=dropout, name="recurrent")
        # tkan picks its cell's maths from the KERAS_BACKEND environment variable (TensorFlow if unset), not
        # from the backend Keras runs: follow the running backend (see LargeExecutionModel._recurrent)
        layer.cell.backend = keras.backend.backend()
        return layer
    if kind == "lstm":
        return keras.layers.LSTM(units, return_sequences=True, dropout=dropout, name="recurrent")
    if kind == "gru":
        return keras.layers.GRU(units, return_sequences=True, dropout=dropout, name="recurrent")
    raise ValueError(f"recurrent must be one of {RECURRENT_CHOICES}, got {kind!r}")


@keras.saving.register_keras_serializable(package="lem_model", name="LargeExecutionModel")
class LargeExecutionModel(keras.Model):
    """LEM: embedding -> VSN -> recurrent -> gate/add&norm -> GRN -> causal attention -> gate/add&norm ->
    GRN -> step-wise fused MLPs (one per step and path) -> constrained allocations.

    Args (sizes in bars or units): lookback L, n_ahead N, hidden_size H (recurrent/attention), num_embedding
    E (per-feature embedding and VSN), num_heads (H must be divisible by it), fused_mlp_hidden_dim and
    fused_mlp_layers (hidden layers of each fused MLP), recurrent ("tkan"|"lstm"|"gru"), dropout,
    clip_sharpness (lambda of eq. 25; a step may exceed max_rate by at most 0.278/lambda), input_clip.
    """

    def __init__(self, lookback: int = PAPER_CONFIG["lookback"], n_ahead: int = PAPER_CONFIG["n_ahead"],
                 hidden_size: int = PAPER_CONFIG["hidden_size"], num_embedding: int = PAPER_CONFIG["num_embedding"],
                 num_heads: int = PAPER_CONFIG["num_heads"],
                 fused_mlp_hidden_dim: int = PAPER_CONFIG["fused_mlp_hidden_dim"], fused_mlp_layers: int = 2,
                 recurrent: str = "tkan", dropout: float = 0.0, clip_sharpness: float = 100.0,
                 input_clip: float = 1e6, **kwargs):
        super().__init__(**kwargs)
        if lookback < 1 or n_ahead < 1:
            raise ValueError(f"lookback and n_ahead must be >= 1 bar, got {lookback}, {n_ahead}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.lookback, self.n_ahead = int(lookback), int(n_ahead)
        self.hidden_size, self.num_embedding, self.num_heads = int(hidden_size), int(num_embedding), int(num_heads)
        self.fused_mlp_hidden_dim, self.fused_mlp_layers = int(fused_mlp_hidden_dim), int(fused_mlp_layers)
        self.recurrent, self.dropout = recurrent, float(dropout)
        self.clip_sharpness, self.input_clip = float(clip_sharpness), float(input_clip)
        self.num_paths = layout.num_min_periods(self.n_ahead) * layout.PATHS_PER_MIN_PERIOD

        h = self.hidden_size
        self.embedding = FeatureEmbedding(self.num_embedding, name="embedding")
        self.vsn = VariableSelectionNetwork(self.num_embedding, dropout=self.dropout, name="vsn")
        self.recurrent_layer = make_recurrent(recurrent, h, self.dropout)
        self.skip_projection = keras.layers.Dense(h, use_bias=False, name="skip_projection")
        self.recurrent_gate = GateAddNorm(h, dropout=self.dropout, name="recurrent_gate")
        self.recurrent_grn = GatedResidualNetwork(h, dropout=self.dropout, name="recurrent_grn")
        self.attention = CausalAttention(self.num_heads, name="attention")
        self.attention_gate = GateAddNorm(h, dropout=self.dropout, name="attention_gate")
        self.context_grn = GatedResidualNetwork(h, dropout=self.dropout, name="context_grn")
        self.allocator = StepwiseFusedAllocator(self.n_ahead, self.num_paths, self.fused_mlp_hidden_dim,
                                                num_layers=self.fused_mlp_layers,
                                                clip_sharpness=self.clip_sharpness, name="allocator")

    @property
    def max_rate_tolerance(self) -> float:
        """How far a step can exceed max_rate through the soft clip (fraction of the order)."""
        return soft_clip_tolerance(self.clip_sharpness)

    def _bars_shape(self, input_shape):
        shape = input_shape["bars"] if isinstance(input_shape, dict) else input_shape
        shape = tuple(shape)
        expected = self.lookback + self.n_ahead
        if len(shape) != 3 or shape[1] != expected or shape[2] is None:
            raise ValueError(f"bars must have shape [B, lookback + n_ahead = {expected}, F], got {shape}")
        return shape

    def build(self, input_shape):
        b, _, f = self._bars_shape(input_shape)
        t, e, h, n = self.lookback + self.n_ahead - 1, self.num_embedding, self.hidden_size, self.n_ahead
        self.num_features = f
        self.embedding.build((b, t, f))
        self.vsn.build((b, t, f, e))
        self.recurrent_layer.build((b, t, e))
        self.skip_projection.build((b, t, e))
        self.recurrent_gate.build((b, t, h))
        self.recurrent_grn.build((b, t, h))
        self.attention.build((b, n, h), (b, t, h))
        self.attention_gate.build((b, n, h))
        self.context_grn.build((b, n, h))
        self.allocator.build((b, n, h + f + 2))

    def call(self, inputs, training=None):
        x, min_rate, max_rate = self._clean_inputs(inputs)
        chunks = _context_chunks(x) if training else 1
        if self._xla_inference(training):
            c = _small_batch_xla(lambda bars_in: self._context(bars_in, False), x)
        elif chunks > 1:
            c = _in_chunks(lambda part: self._context(part, training), x, chunks)
        else:
            c = self._context(x, training)                                      # [B, N, H]
        alloc = self.allocator(self._step_inputs(c, x, min_rate, max_rate), min_rate, max_rate)  # [B, N, P]
        N = self.n_ahead
        return ops.reshape(alloc, (-1, N, N + 1, layout.NUM_PATHS, layout.NUM_TARGETS))

    def allocate_scenario(self, inputs, scenario, training=False):
        """One scenario per row: `scenario` int [B] (`layout.scenario_index`) -> allocations [B, N], equal to
        `call(inputs)` flattened over its last three axes and indexed there, but running only that scenario's
        fused MLPs (the serving path of one live order: ~1/P of the allocator's weights are read). In traced
        inference, small batches run it XLA-compiled end to end (`_small_batch_xla`)."""
        x, min_rate, max_rate = self._clean_inputs(inputs)
        scenario = ops.cast(ops.reshape(scenario, (-1,)), "int32")

        def run(x, min_rate, max_rate, scenario):
            c = self._context(x, training)
            return self.allocator(self._step_inputs(c, x, min_rate, max_rate), min_rate, max_rate, paths=scenario)

        if self._xla_inference(training):
            return _small_batch_xla(run, x, min_rate, max_rate, scenario)
        return run(x, min_rate, max_rate, scenario)

    def _clean_inputs(self, inputs):
        """Checked inputs -> (bars 0..L+N-2 [B, L+N-1, F] finite and clipped, min_rate [B, 1], max_rate [B, 1])."""
        if not isinstance(inputs, dict) or not {"bars", "min_rate", "max_rate"} <= set(inputs):
            raise ValueError("LEM inputs must be a dict with 'bars' [B, L+N, F], 'min_rate' [B, 1] "
                             f"and 'max_rate' [B, 1]; got {type(inputs).__name__} "
                             f"{sorted(inputs) if isinstance(inputs, dict) else ''}")
        self._bars_shape(inputs["bars"].shape)
        bars = ops.cast(inputs["bars"], "float32")
        min_rate = ops.reshape(ops.cast(inputs["min_rate"], "float32"), (-1, 1))
        max_rate = ops.reshape(ops.cast(inputs["max_rate"], "float32"), (-1, 1))
        min_rate = ops.clip(ops.where(ops.isfinite(min_rate), min_rate, 0.0), 0.0, 1.0)
        max_rate = ops.clip(ops.where(ops.isfinite(max_rate), max_rate, 1.0), 0.0, 1.0)
        # positions 0..L+N-2 = bars 0..L+N-2; the last execution bar is never an input
        x = bars[:, : self.lookback + self.n_ahead - 1]
        x = ops.clip(ops.where(ops.isfinite(x), x, 0.0), -self.input_clip, self.input_clip)
        return x, min_rate, max_rate

    def _step_inputs(self, c, x, min_rate, max_rate):
        """Step k's allocator input: [context_k, bar L+k-1, min_rate, max_rate] -> [B, N, H+F+2]."""
        rates = ops.concatenate([min_rate, max_rate], axis=-1)                   # [B, 2]
        return ops.concatenate(
            [c, x[:, self.lookback - 1:], ops.repeat(ops.expand_dims(rates, 1), self.n_ahead, axis=1)], axis=-1)

    def _context(self, x, training):
        """Context of each execution step from the input bars x [B, L+N-1, F] -> [B, N, H]."""
        L = self.lookback
        v = self.vsn.embed_and_select(x, self.embedding, training=training)      # [B, T, E]
        r = self._recurrent(v, training)                                         # [B, T, H]
        s = self.recurrent_gate(r, dense(v, self.skip_projection.kernel), training=training)
        s = self.recurrent_grn(s, training=training)                             # [B, T, H]
        q = s[:, L - 1:]                                                         # step k <- position L+k-1
        c = self.attention_gate(self.attention(q, s), q, training=training)
        return self.context_grn(c, training=training)                            # [B, N, H]

    def _recurrent(self, v, training):
        """The recurrent block on v [B, T, E] -> [B, T, H]. TKAN goes through `lem_model.tkan_fast` (the same
        function on the same weights, fewer ops per time step) unless that cannot reproduce the layer.

        TKAN is the paper's cell (eq. 18: candidate memory sigmoid(z)) on every backend, so a model gives the
        same allocations under TensorFlow and JAX. The `tkan` package computes that cell on TensorFlow only
        (elsewhere it adds a tanh on the candidate), so off TensorFlow the LEM always takes `tkan_sequence`
        with the paper's cell, and refuses what that cannot compute (recurrent dropout while training)."""
        if self.recurrent == "tkan":
            from lem_model.tkan_fast import fast_tkan_supported, tkan_sequence
            on_tf = keras.backend.backend() == "tensorflow"
            if v.shape[1] is not None and fast_tkan_supported(self.recurrent_layer, training):
                with keras.name_scope(self.recurrent_layer.name):  # ops named like the layer's own
                    return tkan_sequence(self.recurrent_layer, v, squash_candidate=None if on_tf else False)
            if not on_tf:
                raise ValueError(f"recurrent='tkan' with dropout {self.dropout} cannot train under the "
                                 f"{keras.backend.backend()} backend (the tkan package's cell there differs from "
                                 "the paper's); use dropout=0, the TensorFlow backend, or recurrent='lstm'/'gru'")
        return self.recurrent_layer(v, training=training)

    @staticmethod
    def _xla_inference(training) -> bool:
        """True in traced TensorFlow inference graphs (`training=False`: export, serving, predict), where
        small batches run the context block XLA-compiled (`_small_batch_xla`); eager calls, training and
        other backends run it plainly (same function, float rounding aside)."""
        if training is not False or XLA_MAX_BATCH < 1 or keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf

        return tf.inside_function()

    def compute_output_shape(self, input_shape):
        b = self._bars_shape(input_shape)[0]
        return (b, self.n_ahead, self.n_ahead + 1, layout.NUM_PATHS, layout.NUM_TARGETS)

    def get_config(self):
        return {**super().get_config(), "lookback": self.lookback, "n_ahead": self.n_ahead,
                "hidden_size": self.hidden_size, "num_embedding": self.num_embedding,
                "num_heads": self.num_heads, "fused_mlp_hidden_dim": self.fused_mlp_hidden_dim,
                "fused_mlp_layers": self.fused_mlp_layers, "recurrent": self.recurrent,
                "dropout": self.dropout, "clip_sharpness": self.clip_sharpness, "input_clip": self.input_clip}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


#: Batches up to this size take the XLA-compiled context block (embedding .. context GRN, i.e. all but the
#: allocator) in traced inference graphs. Measured on 2 CPU cores, paper config: the 131 TKAN steps take
#: ~2 ms XLA vs ~15 ms plain at batch 1 (while-loop overhead per step), break-even near batch 8-16.
#: Read when a graph is traced (export, predict); 0 disables it. A SavedModel exported with it on holds an
#: XLA-compiled function: `tensorflow_model_server` then needs `--xla_cpu_compilation_enabled=true` (Python
#: `tf.saved_model.load`, the development server and backfill need nothing).
XLA_MAX_BATCH = 8


def _small_batch_xla(fn, *xs):
    """fn(*xs) for batch-major xs ([B, ...] each), XLA-compiled when B <= XLA_MAX_BATCH, else plain
    (TensorFlow graphs only).

    Per-timestep while-loop overhead dominates a batch-1 recurrent pass on CPU; XLA fuses the loop body
    and the small position-wise ops. (`call` keeps its full allocator plain: its batch-1 cost is reading its
    weights, and XLA's CPU batched matmuls are slower there; `allocate_scenario` compiles everything.)
    The batch is zero-padded to the next power of two (rows are independent, the pad rows are dropped), so
    at most log2(XLA_MAX_BATCH) + 1 shapes are compiled (~0.5 s each, on first use). Inference only: XLA
    cannot differentiate through the loop's accumulators.
    """
    import tensorflow as tf

    xla_fn = tf.function(fn, jit_compile=True, autograph=False)
    batch = tf.shape(xs[0])[0]

    def pad(x, size):
        widths = tf.concat([[size - batch], tf.zeros([tf.rank(x) - 1], batch.dtype)], 0)
        padded = tf.pad(x, tf.stack([tf.zeros_like(widths), widths], 1))
        padded.set_shape(tf.TensorShape([None]).concatenate(x.shape[1:]))  # keep the static T, F
        return padded

    def compiled():
        size = tf.constant(1, batch.dtype)
        for _ in range(int(XLA_MAX_BATCH).bit_length() - 1):
            size = tf.where(size < batch, size * 2, size)
        y = xla_fn(*[pad(x, size) for x in xs])
        return y[:batch]

    return tf.cond(batch <= XLA_MAX_BATCH, compiled, lambda: fn(*xs))


#: In training on CPU, the batch is cut into this many chunks whose context blocks (embedding .. context GRN) are
#: separate subgraphs, when TensorFlow has as many inter-op threads (its default: one per core) to run them at the
#: same time; the allocator still sees the whole batch. Much of the context block is one thread's work: the
#: recurrent loop's element-wise steps between short products on all cores, TensorFlow's small element-wise ops.
#: Measured on 2 CPU cores, paper config, batch 256, inter-op 2: train step 1.36-1.37 -> 1.31-1.32 s (median of 8
#: steps, 2 process pairs). With one inter-op thread the chunks would run one after the other: no cut. 1 disables it.
TRAIN_CONTEXT_CHUNKS = 2
#: ... and only when every chunk has at least this many rows (a batch of unknown size is cut).
MIN_CHUNK_ROWS = 32


def _context_chunks(x) -> int:
    """How many batch chunks of x [B, ...] the training context block runs in (see `TRAIN_CONTEXT_CHUNKS`)."""
    n = TRAIN_CONTEXT_CHUNKS
    too_small = x.shape[0] is not None and x.shape[0] < n * MIN_CHUNK_ROWS
    if n < 2 or too_small or keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    if not tf.inside_function() or tf.config.list_logical_devices("GPU"):  # eager: no concurrency; GPU: one stream
        return 1
    inter_op = tf.config.threading.get_inter_op_parallelism_threads() or len(os.sched_getaffinity(0))
    return n if inter_op >= n else 1


def _in_chunks(fn, x, n):
    """fn(x) for a row-wise fn, computed as concat(fn(chunk) for n batch chunks of x [B, ...]) (TensorFlow)."""
    import tensorflow as tf

    static = x.shape[0] is not None  # then the chunks keep static shapes
    b = x.shape[0] if static else tf.shape(x)[0]
    sizes = [b // n] * (n - 1) + [b - (n - 1) * (b // n)]
    return tf.concat([fn(part) for part in tf.split(x, sizes if static else tf.stack(sizes), num=n)], 0)


def build_lem(num_features: int | None = None, batch_size: int | None = None, **hyperparams) -> LargeExecutionModel:
    """Create a LargeExecutionModel from hyperparameters (see the class); with `num_features` it is built
    right away (weights created), otherwise on its first call."""
    model = LargeExecutionModel(**hyperparams)
    if num_features is not None:
        model.build({"bars": (batch_size, model.lookback + model.n_ahead, int(num_features)),
                     "min_rate": (batch_size, 1), "max_rate": (batch_size, 1)})
    return model


def compile_lem(model: LargeExecutionModel, learning_rate: float = 1e-5, *, mask_sharpness: float | None = None,
                pnl_sharpness: float | None = None, fixed_horizon_risk: bool = False, metrics: bool = True,
                jit_compile="auto", clipnorm: float | None = None) -> LargeExecutionModel:
    """Compile with Adam (paper §3.4: lr 1e-5; `lem_model.optim.LemAdam`, fused on TensorFlow), the LEM loss
    and the slippage metrics (bps).

    jit_compile: passed to `Model.compile` ("auto" = XLA where Keras enables it by default). pnl_sharpness: risk
    aversion of the flexible heads (`lem_model.loss`; None = the paper's 1); fixed_horizon_risk: the risk term on the
    minimum-period-N head too (`lem_model.loss`; False = the paper).
    """
    from lem_model.loss import DEFAULT_MASK_SHARPNESS, DEFAULT_PNL_SHARPNESS, LEMLoss
    from lem_model.metrics import lem_metrics
    from lem_model.optim import LemAdam

    loss = LEMLoss(mask_sharpness=DEFAULT_MASK_SHARPNESS if mask_sharpness is None else mask_sharpness,
                   pnl_sharpness=DEFAULT_PNL_SHARPNESS if pnl_sharpness is None else pnl_sharpness,
                   fixed_horizon_risk=fixed_horizon_risk)
    model.compile(optimizer=LemAdam(learning_rate=learning_rate, clipnorm=clipnorm), loss=loss,
                  metrics=lem_metrics() if metrics else None, jit_compile=jit_compile)
    return model


def export_saved_model(model: LargeExecutionModel, path: str, batch_size: int | None = None) -> None:
    """Write a TensorFlow SavedModel whose `serve` endpoint and `serving_default` signature take the
    contract's named inputs (`bars` [B, L+N, F], `min_rate` [B, 1], `max_rate` [B, 1]) and return the
    allocations [B, N, N+1, 4, 2] (TensorFlow backend only). `model.export(path)` also works, with
    positional signature names."""
    import tensorflow as tf

    if not model.built:
        raise ValueError("build the model (call it or pass num_features to build_lem) before exporting")
    spec = {"bars": tf.TensorSpec([batch_size, model.lookback + model.n_ahead, model.num_features],
                                  tf.float32, name="bars"),
            "min_rate": tf.TensorSpec([batch_size, 1], tf.float32, name="min_rate"),
            "max_rate": tf.TensorSpec([batch_size, 1], tf.float32, name="max_rate")}
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=lambda inputs: {"allocations": model(inputs, training=False)},
                         input_signature=[spec])
    archive.write_out(path, verbose=False)
