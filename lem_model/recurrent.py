"""The LEM's recurrent block (paper §2.2.3): the paper's TKAN, or Keras' LSTM / GRU.

`TKAN` is the paper's cell (eq. 12-18, candidate memory sigmoid(z)) on every backend, so a model gives the same
allocations under TensorFlow and JAX. Its weights live in a `tkan.TKANCell` (the `tkan` package, CC BY-NC-SA 4.0,
which bars commercial use), so models saved when the LEM used the package's `tkan.TKAN` layer load unchanged; its
computation is `TKAN.call` (the package's own cell differs between backends).
"""
from __future__ import annotations

import contextlib

import keras
from keras import ops

from lem_model import kernels
from lem_model.presets import DEFAULT_IMPLEMENTATION, RECURRENT_CHOICES


def make_recurrent(kind: str, units: int, dropout: float = 0.0,
                   implementation: str = DEFAULT_IMPLEMENTATION) -> keras.layers.Layer:
    """Recurrent block: "tkan" (the paper's) or the licence-clean Keras "lstm" / "gru" (with their own fused
    kernels, Keras' `use_cudnn`). Returns a layer [B, T, d] -> [B, T, units]."""
    if kind == "tkan":
        return TKAN(units, dropout=dropout, implementation=implementation, name="recurrent")
    if kind == "lstm":
        return keras.layers.LSTM(units, return_sequences=True, dropout=dropout, name="recurrent")
    if kind == "gru":
        return keras.layers.GRU(units, return_sequences=True, dropout=dropout, name="recurrent")
    raise ValueError(f"recurrent must be one of {RECURRENT_CHOICES}, got {kind!r}")


@contextlib.contextmanager
def _kan_grid_of_declared_shape():
    """The project's one patch of a third-party package, scoped to building a TKAN cell (`TKAN.build`), pinned to
    keras_efficient_kan 0.1.8: its GridInitializer returns [1, n] for the KAN's declared grid weight
    [1, in_features, n], and Keras 3 checks shapes when a saved model loads, so a `.keras` file would not load.
    While the cell builds, the initializer's result is tiled to the declared shape (the same values for every
    feature); the class is restored afterwards. A release returning the declared shape makes it a no-op."""
    from keras_efficient_kan import kan

    cls = kan.GridInitializer
    original = cls.__call__

    def declared(self, shape, dtype=None):
        grid = original(self, shape, dtype)
        if len(shape) == 3 and len(grid.shape) == 2:
            grid = ops.tile(ops.expand_dims(grid, 1), [1, shape[1], 1])
        return grid

    cls.__call__ = declared
    try:
        yield
    finally:
        cls.__call__ = original


@keras.saving.register_keras_serializable(package="lem_model", name="TKAN")
class TKAN(keras.layers.Layer):
    """The paper's TKAN (eq. 12-18): x [B, T, d] -> h [B, T, units] (return_sequences), zero initial states.

    Per step t: gates i, f, c~ = sigmoid(x_t Wx + h Wh + b); memory c = f c + i c~; the KAN sub-layer's input
    a = x_t Kx + s Ks and output o_sub = KAN(a) (layer norm, then relu(a) Wb + B-splines(a) Ws + bias); its state
    s = mix_out * o_sub + mix_state * s; output gate o = sigmoid(o_sub Wa + ba); h = o tanh(c). dropout: on the
    inputs, one mask per sequence (as Keras' LSTM). Kernel: "tkan" (TensorFlow: one while loop with a
    hand-written backward).
    """

    def __init__(self, units: int, dropout: float = 0.0, implementation: str = DEFAULT_IMPLEMENTATION, **kwargs):
        super().__init__(**kwargs)
        from tkan.tkan import TKANCell  # imported only when chosen (licence, import time)
        self.units, self.dropout, self.implementation = int(units), float(dropout), implementation
        self.cell = TKANCell(self.units)  # attribute name and class as `tkan.TKAN`'s: saved weights load
        self.drop = keras.layers.Dropout(self.dropout, noise_shape=(None, 1, None)) if self.dropout else None

    def build(self, input_shape):
        with _kan_grid_of_declared_shape():
            self.cell.build((input_shape[0], input_shape[-1]))

    def cell_weights(self) -> dict:
        """The cell's weights by name: the one place that reads the attributes of tkan 0.4.2's `TKANCell` and of
        its KAN sub-layer (keras_efficient_kan 0.1.8's `KANLinear`)."""
        c = self.cell
        kan = c.tkan_sub_layers[0]
        return dict(kernel=c.kernel, recurrent_kernel=c.recurrent_kernel, bias=c.bias,
                    sub_input_kernel=c.sub_tkan_recurrent_kernel_inputs[0],
                    sub_state_kernel=c.sub_tkan_recurrent_kernel_states[0], sub_mix=c.sub_tkan_kernel[0],
                    agg_kernel=c.aggregated_weight, agg_bias=c.aggregated_bias, kan=kan, kan_grid=kan.grid,
                    kan_spline_order=kan.spline_order, kan_base_kernel=kan.base_weight,
                    kan_base_bias=kan.base_bias if kan.use_bias else None, kan_spline_kernel=kan.spline_weight,
                    kan_gamma=kan.layer_norm.gamma, kan_beta=kan.layer_norm.beta, kan_epsilon=kan.layer_norm.epsilon)

    def call(self, x, training=None):
        if self.drop is not None:
            x = self.drop(x, training=training)
        w = self.cell_weights()
        kan = w.pop("kan")  # the KAN sub-layer itself: the definition calls it, kernels take its weights
        fast = kernels.run("tkan", self.implementation, x, w, stash=bool(training))
        if fast is not None:
            return fast
        s_dim = w["agg_kernel"].shape[0]
        mix_out, mix_state = w["sub_mix"][:s_dim], w["sub_mix"][s_dim:]

        def step(carry, x_t):
            h, c, s = carry
            gates = ops.matmul(x_t, w["kernel"]) + ops.matmul(h, w["recurrent_kernel"])
            g_in, g_forget, cand = ops.split(ops.sigmoid(gates + w["bias"]), 3, axis=-1)    # eq. 12
            c = g_forget * c + g_in * cand                                                  # eq. 18
            sub = kan(ops.matmul(x_t, w["sub_input_kernel"]) + ops.matmul(s, w["sub_state_kernel"]))  # 13-14
            s = mix_out * sub + mix_state * s                                               # eq. 15
            out_gate = ops.sigmoid(ops.matmul(sub, w["agg_kernel"]) + w["agg_bias"])        # eq. 16-17
            new = (out_gate * ops.tanh(c), c, s)
            return new, new  # ys like the carry: Keras' TensorFlow scan requires it

        b = ops.shape(x)[0]
        h0, s0 = ops.zeros((b, self.units), x.dtype), ops.zeros((b, s_dim), x.dtype)
        h = ops.scan(step, (h0, h0, s0), ops.transpose(x, (1, 0, 2)))[1][0]                 # [T, B, units]
        return ops.transpose(h, (1, 0, 2))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout,
                "implementation": self.implementation}
