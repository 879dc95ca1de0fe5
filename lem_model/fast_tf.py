"""TensorFlow kernels of the LEM's fast form (`lem_model.fast`), used only under the TensorFlow backend.

  - `matmul_t`: a^T @ b by the matmul's adjoint flag (no transposes in the gradients either);
  - `small_batch_xla`: the context block XLA-compiled for small batches in traced inference graphs;
  - `context_chunks` / `in_chunks`: the training context block in concurrent batch chunks on CPU;
  - `while_sequence`: the TKAN as one `tf.while_loop`, in training under a `tf.custom_gradient` with a
    hand-written backward (see `lem_model.tkan_fast` for the maths both loops share).
The constants below are part of this implementation, not settings: nothing assigns them. The one choice a user
makes, the small-batch XLA bound, is the model's saved `xla_max_batch` option.
"""
from __future__ import annotations

import os

import numpy as np
import keras
from keras import ops
import tensorflow as tf

from lem_model.kan_splines import kan_constants, kan_weight, spline_bases

#: Up to this many columns in `matmul_t`'s right operand (e.g. a batch of <= 16 orders in the allocator's
#: [P, H, B] layout), a^T @ b is computed as (b^T @ a)^T: a vector-matrix product reads the weights a in their
#: stored order, which oneDNN does ~2x faster than through the adjoint flag (batch 1, 2 CPU cores).
MATMUL_T_NARROW = 16
#: In training on CPU, the batch is cut into this many chunks whose context blocks (embedding .. context GRN)
#: are separate subgraphs, when TensorFlow has as many inter-op threads (its default: one per core) to run them
#: at the same time; the allocator still sees the whole batch. Much of the context block is one thread's work:
#: the recurrent loop's element-wise steps between short products on all cores, TensorFlow's small element-wise
#: ops. Measured on 2 CPU cores, paper config, batch 256, inter-op 2: train step 1.36-1.37 -> 1.31-1.32 s
#: (median of 8 steps, 2 process pairs). With one inter-op thread the chunks would run one after the other.
TRAIN_CONTEXT_CHUNKS = 2
#: ... and only when every chunk has at least this many rows (a batch of unknown size is cut).
MIN_CHUNK_ROWS = 32


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


def xla_inference(training, xla_max_batch: int) -> bool:
    """True in traced inference graphs (`training=False`: export, serving, predict) with `xla_max_batch` >= 1,
    where small batches run XLA-compiled (`small_batch_xla`); eager calls and training run plainly."""
    return training is False and int(xla_max_batch) >= 1 and tf.inside_function()


def small_batch_xla(fn, max_batch: int, *xs):
    """fn(*xs) for batch-major xs ([B, ...] each), XLA-compiled when B <= max_batch, else plain.

    Per-timestep while-loop overhead dominates a batch-1 recurrent pass on CPU (paper config: the 131 TKAN steps
    take ~2 ms XLA vs ~15 ms plain at batch 1; break-even near batch 8-16); XLA fuses the loop body and the
    small position-wise ops. The batch is zero-padded to the next power of two (rows are independent, the pad
    rows are dropped), so at most log2(max_batch) + 1 shapes are compiled (~0.5 s each, on first use).
    Inference only: XLA cannot differentiate through the loop's accumulators. A SavedModel holding this needs
    `tensorflow_model_server --xla_cpu_compilation_enabled=true`.
    """
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


def context_chunks(x) -> int:
    """How many batch chunks of x [B, ...] the training context block runs in (see `TRAIN_CONTEXT_CHUNKS`):
    1 unless traced, on CPU, with enough inter-op threads and rows."""
    n = TRAIN_CONTEXT_CHUNKS
    if x.shape[0] is not None and x.shape[0] < n * MIN_CHUNK_ROWS:
        return 1
    if not tf.inside_function() or tf.config.list_logical_devices("GPU"):  # eager: no concurrency; GPU: one stream
        return 1
    inter_op = tf.config.threading.get_inter_op_parallelism_threads() or len(os.sched_getaffinity(0))
    return n if inter_op >= n else 1


def in_chunks(fn, x, n):
    """fn(x) for a row-wise fn, computed as concat(fn(chunk) for n batch chunks of x [B, ...])."""
    static = x.shape[0] is not None  # then the chunks keep static shapes
    b = x.shape[0] if static else tf.shape(x)[0]
    sizes = [b // n] * (n - 1) + [b - (n - 1) * (b // n)]
    return tf.concat([fn(part) for part in tf.split(x, sizes if static else tf.stack(sizes), num=n)], 0)


def while_supported(cell) -> bool:
    """`while_sequence`'s hand-written gradient assumes tkan's default activations (tanh, sigmoid, relu)."""
    kan = cell.tkan_sub_layers[0]
    norm = kan.layer_norm
    return (cell.activation is keras.activations.tanh and cell.recurrent_activation is keras.activations.sigmoid
            and kan.base_activation_name == "relu" and norm is not None and norm.center and norm.scale
            and not norm.rms_scaling)


def while_sequence(cell, x, squash_candidate, stash):
    """`tkan_sequence` on TensorFlow as a function of x and `while_inputs(cell)`: one `tf.while_loop`; with
    stash, under a `tf.custom_gradient` whose backward is one reverse `tf.while_loop` plus one matmul per
    weight over all steps (see module doc)."""
    kan = cell.tkan_sub_layers[0]
    repeat, lo0, hi0, knots, _ = kan_constants(kan)
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


def while_inputs(cell, x_dtype):
    """The tensors `while_sequence`'s function takes after x, read from the layer's variables."""
    kan, conv = cell.tkan_sub_layers[0], tf.convert_to_tensor
    keep = kan_constants(kan)[-1]
    u, n_s = cell.units, cell.sub_kan_output_dim
    return (tf.concat([conv(cell.kernel), conv(cell.recurrent_kernel)], 0),
            conv(cell.bias) if cell.use_bias else tf.zeros((3 * u,), x_dtype),
            tf.concat([conv(cell.sub_tkan_recurrent_kernel_inputs)[0],
                       conv(cell.sub_tkan_recurrent_kernel_states)[0]], 0),
            conv(cell.sub_tkan_kernel)[0], conv(cell.aggregated_weight), conv(cell.aggregated_bias),
            conv(kan.layer_norm.gamma), conv(kan.layer_norm.beta), kan_weight(kan, keep),
            conv(kan.base_bias) if kan.use_bias else tf.zeros((n_s,), x_dtype))
