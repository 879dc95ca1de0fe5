"""A faster evaluation of the paper's TKAN layer (`tkan.TKAN`, return_sequences) on that layer's own weights.

`tkan_sequence(layer, x)` computes exactly the function of `layer(x)` for a built `tkan.TKAN` layer with one
KAN sub-layer (the package default) and no dropout in use, x [B, T, d] -> h [B, T, U]; tests check it against
the layer itself (values and gradients, both of tkan's cell variants). It exists because the layer's time
loop is bound by per-step op overhead on CPU, mostly the KAN's B-spline basis built on [B, in, knots] tensors
with broadcasting and slicing. Here, per step:
  - the input/recurrent matmuls of the gates are one matmul of [x_t, h_{t-1}], likewise the KAN's input;
  - the B-spline bases live in a flat [B, in * (knots - 1)] layout (`lem_model.kan_splines`);
  - the KAN's base and spline matmuls are one matmul.
Weights are read from the layer (nothing new is created), so saved models are unchanged.

On TensorFlow (tkan's default tanh/sigmoid/relu activations) the loop is one `tf.while_loop`, in
`lem_model.fast_tf.while_sequence`; with `stash` (training) it is a `tf.custom_gradient` with a hand-written
backward, because TensorFlow's own while-loop gradient pushes/pops every intermediate per step and does per-step
weight-gradient matmuls plus accumulations. The forward (XLA-compiled) stashes per step, stacked to [T, B, width]:
h, s (sub-KAN state), the KAN output and features [relu(a), bases] (for weight gradients), and local derivatives
taken while the step's data are hot: gate multipliers m [B, 3U] (d gate pre-activations = [dc, dc, dc] * m), the
forget gate, o * tanh'(c) (into dc), tanh(c) * sigmoid'(output gate), and for the KAN input relu'(a), the
B-spline derivatives (from the last recursion level) and the layer norm's normalised input and 1/std. The
backward is one reverse `tf.while_loop` carrying dh, dc, ds (one [B, 3U] @ [3U, U] matmul and the small KAN ones
per step) that writes the gradients of the per-step pre-activations; each weight gradient is then one matmul or
sum over all T * B rows. Without `stash` (inference, export) the loop runs bare. Elsewhere: `keras.ops.scan`.
"""
from __future__ import annotations

import keras
from keras import ops

from lem_model.kan_splines import kan_constants, kan_weight, spline_bases


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
    repeat, lo0, hi0, knots, keep = kan_constants(kan)
    weight = kan_weight(kan, keep)
    base_act = getattr(ops, kan.base_activation_name)

    def apply(a):
        if kan.use_layernorm:
            a = kan.layer_norm(a)
        bases = spline_bases(a, repeat, lo0, hi0, knots)
        out = ops.matmul(ops.concatenate([base_act(a), bases], -1), weight)
        return out + kan.base_bias if kan.use_bias else out

    return apply


def tkan_sequence(layer, x, loop: str | None = None, squash_candidate: bool | None = None, stash: bool = False):
    """h [B, T, U] = layer(x) for a `tkan.TKAN` layer (check `fast_tkan_supported` first); x [B, T, d].

    loop: "while" (TensorFlow, the default there: one `tf.while_loop`, `lem_model.fast_tf.while_sequence`, for
    tkan's default activations) or "scan" (`keras.ops.scan`, elsewhere; automatic gradient).
    squash_candidate: tkan 0.4.2 computes a different cell per backend: on TensorFlow the candidate memory is
    sigmoid(z) (the paper's eq. 18), elsewhere tanh(sigmoid(z)). None follows the layer's own cell (so the
    result equals `layer(x)`); False is the paper's cell on every backend (what the LEM uses).
    stash ("while" only): keep the forward's intermediates for the loop's hand-written backward, for when a
    gradient will be taken (training); without it TensorFlow differentiates the bare loop (same gradients,
    slower), and a traced inference graph holds no gradient function (exportable).
    """
    cell = layer.cell
    if squash_candidate is None:
        squash_candidate = cell.backend != "tensorflow"  # tkan's non-TensorFlow cell adds tanh on the candidate
    loop = loop or ("while" if keras.backend.backend() == "tensorflow" else "scan")
    if loop == "while":
        from lem_model import fast_tf
        if fast_tf.while_supported(cell):
            args = (x,) + fast_tf.while_inputs(cell, x.dtype)
            return fast_tf.while_sequence(cell, x, squash_candidate, stash=stash)(*args)
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
