"""The model also runs under the JAX backend (when JAX is installed): a small forward in a subprocess."""
import os
import subprocess
import sys
import textwrap

import pytest

try:
    import jax  # noqa: F401
    HAVE_JAX = True
except Exception:  # pragma: no cover - depends on the environment
    HAVE_JAX = False

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed (optional extra: pip install -e '.[jax]')")
@pytest.mark.parametrize("recurrent", ["lstm", "tkan"])
def test_forward_under_jax_backend(recurrent):
    code = textwrap.dedent(f"""
        import numpy as np, keras
        assert keras.backend.backend() == "jax"
        from lem_model import build_lem
        from lem_model.loss import lem_objective
        m = build_lem(num_features=3, lookback=6, n_ahead=3, hidden_size=8, num_embedding=4, num_heads=2,
                      fused_mlp_hidden_dim=8, recurrent="{recurrent}")
        rng = np.random.default_rng(0)
        x = {{"bars": rng.normal(size=(2, 9, 3)).astype("float32"),
              "min_rate": np.zeros((2, 1), "float32"), "max_rate": np.ones((2, 1), "float32")}}
        a = np.asarray(m(x))
        assert a.shape == (2, 3, 4, 4, 2) and np.allclose(a.sum(1), 1, atol=1e-5) and a.min() >= 0
        y = np.stack([np.ones((2, 3)), np.ones((2, 3))], -1).astype("float32")
        assert np.isfinite(np.asarray(lem_objective(y, a))).all()
        print("ok")
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
