"""`lem_model.tkan_fast.tkan_sequence` is the paper's TKAN (`tkan.TKAN`): same outputs and gradients on the
same weights, for both of tkan's cell variants and both loop implementations."""
import numpy as np
import pytest

pytest.importorskip("tkan")
tf = pytest.importorskip("tensorflow")

from lem_model.recurrent import make_recurrent, paper_tkan_sequence, recurrent_sequence  # noqa: E402
from lem_model.tkan_fast import fast_tkan_supported, tkan_sequence  # noqa: E402


def random_tkan(units=8, d_in=5, seed=0, dropout=0.0):
    layer = make_recurrent("tkan", units, dropout=dropout)
    layer.build((None, 7, d_in))
    rng = np.random.default_rng(seed)
    # random values everywhere (biases, layer-norm scale/offset, sub-state mix) so no term hides behind a 0 or 1
    layer.set_weights([w if w.shape[-1] == 10 and w.ndim == 3 else rng.normal(0, 0.6, w.shape).astype("float32")
                       for w in layer.get_weights()])
    return layer


def inputs(d_in=5, seed=1):
    # scale 3: layer-normed values leave the KAN grid [-1, 1] too (all-zero spline bases)
    return tf.constant(3.0 * np.random.default_rng(seed).normal(size=(3, 7, d_in)).astype("float32"))


@pytest.mark.parametrize("loop", ["while", "scan", "while-traced", "while-autodiff"])
@pytest.mark.parametrize("cell_variant", ["tensorflow", "generic"])
def test_same_outputs_and_gradients_as_tkan(loop, cell_variant):
    # "while" stashes for its hand-written gradient; "-traced" runs it in a graph as training does (eager
    # differs); "-autodiff" lets TensorFlow differentiate the bare loop (the FLOP-count reference, benchmarks/flops.py)
    stash = loop != "while-autodiff"
    layer = random_tkan()
    layer.cell.backend = cell_variant  # tkan dispatches its cell maths on this (tanh on the candidate or not)
    grid = layer.cell.tkan_sub_layers[0].grid.numpy()
    assert grid.shape == (1, 5, 10) and np.ptp(grid[0, 0]) > 0
    x = inputs()
    assert fast_tkan_supported(layer, training=True)
    weights = layer.trainable_weights

    def run(fn, traced=False):
        def value_and_grads(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = fn(x)
                loss = tf.reduce_sum(out * tf.cos(tf.range(out.shape[-1], dtype=out.dtype)))
            return out, tape.gradient(loss, [x] + weights)
        out, grads = (tf.function(value_and_grads) if traced else value_and_grads)(x)
        return out.numpy(), [g.numpy() for g in grads]

    ref, ref_grads = run(lambda v: layer(v, training=True))
    got, got_grads = run(lambda v: tkan_sequence(layer, v, loop=loop.split("-")[0], stash=stash),
                         traced=loop.endswith("traced"))
    assert ref.shape == got.shape == (3, 7, 8)
    assert np.abs(ref).max() > 0.05  # a non-trivial output
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-5)  # another computation: float32 agreement
    assert len(ref_grads) == len(got_grads) > 10
    for r, g in zip(ref_grads, got_grads):
        np.testing.assert_allclose(g, r, atol=2e-5 * max(1.0, np.abs(r).max()), rtol=0)


def test_traced_function_matches_layer():
    layer = random_tkan(seed=3)
    x = inputs(seed=4)
    got = tf.function(lambda v: tkan_sequence(layer, v))(x).numpy()
    np.testing.assert_allclose(got, layer(x).numpy(), atol=2e-6, rtol=1e-5)


def test_dropout_in_training_falls_back_to_the_layer():
    layer = random_tkan(dropout=0.1)
    assert not fast_tkan_supported(layer, training=True)
    assert fast_tkan_supported(layer, training=False)
    assert not fast_tkan_supported(make_recurrent("lstm", 8), training=False)


def test_reference_recurrence_off_tensorflow_is_the_papers_cell():
    """Off TensorFlow, where tkan's own cell differs (its "generic" variant squashes the candidate with a tanh),
    the reference form runs `paper_tkan_sequence`: here, under TensorFlow, it gives the layer's outputs and
    gradients; on TensorFlow `recurrent_sequence` is the layer's own call."""
    layer = random_tkan(seed=5)
    x = inputs(seed=6)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        want, got = layer(x), paper_tkan_sequence(layer.cell, x)
        want_loss, got_loss = tf.reduce_sum(tf.sin(want)), tf.reduce_sum(tf.sin(got))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-6, rtol=1e-5)
    wants, gots = tape.gradient(want_loss, [x] + layer.trainable_weights), tape.gradient(got_loss, [x] + layer.trainable_weights)
    for w, g in zip(wants, gots):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=2e-5 * max(1.0, np.abs(w.numpy()).max()), rtol=0)
    assert np.array_equal(recurrent_sequence(layer, x).numpy(), layer(x).numpy())
    layer.cell.backend = "generic"  # tkan's other cell is a different function: the comparison can fail
    assert np.abs(layer(x).numpy() - want.numpy()).max() > 1e-3
