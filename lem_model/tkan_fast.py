"""A faster evaluation of the paper's TKAN layer (`tkan.TKAN`, return_sequences) on that layer's own weights.

`tkan_sequence(layer, x)` computes exactly the function of `layer(x)` for a built `tkan.TKAN` layer with one
KAN sub-layer (the package default) and no dropout in use, x [B, T, d] -> h [B, T, U]; tests check it against
the layer itself (values and gradients, both of tkan's cell variants). It exists because the layer's time
loop is bound by per-step op overhead on CPU, mostly the KAN's B-spline basis built on [B, in, knots] tensors
with broadcasting and slicing. Here, per step:
  - the input/recurrent matmuls of the gates are one matmul of [x_t, h_{t-1}], likewise the KAN's input;
  - the B-spline bases (Cox-de Boor recursion) live in a flat [B, in * (knots - 1)] layout: features repeated
    by a 0/1 matmul, knot constants precomputed once per call as row vectors (zero where a basis does not exist
    at that order, so groups never mix), and the unused trailing bases meet zero rows of the spline weight;
  - the KAN's base and spline matmuls are one matmul.
Weights are read from the layer (nothing new is created), so saved models are unchanged. TensorFlow runs a
`tf.while_loop`; other backends `keras.ops.scan`.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


def fast_tkan_supported(layer, training=None) -> bool:
    """True when `tkan_sequence(layer, x)` equals `layer(x, training=training)`."""
    cell = getattr(layer, "cell", None)
    subs = getattr(cell, "tkan_sub_layers", None)
    if cell is None or subs is None or len(subs) != 1 or not hasattr(subs[0], "b_splines"):
        return False
    kan = subs[0]
    if len(kan.grid.shape) != 3 or kan.dropout_rate:
        return False
    if layer.go_backwards or layer.stateful or layer.return_state or not layer.return_sequences:
        return False
    return not (training and (cell.dropout > 0 or cell.recurrent_dropout > 0))


def _flat_kan(kan):
    """The KAN sub-layer as a function [B, in] -> [B, out] with flat-layout B-splines (see module doc)."""
    n_in, order = kan.in_features, kan.spline_order
    grid = kan.grid[0]                                                     # [in, knots]
    m0 = int(grid.shape[-1]) - 1                                           # order-0 bases per feature
    n_final = m0 - order                                                   # = grid_size + spline_order
    repeat = np.kron(np.eye(n_in, dtype="float32"), np.ones((1, m0), "float32"))  # [in, in*m0]
    lo0, hi0 = ops.reshape(grid[:, :-1], (-1,)), ops.reshape(grid[:, 1:], (-1,))

    def flat(t):  # [in, m] -> [in*m0], zero-padded per feature
        return ops.reshape(ops.pad(t, [[0, 0], [0, m0 - int(t.shape[1])]]), (-1,))

    knots = []
    for k in range(1, order + 1):
        exists = np.tile((np.arange(m0) < m0 - k).astype("float32"), n_in)  # basis j exists at order k
        knots.append((flat(grid[:, :-(k + 1)]), flat(1.0 / (grid[:, k:-1] - grid[:, :-(k + 1)])) * exists,
                      flat(grid[:, k + 1:]), flat(1.0 / (grid[:, k + 1:] - grid[:, 1:-k])) * exists))
    keep = np.zeros((n_in * m0, n_in * n_final), "float32")               # flat basis -> spline_weight row
    for i in range(n_in):
        keep[i * m0 + np.arange(n_final), i * n_final + np.arange(n_final)] = 1.0
    weight = ops.concatenate([kan.base_weight, ops.matmul(keep, kan.spline_weight)], 0)
    base_act = getattr(ops, kan.base_activation_name)

    def apply(a):
        if kan.use_layernorm:
            a = kan.layer_norm(a)
        xr = ops.matmul(a, repeat)                                         # [B, in*m0]
        bases = ops.cast(ops.logical_and(xr >= lo0, xr < hi0), a.dtype)
        for lo, inv_left, hi, inv_right in knots:
            nxt = ops.pad(bases[:, 1:], [[0, 0], [0, 1]])
            bases = (xr - lo) * inv_left * bases + (hi - xr) * inv_right * nxt
        out = ops.matmul(ops.concatenate([base_act(a), bases], -1), weight)
        return out + kan.base_bias if kan.use_bias else out

    return apply


def tkan_sequence(layer, x, loop: str | None = None):
    """h [B, T, U] = layer(x) for a `tkan.TKAN` layer (check `fast_tkan_supported` first); x [B, T, d].

    loop: "while" (TensorFlow `tf.while_loop`, the default there) or "scan" (`keras.ops.scan`, elsewhere).
    """
    cell = layer.cell
    u, d = cell.units, cell.sub_kan_output_dim
    squash_candidate = cell.backend != "tensorflow"  # tkan's non-TensorFlow cell adds tanh on the candidate
    kan = _flat_kan(cell.tkan_sub_layers[0])
    w_gates = ops.concatenate([cell.kernel, cell.recurrent_kernel], 0)    # [d + U, 3U]
    w_sub = ops.concatenate([cell.sub_tkan_recurrent_kernel_inputs[0], cell.sub_tkan_recurrent_kernel_states[0]], 0)
    mix_out, mix_state = cell.sub_tkan_kernel[0][:d], cell.sub_tkan_kernel[0][d:]
    act, ract = cell.activation, cell.recurrent_activation

    def step(h, c, s, x_t):
        gates = ops.matmul(ops.concatenate([x_t, h], -1), w_gates)
        gates = ract(gates + cell.bias if cell.use_bias else gates)
        g_in, g_forget, cand = ops.split(gates, 3, axis=-1)
        c = g_forget * c + g_in * (act(cand) if squash_candidate else cand)
        sub_out = kan(ops.matmul(ops.concatenate([x_t, s], -1), w_sub))
        s = mix_out * sub_out + s * mix_state
        out_gate = ract(ops.matmul(sub_out, cell.aggregated_weight) + cell.aggregated_bias)
        return out_gate * act(c), c, s

    b = ops.shape(x)[0]
    h0, s0 = ops.zeros((b, u), x.dtype), ops.zeros((b, d), x.dtype)
    xt = ops.transpose(x, (1, 0, 2))                                       # time-major [T, B, d]
    if (loop or ("while" if keras.backend.backend() == "tensorflow" else "scan")) == "while":
        import tensorflow as tf
        n = int(x.shape[1])
        xs = tf.TensorArray(x.dtype, size=n, element_shape=xt.shape[1:]).unstack(xt)
        ys = tf.TensorArray(x.dtype, size=n, element_shape=tf.TensorShape([None, u]))

        def body(t, h, c, s, ys):
            h, c, s = step(h, c, s, xs.read(t))
            return t + 1, h, c, s, ys.write(t, h)

        ys = tf.while_loop(lambda t, *_: t < n, body, (0, h0, h0, s0, ys), maximum_iterations=n,
                           swap_memory=True, parallel_iterations=32)[-1]
        hs = ys.stack()
    else:
        def scan_step(carry, x_t):
            new = step(*carry, x_t)
            return new, new  # ys like the carry: Keras' TensorFlow scan requires it
        hs = ops.scan(scan_step, (h0, h0, s0), xt)[1][0]
    return ops.transpose(hs, (1, 0, 2))
