"""Shared test setup: quiet TensorFlow, the TensorFlow Keras backend unless a test asks for another, and a tiny
exported LEM shared by the test modules whose checks do not depend on its weights."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

#: bar lengths (minutes) the shared seeded LEM is exported as trained on (`seeded_lem_export`)
SEEDED_LEM_FREQUENCIES = (15, 90)


@pytest.fixture(scope="session")
def seeded_lem_export(tmp_path_factory):
    """A seeded-init tiny LEM (serving_testutils' sizes and hyperparameters) exported once per session with the
    Trainer's exporter, as trained on SEEDED_LEM_FREQUENCIES, its small-batch XLA path bounded at batch 1 (so
    the warm-up a server replays compiles one batch size). For checks that do not depend on the weights (request
    and signature rules); read-only: copy it under a base path to serve it. Returns the version directory."""
    import keras

    import serving_testutils as U
    from lem_model.features import NUM_BAR_FEATURES
    from lem_model.model import build_lem
    keras.utils.set_random_seed(3)
    model = build_lem(num_features=NUM_BAR_FEATURES, lookback=U.SIZES["lookback"], n_ahead=U.SIZES["n_ahead"],
                      xla_max_batch=1, **U.HYPER)
    base = str(tmp_path_factory.mktemp("seeded-lem") / "lem")
    return U.export_version(model, base, 1, trained_frequencies=SEEDED_LEM_FREQUENCIES)
