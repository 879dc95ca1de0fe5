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
Weights are read from the layer (nothing new is created), so saved models are unchanged.

TensorFlow (tkan's default tanh/sigmoid/relu activations) runs one `tf.while_loop`. When a gradient tape
records it (training), it is a `tf.custom_gradient` with a hand-written backward, because TensorFlow's own
while-loop gradient pushes/pops every intermediate per step and does per-step weight-gradient matmuls plus
accumulations. The forward (XLA-compiled) stashes per step, stacked to [T, B, width]: h, s (sub-KAN state),
the KAN output and features [relu(a), bases] (for weight gradients), and local derivatives taken while the
step's data are hot: gate multipliers m [B, 3U] (d gate pre-activations = [dc, dc, dc] * m), the forget gate, o * tanh'(c)
(into dc), tanh(c) * sigmoid'(output gate), and for the KAN input relu'(a), the B-spline derivatives (from the
last recursion level) and the layer norm's normalised input and 1/std. The backward is one reverse
`tf.while_loop` carrying dh, dc, ds (one [B, 3U] @ [3U, U] matmul and the small KAN ones per step) that writes
the gradients of the per-step pre-activations; each weight gradient is then one matmul or sum over all T * B
rows. Without a recording tape (inference, export) the loop runs bare. Otherwise: `keras.ops.scan`.
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


def _kan_constants(kan):
    """Constants of the flat-layout B-splines (see module doc), from the KAN's (non-trainable) grid."""
    n_in, order = kan.in_features, kan.spline_order
    grid = ops.convert_to_tensor(kan.grid)[0]                              # [in, knots]
    m0 = int(grid.shape[-1]) - 1                                           # order-0 bases per feature
    n_final = m0 - order                                                   # = grid_size + spline_order
    repeat = np.kron(np.eye(n_in, dtype="float32"), np.ones((1, m0), "float32"))  # [in, in*m0]

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
    lo0, hi0 = ops.reshape(grid[:, :-1], (-1,)), ops.reshape(grid[:, 1:], (-1,))
    return repeat, lo0, hi0, knots, keep


def _bases(a, repeat, lo0, hi0, knots, order=None):
    """Flat B-spline bases [N, in*m0] of a [N, in] (`_kan_constants`); with order (the spline order), also
    their derivatives d basis / d (its feature of a), from the last recursion level's inputs."""
    xr = ops.matmul(a, repeat)                                             # [N, in*m0]
    bases = ops.cast(ops.logical_and(xr >= lo0, xr < hi0), a.dtype)
    for lo, inv_left, hi, inv_right in knots:
        prev, nxt = bases, ops.pad(bases[:, 1:], [[0, 0], [0, 1]])
        bases = (xr - lo) * inv_left * bases + (hi - xr) * inv_right * nxt
    if order is None:
        return bases
    return bases, order * (inv_left * prev - inv_right * nxt)


def _kan_weight(kan, keep):
    """[in + in*m0, out]: base_weight over the spline_weight rows spread onto the flat basis layout."""
    return ops.concatenate([kan.base_weight, ops.matmul(keep, kan.spline_weight)], 0)


def _flat_kan(kan):
    """The KAN sub-layer as a function [B, in] -> [B, out] with flat-layout B-splines (see module doc)."""
    repeat, lo0, hi0, knots, keep = _kan_constants(kan)
    weight = _kan_weight(kan, keep)
    base_act = getattr(ops, kan.base_activation_name)

    def apply(a):
        if kan.use_layernorm:
            a = kan.layer_norm(a)
        bases = _bases(a, repeat, lo0, hi0, knots)
        out = ops.matmul(ops.concatenate([base_act(a), bases], -1), weight)
        return out + kan.base_bias if kan.use_bias else out

    return apply


def _while_supported(cell) -> bool:
    """`_while_sequence`'s hand-written gradient assumes tkan's default activations (tanh, sigmoid, relu)."""
    kan = cell.tkan_sub_layers[0]
    norm = kan.layer_norm
    return (cell.activation is keras.activations.tanh and cell.recurrent_activation is keras.activations.sigmoid
            and kan.base_activation_name == "relu" and norm is not None and norm.center and norm.scale
            and not norm.rms_scaling)


def _while_sequence(cell, x, squash_candidate, stash):
    """`tkan_sequence` on TensorFlow as a function of x and `_while_inputs(cell)`: one `tf.while_loop`; with
    stash, under a `tf.custom_gradient` whose backward is one reverse `tf.while_loop` plus one matmul per
    weight over all steps (see module doc)."""
    import tensorflow as tf
    kan = cell.tkan_sub_layers[0]
    repeat, lo0, hi0, knots, _ = _kan_constants(kan)
    n_t, d_in, u = int(x.shape[1]), int(x.shape[2]), cell.units
    n_s, n_q, n_f = cell.sub_kan_output_dim, kan.in_features, kan.in_features + repeat.shape[1]
    spread = np.concatenate([np.eye(n_q, dtype="float32"), repeat.T], 0)  # d [relu(a), bases] -> d a
    order, eps = float(kan.spline_order), kan.layer_norm.epsilon
    sigmoid_grad, tanh_grad = tf.raw_ops.SigmoidGrad, tf.raw_ops.TanhGrad  # (y, dy) -> dy * f'(x), y = f(x)
    stashed = dict(h=u, m=3 * u, g_forget=u, a_c=u, a_r=u, s=n_s, sub=n_s, feats=n_f, dfeats=n_f, xhat=n_q, rstd=1)

    def arrays(widths):
        return {k: tf.TensorArray(x.dtype, size=n_t, element_shape=tf.TensorShape([None, w]), clear_after_read=False)
                for k, w in widths.items()}

    def loop(body, carry):
        return tf.while_loop(lambda t, *_: t < n_t, body, (0,) + tuple(carry), maximum_iterations=n_t,
                             swap_memory=True, parallel_iterations=32)[1:]

    def rows(v):  # [T, B, k] -> [T*B, k]
        return tf.reshape(v, (-1, v.shape[-1]))

    def forward(x, w_gates, b_gates, w_sub, mix, w_agg, b_agg, gamma, beta, w_kan, b_kan):
        xt = tf.transpose(x, (1, 0, 2))                                   # [T, B, d]
        mix_out, mix_state = mix[:n_s], mix[n_s:]

        def body(t, h, c, s, tas):
            x_t = xt[t]
            g = tf.sigmoid(tf.matmul(tf.concat([x_t, h], -1), w_gates) + b_gates)
            g_in, g_forget, g_cand = tf.split(g, 3, axis=-1)
            cand = tf.tanh(g_cand) if squash_candidate else g_cand
            c_new = g_forget * c + g_in * cand
            q = tf.matmul(tf.concat([x_t, s], -1), w_sub)
            mean, var = ops.moments(q, axes=[-1], keepdims=True)          # layer norm as Keras computes it
            rstd = tf.math.rsqrt(var + eps)
            inv = rstd * gamma
            a = q * inv + (beta - mean * inv)
            bases, dbases = _bases(a, repeat, lo0, hi0, knots, order) if stash else (
                _bases(a, repeat, lo0, hi0, knots), None)
            feats = tf.concat([tf.nn.relu(a), bases], -1)
            sub = tf.matmul(feats, w_kan) + b_kan
            s_new = mix_out * sub + s * mix_state
            o = tf.sigmoid(tf.matmul(sub, w_agg) + b_agg)
            tc = tf.tanh(c_new)
            h_new = o * tc
            if not stash:
                return t + 1, h_new, c_new, s_new, {"h": tas["h"].write(t, h_new)}
            # local derivatives, while hot: d p_t = [dc, dc, dc] * m, dc_t += dh * a_c, d r_t = dh * a_r
            d_cand = tanh_grad(y=cand, dy=g_in) if squash_candidate else g_in
            m = sigmoid_grad(y=g, dy=tf.concat([cand, c, d_cand], -1))
            new = dict(h=h_new, m=m, g_forget=g_forget, a_c=tanh_grad(y=tc, dy=o), a_r=sigmoid_grad(y=o, dy=tc),
                       s=s_new, sub=sub, feats=feats, dfeats=tf.concat([tf.cast(a > 0, x.dtype), dbases], -1),
                       xhat=(q - mean) * rstd, rstd=rstd)
            return t + 1, h_new, c_new, s_new, {k: ta.write(t, new[k]) for k, ta in tas.items()}

        h0 = tf.zeros((tf.shape(x)[0], u), x.dtype)
        tas = loop(body, (h0, h0, h0[:, :n_s], arrays(stashed if stash else {"h": u})))[-1]
        st = {k: ta.stack() for k, ta in tas.items()}
        return tf.transpose(st["h"], (1, 0, 2)), st, xt

    if not stash:
        return lambda *args: forward(*args)[0]

    @tf.custom_gradient
    def run(x, w_gates, b_gates, w_sub, mix, w_agg, b_agg, gamma, beta, w_kan, b_kan):
        # XLA fuses the stashing forward's ~60 small ops per step (fwd+bwd ~20 % faster at the paper size on
        # 2 CPU cores); the backward loop stays plain (measured slower under XLA). Inputs pass stop_gradient so
        # an eager tape does not differentiate the compiled loop itself (`grad` below is its gradient).
        args = [tf.stop_gradient(v) for v in (x, w_gates, b_gates, w_sub, mix, w_agg, b_agg, gamma, beta, w_kan, b_kan)]
        y, fw, xt = tf.function(forward, jit_compile=True, autograph=False)(*args)

        def grad(dy):
            dyt = tf.transpose(dy, (1, 0, 2))
            mix_out, mix_state = mix[:n_s], mix[n_s:]
            w_gh_t, w_agg_t = tf.transpose(w_gates[d_in:]), tf.transpose(w_agg)
            w_kan_t, w_ss_t = tf.transpose(w_kan), tf.transpose(w_sub[d_in:])

            def body(j, dh, dc, ds, tas):  # carries: d h_t, d c_t, d s_t from steps > t
                t = n_t - 1 - j
                r = {k: fw[k][t] for k in ("m", "g_forget", "a_c", "a_r", "dfeats", "xhat", "rstd")}
                dh = dh + dyt[t]
                dr = dh * r["a_r"]                                         # d output-gate pre-activation
                dc = dc + dh * r["a_c"]
                dp = tf.tile(dc, (1, 3)) * r["m"]                                # d gate pre-activations
                dsub = tf.matmul(dr, w_agg_t) + ds * mix_out
                da = tf.matmul(tf.matmul(dsub, w_kan_t) * r["dfeats"], spread)   # d layer-norm output
                dxhat, xhat = da * gamma, r["xhat"]
                dq = r["rstd"] * (dxhat - tf.reduce_mean(dxhat, -1, keepdims=True)
                                  - xhat * tf.reduce_mean(dxhat * xhat, -1, keepdims=True))
                new = dict(dp=dp, dr=dr, dsub=dsub, da=da, dq=dq, ds=ds)
                return (j + 1, tf.matmul(dp, w_gh_t), dc * r["g_forget"],
                        ds * mix_state + tf.matmul(dq, w_ss_t), {k: ta.write(t, new[k]) for k, ta in tas.items()})

            zeros = tf.zeros_like(dyt[0])
            widths = dict(dp=3 * u, dr=u, dsub=n_s, da=n_q, dq=n_q, ds=n_s)
            bw = loop(body, (zeros, zeros, zeros[:, :n_s], arrays(widths)))[-1]
            d = {k: ta.stack() for k, ta in bw.items()}
            x1 = tf.concat([xt, tf.ones_like(xt[..., :1])], -1)            # [T, B, d + 1]: bias rows

            def tmm(a, b):  # sum over steps and rows of a^T @ b; a, b [T, B, .]
                return tf.matmul(rows(a), rows(b), transpose_a=True)

            def total(v):
                return tf.reduce_sum(v, (0, 1))

            dx = (tf.matmul(rows(d["dp"]), w_gates[:d_in], transpose_b=True)
                  + tf.matmul(rows(d["dq"]), w_sub[:d_in], transpose_b=True))
            d_gx = tmm(x1, d["dp"])                                        # [d + 1, 3U]
            return (tf.transpose(tf.reshape(dx, (n_t, -1, d_in)), (1, 0, 2)),
                    tf.concat([d_gx[:d_in], tmm(fw["h"][:-1], d["dp"][1:])], 0), d_gx[d_in],
                    tf.concat([tmm(xt, d["dq"]), tmm(fw["s"][:-1], d["dq"][1:])], 0),
                    tf.concat([total(d["ds"] * fw["sub"]), total(d["ds"][1:] * fw["s"][:-1])], 0),
                    tmm(fw["sub"], d["dr"]), total(d["dr"]),
                    total(d["da"] * fw["xhat"]), total(d["da"]),
                    tmm(fw["feats"], d["dsub"]), total(d["dsub"]))

        return y, grad

    return run


#: False: TensorFlow differentiates the bare `tf.while_loop` itself (same values and gradients, slower); used to
#: count the model's training FLOPs without the hand-written backward's recomputations (benchmarks/flops.py).
HAND_WRITTEN_GRADIENT = True


def _gradient_recorded(tensors) -> bool:
    """True when a gradient tape records operations on any of `tensors` (then the forward stashes for the
    hand-written backward; otherwise it runs bare: inference, export, whose SavedModel could not serialize a
    gradient function that captures the stashes)."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # private TensorFlow module moved: always stash (correct, only slower in inference)
        return True
    return bool(record.should_record_backprop(list(tensors)))


def _while_inputs(cell, x_dtype):
    """The tensors `_while_sequence`'s function takes after x, read from the layer's variables."""
    import tensorflow as tf
    kan, conv = cell.tkan_sub_layers[0], tf.convert_to_tensor
    keep = _kan_constants(kan)[-1]
    u, n_s = cell.units, cell.sub_kan_output_dim
    return (tf.concat([conv(cell.kernel), conv(cell.recurrent_kernel)], 0),
            conv(cell.bias) if cell.use_bias else tf.zeros((3 * u,), x_dtype),
            tf.concat([conv(cell.sub_tkan_recurrent_kernel_inputs)[0],
                       conv(cell.sub_tkan_recurrent_kernel_states)[0]], 0),
            conv(cell.sub_tkan_kernel)[0], conv(cell.aggregated_weight), conv(cell.aggregated_bias),
            conv(kan.layer_norm.gamma), conv(kan.layer_norm.beta), _kan_weight(kan, keep),
            conv(kan.base_bias) if kan.use_bias else tf.zeros((n_s,), x_dtype))


def tkan_sequence(layer, x, loop: str | None = None, squash_candidate: bool | None = None):
    """h [B, T, U] = layer(x) for a `tkan.TKAN` layer (check `fast_tkan_supported` first); x [B, T, d].

    loop: "while" (TensorFlow, the default there: `tf.while_loop` with a hand-written gradient, for tkan's
    default activations) or "scan" (`keras.ops.scan`, elsewhere; automatic gradient).
    squash_candidate: tkan 0.4.2 computes a different cell per backend: on TensorFlow the candidate memory is
    sigmoid(z) (the paper's eq. 18), elsewhere tanh(sigmoid(z)). None follows the layer's own cell (so the
    result equals `layer(x)`); False is the paper's cell on every backend (what the LEM uses).
    """
    cell = layer.cell
    if squash_candidate is None:
        squash_candidate = cell.backend != "tensorflow"  # tkan's non-TensorFlow cell adds tanh on the candidate
    loop = loop or ("while" if keras.backend.backend() == "tensorflow" else "scan")
    if loop == "while" and _while_supported(cell):
        args = (x,) + _while_inputs(cell, x.dtype)
        stash = HAND_WRITTEN_GRADIENT and _gradient_recorded(args)
        return _while_sequence(cell, x, squash_candidate, stash=stash)(*args)
    u, d = cell.units, cell.sub_kan_output_dim
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

    def scan_step(carry, x_t):
        new = step(*carry, x_t)
        return new, new  # ys like the carry: Keras' TensorFlow scan requires it

    b = ops.shape(x)[0]
    h0, s0 = ops.zeros((b, u), x.dtype), ops.zeros((b, d), x.dtype)
    hs = ops.scan(scan_step, (h0, h0, s0), ops.transpose(x, (1, 0, 2)))[1][0]
    return ops.transpose(hs, (1, 0, 2))
