"""Causality by construction: step k depends only on bars before its execution bar (bars[:, :L+k]).

Perturbing bars[:, L+k:] (execution bars o+k and later) must leave steps 0..k unchanged, with random
weights and after training; the later steps must react (so the check can fail).
"""
import numpy as np
import pytest

from lem_model import compile_lem
from lem_model_testutils import TINY, random_inputs, random_labels, tiny_model

L, N = TINY["lookback"], TINY["n_ahead"]


def _check_causal(model, seed=0):
    x = random_inputs(6, seed=seed)
    base = np.asarray(model(x))
    rng = np.random.default_rng(seed + 100)
    later_changed = []
    for k in range(N):
        for perturbation in ("noise", "extreme"):
            xp = {key: v.copy() for key, v in x.items()}
            if perturbation == "noise":
                xp["bars"][:, L + k:] += rng.normal(scale=3.0, size=xp["bars"][:, L + k:].shape)
            else:
                xp["bars"][:, L + k:] = np.where(rng.random(xp["bars"][:, L + k:].shape) < 0.5, np.nan, 1e30)
            out = np.asarray(model(xp))
            np.testing.assert_allclose(out[:, : k + 1], base[:, : k + 1], rtol=0, atol=1e-6,
                                       err_msg=f"step <= {k} changed when bars >= o+{k} were perturbed")
            if k < N - 1:
                later_changed.append(np.abs(out[:, k + 1:] - base[:, k + 1:]).max())
    # realized execution bars do feed later steps
    assert max(later_changed) > 1e-4


@pytest.mark.parametrize("recurrent", ["lstm", "tkan"])
def test_causal_with_random_weights(recurrent):
    _check_causal(tiny_model(recurrent))


def test_causal_after_training():
    model = tiny_model("gru")
    compile_lem(model, learning_rate=1e-2, metrics=False)
    x, y = random_inputs(32, seed=5), random_labels(32, seed=6)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    _check_causal(model, seed=7)
