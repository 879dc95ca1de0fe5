"""Save/load round trips: the native .keras format and a TensorFlow SavedModel give identical outputs; a model saved
by an earlier version of the code loads with the same function."""
import os

import numpy as np
import pytest
import keras
import tensorflow as tf

from lem_model import compile_lem
from lem_model_testutils import ALLOC_TOL, XLA_ALLOC_TOL, random_inputs, random_labels, tiny_model


@pytest.fixture(scope="module", params=["lstm", "tkan"])
def trained(request):
    model = tiny_model(request.param)
    compile_lem(model, learning_rate=1e-2)
    model.fit(random_inputs(16, seed=1), random_labels(16), epochs=1, batch_size=8, verbose=0)
    return model


def test_keras_format_round_trip(trained, tmp_path):
    x = random_inputs(5, seed=2)
    path = tmp_path / "lem.keras"
    trained.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(trained(x)), **ALLOC_TOL)
    assert loaded.get_config() == trained.get_config()
    assert loaded.loss.mask_sharpness == trained.loss.mask_sharpness  # compile state restored


def test_saved_model_round_trip(trained, tmp_path):
    x = random_inputs(5, seed=3)
    path = str(tmp_path / "saved_model")
    trained.export(path, format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(path)
    out = loaded.serve({k: tf.constant(v) for k, v in x.items()})
    np.testing.assert_allclose(np.asarray(out), np.asarray(trained(x)), **XLA_ALLOC_TOL)  # traced: XLA


def test_export_saved_model_has_named_contract_signature(trained, tmp_path):
    from lem_model.model import export_saved_model
    x = random_inputs(5, seed=4)
    path = str(tmp_path / "named")
    export_saved_model(trained, path)
    loaded = tf.saved_model.load(path)
    sig = loaded.signatures["serving_default"]
    assert set(sig.structured_input_signature[1]) == {"bars", "min_rate", "max_rate"}
    out = sig(**{k: tf.constant(v) for k, v in x.items()})["allocations"]
    np.testing.assert_allclose(out.numpy(), np.asarray(trained(x)), **XLA_ALLOC_TOL)  # traced: XLA


def test_model_saved_before_the_layer_kernel_split_loads_with_the_same_allocations():
    """tests/fixtures/legacy_models/README.md: a TKAN LEM saved when its recurrent block was `tkan.TKAN` and its
    fast form `lem_model.fast` (commit 23b7912): same weights found, same allocations, under every implementation."""
    import lem_model.model  # noqa: F401 - registers the classes
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "legacy_models")
    saved = dict(np.load(os.path.join(folder, "lem_tkan_23b7912_io.npz")))
    x = {k: saved[k] for k in ("bars", "min_rate", "max_rate")}
    loaded = keras.saving.load_model(os.path.join(folder, "lem_tkan_23b7912.keras"))
    assert np.abs(saved["allocations"] - 1.0 / loaded.n_ahead).max() > 1e-3  # allocations that depend on weights
    np.testing.assert_allclose(np.asarray(loaded(x)), saved["allocations"], **ALLOC_TOL)
    reference = lem_model.model.LargeExecutionModel.from_config({**loaded.get_config(), "implementation": "reference"})
    reference.build({k: (None,) + v.shape[1:] for k, v in x.items()})
    reference.set_weights(loaded.get_weights())
    np.testing.assert_allclose(np.asarray(reference(x)), saved["allocations"], **ALLOC_TOL)
