"""`lem_model.optim.LemAdam` (fused on TensorFlow) takes the same steps as `keras.optimizers.Adam`, and a
compiled LEM saves and loads with it."""
import os

import numpy as np
import keras

from lem_model.optim import LemAdam
from lem_model_testutils import ALLOC_TOL


def run_steps(opt, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    w = [keras.Variable(rng.normal(size=(4, 3)).astype("float32")), keras.Variable(np.zeros(3, "float32"))]
    for i in range(steps):
        grads = [keras.ops.convert_to_tensor(rng.normal(size=tuple(v.shape)).astype("float32") * (i + 1))
                 for v in w]
        opt.apply(grads, w)
    return [np.asarray(v) for v in w]


def test_same_updates_as_keras_adam():
    for kwargs in (dict(learning_rate=1e-2), dict(learning_rate=3e-3, beta_1=0.8, beta_2=0.99, epsilon=1e-4),
                   dict(learning_rate=1e-2, clipnorm=0.5)):
        ref = run_steps(keras.optimizers.Adam(**kwargs))
        got = run_steps(LemAdam(**kwargs))
        moved = np.abs(ref[0] - run_steps(keras.optimizers.Adam(learning_rate=0.0))[0]).max()
        assert moved > 1e-3, kwargs  # the comparison sees real updates
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_compiled_model_round_trip_keeps_optimizer(tmp_path):
    from lem_model import compile_lem
    from lem_model_testutils import random_inputs, random_labels, tiny_model
    model = compile_lem(tiny_model(), learning_rate=1e-3, metrics=False)
    x, y = random_inputs(8), random_labels(8)
    model.train_on_batch(x, y)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, LemAdam)
    assert int(loaded.optimizer.iterations.numpy()) == 1
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), **ALLOC_TOL)
