"""The LEM's recurrent block (paper §2.2.3): the paper's TKAN, or Keras' LSTM / GRU.

TKAN is the paper's cell on every backend (eq. 12-18, candidate memory sigmoid(z)), so a model gives the same
allocations under TensorFlow and JAX. The `tkan` package computes that cell on TensorFlow only (elsewhere it
adds a tanh on the candidate): `recurrent_sequence` calls the layer on TensorFlow and runs the same cell, step
by step, on the layer's own weights and KAN sub-layer elsewhere.
"""
from __future__ import annotations

import keras
from keras import ops

from lem_model.presets import RECURRENT_CHOICES


def _fix_kan_grid_initializer() -> None:
    """Compatibility shim for keras_efficient_kan 0.1.8: its GridInitializer returns [1, n] for the declared
    [1, in_features, n] grid weight; recent Keras checks shapes on load, so `.keras` files with TKAN would
    not load. Return the declared shape instead (same values, broadcast over in_features). Idempotent."""
    from keras_efficient_kan import kan

    cls = kan.GridInitializer
    if getattr(cls, "_lem_declared_shape", False):
        return
    original = cls.__call__

    def __call__(self, shape, dtype=None):
        grid = original(self, shape, dtype)
        if len(shape) == 3 and len(grid.shape) == 2:
            grid = ops.tile(ops.expand_dims(grid, 1), [1, shape[1], 1])
        return grid

    cls.__call__ = __call__
    cls._lem_declared_shape = True


def make_recurrent(kind: str, units: int, dropout: float = 0.0) -> keras.layers.Layer:
    """Recurrent block: "tkan" (paper default; the `tkan` package is CC BY-NC-SA 4.0, which bars commercial
    use), or the licence-clean Keras "lstm" / "gru". Returns a layer [B, T, d] -> [B, T, units]."""
    if kind == "tkan":
        from tkan import TKAN  # imported only when chosen (licence, import time)
        _fix_kan_grid_initializer()
        layer = TKAN(units, return_sequences=True, dropout=dropout, name="recurrent")
        # tkan picks its cell's maths from the KERAS_BACKEND environment variable (TensorFlow if unset), not
        # from the backend Keras runs: follow the running backend
        layer.cell.backend = keras.backend.backend()
        return layer
    if kind == "lstm":
        return keras.layers.LSTM(units, return_sequences=True, dropout=dropout, name="recurrent")
    if kind == "gru":
        return keras.layers.GRU(units, return_sequences=True, dropout=dropout, name="recurrent")
    raise ValueError(f"recurrent must be one of {RECURRENT_CHOICES}, got {kind!r}")


def is_tkan(layer) -> bool:
    return hasattr(getattr(layer, "cell", None), "tkan_sub_layers")


def recurrent_sequence(layer, v, training=None):
    """The recurrent block `layer` (`make_recurrent`) on v [B, T, d] -> [B, T, units], the paper's cell."""
    if not is_tkan(layer) or keras.backend.backend() == "tensorflow":
        return layer(v, training=training)
    cell = layer.cell
    if training and (cell.dropout > 0 or cell.recurrent_dropout > 0):
        raise ValueError(f"recurrent='tkan' with dropout {cell.dropout} cannot train under the "
                         f"{keras.backend.backend()} backend (the tkan package's cell there differs from "
                         "the paper's); use dropout=0, the TensorFlow backend, or recurrent='lstm'/'gru'")
    return paper_tkan_sequence(cell, v)


def paper_tkan_sequence(cell, v):
    """The paper's TKAN cell (eq. 12-18) run over v [B, T, d] -> h [B, T, units] on a `tkan` cell's weights and
    KAN sub-layers (`keras.ops.scan`, any backend); on TensorFlow equal to the layer's own call."""
    def step(states, x_t):
        new = _paper_tkan_step(cell, *states, x_t)
        return new, new  # ys like the carry: Keras' TensorFlow scan requires it

    h = ops.scan(step, _zero_states(cell, v), ops.transpose(v, (1, 0, 2)))[1][0]   # [T, B, units]
    return ops.transpose(h, (1, 0, 2))


def _zero_states(cell, v):
    b = ops.shape(v)[0]
    states = [ops.zeros((b, cell.units), v.dtype), ops.zeros((b, cell.units), v.dtype)]
    return tuple(states + [ops.zeros((b, cell.sub_kan_output_dim), v.dtype) for _ in cell.tkan_sub_layers])


def _paper_tkan_step(cell, h, c, *sub_states_and_x):
    """One step of the paper's TKAN cell (eq. 12-18) on a `tkan` cell's weights: (h, c, sub-states..., x_t) ->
    (h, c, sub-states...) at t; what tkan's TensorFlow cell computes."""
    *sub_states, x = sub_states_and_x
    gates = ops.matmul(x, cell.kernel) + ops.matmul(h, cell.recurrent_kernel)
    g_in, g_forget, cand = ops.split(cell.recurrent_activation(gates + cell.bias if cell.use_bias else gates), 3, -1)
    sub_outputs, new_sub_states = [], []
    for i, (kan, s) in enumerate(zip(cell.tkan_sub_layers, sub_states)):
        out = kan(ops.matmul(x, cell.sub_tkan_recurrent_kernel_inputs[i])
                  + ops.matmul(s, cell.sub_tkan_recurrent_kernel_states[i]))         # eq. 13-14
        mix_out, mix_state = ops.split(cell.sub_tkan_kernel[i], 2, axis=0)
        sub_outputs.append(out)
        new_sub_states.append(mix_out * out + s * mix_state)                          # eq. 15
    out_gate = cell.recurrent_activation(ops.matmul(ops.concatenate(sub_outputs, -1), cell.aggregated_weight)
                                         + cell.aggregated_bias)                      # eq. 16-17
    c = g_forget * c + g_in * cand                                                    # eq. 18
    return (out_gate * cell.activation(c), c, *new_sub_states)
