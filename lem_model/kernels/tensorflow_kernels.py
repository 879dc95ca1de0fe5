"""TensorFlow kernels of the LEM's blocks (registered under the TensorFlow backend only):

  - "allocate": `generic.allocate` with `matmul_t` by the matmul's adjoint flag (no transposes in the gradients);
  - "tkan": the paper's TKAN (`lem_model.recurrent.TKAN`) as one `tf.while_loop`; when a gradient will be taken
    (`stash`), under a `tf.custom_gradient` with a hand-written backward;
  - "small_batch_xla": a forward function XLA-compiled for small batches in traced inference graphs (the model's
    saved `xla_max_batch`);
  - "in_chunks": a row-wise function on batch chunks, separate subgraphs that TensorFlow's inter-op threads run at
    the same time (the model's saved `context_chunks`).

The TKAN kernel. The layer's time loop is bound by per-step op overhead on CPU, mostly the KAN's B-spline basis
on [B, in, knots] tensors with broadcasting and slicing. Here, per step: the input/recurrent matmuls of the gates
are one matmul of [x_t, h_{t-1}], likewise the KAN's input; the B-spline bases live in a flat
[B, in * (knots - 1)] layout (`kan_constants`, `spline_bases`); the KAN's base and spline matmuls are one matmul.
TensorFlow's own while-loop gradient pushes/pops every intermediate per step and does per-step weight-gradient
matmuls plus accumulations; so with `stash` the forward (XLA-compiled) stashes per step, stacked to [T, B, width]:
h, s (sub-KAN state), the KAN output and features [relu(a), bases] (for weight gradients), and local derivatives
taken while the step's data are hot: gate multipliers m [B, 3U] (d gate pre-activations = [dc, dc, dc] * m), the
forget gate, o * tanh'(c) (into dc), tanh(c) * sigmoid'(output gate), and for the KAN input relu'(a), the
B-spline derivatives (from the last recursion level) and the layer norm's normalised input and 1/std. The
backward is one reverse `tf.while_loop` carrying dh, dc, ds (one [B, 3U] @ [3U, U] matmul and the small KAN ones
per step) that writes the gradients of the per-step pre-activations; each weight gradient is then one matmul or
sum over all T * B rows. Without `stash` (inference, export) the loop runs bare.
"""
from __future__ import annotations

import functools

import numpy as np
from keras import ops
import tensorflow as tf

from lem_model.kernels import generic, register

#: Up to this many columns in `matmul_t`'s right operand (e.g. a batch of <= 16 orders in the allocator's
#: [P, H, B] layout), a^T @ b is computed as (b^T @ a)^T: a vector-matrix product reads the weights a in their
#: stored order, which oneDNN does ~2x faster than through the adjoint flag (batch 1, 2 CPU cores). A function of
#: the input's shape only: both forms compute the same product.
MATMUL_T_NARROW = 16


def matmul_t(a, b):
    """a^T @ b over the last two axes: a [..., k, m], b [..., k, n] -> [..., m, n].

    One matmul with a's adjoint flag, whose gradients need no transposes either (a transpose op would be folded
    into the forward product by grappler, but not out of the backward); for narrow b (n <= `MATMUL_T_NARROW`,
    decided at run time when n is not static) (b^T @ a)^T instead."""
    def wide():
        return tf.linalg.matmul(a, b, adjoint_a=True)

    def narrow():
        return ops.swapaxes(tf.linalg.matmul(b, a, adjoint_a=True), -1, -2)

    n = b.shape[-1]
    if n is not None:
        return narrow() if n <= MATMUL_T_NARROW else wide()
    return tf.cond(tf.shape(b)[-1] <= MATMUL_T_NARROW, narrow, wide)


register("allocate", ("tensorflow",))(functools.partial(generic.allocate, matmul_t=matmul_t))


@register("small_batch_xla", ("tensorflow",))
def small_batch_xla(fn, max_batch: int, *xs):
    """fn(*xs) for batch-major xs ([B, ...] each); in a traced graph (export, serving), XLA-compiled when
    B <= max_batch; eagerly, plain.

    Per-timestep while-loop overhead dominates a batch-1 recurrent pass on CPU (paper config: the 131 TKAN steps
    take ~2 ms XLA vs ~15 ms plain at batch 1; break-even near batch 8-16); XLA fuses the loop body and the
    small position-wise ops. The batch is zero-padded to the next power of two (rows are independent, the pad
    rows are dropped), so at most log2(max_batch) + 1 shapes are compiled (~0.5 s each, on first use).
    Inference only: XLA cannot differentiate through the loop's accumulators. A SavedModel holding this needs
    `tensorflow_model_server --xla_cpu_compilation_enabled=true`.
    """
    if not tf.inside_function():
        return fn(*xs)
    xla_fn = tf.function(fn, jit_compile=True, autograph=False)
    batch = tf.shape(xs[0])[0]

    def pad(x, size):
        widths = tf.concat([[size - batch], tf.zeros([tf.rank(x) - 1], batch.dtype)], 0)
        padded = tf.pad(x, tf.stack([tf.zeros_like(widths), widths], 1))
        padded.set_shape(tf.TensorShape([None]).concatenate(x.shape[1:]))  # keep the static T, F
        return padded

    def compiled():
        size = tf.constant(1, batch.dtype)
        for _ in range(int(max_batch).bit_length() - 1):
            size = tf.where(size < batch, size * 2, size)
        y = xla_fn(*[pad(x, size) for x in xs])
        return y[:batch]

    return tf.cond(batch <= max_batch, compiled, lambda: fn(*xs))


@register("in_chunks", ("tensorflow",))
def in_chunks(fn, x, n: int):
    """fn(x) for a row-wise fn, computed as concat(fn(chunk) for n batch chunks of x [B, ...]) (a chunk may be
    empty). In training on CPU much of the LEM's context block is one thread's work (the recurrent loop's
    element-wise steps between short products, small element-wise ops); chunks are independent subgraphs that
    run at the same time when TensorFlow has as many inter-op threads (its default: one per core). Measured on
    2 CPU cores, paper config, batch 256, 2 chunks: train step 1.369 -> 1.315 s (docs/experiments.md)."""
    static = x.shape[0] is not None  # then the chunks keep static shapes
    b = x.shape[0] if static else tf.shape(x)[0]
    sizes = [b // n] * (n - 1) + [b - (n - 1) * (b // n)]
    return tf.concat([fn(part) for part in tf.split(x, sizes if static else tf.stack(sizes), num=n)], 0)


# --- the KAN sub-layer's B-splines in a flat layout ------------------------------------------------------------

def kan_constants(grid, order: int):
    """Constants of the flat-layout B-splines from the KAN's (non-trainable) grid [1, in, knots]: the bases (Cox-de
    Boor recursion) in a [B, in * (knots - 1)] layout, features repeated by a 0/1 matmul, knot constants as row
    vectors (zero where a basis does not exist at that order, so groups never mix); `keep` maps the flat bases to
    the spline weight's rows (the unused trailing bases meet zero rows)."""
    grid = ops.convert_to_tensor(grid)[0]                                  # [in, knots]
    n_in, m0 = int(grid.shape[0]), int(grid.shape[-1]) - 1                 # order-0 bases per feature
    n_final = m0 - order                                                   # = grid_size + spline_order
    repeat = np.kron(np.eye(n_in, dtype="float32"), np.ones((1, m0), "float32"))  # [in, in*m0]

    def flat(t):  # [in, m] -> [in*m0], zero-padded per feature
        return ops.reshape(ops.pad(t, [[0, 0], [0, m0 - int(t.shape[1])]]), (-1,))

    knots = []
    for k in range(1, order + 1):
        exists = np.tile((np.arange(m0) < m0 - k).astype("float32"), n_in)  # basis j exists at order k
        knots.append((flat(grid[:, :-(k + 1)]), flat(1.0 / (grid[:, k:-1] - grid[:, :-(k + 1)])) * exists,
                      flat(grid[:, k + 1:]), flat(1.0 / (grid[:, k + 1:] - grid[:, 1:-k])) * exists))
    keep = np.zeros((n_in * m0, n_in * n_final), "float32")               # flat basis -> spline weight row
    for i in range(n_in):
        keep[i * m0 + np.arange(n_final), i * n_final + np.arange(n_final)] = 1.0
    lo0, hi0 = ops.reshape(grid[:, :-1], (-1,)), ops.reshape(grid[:, 1:], (-1,))
    return repeat, lo0, hi0, knots, keep


def spline_bases(a, repeat, lo0, hi0, knots, order=None):
    """Flat B-spline bases [N, in*m0] of a [N, in] (`kan_constants`); with order (the spline order), also
    their derivatives d basis / d (its feature of a), from the last recursion level's inputs."""
    xr = ops.matmul(a, repeat)                                             # [N, in*m0]
    bases = ops.cast(ops.logical_and(xr >= lo0, xr < hi0), a.dtype)
    for lo, inv_left, hi, inv_right in knots:
        prev, nxt = bases, ops.pad(bases[:, 1:], [[0, 0], [0, 1]])
        bases = (xr - lo) * inv_left * bases + (hi - xr) * inv_right * nxt
    if order is None:
        return bases
    return bases, order * (inv_left * prev - inv_right * nxt)


# --- the TKAN ---------------------------------------------------------------------------------------------------

@register("tkan", ("tensorflow",))
def tkan(x, w, stash: bool):
    """The paper's TKAN (eq. 12-18) over x [B, T, d] -> h [B, T, U] from the layer's weights by name
    (`lem_model.recurrent.TKAN.cell_weights`); stash: keep the forward's intermediates for the hand-written
    backward, for when a gradient will be taken (training). Without it TensorFlow differentiates the bare loop
    (same gradients, slower), and a traced inference graph holds no gradient function (exportable)."""
    conv = tf.convert_to_tensor
    repeat, lo0, hi0, knots, keep = kan_constants(w["kan_grid"], w["kan_spline_order"])
    u, n_s = w["recurrent_kernel"].shape[0], w["agg_kernel"].shape[0]
    zeros = lambda n: tf.zeros((n,), x.dtype)
    args = (x, tf.concat([conv(w["kernel"]), conv(w["recurrent_kernel"])], 0),
            zeros(3 * u) if w["bias"] is None else conv(w["bias"]),
            tf.concat([conv(w["sub_input_kernel"]), conv(w["sub_state_kernel"])], 0), conv(w["sub_mix"]),
            conv(w["agg_kernel"]), conv(w["agg_bias"]), conv(w["kan_gamma"]), conv(w["kan_beta"]),
            ops.concatenate([w["kan_base_kernel"], ops.matmul(keep, w["kan_spline_kernel"])], 0),
            zeros(n_s) if w["kan_base_bias"] is None else conv(w["kan_base_bias"]))
    return _while_sequence(x, u, n_s, repeat, lo0, hi0, knots, float(w["kan_spline_order"]),
                           w["kan_epsilon"], stash)(*args)


def _while_sequence(x, u, n_s, repeat, lo0, hi0, knots, order, eps, stash):
    """The TKAN as a function of (x, w_gates, b_gates, w_sub, mix, w_agg, b_agg, gamma, beta, w_kan, b_kan): one
    `tf.while_loop`; with stash, under a `tf.custom_gradient` whose backward is one reverse `tf.while_loop` plus
    one matmul per weight over all steps (see module doc)."""
    n_t, d_in = int(x.shape[1]), int(x.shape[2])
    n_q = repeat.shape[0]
    n_f = n_q + repeat.shape[1]
    spread = np.concatenate([np.eye(n_q, dtype="float32"), repeat.T], 0)  # d [relu(a), bases] -> d a
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
            g_in, g_forget, cand = tf.split(g, 3, axis=-1)
            c_new = g_forget * c + g_in * cand
            q = tf.matmul(tf.concat([x_t, s], -1), w_sub)
            mean, var = ops.moments(q, axes=[-1], keepdims=True)          # layer norm as Keras computes it
            rstd = tf.math.rsqrt(var + eps)
            inv = rstd * gamma
            a = q * inv + (beta - mean * inv)
            bases, dbases = spline_bases(a, repeat, lo0, hi0, knots, order) if stash else (
                spline_bases(a, repeat, lo0, hi0, knots), None)
            feats = tf.concat([tf.nn.relu(a), bases], -1)
            sub = tf.matmul(feats, w_kan) + b_kan
            s_new = mix_out * sub + s * mix_state
            o = tf.sigmoid(tf.matmul(sub, w_agg) + b_agg)
            tc = tf.tanh(c_new)
            h_new = o * tc
            if not stash:
                return t + 1, h_new, c_new, s_new, {"h": tas["h"].write(t, h_new)}
            # local derivatives, while hot: d p_t = [dc, dc, dc] * m, dc_t += dh * a_c, d r_t = dh * a_r
            m = sigmoid_grad(y=g, dy=tf.concat([cand, c, g_in], -1))
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
