"""Keras 3 layers of the Large Execution Model (paper §2.2-2.3), backend-agnostic (`keras.ops` only).

Shapes: B batch, T sequence positions, F bar features, E embedding size, H hidden size, N execution steps,
P fused paths = (N+1) * 8, Hf fused-MLP hidden size.
"""
from __future__ import annotations

import math

import numpy as np
import keras
from keras import ops

PACKAGE = "lem_model"


def _serializable(cls):
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


def dense(x, kernel, bias=None, activation=None):
    """activation(x [..., i] @ kernel [i, o] + bias [o]) -> [..., o], as ONE 2-D matmul: inputs of rank > 2 are
    flattened to rows first and reshaped back last. (A rank-3 input against a shared 2-D kernel would otherwise
    be a broadcast batched matmul, whose kernel gradient is one small product per batch row and a sum; and
    matmul + bias + activation on 2-D rows is one fused kernel for TensorFlow's oneDNN build.)"""
    lead = ops.shape(x)[:-1] if len(x.shape) > 2 else None
    y = ops.matmul(x if lead is None else ops.reshape(x, (-1, x.shape[-1])), kernel)
    if bias is not None:
        y = y + bias
    if activation is not None:
        y = activation(y)
    return y if lead is None else ops.reshape(y, (*lead, kernel.shape[-1]))


#: Up to this many columns in `matmul_t`'s right operand (e.g. a batch of <= 16 orders in the allocator's
#: [P, H, B] layout), a^T @ b is computed as (b^T @ a)^T: a vector-matrix product reads the weights a in their
#: stored order, which oneDNN does ~2x faster than through the adjoint flag (batch 1, 2 CPU cores).
MATMUL_T_NARROW = 16


def matmul_t(a, b):
    """a^T @ b over the last two axes: a [..., k, m], b [..., k, n] -> [..., m, n].

    On TensorFlow: one matmul with a's adjoint flag, whose gradients need no transposes either (a transpose op
    would be folded into the forward product by grappler, but not out of the backward); for narrow b (n <=
    `MATMUL_T_NARROW`, decided at run time when n is not static) (b^T @ a)^T instead. Elsewhere `ops.matmul`
    of the transpose."""
    swap = lambda t: ops.swapaxes(t, -1, -2)
    if keras.backend.backend() != "tensorflow":
        return ops.matmul(swap(a), b)
    import tensorflow as tf

    def wide():
        return tf.linalg.matmul(a, b, adjoint_a=True)

    def narrow():
        return swap(tf.linalg.matmul(b, a, adjoint_a=True))

    n = b.shape[-1]
    if n is not None:
        return narrow() if n <= MATMUL_T_NARROW else wide()
    return tf.cond(tf.shape(b)[-1] <= MATMUL_T_NARROW, narrow, wide)


def glu(x, kernel, bias, dense_fn=None):
    """Gated linear unit sigmoid(x Wg + bg) * (x Wv + bv) from a kernel [..., i, 2o] and bias [..., 2o] laid out
    [gate | value] -> [..., o]. Two matmuls on the kernel's halves rather than one matmul and a split: the split
    (and its gradient, a concat) would copy the [rows, 2o] activation once more."""
    dense_fn = dense_fn or dense
    o = kernel.shape[-1] // 2
    return dense_fn(x, kernel[..., :o], bias[..., :o], ops.sigmoid) * dense_fn(x, kernel[..., o:], bias[..., o:])


def layer_norm(x, norm):
    """`norm(x)` for a built `keras.layers.LayerNormalization` over the last axis (center and scale), on its own
    gamma/beta: (x - mean) / sqrt(var + eps) * gamma + beta, computed in float32 like Keras' (mixed precision).
    Keras' version folds gamma into a full-size scale tensor first; centring first is fewer full-size
    broadcasts (fwd+bwd ~15-20 % faster on CPU)."""
    dtype = x.dtype
    x = ops.cast(x, "float32")
    centred = x - ops.mean(x, axis=-1, keepdims=True)
    scale = ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + norm.epsilon)
    out = centred * scale * ops.cast(norm.gamma, "float32") + ops.cast(norm.beta, "float32")
    return ops.cast(out, dtype)


def soft_clip(x, upper, sharpness):
    """Differentiable upper clip (paper eq. 25): x * s + u * (1 - s), s = sigmoid(sharpness * (u - x)).

    ~x for x << u, ~u for x >> u; exceeds u by at most `soft_clip_tolerance(sharpness)`.
    """
    s = ops.sigmoid(sharpness * (upper - x))
    return x * s + upper * (1.0 - s)


def soft_clip_tolerance(sharpness: float) -> float:
    """max_x S(x, u, sharpness) - u = max_d d * sigmoid(-sharpness * d) = 0.27846... / sharpness."""
    return 0.2784645427610738 / sharpness


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
    """GRN without context (eq. 4-7): LayerNorm(skip(x) + GLU(W1 ELU(W2 x + b2) + b1)).

    With `groups=G` the input is [G, n, d_in] (group-major) and each group has its own weights (the
    per-variable GRNs of the VSN, eq. 9, as batched matmuls). `skip` is the identity when d_in == output_dim,
    else linear.
    """

    def __init__(self, units: int, output_dim: int | None = None, groups: int | None = None,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.output_dim = int(output_dim or units)
        self.groups = groups
        self.dropout = float(dropout)
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

    def _dense(self, x, w, b=None, activation=None):
        if self.groups is None:
            return dense(x, w, b, activation)
        y = ops.matmul(x, w)  # grouped: [G, n, i] @ [G, i, o] + [G, 1, o]
        y = y if b is None else y + b
        return y if activation is None else activation(y)

    def call(self, x, training=None):
        skip = x if self.w_skip is None else self._dense(x, self.w_skip)
        return self.from_first_layer(self._dense(x, self.w2, self.b2, ops.elu), skip, training=training)

    def from_first_layer(self, eta2, skip, training=None):
        """The GRN after its first layer: eta2 = ELU(x W2 + b2) and skip = skip(x), each [..., units] /
        [..., output_dim] (grouped: [G, n, .]) -> output. For callers that get x W2 and skip(x) more cheaply
        than from x itself (the VSN's rank-1 embeddings)."""
        eta1 = self._dense(eta2, self.w1, self.b1)
        if self.drop is not None:
            eta1 = self.drop(eta1, training=training)
        return layer_norm(skip + glu(eta1, self.w45, self.b45, self._dense), self.norm)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "output_dim": self.output_dim,
                "groups": self.groups, "dropout": self.dropout}


@_serializable
class VariableSelectionNetwork(keras.layers.Layer):
    """VSN (eq. 8-10): [B, T, F, E] -> [B, T, U]; softmax weights over the F variables from a GRN of the
    flattened embeddings, times each variable's own GRN output (all F GRNs in one batched matmul)."""

    def __init__(self, units: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dropout = float(dropout)

    def build(self, input_shape):
        f, e = input_shape[-2], input_shape[-1]
        self.num_vars = f
        self.weight_grn = GatedResidualNetwork(self.units, output_dim=f, dropout=self.dropout, name="weights_grn")
        self.weight_grn.build((None, f * e))
        self.var_grn = GatedResidualNetwork(self.units, output_dim=self.units, groups=f, dropout=self.dropout,
                                            name="variable_grns")
        self.var_grn.build((f, None, e))

    def call(self, emb, training=None):
        f, e = self.num_vars, emb.shape[-1]
        rows = ops.reshape(emb, (-1, f, e))                                       # [BT, F, E]
        weights = self.weight_grn(ops.reshape(rows, (-1, f * e)), training=training)  # [BT, F]
        xi = self.var_grn(ops.transpose(rows, (1, 0, 2)), training=training)     # [F, BT, U]
        return self._select(weights, xi, emb.shape[1])

    def embed_and_select(self, x, embedding: "FeatureEmbedding", training=None):
        """`self(embedding(x), training)` for x [B, T, F] -> [B, T, U], without materialising the [B, T, F, E]
        embeddings: feature f's embedding x_f w_f + b_f enters the GRNs only through linear maps M (first layers,
        skips), so each such term is rank-1, x_f (w_f M) + b_f M, from a few [F, .] weight products."""
        f, e, t = self.num_vars, embedding.embedding_dim, x.shape[1]
        g, vg = self.weight_grn, self.var_grn
        if g.w_skip is None:  # E = 1: no linear skip to fold (never at LEM sizes)
            return self(embedding(x), training=training)
        w, b = embedding.kernel, embedding.bias                                  # [F, E] each
        rows = ops.reshape(x, (-1, f))                                           # [BT, F]

        def flat_affine(m, bias=0.0):  # flattened embeddings [BT, F*E] @ m [F*E, o] + bias -> [BT, o]
            per_feature = ops.sum(ops.expand_dims(w, -1) * ops.reshape(m, (f, e, -1)), axis=1)   # [F, o]
            return ops.matmul(rows, per_feature) + (ops.matmul(ops.reshape(b, (1, f * e)), m) + bias)

        weights = g.from_first_layer(ops.elu(flat_affine(g.w2, g.b2)), flat_affine(g.w_skip), training=training)
        x_t = ops.expand_dims(ops.transpose(rows), -1)                           # [F, BT, 1]
        w3, b3 = ops.expand_dims(w, 1), ops.expand_dims(b, 1)                    # [F, 1, E]

        # x_t times a row [F, 1, o] as a K=1 batched matmul rather than a broadcast multiply: its gradients are
        # then batched matmuls too (d x_t, d row), not full-size [F, BT, o] products reduced afterwards.
        def grouped_affine(m, bias=0.0):  # per-feature embeddings [F, BT, E] @ m [F, E, o] + bias -> [F, BT, o]
            return ops.matmul(x_t, ops.matmul(w3, m)) + (ops.matmul(b3, m) + bias)

        skip = ops.matmul(x_t, w3) + b3 if vg.w_skip is None else grouped_affine(vg.w_skip)
        xi = vg.from_first_layer(ops.elu(grouped_affine(vg.w2, vg.b2)), skip, training=training)
        return self._select(weights, xi, t)

    def _select(self, weights, xi, t):
        """Softmax over the F variables of weights [BT, F], times the variable GRNs' xi [F, BT, U] -> [B, T, U]."""
        v = ops.softmax(weights, axis=-1)
        out = ops.sum(ops.expand_dims(ops.transpose(v), -1) * xi, axis=0)         # [BT, U]
        return ops.reshape(out, (-1, t, self.units))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-2]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout}


@_serializable
class GateAddNorm(keras.layers.Layer):
    """LayerNorm(skip + GLU(x)), GLU(x) = sigmoid(x Wg + bg) * (x Wv + bv); [..., d] -> [..., units]."""

    def __init__(self, units: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dropout = float(dropout)
        self.glu = keras.layers.Dense(2 * self.units, name="glu")
        self.drop = keras.layers.Dropout(self.dropout) if self.dropout else None
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5)

    def build(self, x_shape, skip_shape=None):
        self.glu.build(x_shape)
        self.norm.build(tuple(x_shape[:-1]) + (self.units,))

    def call(self, x, skip, training=None):
        if self.drop is not None:
            x = self.drop(x, training=training)
        return layer_norm(skip + glu(x, self.glu.kernel, self.glu.bias), self.norm)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout}


@_serializable
class CausalAttention(keras.layers.Layer):
    """Causal multi-head self-attention (eq. 20-23) evaluated only at the last `num_queries` positions.

    call(query [B, Q, H], memory [B, T, H]) -> [B, Q, H]; query i sits at position T - Q + i and attends to
    memory positions <= T - Q + i (masked scores get exactly zero weight, so later positions cannot leak).
    """

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)

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
        q_len, t_len, d = query.shape[1], memory.shape[1], memory.shape[2]
        h, k = self.num_heads, self.key_dim
        q = ops.reshape(dense(query, ops.reshape(self.wq, (d, h * k))), (-1, q_len, h, k))
        # keys and values from their own kernels (slicing the [B, T, 2, h, k] product instead would make each
        # slice's gradient a zero-filled tensor of the full product)
        keys = dense(memory, ops.reshape(self.wkv[:, 0], (d, h * k)))
        values = dense(memory, ops.reshape(self.wkv[:, 1], (d, h * k)))
        q = ops.transpose(q, (0, 2, 1, 3)) * (1.0 / math.sqrt(k))               # [B, h, Q, k]
        keys = ops.transpose(ops.reshape(keys, (-1, t_len, h, k)), (0, 2, 3, 1))  # [B, h, k, T]
        values = ops.transpose(ops.reshape(values, (-1, t_len, h, k)), (0, 2, 1, 3))  # [B, h, T, k]
        scores = ops.matmul(q, keys)                                              # [B, h, Q, T]
        allowed = np.arange(t_len)[None, :] <= (t_len - q_len + np.arange(q_len))[:, None]
        probs = ops.softmax(ops.where(ops.convert_to_tensor(allowed), scores, -1e9), axis=-1)
        ctx = ops.reshape(ops.transpose(ops.matmul(probs, values), (0, 2, 1, 3)), (-1, q_len, h * k))
        return dense(ctx, ops.reshape(self.wo, (h * k, d)), self.bo)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@_serializable
class StepwiseFusedAllocator(keras.layers.Layer):
    """Step-wise fused MLPs with constraint handling (§2.3, eq. 24-27).

    call(step_inputs [B, N, D], min_rate [B, 1], max_rate [B, 1]) -> allocations [B, N, P].

    Step k, path p: MLP_{k,p}([step_inputs[:, k], a_{p,0..k-1}]) -> raw_{k,p} >= 0 (softplus), then
        temp = soft_clip(raw + min_rate, max_rate)                 (eq. 26)
        a_k  = clip(max(temp, R_k - (N-1-k) * max_rate), 0, R_k)   (eq. 27 + a feasibility floor: the rest
                                                                     must fit under max_rate)
        R_{k+1} = R_k - a_k, R_0 = 1, and the last step takes the remainder a_{N-1} = R_{N-1}.
    Fused weights hold one independent MLP per (step, path); each starts at TWAP (output layer zero, bias
    such that temp = 1/N at the paper's minimum rate 1/N^2: see `build`) and the paths separate as they
    train. The first layer's step-input term is one 2-D matmul per step over all paths
    (`w_in` is [N-1, D, P*H]); the terms that depend on earlier allocations run as batched matmuls over the
    paths in a feature-major [P, H, B] layout (no per-path Python loops).
    """

    def __init__(self, n_steps: int, num_paths: int, hidden_dim: int, num_layers: int = 2,
                 activation: str = "relu", clip_sharpness: float = 100.0, **kwargs):
        super().__init__(**kwargs)
        self.n_steps, self.num_paths, self.hidden_dim = int(n_steps), int(num_paths), int(hidden_dim)
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
        # [step, D, path * H]: one 2-D matmul per step covers all paths (GEMM-friendly at any batch size)
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
        # against (demo measurements, with their run-to-run spread: benchmarks/RESULTS.md, "The demo").
        self.w_out = self.add_weight(name="w_out", shape=(nd, p, h, 1), initializer="zeros")
        even = (self.n_steps - 1) / self.n_steps ** 2 if self.n_steps > 1 else 1.0
        self.b_out = self.add_weight(name="b_out", shape=(nd, p, 1, 1),
                                     initializer=keras.initializers.Constant(math.log(math.expm1(even))))

    def call(self, inputs, min_rate, max_rate, paths=None):
        """inputs [B, N, D], min_rate/max_rate [B, 1] -> allocations [B, N, P]; with `paths` (int [B], flat
        path index 0..P-1 per row, `layout.scenario_index`) only that path's MLPs run -> [B, N]. The paths
        variant gathers per-row weights (~B x 1/P of the allocator's weights): meant for small batches (live
        orders); for large batches take the full output and index it."""
        n, p, h = self.n_steps, self.num_paths, self.hidden_dim
        nd = self.w_in.shape[0]
        r_min = ops.reshape(min_rate, (1, -1))  # [1, B], broadcast over paths
        r_max = ops.reshape(max_rate, (1, -1))
        if paths is not None:
            return self._call_paths(inputs, r_min, r_max, ops.cast(ops.reshape(paths, (-1,)), "int32"))
        # Feature-major layout: activations [P, Hf, B] (batch innermost). The first layer's [P*Hf, B] product is
        # then already [P, Hf, B] (no per-step transpose of the activation and of its gradient), and the
        # per-path products are W^T @ x with the batch as their wide dimension.
        # Per-step weights, unstacked once (views, no copy): slicing a stacked weight inside the loop would
        # make every step's gradient a zero tensor of the full stack (StridedSliceGrad), summed over steps.
        # (The variable is read into a tensor first: JAX's traced unstack does not take a Keras variable.)
        per_step = lambda w: ops.unstack(ops.convert_to_tensor(w), axis=0)
        w_in = per_step(self.w_in)                                              # nd x [D, P*Hf]
        w_prev, w_out = per_step(self.w_prev), per_step(self.w_out)
        w_hidden = [per_step(w) for w in self.w_hidden]                         # nd x [P, Hf, Hf]
        column = lambda b: ops.reshape(b, (nd, p, -1, 1))                      # [nd, P, 1, o] -> [nd, P, o, 1]
        b_in, b_out = per_step(column(self.b_in)), per_step(self.b_out)
        b_hidden = [per_step(column(b)) for b in self.b_hidden]
        steps = ops.unstack(ops.transpose(inputs, (1, 2, 0)), axis=0)           # N x [D, B]
        remaining = ops.ones_like(r_min) + ops.zeros((p, 1), dtype=r_min.dtype)  # [P, B]
        allocs = []
        for k in range(n - 1):
            # first-layer term from step k's inputs, all paths in one 2-D matmul: [D, P*Hf]^T @ [D, B]
            z = ops.reshape(matmul_t(w_in[k], steps[k]), (p, h, -1)) + b_in[k]  # [P, Hf, B]
            if k > 0:
                prev = ops.stack(allocs, axis=1)                                 # [P, k, B]
                z = z + matmul_t(w_prev[k][:, :k], prev)                         # [P, Hf, B]
            x = self.act(z)
            for w, b in zip(w_hidden, b_hidden):
                x = self.act(matmul_t(w[k], x) + b[k])
            raw = ops.softplus(matmul_t(w_out[k], x) + b_out[k])[:, 0]          # [P, B]
            a = self._constrain(raw, remaining, r_min, r_max, k)
            allocs.append(a)
            remaining = remaining - a
        allocs.append(remaining)  # last step: the remainder (budget conservation)
        return ops.transpose(ops.stack(allocs, axis=0), (2, 0, 1))  # [B, N, P]

    def _constrain(self, raw, remaining, r_min, r_max, k):
        """Eq. 26-27 for step k: raw >= 0, remaining, rates broadcastable [., B] -> allocation a_k."""
        temp = soft_clip(raw + r_min, r_max, self.clip_sharpness)
        floor = remaining - float(self.n_steps - 1 - k) * r_max
        return ops.minimum(ops.maximum(ops.maximum(temp, floor), 0.0), remaining)

    def _call_paths(self, inputs, r_min, r_max, paths):
        """One path per row (the serving path): the same MLPs as `call`, each row's weights gathered once
        (1/P of the weights per row) -> [B, N]. Layout [B, 1, .], batched over rows."""
        n, p, h = self.n_steps, self.num_paths, self.hidden_dim
        nd, d = self.w_in.shape[0], self.w_in.shape[1]
        take = lambda w: ops.take(w, paths, axis=1)                     # [nd, P, ...] -> [nd, B, ...]
        w_in = ops.take(ops.reshape(self.w_in, (nd, d, p, h)), paths, axis=2)   # [nd, D, B, H]
        b_in, w_prev, w_out, b_out = take(self.b_in), take(self.w_prev), take(self.w_out), take(self.b_out)
        w_hidden, b_hidden = [take(w) for w in self.w_hidden], [take(b) for b in self.b_hidden]
        remaining = ops.ones_like(r_min)                                  # [1, B]
        allocs = []
        for k in range(n - 1):
            z = ops.einsum("bd,dbh->bh", inputs[:, k], w_in[k])[:, None, :] + b_in[k]   # [B, 1, H]
            if k > 0:
                prev = ops.expand_dims(ops.transpose(ops.concatenate(allocs, axis=0)), 1)  # [B, 1, k]
                z = z + ops.matmul(prev, w_prev[k][:, :k, :])
            x = self.act(z)
            for w, b in zip(w_hidden, b_hidden):
                x = self.act(ops.matmul(x, w[k]) + b[k])
            raw = ops.reshape(ops.softplus(ops.matmul(x, w_out[k]) + b_out[k]), (1, -1))   # [1, B]
            a = self._constrain(raw, remaining, r_min, r_max, k)
            allocs.append(a)
            remaining = remaining - a
        allocs.append(remaining)
        return ops.transpose(ops.concatenate(allocs, axis=0))  # [B, N]

    def compute_output_shape(self, inputs_shape, *args):
        return (inputs_shape[0], self.n_steps, self.num_paths)

    def get_config(self):
        return {**super().get_config(), "n_steps": self.n_steps, "num_paths": self.num_paths,
                "hidden_dim": self.hidden_dim, "num_layers": self.num_layers, "activation": self.activation,
                "clip_sharpness": self.clip_sharpness}
