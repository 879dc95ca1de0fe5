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
realized bars cannot poison earlier steps through NaN arithmetic; `volume_clip` bounds the linear `volume`
feature (bar volume / normal volume) alone, leaving its log1p (`log_volume`) to tell larger surges apart.
"""
from __future__ import annotations

import keras
from keras import ops

from lem_model import kernels, layout
from lem_model.features import VOLUME_COLUMN
from lem_model.presets import PAPER_CONFIG, SMALL_CONFIG  # noqa: F401 - SMALL_CONFIG re-exported: lem_model.model.SMALL_CONFIG
from lem_model.presets import IMPLEMENTATIONS, LOSS_DEFAULTS, MODEL_DEFAULTS as D
from lem_model.presets import RECURRENT_CHOICES  # noqa: F401 - re-exported: configs check it without Keras
from lem_model.layers import (CausalAttention, FeatureEmbedding, GateAddNorm, GatedResidualNetwork,
                              StepwiseFusedAllocator, VariableSelectionNetwork, soft_clip_tolerance)
from lem_model.recurrent import make_recurrent


@keras.saving.register_keras_serializable(package="lem_model", name="LargeExecutionModel")
class LargeExecutionModel(keras.Model):
    """LEM: embedding -> VSN -> recurrent -> gate/add&norm -> GRN -> causal attention -> gate/add&norm ->
    GRN -> step-wise fused MLPs (one per step and path) -> constrained allocations.

    Args (sizes in bars or units): lookback L, n_ahead N, hidden_size H (recurrent/attention), num_embedding
    E (per-feature embedding and VSN), num_heads (H must be divisible by it), fused_mlp_hidden_dim and
    fused_mlp_layers (hidden layers of each fused MLP), recurrent ("tkan"|"lstm"|"gru"), dropout,
    clip_sharpness (lambda of eq. 25; a step may exceed max_rate by at most 0.278/lambda), input_clip (every
    bar feature to +-this), volume_clip (the linear `volume` feature, column `lem_model.features.VOLUME_COLUMN`,
    to at most this; default `input_clip`'s value, i.e. no extra bound), tilt_bound (each order's term of the
    allocator's output logits to +-this around the learned per-step base rate: `StepwiseFusedAllocator`; 0, the
    default, = no bound, the paper's form).

    implementation: how the same function is computed, as Keras' LSTM has `use_cudnn` (`lem_model.kernels`):
      "reference" (each block's definition), "auto" (default: each block's registered kernel where it takes the
      call) or "fast" (as "auto", a kernel that declines, e.g. with dropout in training, is an error). Outputs
      agree to float32 rounding (tests hold kernels and definitions equal in values and gradients).
    xla_max_batch: in traced TensorFlow inference graphs (export, serving) outside "reference", batches up to this
      size run XLA-compiled (kernel "small_batch_xla": ~2 vs ~15 ms at batch 1, paper config); a SavedModel
      holding it needs `tensorflow_model_server --xla_cpu_compilation_enabled=true`; 0 disables it.
    context_chunks: in training outside "reference", the context block runs on this many batch chunks, subgraphs
      that TensorFlow runs at the same time on as many inter-op threads (kernel "in_chunks": a train step 4 %
      faster with 2 on 2 CPU cores); 1 (default) = one pass, the choice for one GPU or one thread.
    Defaults: `lem_model.presets` (PAPER_CONFIG, MODEL_DEFAULTS).
    """

    def __init__(self, lookback: int = PAPER_CONFIG["lookback"], n_ahead: int = PAPER_CONFIG["n_ahead"],
                 hidden_size: int = PAPER_CONFIG["hidden_size"], num_embedding: int = PAPER_CONFIG["num_embedding"],
                 num_heads: int = PAPER_CONFIG["num_heads"],
                 fused_mlp_hidden_dim: int = PAPER_CONFIG["fused_mlp_hidden_dim"],
                 fused_mlp_layers: int = D["fused_mlp_layers"], recurrent: str = D["recurrent"],
                 dropout: float = D["dropout"], clip_sharpness: float = D["clip_sharpness"],
                 input_clip: float = D["input_clip"], volume_clip: float = D["volume_clip"],
                 tilt_bound: float = D["tilt_bound"], implementation: str = D["implementation"],
                 xla_max_batch: int = D["xla_max_batch"], context_chunks: int = D["context_chunks"], **kwargs):
        super().__init__(**kwargs)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        if int(xla_max_batch) < 0:
            raise ValueError(f"xla_max_batch must be >= 0 (0 disables the XLA path), got {xla_max_batch}")
        if int(context_chunks) < 1:
            raise ValueError(f"context_chunks must be >= 1 (1 = one pass), got {context_chunks}")
        if lookback < 1 or n_ahead < 1:
            raise ValueError(f"lookback and n_ahead must be >= 1 bar, got {lookback}, {n_ahead}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.lookback, self.n_ahead = int(lookback), int(n_ahead)
        self.hidden_size, self.num_embedding, self.num_heads = int(hidden_size), int(num_embedding), int(num_heads)
        self.fused_mlp_hidden_dim, self.fused_mlp_layers = int(fused_mlp_hidden_dim), int(fused_mlp_layers)
        self.recurrent, self.dropout = recurrent, float(dropout)
        self.clip_sharpness, self.input_clip = float(clip_sharpness), float(input_clip)
        self.volume_clip = float(volume_clip)
        if not self.volume_clip > 0:
            raise ValueError(f"volume_clip must be > 0, got {volume_clip}")
        self.implementation, self.xla_max_batch = implementation, int(xla_max_batch)
        self.context_chunks = int(context_chunks)
        self.tilt_bound = float(tilt_bound)
        self.num_paths = layout.num_min_periods(self.n_ahead) * layout.PATHS_PER_MIN_PERIOD

        # Sub-layers in this order, with these attribute and class names: saved weights are found by them.
        h, opts = self.hidden_size, dict(dropout=self.dropout, implementation=implementation)
        self.embedding = FeatureEmbedding(self.num_embedding, name="embedding")
        self.vsn = VariableSelectionNetwork(self.num_embedding, **opts, name="vsn")
        self.recurrent_layer = make_recurrent(recurrent, h, **opts)
        self.skip_projection = keras.layers.Dense(h, use_bias=False, name="skip_projection")
        self.recurrent_gate = GateAddNorm(h, **opts, name="recurrent_gate")
        self.recurrent_grn = GatedResidualNetwork(h, **opts, name="recurrent_grn")
        self.attention = CausalAttention(self.num_heads, implementation=implementation, name="attention")
        self.attention_gate = GateAddNorm(h, **opts, name="attention_gate")
        self.context_grn = GatedResidualNetwork(h, **opts, name="context_grn")
        self.allocator = StepwiseFusedAllocator(self.n_ahead, self.num_paths, self.fused_mlp_hidden_dim,
                                                num_layers=self.fused_mlp_layers, clip_sharpness=self.clip_sharpness,
                                                tilt_bound=tilt_bound, implementation=implementation,
                                                name="allocator")

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
        if training and self.context_chunks > 1:  # batch chunks in one graph (kernel "in_chunks")
            c = kernels.run("in_chunks", self.implementation, lambda part: self._context(part, training), x,
                            self.context_chunks)
        else:
            c = self._small_batches_compiled(training, lambda bars: self._context(bars, training), x)
        c = self._context(x, training) if c is None else c                      # [B, N, H]
        alloc = self.allocator(self.step_inputs(c, x, min_rate, max_rate), min_rate, max_rate)  # [B, N, P]
        N = self.n_ahead
        return ops.reshape(alloc, (-1, N, N + 1, layout.NUM_PATHS, layout.NUM_TARGETS))

    def allocate_scenario(self, inputs, scenario, training=False):
        """One scenario per row: `scenario` int [B] (`layout.scenario_index`) -> allocations [B, N], equal to
        `call(inputs)` flattened over its last three axes and indexed there. The allocator's kernel runs only that
        scenario's fused MLPs (the serving path of one live order: ~1/P of the allocator's weights are read)."""
        x, min_rate, max_rate = self._clean_inputs(inputs)
        scenario = ops.cast(ops.reshape(scenario, (-1,)), "int32")

        def run(x, min_rate, max_rate, scenario):
            c = self._context(x, training)
            return self.allocator(self.step_inputs(c, x, min_rate, max_rate), min_rate, max_rate, paths=scenario)

        return self._small_batches_compiled(training, run, x, min_rate, max_rate, scenario)

    def _small_batches_compiled(self, training, fn, *xs):
        """fn(*xs); in traced inference graphs with xla_max_batch >= 1 (outside "reference"), batches up to it
        XLA-compiled (kernel "small_batch_xla", TensorFlow)."""
        if training is False and self.xla_max_batch >= 1:
            out = kernels.run("small_batch_xla", self.implementation, fn, self.xla_max_batch, *xs)
            if out is not None:
                return out
        return fn(*xs)

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
        if self.volume_clip < self.input_clip:
            v = VOLUME_COLUMN
            x = ops.concatenate([x[..., :v], ops.minimum(x[..., v:v + 1], self.volume_clip), x[..., v + 1:]], axis=-1)
        return x, min_rate, max_rate

    def step_inputs(self, c, x, min_rate, max_rate):
        """Step k's allocator input: [context_k [B, N, H], bar L+k-1 of x, min_rate, max_rate] -> [B, N, H+F+2]."""
        rates = ops.concatenate([min_rate, max_rate], axis=-1)                   # [B, 2]
        return ops.concatenate(
            [c, x[:, self.lookback - 1:], ops.repeat(ops.expand_dims(rates, 1), self.n_ahead, axis=1)], axis=-1)

    def _embed_and_select(self, x, training):
        """Embedding (§2.2.1) and VSN (eq. 8-10): x [B, T, F] -> [B, T, E]; the kernel computes both without
        materialising the [B, T, F, E] embeddings."""
        emb, vsn = self.embedding, self.vsn
        fast = kernels.run("embed_and_select", self.implementation, x, emb.kernel, emb.bias,
                           vsn.weight_grn.kernel_weights(), vsn.var_grn.kernel_weights(),
                           dropout_in_training=bool(training) and self.dropout > 0)
        return vsn(emb(x), training=training) if fast is None else fast

    def _context(self, x, training):
        """The context block: input bars x [B, L+N-1, F] -> each execution step's context [B, N, H]."""
        v = self._embed_and_select(x, training)                                  # [B, T, E]   §2.2.1, eq. 8-10
        r = self.recurrent_layer(v, training=training)                           # [B, T, H]        eq. 12-18
        s = self.recurrent_gate(r, self.skip_projection(v), training=training)   # [B, T, H]        eq. 19
        s = self.recurrent_grn(s, training=training)                             # [B, T, H]
        q = s[:, self.lookback - 1:]                                             # step k <- position L+k-1
        c = self.attention_gate(self.attention(q, s), q, training=training)      # [B, N, H]        eq. 20-23
        return self.context_grn(c, training=training)                            # [B, N, H]

    def compute_output_shape(self, input_shape):
        b = self._bars_shape(input_shape)[0]
        return (b, self.n_ahead, self.n_ahead + 1, layout.NUM_PATHS, layout.NUM_TARGETS)

    def get_config(self):
        return {**super().get_config(), "lookback": self.lookback, "n_ahead": self.n_ahead,
                "hidden_size": self.hidden_size, "num_embedding": self.num_embedding,
                "num_heads": self.num_heads, "fused_mlp_hidden_dim": self.fused_mlp_hidden_dim,
                "fused_mlp_layers": self.fused_mlp_layers, "recurrent": self.recurrent,
                "dropout": self.dropout, "clip_sharpness": self.clip_sharpness, "input_clip": self.input_clip,
                "volume_clip": self.volume_clip, "tilt_bound": self.tilt_bound,
                "implementation": self.implementation, "xla_max_batch": self.xla_max_batch,
                "context_chunks": self.context_chunks}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_lem(num_features: int | None = None, batch_size: int | None = None, **hyperparams) -> LargeExecutionModel:
    """Create a LargeExecutionModel from hyperparameters (see the class); with `num_features` it is built
    right away (weights created), otherwise on its first call."""
    model = LargeExecutionModel(**hyperparams)
    if num_features is not None:
        model.build({"bars": (batch_size, model.lookback + model.n_ahead, int(num_features)),
                     "min_rate": (batch_size, 1), "max_rate": (batch_size, 1)})
    return model


def compile_lem(model: LargeExecutionModel, learning_rate: float = 1e-5, *, metrics: bool = True,
                jit_compile="auto", clipnorm: float | None = None, **loss_options) -> LargeExecutionModel:
    """Compile with Adam (paper §3.4: lr 1e-5; `lem_model.optim.LemAdam`, fused on TensorFlow), the LEM loss
    and the slippage metrics (bps).

    jit_compile: passed to `Model.compile` ("auto" = XLA where Keras enables it by default). loss_options: the
    options of `lem_model.loss.LEMLoss` (mask_sharpness, pnl_sharpness, fixed_horizon_risk, fixed_horizon_pnl,
    risk_term; None or absent = the default, the paper's objective: `lem_model.presets.LOSS_DEFAULTS`).
    """
    from lem_model.loss import LEMLoss
    from lem_model.metrics import lem_metrics
    from lem_model.optim import LemAdam

    unknown = sorted(set(loss_options) - set(LOSS_DEFAULTS))
    if unknown:
        raise TypeError(f"compile_lem() got unknown loss option(s) {unknown}; known: {sorted(LOSS_DEFAULTS)}")
    loss = LEMLoss(**{k: v for k, v in loss_options.items() if v is not None})
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
