"""Keras 3 layers of the Large Execution Model (paper §2.2-2.3), backend-agnostic (`keras.ops`).

Each layer's `call` is the definition of what it computes, written to be read: it calls its sub-layers or uses
the weights it owns (`add_weight`), with the paper's equation numbers in the docstrings. Before computing it, a
call asks `lem_model.kernels` for a registered fast kernel of the same function (fewer, larger operations on the
same weights), as Keras' LSTM asks `backend.lstm`; `implementation` ("auto", "fast" or "reference", saved in the
config) is the switch. Tests hold each kernel equal to the definition in values and gradients.

Shapes: B batch, T sequence positions, F bar features, E embedding size, H hidden size, N execution steps,
P fused paths = (N+1) * 8, Hf fused-MLP hidden size, D step-input size = H + F + 2.
"""
from __future__ import annotations

import math

import keras
from keras import ops

from lem_model import kernels
from lem_model.presets import DEFAULT_IMPLEMENTATION
from lem_model.primitives import causal_mask, constrain_step, soft_clip_tolerance, step_rate  # noqa: F401 - re-exported

PACKAGE = "lem_model"


def _serializable(cls):
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


@_serializable
class FeatureEmbedding(keras.layers.Layer):
    """Per-feature embedding (§2.2.1): [B, T, F] -> [B, T, F, E]; feature f goes through its own dense
    map R -> R^E (x_f * w_f + b_f)."""

    def __init__(self, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = int(embedding_dim)

    def build(self, input_shape):
        f = input_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(f, self.embedding_dim), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(f, self.embedding_dim), initializer="zeros")

    def call(self, x):
        return ops.expand_dims(x, -1) * self.kernel + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embedding_dim,)

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim}


@_serializable
class GatedResidualNetwork(keras.layers.Layer):
    """GRN without context (eq. 4-7): LayerNorm(skip(x) + GLU(eta_1)), eta_1 = W1 eta_2 + b1,
    eta_2 = ELU(W2 x + b2), GLU(y) = sigmoid(y Wg + bg) * (y Wv + bv); [..., d_in] -> [..., output_dim].

    `skip` is the identity when d_in == output_dim, else linear (no bias). With `groups=G` the input is
    [G, n, d_in] (group-major) and each group has its own weights: the per-variable GRNs of the VSN (eq. 9).
    Weights: w2 [d_in, units], w1 [units, units], w_glu [units, 2 * output_dim] laid out [gate | value],
    w_skip [d_in, output_dim], each with a leading [G] axis when grouped (biases [G, 1, .]). Kernel: "grn".
    """

    def __init__(self, units: int, output_dim: int | None = None, groups: int | None = None,
                 dropout: float = 0.0, implementation: str = DEFAULT_IMPLEMENTATION, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.output_dim = int(output_dim or units)
        self.groups = groups
        self.dropout = float(dropout)
        self.implementation = implementation
        self.drop = keras.layers.Dropout(self.dropout) if self.dropout else None
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5)

    def _w(self, name, shape, init="glorot_uniform"):
        g = () if self.groups is None else (self.groups,) + (1,) * (len(shape) == 1)
        return self.add_weight(name=name, shape=g + tuple(shape), initializer=init)

    def build(self, input_shape):
        d_in = input_shape[-1]
        self.w2, self.b2 = self._w("w2", (d_in, self.units)), self._w("b2", (self.units,), "zeros")
        self.w1, self.b1 = self._w("w1", (self.units, self.units)), self._w("b1", (self.units,), "zeros")
        self.w45 = self._w("w_glu", (self.units, 2 * self.output_dim))
        self.b45 = self._w("b_glu", (2 * self.output_dim,), "zeros")
        self.w_skip = self._w("w_skip", (d_in, self.output_dim)) if d_in != self.output_dim else None
        self.norm.build(tuple(input_shape[:-1]) + (self.output_dim,))

    def kernel_weights(self) -> dict:
        """The weights by name, as kernels take them."""
        return dict(w2=self.w2, b2=self.b2, w1=self.w1, b1=self.b1, w_glu=self.w45, b_glu=self.b45,
                    w_skip=self.w_skip, gamma=self.norm.gamma, beta=self.norm.beta, epsilon=self.norm.epsilon)

    def call(self, x, training=None):
        fast = kernels.run("grn", self.implementation, x, self.kernel_weights(), self.groups is not None,
                           dropout_in_training=bool(training) and self.drop is not None)
        if fast is not None:
            return fast
        skip = x if self.w_skip is None else ops.matmul(x, self.w_skip)
        eta2 = ops.elu(ops.matmul(x, self.w2) + self.b2)                        # eq. 7
        eta1 = ops.matmul(eta2, self.w1) + self.b1                              # eq. 6
        if self.drop is not None:
            eta1 = self.drop(eta1, training=training)
        gate, value = ops.split(ops.matmul(eta1, self.w45) + self.b45, 2, axis=-1)
        return self.norm(skip + ops.sigmoid(gate) * value)                      # eq. 4-5

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "output_dim": self.output_dim,
                "groups": self.groups, "dropout": self.dropout, "implementation": self.implementation}


@_serializable
class VariableSelectionNetwork(keras.layers.Layer):
    """VSN (eq. 8-10): embeddings [B, T, F, E] -> [B, T, U]. Selection weights v = softmax(GRN_v(all F
    embeddings flattened)) over the F variables (eq. 8); each variable's embedding through its own GRN (eq. 9,
    the F GRNs as one grouped GRN); the output is their v-weighted sum (eq. 10). Its kernel,
    "embed_and_select", takes the bars and the `FeatureEmbedding`'s weights (`LargeExecutionModel`)."""

    def __init__(self, units: int, dropout: float = 0.0, implementation: str = DEFAULT_IMPLEMENTATION, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dropout = float(dropout)
        self.implementation = implementation

    def build(self, input_shape):
        f, e = input_shape[-2], input_shape[-1]
        self.num_vars = f
        self.weight_grn = GatedResidualNetwork(self.units, output_dim=f, dropout=self.dropout,
                                               implementation=self.implementation, name="weights_grn")
        self.weight_grn.build((None, f * e))
        self.var_grn = GatedResidualNetwork(self.units, output_dim=self.units, groups=f, dropout=self.dropout,
                                            implementation=self.implementation, name="variable_grns")
        self.var_grn.build((f, None, e))

    def call(self, emb, training=None):
        f, e, t = self.num_vars, emb.shape[-1], emb.shape[1]
        rows = ops.reshape(emb, (-1, f, e))                                       # [BT, F, E]
        v = ops.softmax(self.weight_grn(ops.reshape(rows, (-1, f * e)), training=training), axis=-1)  # [BT, F]
        xi = self.var_grn(ops.transpose(rows, (1, 0, 2)), training=training)     # [F, BT, U]
        selected = ops.sum(ops.expand_dims(ops.transpose(v), -1) * xi, axis=0)  # [BT, U]
        return ops.reshape(selected, (-1, t, self.units))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-2]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout,
                "implementation": self.implementation}


@_serializable
class GateAddNorm(keras.layers.Layer):
    """LayerNorm(skip + GLU(x)), GLU(x) = sigmoid(x Wg + bg) * (x Wv + bv) (eq. 19, 23); [..., d] -> [..., units].
    The GLU's two maps are one Dense sub-layer of 2 * units outputs laid out [gate | value]. Kernel:
    "gate_add_norm"."""

    def __init__(self, units: int, dropout: float = 0.0, implementation: str = DEFAULT_IMPLEMENTATION, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dropout = float(dropout)
        self.implementation = implementation
        self.glu = keras.layers.Dense(2 * self.units, name="glu")
        self.drop = keras.layers.Dropout(self.dropout) if self.dropout else None
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5)

    def build(self, x_shape, skip_shape=None):
        self.glu.build(x_shape)
        self.norm.build(tuple(x_shape[:-1]) + (self.units,))

    def call(self, x, skip, training=None):
        fast = kernels.run("gate_add_norm", self.implementation, x, skip, self.glu.kernel, self.glu.bias,
                           self.norm.gamma, self.norm.beta, self.norm.epsilon,
                           dropout_in_training=bool(training) and self.drop is not None)
        if fast is not None:
            return fast
        if self.drop is not None:
            x = self.drop(x, training=training)
        gate, value = ops.split(self.glu(x), 2, axis=-1)
        return self.norm(skip + ops.sigmoid(gate) * value)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout,
                "implementation": self.implementation}


@_serializable
class CausalAttention(keras.layers.Layer):
    """Causal multi-head self-attention (eq. 20-23) evaluated only at the last `num_queries` positions.

    call(query [B, Q, H], memory [B, T, H]) -> [B, Q, H]; query i sits at position T - Q + i and attends to
    memory positions <= T - Q + i (masked scores get exactly zero weight, so later positions cannot leak).
    Weights: query [H, heads, k], key_value [H, 2, heads, k] (keys, values), output [heads, k, H] and its
    bias, k = H / heads. Kernel: "attention".
    """

    def __init__(self, num_heads: int, implementation: str = DEFAULT_IMPLEMENTATION, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.implementation = implementation

    def build(self, query_shape, memory_shape=None):
        d = query_shape[-1]
        if d % self.num_heads:
            raise ValueError(f"hidden size {d} must be divisible by num_heads {self.num_heads}")
        k = d // self.num_heads
        self.key_dim = k
        self.wq = self.add_weight(name="query", shape=(d, self.num_heads, k), initializer="glorot_uniform")
        self.wkv = self.add_weight(name="key_value", shape=(d, 2, self.num_heads, k), initializer="glorot_uniform")
        self.wo = self.add_weight(name="output", shape=(self.num_heads, k, d), initializer="glorot_uniform")
        self.bo = self.add_weight(name="output_bias", shape=(d,), initializer="zeros")

    def call(self, query, memory):
        fast = kernels.run("attention", self.implementation, query, memory, self.wq, self.wkv, self.wo, self.bo)
        if fast is not None:
            return fast
        q = ops.einsum("bqd,dhk->bhqk", query, self.wq) / math.sqrt(self.key_dim)
        keys = ops.einsum("btd,dhk->bhtk", memory, self.wkv[:, 0])
        values = ops.einsum("btd,dhk->bhtk", memory, self.wkv[:, 1])
        scores = ops.einsum("bhqk,bhtk->bhqt", q, keys)                          # eq. 21
        allowed = ops.convert_to_tensor(causal_mask(query.shape[1], memory.shape[1]))
        probs = ops.softmax(ops.where(allowed, scores, -1e9), axis=-1)           # eq. 22
        heads = ops.einsum("bhqt,bhtk->bqhk", probs, values)
        return ops.einsum("bqhk,hkd->bqd", heads, self.wo) + self.bo             # eq. 23

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "implementation": self.implementation}


@_serializable
class StepwiseFusedAllocator(keras.layers.Layer):
    """Step-wise fused MLPs with constraint handling (§2.3, eq. 24-27).

    call(step_inputs [B, N, D], min_rate [B, 1], max_rate [B, 1]) -> allocations [B, N, P].

    Step k, path p: MLP_{k,p}([step_inputs[:, k], a_{p,0..k-1}]) -> raw_{k,p} >= 0 (softplus), then
    `constrain_step` (eq. 26-27): a_k within the rates and the remaining fraction R_k, R_{k+1} = R_k - a_k,
    R_0 = 1, and the last step takes the remainder a_{N-1} = R_{N-1}. Fused weights hold one independent MLP per
    (step, path); each starts at TWAP (output layer zero, bias such that temp = 1/N at the paper's minimum rate
    1/N^2: see `build`) and the paths separate as they train.
    tilt_bound c (0 = none, the paper's form): raw_{k,p} = softplus(b_{k,p} + c tanh(t / c)) instead of
    softplus(b_{k,p} + t), where t is the order's own output term: every order's rate before the constraints stays
    within softplus(b -+ c) of the learned base rate softplus(b) of its step and path (`step_rate`).
    Weights, per step k < N-1: w_in [D, P*Hf] (the step inputs' first-layer term, path-major columns), b_in
    [P, 1, Hf], w_prev [P, N-1, Hf] (earlier allocations' first-layer term; step k uses rows < k), w_hidden_i
    [P, Hf, Hf], b_hidden_i [P, 1, Hf], w_out [P, Hf, 1], b_out [P, 1, 1]; all stacked over k on axis 0.
    Kernel: "allocate".
    """

    def __init__(self, n_steps: int, num_paths: int, hidden_dim: int, num_layers: int = 2,
                 activation: str = "relu", clip_sharpness: float = 100.0, tilt_bound: float = 0.0,
                 implementation: str = DEFAULT_IMPLEMENTATION, **kwargs):
        super().__init__(**kwargs)
        self.implementation = implementation
        self.n_steps, self.num_paths, self.hidden_dim = int(n_steps), int(num_paths), int(hidden_dim)
        self.tilt_bound = float(tilt_bound)
        if not self.tilt_bound >= 0:
            raise ValueError(f"tilt_bound must be >= 0 (0 = no bound), got {tilt_bound}")
        self.num_layers = int(num_layers)
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        self.activation = activation
        self.act = keras.activations.get(activation)
        self.clip_sharpness = float(clip_sharpness)

    def build(self, inputs_shape, min_rate_shape=None, max_rate_shape=None):
        # the last step takes the remainder: only steps 0..N-2 have an MLP
        nd, p, h = max(self.n_steps - 1, 1), self.num_paths, self.hidden_dim
        d = inputs_shape[-1]
        he = lambda fan_in: keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / fan_in))
        self.w_in = self.add_weight(name="w_in", shape=(nd, d, p * h), initializer=he(d))
        self.b_in = self.add_weight(name="b_in", shape=(nd, p, 1, h), initializer="zeros")
        self.w_prev = self.add_weight(name="w_prev", shape=(nd, p, nd, h), initializer=he(nd))
        self.w_hidden, self.b_hidden = [], []
        for i in range(self.num_layers - 1):
            self.w_hidden.append(self.add_weight(name=f"w_hidden_{i}", shape=(nd, p, h, h), initializer=he(h)))
            self.b_hidden.append(self.add_weight(name=f"b_hidden_{i}", shape=(nd, p, 1, h), initializer="zeros"))
        # At initialisation every path of every order follows TWAP exactly at the paper's minimum rate 1/N^2:
        # w_out = 0 and softplus(b_out) + 1/N^2 = 1/N, so temp = 1/N per step and the last step's remainder is
        # 1/N. Training then moves a path away from TWAP only as far as its gradient carries it; with a random
        # w_out each order started from its own random schedule, noisier than the TWAP the match head is gated
        # against (demo measurements, with their run-to-run spread: docs/experiments.md).
        self.w_out = self.add_weight(name="w_out", shape=(nd, p, h, 1), initializer="zeros")
        even = (self.n_steps - 1) / self.n_steps ** 2 if self.n_steps > 1 else 1.0
        self.b_out = self.add_weight(name="b_out", shape=(nd, p, 1, 1),
                                     initializer=keras.initializers.Constant(math.log(math.expm1(even))))

    def kernel_weights(self) -> dict:
        """The weights by name, as kernels take them."""
        return dict(w_in=self.w_in, b_in=self.b_in, w_prev=self.w_prev, w_hidden=self.w_hidden,
                    b_hidden=self.b_hidden, w_out=self.w_out, b_out=self.b_out)

    def call(self, inputs, min_rate, max_rate, paths=None):
        """inputs [B, N, D], min_rate/max_rate [B, 1] -> allocations [B, N, P]; with `paths` (int [B], the flat
        path index 0..P-1 of each row, `layout.scenario_index`) only that path's allocations -> [B, N]."""
        fast = kernels.run("allocate", self.implementation, inputs, min_rate, max_rate, self.kernel_weights(),
                           self.act, self.clip_sharpness, self.tilt_bound, paths=paths)
        if fast is not None:
            return fast
        n, p, h, d = self.n_steps, self.num_paths, self.hidden_dim, inputs.shape[-1]
        remaining = ops.ones_like(min_rate) * ops.ones((1, p), dtype=min_rate.dtype)   # R_0 = 1, [B, P]
        allocs = []                                                                    # N-1 x [B, P]
        for k in range(n - 1):
            z = ops.einsum("bd,dph->bph", inputs[:, k], ops.reshape(self.w_in[k], (d, p, h))) + self.b_in[k][:, 0]
            if k > 0:
                z = z + ops.einsum("bpj,pjh->bph", ops.stack(allocs, axis=-1), self.w_prev[k][:, :k])
            x = self.act(z)                                                            # [B, P, Hf]
            for w, b in zip(self.w_hidden, self.b_hidden):
                x = self.act(ops.einsum("bph,phg->bpg", x, w[k]) + b[k][:, 0])
            raw = step_rate(ops.einsum("bph,ph->bp", x, self.w_out[k][..., 0]), self.b_out[k][:, 0, 0],
                            self.tilt_bound)
            a = constrain_step(raw, remaining, min_rate, max_rate, k, n, self.clip_sharpness)
            allocs.append(a)
            remaining = remaining - a
        allocs.append(remaining)  # last step: the remainder (budget conservation)
        out = ops.stack(allocs, axis=1)                                                # [B, N, P]
        if paths is None:
            return out
        index = ops.reshape(ops.cast(paths, "int32"), (-1, 1, 1))
        return ops.take_along_axis(out, ops.repeat(index, n, axis=1), axis=2)[..., 0]  # [B, N]

    def compute_output_shape(self, inputs_shape, *args):
        return (inputs_shape[0], self.n_steps, self.num_paths)

    def get_config(self):
        return {**super().get_config(), "n_steps": self.n_steps, "num_paths": self.num_paths,
                "hidden_dim": self.hidden_dim, "num_layers": self.num_layers, "activation": self.activation,
                "clip_sharpness": self.clip_sharpness, "tilt_bound": self.tilt_bound,
                "implementation": self.implementation}
