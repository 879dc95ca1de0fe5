"""The LEM under the JAX backend (`make test` installs JAX: the `test` extra): it builds, trains a few steps,
gives the TensorFlow backend's allocations on the same weights (float32 tolerance: different backends, different
kernels), and stays causal. Each backend runs in its own process (Keras picks its backend at import)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lem_model_testutils import TINY, random_inputs, random_labels, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L, N = TINY["lookback"], TINY["n_ahead"]

# Runs under KERAS_BACKEND=jax: loads the TensorFlow-built weights into the same architecture, writes its
# allocations, checks causality (a perturbation from bar L+k on leaves steps <= k unchanged) and trains a few
# steps with the project's compile_lem (LemAdam falls back to Keras' own update off TensorFlow).
JAX_SIDE = textwrap.dedent("""
    import json, sys
    import numpy as np, keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    import jax
    from lem_model import compile_lem
    from lem_model_testutils import TINY, tiny_model
    work, recurrent = sys.argv[1], sys.argv[2]
    L, N = TINY["lookback"], TINY["n_ahead"]
    data = dict(np.load(work + "/inputs.npz"))
    x = {k: data[k] for k in ("bars", "min_rate", "max_rate")}
    model = tiny_model(recurrent)
    model.load_weights(work + "/tf.weights.h5")
    alloc = np.asarray(model(x))
    report = {"backend": keras.backend.backend(), "jax": jax.__version__, "devices": str(jax.devices())}
    # causality under JAX
    rng = np.random.default_rng(7)
    leaks, later = [], 0.0
    for k in range(N):
        xp = {key: v.copy() for key, v in x.items()}
        xp["bars"][:, L + k:] += rng.normal(scale=3.0, size=xp["bars"][:, L + k:].shape).astype("float32")
        out = np.asarray(model(xp))
        leaks.append(float(np.abs(out[:, :k + 1] - alloc[:, :k + 1]).max()))
        if k + 1 < N:
            later = max(later, float(np.abs(out[:, k + 1:] - alloc[:, k + 1:]).max()))
    report.update(causal_max_diff=max(leaks), later_max_diff=later)
    # a few training steps
    y = data["labels"]
    compile_lem(model, learning_rate=3e-3, metrics=False)
    before = float(model.evaluate(x, y, batch_size=len(y), verbose=0))
    w0 = [np.asarray(w).copy() for w in model.trainable_weights]
    hist = model.fit(x, y, epochs=6, batch_size=16, shuffle=False, verbose=0).history["loss"]
    after = float(model.evaluate(x, y, batch_size=len(y), verbose=0))
    moved = sum(int(not np.array_equal(a, np.asarray(b))) for a, b in zip(w0, model.trainable_weights))
    report.update(loss_before=before, loss_after=after, fit_losses=[float(v) for v in hist],
                  weights_moved=moved, weights_total=len(w0))
    np.save(work + "/jax_alloc.npy", alloc)
    print("REPORT " + json.dumps(report))
""")


def _run_jax_side(work, recurrent):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", JAX_SIDE, str(work), recurrent], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    line = [s for s in r.stdout.splitlines() if s.startswith("REPORT ")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(line[-1][len("REPORT "):])


@pytest.mark.parametrize("recurrent", ["lstm", "tkan"])
def test_jax_backend_matches_tensorflow_trains_and_is_causal(recurrent, tmp_path):
    import jax  # noqa: F401  (installed by the test extra; an ImportError here is a broken install, not a skip)
    import keras
    assert keras.backend.backend() == "tensorflow"
    model = tiny_model(recurrent)
    x = random_inputs(12, seed=11, scale=1.5, max_rate=0.6)
    np.savez(tmp_path / "inputs.npz", labels=random_labels(12, seed=4), **x)
    model.save_weights(str(tmp_path / "tf.weights.h5"))
    tf_alloc = np.asarray(model(x))

    report = _run_jax_side(tmp_path, recurrent)
    assert report["backend"] == "jax" and "cpu" in report["devices"].lower()
    jax_alloc = np.load(tmp_path / "jax_alloc.npy")
    assert jax_alloc.shape == tf_alloc.shape == (12, N, N + 1, 4, 2)
    # same weights, two backends: float32 agreement (allocations are fractions in [0, 1])
    np.testing.assert_allclose(jax_alloc, tf_alloc, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(jax_alloc.sum(axis=1), 1.0, atol=1e-5)
    # the comparison can fail: a 1 % error on the weights' output is far outside the tolerance
    assert not np.allclose(jax_alloc * 1.01, tf_alloc, rtol=1e-5, atol=2e-6)
    # causal under JAX: steps <= k do not see bars from L+k on; later steps do
    assert report["causal_max_diff"] <= 1e-6, report
    assert report["later_max_diff"] > 1e-4, report
    # trains: every weight moves and the loss falls
    assert report["weights_moved"] == report["weights_total"], report
    assert np.isfinite(report["fit_losses"]).all() and report["loss_after"] < report["loss_before"] - 1e-4, report
