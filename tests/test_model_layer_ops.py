"""The fast building blocks of `lem_model.layers` compute what the plain formulations compute: `dense` (2-D matmul
on rank-3 inputs, fused bias/activation), `glu` (kernel halves), `matmul_t` (a^T @ b by the matmul's adjoint flag), `layer_norm` (Keras' LayerNormalization on
its own weights) and the VSN on rank-1 embeddings (`VariableSelectionNetwork.embed_and_select`)."""
import keras
import numpy as np
import pytest
from keras import ops

from lem_model.layers import (MATMUL_T_NARROW, FeatureEmbedding, VariableSelectionNetwork, dense, glu, layer_norm,
                              matmul_t)


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


@pytest.mark.parametrize("n", [1, MATMUL_T_NARROW + 1])  # both forms: (b^T a)^T for narrow b, a's adjoint else
@pytest.mark.parametrize("static", [True, False])        # n known when traced, or decided at run time
def test_matmul_t_and_its_gradients_equal_the_transposed_product(n, static):
    import tensorflow as tf

    a, b, g = (tf.constant(v) for v in _rng_arrays((3, 4, 5), (3, 4, n), (3, 5, n), seed=6))
    spec = [tf.TensorSpec((3, 4, 5)), tf.TensorSpec((3, 4, n) if static else (3, 4, None))]

    @tf.function(input_signature=spec)
    def value_and_grads(a, b):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([a, b])
            got = matmul_t(a, b)
            want = tf.matmul(tf.transpose(a, (0, 2, 1)), b)
            got_loss, want_loss = tf.reduce_sum(got * g), tf.reduce_sum(want * g)
        return got, want, tape.gradient(got_loss, [a, b]), tape.gradient(want_loss, [a, b])

    got, want, got_grads, want_grads = value_and_grads(a, b)
    assert got.shape == (3, 5, n)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    for got_grad, want_grad in zip(got_grads, want_grads):
        np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), atol=1e-5)
    np.testing.assert_allclose(np.asarray(matmul_t(a[0], b[0])), np.asarray(a[0]).T @ np.asarray(b[0]), atol=1e-5)


def test_layer_norm_equals_keras_layer_norm():
    (x,) = _rng_arrays((4, 9, 12), seed=2)
    x = 3.0 * x + 5.0  # an offset and scale the normalisation must remove
    norm = keras.layers.LayerNormalization(epsilon=1e-5)
    norm.build(x.shape)
    gamma, beta = _rng_arrays((12,), (12,), seed=3)
    norm.set_weights([gamma, beta])
    np.testing.assert_allclose(np.asarray(layer_norm(x, norm)), np.asarray(norm(x)), atol=2e-5)


@pytest.mark.parametrize("units", [6, 4])  # units == E: identity skips in the variable GRNs; else linear skips
def test_vsn_on_rank1_embeddings_equals_vsn_of_embeddings(units):
    import tensorflow as tf

    b, t, f, e = 3, 5, 4, 6
    keras.utils.set_random_seed(5)
    embedding, vsn = FeatureEmbedding(e), VariableSelectionNetwork(units)
    embedding.build((b, t, f))
    vsn.build((b, t, f, e))
    rng = np.random.default_rng(4)
    for v in embedding.weights + vsn.weights:  # non-zero biases and norm offsets: every folded term matters
        v.assign(np.asarray(v) + rng.normal(scale=0.3, size=v.shape).astype("float32"))
    assert (vsn.var_grn.w_skip is None) == (units == e)
    x = tf.constant(rng.normal(size=(b, t, f)).astype("float32"))
    weights = embedding.trainable_weights + vsn.trainable_weights

    def value_and_grads(fn):
        with tf.GradientTape() as tape:
            y = fn()
            loss = tf.reduce_sum(tf.sin(3.0 * y))
        return [y] + tape.gradient(loss, weights)

    want = value_and_grads(lambda: vsn(embedding(x)))
    got = value_and_grads(lambda: vsn.embed_and_select(x, embedding))
    assert got[0].shape == (b, t, units)
    for w, g, name in zip(want, got, ["output"] + [v.path for v in weights]):
        assert g is not None, name
        w = np.asarray(w)  # float32 sums in another order: errors scale with the tensor's largest entries
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=3e-5 * np.abs(w).max(), err_msg=name)
