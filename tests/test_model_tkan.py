"""The LEM's TKAN block (`lem_model.recurrent.TKAN`): its definition is the paper's cell, which the `tkan` package's
own layer computes under TensorFlow (same outputs and gradients on the same weights), and its TensorFlow kernel
(`lem_model.kernels.tensorflow_kernels.tkan`: a while loop, with a hand-written backward when stashing) computes
the definition, eagerly and traced, in values and gradients."""
import numpy as np
import pytest

pytest.importorskip("tkan")
tf = pytest.importorskip("tensorflow")

from lem_model import kernels  # noqa: E402
from lem_model.recurrent import TKAN, _kan_grid_of_declared_shape, make_recurrent  # noqa: E402


def random_tkan(units=8, d_in=5, seed=0, dropout=0.0, implementation="reference"):
    layer = make_recurrent("tkan", units, dropout=dropout, implementation=implementation)
    layer.build((None, 7, d_in))
    rng = np.random.default_rng(seed)
    # random values everywhere (biases, layer-norm scale/offset, sub-state mix) so no term hides behind a 0 or 1
    layer.set_weights([w if w.shape[-1] == 10 and w.ndim == 3 else rng.normal(0, 0.6, w.shape).astype("float32")
                       for w in layer.get_weights()])
    return layer


def inputs(d_in=5, seed=1):
    # scale 3: layer-normed values leave the KAN grid [-1, 1] too (all-zero spline bases)
    return tf.constant(3.0 * np.random.default_rng(seed).normal(size=(3, 7, d_in)).astype("float32"))


def values_and_grads(layer, fn, x, traced=False):
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = fn(x)
            loss = tf.reduce_sum(out * tf.cos(tf.range(out.shape[-1], dtype=out.dtype)))
        return out, tape.gradient(loss, [x] + layer.trainable_weights)
    out, grads = (tf.function(run) if traced else run)(x)
    return out.numpy(), [g.numpy() for g in grads]


def assert_same(want, got):
    (ref, ref_grads), (out, grads) = want, got
    assert ref.shape == out.shape == (3, 7, 8)
    assert np.abs(ref).max() > 0.05  # a non-trivial output
    np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)  # another computation: float32 agreement
    assert len(ref_grads) == len(grads) > 10
    for r, g in zip(ref_grads, grads):
        np.testing.assert_allclose(g, r, atol=2e-5 * max(1.0, np.abs(r).max()), rtol=0)


def test_definition_is_the_papers_cell_as_the_tkan_package_computes_it_on_tensorflow():
    from tkan import TKAN as PackageTKAN
    layer = random_tkan(seed=5)
    package = PackageTKAN(8, return_sequences=True)
    with _kan_grid_of_declared_shape():  # the same weight shapes
        package.build((None, 7, 5))
    package.set_weights(layer.get_weights())
    assert package.cell.backend == "tensorflow"  # the package's TensorFlow cell: the paper's (eq. 18)
    x = inputs(seed=6)
    assert_same(values_and_grads(package, lambda v: package(v), x), values_and_grads(layer, lambda v: layer(v), x))
    package.cell.backend = "generic"  # the package's other cell is a different function: the comparison can fail
    assert np.abs(package(x).numpy() - layer(x).numpy()).max() > 1e-3


@pytest.mark.parametrize("mode", ["eager", "traced", "traced-inference"])
def test_kernel_equals_definition_in_values_and_gradients(mode, monkeypatch):
    # training: the kernel stashes for its hand-written gradient (eagerly and in a graph, as training runs);
    # "-inference": TensorFlow differentiates the bare loop (no stash)
    layer = random_tkan()
    grid = layer.cell.tkan_sub_layers[0].grid.numpy()
    assert grid.shape == (1, 5, 10) and np.ptp(grid[0, 0]) > 0
    x = inputs()
    training = mode != "traced-inference"
    want = values_and_grads(layer, lambda v: layer(v, training=training), x)
    layer.implementation = "fast"
    stashed = []
    kernel = kernels.find("tkan")
    monkeypatch.setitem(kernels._KERNELS, ("tkan", "tensorflow"),
                        lambda *a, stash: stashed.append(stash) or kernel(*a, stash=stash))
    got = values_and_grads(layer, lambda v: layer(v, training=training), x, traced=mode != "eager")
    assert stashed == [training]
    assert_same(want, got)


def test_grid_has_its_declared_shape_and_the_patch_is_scoped():
    from keras_efficient_kan import kan
    original = kan.GridInitializer.__call__
    layer = random_tkan()
    assert tuple(layer.cell.tkan_sub_layers[0].grid.shape) == (1, 5, 10)
    assert kan.GridInitializer.__call__ is original


def test_dropout_masks_the_inputs_in_training_only():
    layer = random_tkan(dropout=0.5, implementation="auto")
    x = inputs(seed=2)
    plain = random_tkan(implementation="auto")
    np.testing.assert_allclose(layer(x, training=False).numpy(), plain(x).numpy(), atol=1e-6)
    dropped = layer(x, training=True).numpy()
    assert np.isfinite(dropped).all() and np.abs(dropped - plain(x).numpy()).max() > 1e-3
    assert isinstance(layer, TKAN) and TKAN.from_config(layer.get_config()).dropout == 0.5
