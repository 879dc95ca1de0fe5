"""Kernels in `keras.ops` (every backend) of the blocks in `lem_model.layers`: each computes its block's function
from the block's inputs and weights with fewer, larger operations. Measured on 2 CPU cores at the paper config
(docs/experiments.md):
  - `dense`: inputs of rank > 2 flattened to rows for ONE 2-D matmul (a broadcast batched matmul's kernel gradient
    is one small product per batch row and a sum; matmul + bias + activation on rows is one fused oneDNN kernel);
  - `glu`: two matmuls on the kernel's halves, not one and a split (the split and its gradient copy the activation
    once more);
  - `layer_norm`: centring first, fewer full-size broadcasts than Keras' (fwd+bwd ~15-20 % faster);
  - "embed_and_select": the embedding and the VSN without materialising the [B, T, F, E] embeddings (each
    feature's embedding enters the GRNs only through linear maps, so each such term is rank-1);
  - "allocate": the allocator in a feature-major [P, Hf, B] layout with per-step weights unstacked once, or, with
    `paths`, one path per row with its weights gathered (the serving path of one live order).
Kernels with dropout in use in training decline (`NotImplementedError`): the block computes its definition.
"""
from __future__ import annotations

from keras import ops

from lem_model.kernels import register
from lem_model.primitives import causal_mask, constrain_step, step_rate


def dense(x, kernel, bias=None, activation=None):
    """activation(x [..., i] @ kernel [i, o] + bias [o]) -> [..., o], as ONE 2-D matmul: inputs of rank > 2 are
    flattened to rows first and reshaped back last."""
    lead = ops.shape(x)[:-1] if len(x.shape) > 2 else None
    y = ops.matmul(x if lead is None else ops.reshape(x, (-1, x.shape[-1])), kernel)
    if bias is not None:
        y = y + bias
    if activation is not None:
        y = activation(y)
    return y if lead is None else ops.reshape(y, (*lead, kernel.shape[-1]))


def grouped_dense(x, kernel, bias=None, activation=None):
    """Per-group dense maps: x [G, n, i] @ kernel [G, i, o] + bias [G, 1, o] -> [G, n, o]."""
    y = ops.matmul(x, kernel)
    y = y if bias is None else y + bias
    return y if activation is None else activation(y)


def glu(x, kernel, bias, dense_fn=dense):
    """Gated linear unit sigmoid(x Wg + bg) * (x Wv + bv) from a kernel [..., i, 2o] and bias [..., 2o] laid out
    [gate | value] -> [..., o], as two matmuls on the kernel's halves."""
    o = kernel.shape[-1] // 2
    return dense_fn(x, kernel[..., :o], bias[..., :o], ops.sigmoid) * dense_fn(x, kernel[..., o:], bias[..., o:])


def layer_norm(x, gamma, beta, epsilon):
    """Keras' LayerNormalization over the last axis (center and scale) on its gamma/beta, computed in float32
    like Keras' (mixed precision): (x - mean) / sqrt(var + eps) * gamma + beta."""
    dtype = x.dtype
    x = ops.cast(x, "float32")
    centred = x - ops.mean(x, axis=-1, keepdims=True)
    scale = ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + epsilon)
    out = centred * scale * ops.cast(gamma, "float32") + ops.cast(beta, "float32")
    return ops.cast(out, dtype)


def _decline_dropout(dropout_in_training):
    if dropout_in_training:
        raise NotImplementedError("dropout in training")


def _grn_after_first_layer(w, eta2, skip, grouped):
    """A GRN (weights `w`, `lem_model.layers.GatedResidualNetwork.kernel_weights`) from eta2 = ELU(x W2 + b2)
    and skip(x) -> its output."""
    dense_fn = grouped_dense if grouped else dense
    eta1 = dense_fn(eta2, w["w1"], w["b1"])
    return layer_norm(skip + glu(eta1, w["w_glu"], w["b_glu"], dense_fn), w["gamma"], w["beta"], w["epsilon"])


@register("grn")
def grn(x, w, grouped, dropout_in_training=False):
    """`GatedResidualNetwork`: x [..., d_in] (grouped: [G, n, d_in]) -> [..., output_dim]."""
    _decline_dropout(dropout_in_training)
    dense_fn = grouped_dense if grouped else dense
    skip = x if w["w_skip"] is None else dense_fn(x, w["w_skip"])
    return _grn_after_first_layer(w, dense_fn(x, w["w2"], w["b2"], ops.elu), skip, grouped)


@register("gate_add_norm")
def gate_add_norm(x, skip, glu_kernel, glu_bias, gamma, beta, epsilon, dropout_in_training=False):
    """`GateAddNorm`: LayerNorm(skip + GLU(x))."""
    _decline_dropout(dropout_in_training)
    return layer_norm(skip + glu(x, glu_kernel, glu_bias), gamma, beta, epsilon)


@register("embed_and_select")
def embed_and_select(x, embedding_kernel, embedding_bias, weight_grn, var_grn, dropout_in_training=False):
    """`FeatureEmbedding` then `VariableSelectionNetwork`: x [B, T, F] -> [B, T, U], without materialising the
    [B, T, F, E] embeddings: feature f's embedding x_f w_f + b_f enters the GRNs only through linear maps M (first
    layers, skips), so each such term is rank-1, x_f (w_f M) + b_f M, from a few [F, .] weight products."""
    _decline_dropout(dropout_in_training)
    if weight_grn["w_skip"] is None:  # E = 1: no linear skip to fold (never at LEM sizes)
        raise NotImplementedError("an embedding of size 1")
    w, b = embedding_kernel, embedding_bias                                  # [F, E] each
    f, e, t, units = w.shape[0], w.shape[1], x.shape[1], var_grn["w1"].shape[-1]
    rows = ops.reshape(x, (-1, f))                                           # [BT, F]

    def flat_affine(m, bias=0.0):  # flattened embeddings [BT, F*E] @ m [F*E, o] + bias -> [BT, o]
        per_feature = ops.sum(ops.expand_dims(w, -1) * ops.reshape(m, (f, e, -1)), axis=1)   # [F, o]
        return ops.matmul(rows, per_feature) + (ops.matmul(ops.reshape(b, (1, f * e)), m) + bias)

    g = weight_grn
    weights = _grn_after_first_layer(g, ops.elu(flat_affine(g["w2"], g["b2"])), flat_affine(g["w_skip"]), False)
    x_t = ops.expand_dims(ops.transpose(rows), -1)                           # [F, BT, 1]
    w3, b3 = ops.expand_dims(w, 1), ops.expand_dims(b, 1)                    # [F, 1, E]

    # x_t times a row [F, 1, o] as a K=1 batched matmul rather than a broadcast multiply: its gradients are
    # then batched matmuls too (d x_t, d row), not full-size [F, BT, o] products reduced afterwards.
    def grouped_affine(m, bias=0.0):  # per-feature embeddings [F, BT, E] @ m [F, E, o] + bias -> [F, BT, o]
        return ops.matmul(x_t, ops.matmul(w3, m)) + (ops.matmul(b3, m) + bias)

    vg = var_grn
    skip = ops.matmul(x_t, w3) + b3 if vg["w_skip"] is None else grouped_affine(vg["w_skip"])
    xi = _grn_after_first_layer(vg, ops.elu(grouped_affine(vg["w2"], vg["b2"])), skip, True)   # [F, BT, U]
    v = ops.softmax(weights, axis=-1)                                        # [BT, F]
    out = ops.sum(ops.expand_dims(ops.transpose(v), -1) * xi, axis=0)       # [BT, U]
    return ops.reshape(out, (-1, t, units))


@register("attention")
def attention(query, memory, wq, wkv, wo, bo):
    """`CausalAttention` with 2-D products."""
    q_len, t_len, d = query.shape[1], memory.shape[1], memory.shape[2]
    h, k = wq.shape[1], wq.shape[2]
    q = ops.reshape(dense(query, ops.reshape(wq, (d, h * k))), (-1, q_len, h, k))
    # keys and values from their own kernels (slicing the [B, T, 2, h, k] product instead would make each
    # slice's gradient a zero-filled tensor of the full product)
    keys = dense(memory, ops.reshape(wkv[:, 0], (d, h * k)))
    values = dense(memory, ops.reshape(wkv[:, 1], (d, h * k)))
    q = ops.transpose(q, (0, 2, 1, 3)) * (1.0 / float(k) ** 0.5)            # [B, h, Q, k]
    keys = ops.transpose(ops.reshape(keys, (-1, t_len, h, k)), (0, 2, 3, 1))  # [B, h, k, T]
    values = ops.transpose(ops.reshape(values, (-1, t_len, h, k)), (0, 2, 1, 3))  # [B, h, T, k]
    scores = ops.matmul(q, keys)                                              # [B, h, Q, T]
    probs = ops.softmax(ops.where(ops.convert_to_tensor(causal_mask(q_len, t_len)), scores, -1e9), axis=-1)
    ctx = ops.reshape(ops.transpose(ops.matmul(probs, values), (0, 2, 1, 3)), (-1, q_len, h * k))
    return dense(ctx, ops.reshape(wo, (h * k, d)), bo)


def matmul_t(a, b):
    """a^T @ b over the last two axes: a [..., k, m], b [..., k, n] -> [..., m, n]."""
    return ops.matmul(ops.swapaxes(a, -1, -2), b)


@register("allocate")
def allocate(inputs, min_rate, max_rate, w, activation, clip_sharpness, tilt_bound, paths=None, matmul_t=matmul_t):
    """`StepwiseFusedAllocator`: inputs [B, N, D], min_rate/max_rate [B, 1] -> allocations [B, N, P]; with `paths`
    (int [B]) that path's allocations of each row -> [B, N] (`allocate_paths`). w: the layer's weights by name.

    Feature-major layout: activations [P, Hf, B] (batch innermost). The first layer's [P*Hf, B] product is then
    already [P, Hf, B] (no per-step transpose of the activation and of its gradient), and the per-path products
    are W^T @ x (`matmul_t`) with the batch as their wide dimension. Per-step weights are unstacked once (views,
    no copy): slicing a stacked weight inside the loop would make every step's gradient a zero tensor of the full
    stack (StridedSliceGrad), summed over steps. (The variable is read into a tensor first: JAX's traced unstack
    does not take a Keras variable.)"""
    if paths is not None:
        return allocate_paths(inputs, min_rate, max_rate, w, activation, clip_sharpness, tilt_bound, paths)
    n = inputs.shape[1]
    nd, p, h = w["b_in"].shape[0], w["b_in"].shape[1], w["b_in"].shape[-1]
    r_min = ops.reshape(min_rate, (1, -1))  # [1, B], broadcast over paths
    r_max = ops.reshape(max_rate, (1, -1))
    per_step = lambda v: ops.unstack(ops.convert_to_tensor(v), axis=0)
    w_in = per_step(w["w_in"])                                              # nd x [D, P*Hf]
    w_prev, w_out = per_step(w["w_prev"]), per_step(w["w_out"])
    w_hidden = [per_step(v) for v in w["w_hidden"]]                         # nd x [P, Hf, Hf]
    column = lambda b: ops.reshape(b, (nd, p, -1, 1))                      # [nd, P, 1, o] -> [nd, P, o, 1]
    b_in, b_out = per_step(column(w["b_in"])), per_step(w["b_out"])
    b_hidden = [per_step(column(b)) for b in w["b_hidden"]]
    steps = ops.unstack(ops.transpose(inputs, (1, 2, 0)), axis=0)           # N x [D, B]
    remaining = ops.ones_like(r_min) + ops.zeros((p, 1), dtype=r_min.dtype)  # [P, B]
    allocs = []
    for k in range(n - 1):
        # first-layer term from step k's inputs, all paths in one 2-D matmul: [D, P*Hf]^T @ [D, B]
        z = ops.reshape(matmul_t(w_in[k], steps[k]), (p, h, -1)) + b_in[k]  # [P, Hf, B]
        if k > 0:
            z = z + matmul_t(w_prev[k][:, :k], ops.stack(allocs, axis=1))   # [P, Hf, B]
        x = activation(z)
        for wh, bh in zip(w_hidden, b_hidden):
            x = activation(matmul_t(wh[k], x) + bh[k])
        raw = step_rate(matmul_t(w_out[k], x), b_out[k], tilt_bound)[:, 0]  # [P, B]
        a = constrain_step(raw, remaining, r_min, r_max, k, n, clip_sharpness)
        allocs.append(a)
        remaining = remaining - a
    allocs.append(remaining)
    return ops.transpose(ops.stack(allocs, axis=0), (2, 0, 1))  # [B, N, P]


def allocate_paths(inputs, min_rate, max_rate, w, activation, clip_sharpness, tilt_bound, paths):
    """`allocate` of one path per row (the serving path of live orders), each row's weights gathered once (~1/P
    of the allocator's weights per row) -> [B, N]. Layout [B, 1, .], batched over rows; for large batches the
    full `allocate` and indexing are cheaper."""
    n, d = inputs.shape[1], inputs.shape[2]
    nd, p, h = w["b_in"].shape[0], w["b_in"].shape[1], w["b_in"].shape[-1]
    paths = ops.cast(ops.reshape(paths, (-1,)), "int32")
    r_min, r_max = ops.reshape(min_rate, (1, -1)), ops.reshape(max_rate, (1, -1))   # [1, B]
    take = lambda v: ops.take(v, paths, axis=1)                     # [nd, P, ...] -> [nd, B, ...]
    w_in = ops.take(ops.reshape(w["w_in"], (nd, d, p, h)), paths, axis=2)   # [nd, D, B, H]
    b_in, w_prev, w_out, b_out = take(w["b_in"]), take(w["w_prev"]), take(w["w_out"]), take(w["b_out"])
    w_hidden, b_hidden = [take(v) for v in w["w_hidden"]], [take(b) for b in w["b_hidden"]]
    remaining = ops.ones_like(r_min)                                  # [1, B]
    allocs = []
    for k in range(n - 1):
        z = ops.einsum("bd,dbh->bh", inputs[:, k], w_in[k])[:, None, :] + b_in[k]   # [B, 1, H]
        if k > 0:
            prev = ops.expand_dims(ops.transpose(ops.concatenate(allocs, axis=0)), 1)  # [B, 1, k]
            z = z + ops.matmul(prev, w_prev[k][:, :k, :])
        x = activation(z)
        for wh, bh in zip(w_hidden, b_hidden):
            x = activation(ops.matmul(x, wh[k]) + bh[k])
        raw = ops.reshape(step_rate(ops.matmul(x, w_out[k]), b_out[k], tilt_bound), (1, -1))  # [1, B]
        a = constrain_step(raw, remaining, r_min, r_max, k, n, clip_sharpness)
        allocs.append(a)
        remaining = remaining - a
    allocs.append(remaining)
    return ops.transpose(ops.concatenate(allocs, axis=0))  # [B, N]
