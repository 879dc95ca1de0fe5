"""The LEM's fast form (`LargeExecutionModel(implementation="fast")`): the functions of the reference layers in
`lem_model.layers`, on those layers' own weights, with fewer and larger operations. Backend-agnostic
(`keras.ops`); where the model runs on TensorFlow, `lem_model.fast_tf` adds its kernels (a while-loop TKAN with a
hand-written gradient, adjoint matmuls, XLA for small inference batches, concurrent batch chunks in training).

What differs from the reference form, and why (measured on 2 CPU cores at the paper config; benchmarks/HISTORY.md):
  - `dense`: inputs of rank > 2 are flattened to rows for ONE 2-D matmul (a broadcast batched matmul's kernel
    gradient is one small product per batch row and a sum; matmul + bias + activation on rows is one fused
    oneDNN kernel);
  - `glu`: two matmuls on the kernel's halves, not one and a split (the split and its gradient copy the
    activation once more);
  - `layer_norm`: centring first, fewer full-size broadcasts than Keras' (fwd+bwd ~15-20 % faster);
  - `embed_and_select`: the embedding and the VSN without materialising the [B, T, F, E] embeddings (each
    feature's embedding enters the GRNs only through linear maps, so each such term is rank-1);
  - `allocate`: the allocator in a feature-major [P, Hf, B] layout, per-step weights unstacked once;
    `allocate_paths`: one path per row with its weights gathered (the serving path of one live order);
  - the TKAN through `lem_model.tkan_fast` (flat B-spline bases, one matmul per gate group and step).
"""
from __future__ import annotations

import keras
from keras import ops

from lem_model import layout
from lem_model.layers import causal_mask, constrain_step


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


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


def matmul_t(a, b):
    """a^T @ b over the last two axes: a [..., k, m], b [..., k, n] -> [..., m, n] (TensorFlow: by the matmul's
    adjoint flag, `lem_model.fast_tf.matmul_t`)."""
    if _on_tensorflow():
        from lem_model.fast_tf import matmul_t as tf_matmul_t
        return tf_matmul_t(a, b)
    return ops.matmul(ops.swapaxes(a, -1, -2), b)


def glu(x, kernel, bias, dense_fn=dense):
    """Gated linear unit sigmoid(x Wg + bg) * (x Wv + bv) from a kernel [..., i, 2o] and bias [..., 2o] laid out
    [gate | value] -> [..., o], as two matmuls on the kernel's halves."""
    o = kernel.shape[-1] // 2
    return dense_fn(x, kernel[..., :o], bias[..., :o], ops.sigmoid) * dense_fn(x, kernel[..., o:], bias[..., o:])


def layer_norm(x, norm):
    """`norm(x)` for a built `keras.layers.LayerNormalization` over the last axis (center and scale), on its own
    gamma/beta, computed in float32 like Keras' (mixed precision): (x - mean) / sqrt(var + eps) * gamma + beta."""
    dtype = x.dtype
    x = ops.cast(x, "float32")
    centred = x - ops.mean(x, axis=-1, keepdims=True)
    scale = ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + norm.epsilon)
    out = centred * scale * ops.cast(norm.gamma, "float32") + ops.cast(norm.beta, "float32")
    return ops.cast(out, dtype)


# --- the reference layers' functions --------------------------------------------------------------------------

def _grn_dense(grn, x, w, b=None, activation=None):
    if grn.groups is None:
        return dense(x, w, b, activation)
    y = ops.matmul(x, w)  # grouped: [G, n, i] @ [G, i, o] + [G, 1, o]
    y = y if b is None else y + b
    return y if activation is None else activation(y)


def grn_from_first_layer(grn, eta2, skip, training=None):
    """A `GatedResidualNetwork` after its first layer: eta2 = ELU(x W2 + b2) and skip = skip(x) -> its output.
    For callers that get x W2 and skip(x) more cheaply than from x itself (the VSN's rank-1 embeddings)."""
    eta1 = _grn_dense(grn, eta2, grn.w1, grn.b1)
    if grn.drop is not None:
        eta1 = grn.drop(eta1, training=training)
    return layer_norm(skip + glu(eta1, grn.w45, grn.b45, lambda *a: _grn_dense(grn, *a)), grn.norm)


def grn(layer, x, training=None):
    """`layer(x, training)` for a `GatedResidualNetwork`."""
    skip = x if layer.w_skip is None else _grn_dense(layer, x, layer.w_skip)
    return grn_from_first_layer(layer, _grn_dense(layer, x, layer.w2, layer.b2, ops.elu), skip, training)


def gate_add_norm(layer, x, skip, training=None):
    """`layer(x, skip, training)` for a `GateAddNorm`."""
    if layer.drop is not None:
        x = layer.drop(x, training=training)
    return layer_norm(skip + glu(x, layer.glu.kernel, layer.glu.bias), layer.norm)


def embed_and_select(vsn, embedding, x, training=None):
    """`vsn(embedding(x), training)` for x [B, T, F] -> [B, T, U], without materialising the [B, T, F, E]
    embeddings: feature f's embedding x_f w_f + b_f enters the GRNs only through linear maps M (first layers,
    skips), so each such term is rank-1, x_f (w_f M) + b_f M, from a few [F, .] weight products."""
    f, e, t = vsn.num_vars, embedding.embedding_dim, x.shape[1]
    g, vg = vsn.weight_grn, vsn.var_grn
    if g.w_skip is None:  # E = 1: no linear skip to fold (never at LEM sizes)
        return vsn(embedding(x), training=training)
    w, b = embedding.kernel, embedding.bias                                  # [F, E] each
    rows = ops.reshape(x, (-1, f))                                           # [BT, F]

    def flat_affine(m, bias=0.0):  # flattened embeddings [BT, F*E] @ m [F*E, o] + bias -> [BT, o]
        per_feature = ops.sum(ops.expand_dims(w, -1) * ops.reshape(m, (f, e, -1)), axis=1)   # [F, o]
        return ops.matmul(rows, per_feature) + (ops.matmul(ops.reshape(b, (1, f * e)), m) + bias)

    weights = grn_from_first_layer(g, ops.elu(flat_affine(g.w2, g.b2)), flat_affine(g.w_skip), training)
    x_t = ops.expand_dims(ops.transpose(rows), -1)                           # [F, BT, 1]
    w3, b3 = ops.expand_dims(w, 1), ops.expand_dims(b, 1)                    # [F, 1, E]

    # x_t times a row [F, 1, o] as a K=1 batched matmul rather than a broadcast multiply: its gradients are
    # then batched matmuls too (d x_t, d row), not full-size [F, BT, o] products reduced afterwards.
    def grouped_affine(m, bias=0.0):  # per-feature embeddings [F, BT, E] @ m [F, E, o] + bias -> [F, BT, o]
        return ops.matmul(x_t, ops.matmul(w3, m)) + (ops.matmul(b3, m) + bias)

    skip = ops.matmul(x_t, w3) + b3 if vg.w_skip is None else grouped_affine(vg.w_skip)
    xi = grn_from_first_layer(vg, ops.elu(grouped_affine(vg.w2, vg.b2)), skip, training)   # [F, BT, U]
    v = ops.softmax(weights, axis=-1)                                        # [BT, F]
    out = ops.sum(ops.expand_dims(ops.transpose(v), -1) * xi, axis=0)       # [BT, U]
    return ops.reshape(out, (-1, t, vsn.units))


def attention(layer, query, memory):
    """`layer(query, memory)` for a `CausalAttention`, with 2-D products."""
    q_len, t_len, d = query.shape[1], memory.shape[1], memory.shape[2]
    h, k = layer.num_heads, layer.key_dim
    q = ops.reshape(dense(query, ops.reshape(layer.wq, (d, h * k))), (-1, q_len, h, k))
    # keys and values from their own kernels (slicing the [B, T, 2, h, k] product instead would make each
    # slice's gradient a zero-filled tensor of the full product)
    keys = dense(memory, ops.reshape(layer.wkv[:, 0], (d, h * k)))
    values = dense(memory, ops.reshape(layer.wkv[:, 1], (d, h * k)))
    q = ops.transpose(q, (0, 2, 1, 3)) * (1.0 / float(k) ** 0.5)            # [B, h, Q, k]
    keys = ops.transpose(ops.reshape(keys, (-1, t_len, h, k)), (0, 2, 3, 1))  # [B, h, k, T]
    values = ops.transpose(ops.reshape(values, (-1, t_len, h, k)), (0, 2, 1, 3))  # [B, h, T, k]
    scores = ops.matmul(q, keys)                                              # [B, h, Q, T]
    probs = ops.softmax(ops.where(ops.convert_to_tensor(causal_mask(q_len, t_len)), scores, -1e9), axis=-1)
    ctx = ops.reshape(ops.transpose(ops.matmul(probs, values), (0, 2, 1, 3)), (-1, q_len, h * k))
    return dense(ctx, ops.reshape(layer.wo, (h * k, d)), layer.bo)


def allocate(layer, inputs, min_rate, max_rate):
    """`layer(inputs, min_rate, max_rate)` for a `StepwiseFusedAllocator`: [B, N, D] -> [B, N, P].

    Feature-major layout: activations [P, Hf, B] (batch innermost). The first layer's [P*Hf, B] product is then
    already [P, Hf, B] (no per-step transpose of the activation and of its gradient), and the per-path products
    are W^T @ x with the batch as their wide dimension. Per-step weights are unstacked once (views, no copy):
    slicing a stacked weight inside the loop would make every step's gradient a zero tensor of the full stack
    (StridedSliceGrad), summed over steps. (The variable is read into a tensor first: JAX's traced unstack does
    not take a Keras variable.)"""
    n, p, h = layer.n_steps, layer.num_paths, layer.hidden_dim
    nd = layer.w_in.shape[0]
    r_min = ops.reshape(min_rate, (1, -1))  # [1, B], broadcast over paths
    r_max = ops.reshape(max_rate, (1, -1))
    per_step = lambda w: ops.unstack(ops.convert_to_tensor(w), axis=0)
    w_in = per_step(layer.w_in)                                             # nd x [D, P*Hf]
    w_prev, w_out = per_step(layer.w_prev), per_step(layer.w_out)
    w_hidden = [per_step(w) for w in layer.w_hidden]                        # nd x [P, Hf, Hf]
    column = lambda b: ops.reshape(b, (nd, p, -1, 1))                      # [nd, P, 1, o] -> [nd, P, o, 1]
    b_in, b_out = per_step(column(layer.b_in)), per_step(layer.b_out)
    b_hidden = [per_step(column(b)) for b in layer.b_hidden]
    steps = ops.unstack(ops.transpose(inputs, (1, 2, 0)), axis=0)           # N x [D, B]
    remaining = ops.ones_like(r_min) + ops.zeros((p, 1), dtype=r_min.dtype)  # [P, B]
    allocs = []
    for k in range(n - 1):
        # first-layer term from step k's inputs, all paths in one 2-D matmul: [D, P*Hf]^T @ [D, B]
        z = ops.reshape(matmul_t(w_in[k], steps[k]), (p, h, -1)) + b_in[k]  # [P, Hf, B]
        if k > 0:
            z = z + matmul_t(w_prev[k][:, :k], ops.stack(allocs, axis=1))   # [P, Hf, B]
        x = layer.act(z)
        for w, b in zip(w_hidden, b_hidden):
            x = layer.act(matmul_t(w[k], x) + b[k])
        raw = layer.step_rate(matmul_t(w_out[k], x), b_out[k])[:, 0]        # [P, B]
        a = constrain_step(raw, remaining, r_min, r_max, k, n, layer.clip_sharpness)
        allocs.append(a)
        remaining = remaining - a
    allocs.append(remaining)
    return ops.transpose(ops.stack(allocs, axis=0), (2, 0, 1))  # [B, N, P]


def allocate_paths(layer, inputs, min_rate, max_rate, paths):
    """`layer(inputs, min_rate, max_rate, paths=paths)`: one path per row (the serving path of live orders), each
    row's weights gathered once (~1/P of the allocator's weights per row) -> [B, N]. Layout [B, 1, .], batched
    over rows; for large batches `allocate` and indexing are cheaper."""
    n, p, h = layer.n_steps, layer.num_paths, layer.hidden_dim
    nd, d = layer.w_in.shape[0], layer.w_in.shape[1]
    paths = ops.cast(ops.reshape(paths, (-1,)), "int32")
    r_min, r_max = ops.reshape(min_rate, (1, -1)), ops.reshape(max_rate, (1, -1))   # [1, B]
    take = lambda w: ops.take(w, paths, axis=1)                     # [nd, P, ...] -> [nd, B, ...]
    w_in = ops.take(ops.reshape(layer.w_in, (nd, d, p, h)), paths, axis=2)   # [nd, D, B, H]
    b_in, w_prev, w_out, b_out = take(layer.b_in), take(layer.w_prev), take(layer.w_out), take(layer.b_out)
    w_hidden, b_hidden = [take(w) for w in layer.w_hidden], [take(b) for b in layer.b_hidden]
    remaining = ops.ones_like(r_min)                                  # [1, B]
    allocs = []
    for k in range(n - 1):
        z = ops.einsum("bd,dbh->bh", inputs[:, k], w_in[k])[:, None, :] + b_in[k]   # [B, 1, H]
        if k > 0:
            prev = ops.expand_dims(ops.transpose(ops.concatenate(allocs, axis=0)), 1)  # [B, 1, k]
            z = z + ops.matmul(prev, w_prev[k][:, :k, :])
        x = layer.act(z)
        for w, b in zip(w_hidden, b_hidden):
            x = layer.act(ops.matmul(x, w[k]) + b[k])
        raw = ops.reshape(layer.step_rate(ops.matmul(x, w_out[k]), b_out[k]), (1, -1))  # [1, B]
        a = constrain_step(raw, remaining, r_min, r_max, k, n, layer.clip_sharpness)
        allocs.append(a)
        remaining = remaining - a
    allocs.append(remaining)
    return ops.transpose(ops.concatenate(allocs, axis=0))  # [B, N]


# --- the model ------------------------------------------------------------------------------------------------

def supported(model, training=None) -> bool:
    """True when the fast form computes `model`'s reference function (the TKAN's fast loop cannot apply dropout
    while training; Keras' LSTM/GRU run as themselves in both forms)."""
    if model.recurrent != "tkan":
        return True
    from lem_model.tkan_fast import fast_tkan_supported
    return fast_tkan_supported(model.recurrent_layer, training)


def recurrent(model, v, training=None, tkan_backward: str = "hand_written"):
    """The model's recurrent block on v [B, T, E] -> [B, T, H]; TKAN through `lem_model.tkan_fast` (the paper's
    cell on every backend). tkan_backward (TensorFlow, training): "hand_written" (the while loop's own backward)
    or "autodiff" (TensorFlow differentiates the loop: same gradients, slower; benchmarks/flops.py counts FLOPs
    on it)."""
    if model.recurrent != "tkan":
        return model.recurrent_layer(v, training=training)
    from lem_model.tkan_fast import tkan_sequence
    with keras.name_scope(model.recurrent_layer.name):  # ops named like the layer's own
        return tkan_sequence(model.recurrent_layer, v, squash_candidate=False,
                             stash=bool(training) and tkan_backward == "hand_written")


def context(model, x, training=None, tkan_backward: str = "hand_written"):
    """`model`'s context block (embedding .. context GRN) on bars x [B, L+N-1, F] -> [B, N, H]."""
    v = embed_and_select(model.vsn, model.embedding, x, training)            # [B, T, E]
    r = recurrent(model, v, training, tkan_backward)                         # [B, T, H]
    s = gate_add_norm(model.recurrent_gate, r, dense(v, model.skip_projection.kernel), training)
    s = grn(model.recurrent_grn, s, training)                                # [B, T, H]
    q = s[:, model.lookback - 1:]                                            # step k <- position L+k-1
    c = gate_add_norm(model.attention_gate, attention(model.attention, q, s), q, training)
    return grn(model.context_grn, c, training)                               # [B, N, H]


def call(model, inputs, training=None, tkan_backward: str = "hand_written"):
    """`model(inputs, training)` in the fast form -> allocations [B, N, N+1, 4, 2] (see `allocations`)."""
    x, min_rate, max_rate = model._clean_inputs(inputs)
    alloc = allocations(model, x, min_rate, max_rate, training, tkan_backward)
    n = model.n_ahead
    return ops.reshape(alloc, (-1, n, n + 1, layout.NUM_PATHS, layout.NUM_TARGETS))


def allocations(model, x, min_rate, max_rate, training=None, tkan_backward: str = "hand_written"):
    """`model`'s allocations [B, N, P] from its cleaned inputs (`LargeExecutionModel._clean_inputs`). On
    TensorFlow: the context block XLA-compiled for small batches in traced inference, and in two concurrent
    batch chunks in traced CPU training (`lem_model.fast_tf`)."""
    run = lambda bars, train: context(model, bars, train, tkan_backward)
    c = None
    if _on_tensorflow():
        from lem_model import fast_tf
        if fast_tf.xla_inference(training, model.xla_max_batch):
            c = fast_tf.small_batch_xla(lambda bars: run(bars, False), model.xla_max_batch, x)
        elif training and fast_tf.context_chunks(x) > 1:
            c = fast_tf.in_chunks(lambda part: run(part, training), x, fast_tf.context_chunks(x))
    if c is None:
        c = run(x, training)
    return allocate(model.allocator, model.step_inputs(c, x, min_rate, max_rate), min_rate, max_rate)


def scenario_allocations(model, x, min_rate, max_rate, scenario, training=False):
    """`model`'s allocations [B, N] of one scenario per row (`layout.scenario_index`), running only that
    scenario's fused MLPs; XLA-compiled end to end for small batches in traced TensorFlow inference."""
    def run(x, min_rate, max_rate, scenario):
        c = context(model, x, training)
        return allocate_paths(model.allocator, model.step_inputs(c, x, min_rate, max_rate), min_rate, max_rate,
                              scenario)

    if _on_tensorflow():
        from lem_model import fast_tf
        if fast_tf.xla_inference(training, model.xla_max_batch):
            return fast_tf.small_batch_xla(run, model.xla_max_batch, x, min_rate, max_rate, scenario)
    return run(x, min_rate, max_rate, scenario)
