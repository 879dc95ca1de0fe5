"""The fast building blocks of `lem_model.layers` compute what the plain formulations compute: `dense` (2-D matmul
on rank-3 inputs, fused bias/activation), `glu` (kernel halves) and `layer_norm` (Keras' LayerNormalization on
its own weights)."""
import keras
import numpy as np
from keras import ops

from lem_model.layers import dense, glu, layer_norm


def _rng_arrays(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in shapes]


def test_dense_on_rank3_equals_broadcast_matmul():
    x, w, b = _rng_arrays((3, 5, 4), (4, 6), (6,))
    want = np.tanh(np.einsum("btd,do->bto", x, w) + b)
    got = np.asarray(dense(x, w, b, ops.tanh))
    assert got.shape == (3, 5, 6)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dense(x[0], w)), x[0] @ w, atol=1e-5)  # rank 2, no bias


def test_glu_equals_split_formulation():
    x, w, b = _rng_arrays((2, 7, 4), (4, 10), (10,), seed=1)
    z = np.einsum("btd,do->bto", x, w) + b
    want = 1.0 / (1.0 + np.exp(-z[..., :5])) * z[..., 5:]
    np.testing.assert_allclose(np.asarray(glu(x, w, b)), want, atol=1e-5)


def test_layer_norm_equals_keras_layer_norm():
    (x,) = _rng_arrays((4, 9, 12), seed=2)
    x = 3.0 * x + 5.0  # an offset and scale the normalisation must remove
    norm = keras.layers.LayerNormalization(epsilon=1e-5)
    norm.build(x.shape)
    gamma, beta = _rng_arrays((12,), (12,), seed=3)
    norm.set_weights([gamma, beta])
    np.testing.assert_allclose(np.asarray(layer_norm(x, norm)), np.asarray(norm(x)), atol=2e-5)
