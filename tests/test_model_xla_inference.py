"""Traced inference graphs of the fast form run the context block XLA-compiled for small batches (the model's
`xla_max_batch`); it must compute the same allocations as the plain (eager) path, and stay causal."""
import numpy as np
import pytest

from lem_model_testutils import TINY, XLA_ALLOC_TOL, random_inputs, tiny_model

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("recurrent", ["tkan", "lstm"])
def test_xla_small_batch_inference_equals_plain_path(recurrent):
    model = tiny_model(recurrent=recurrent)
    assert model.xla_max_batch >= 1
    traced = tf.function(lambda x: model(x, training=False))
    for batch in (1, 3, model.xla_max_batch + 1):
        x = random_inputs(batch, seed=batch)
        plain = model(x, training=False).numpy()          # eager: plain path
        compiled = traced(x).numpy()                      # traced: XLA when batch <= xla_max_batch
        np.testing.assert_allclose(compiled, plain, **XLA_ALLOC_TOL)


def test_xla_inference_path_is_causal():
    model = tiny_model(recurrent="tkan")
    traced = tf.function(lambda x: model(x, training=False))
    L, N = TINY["lookback"], TINY["n_ahead"]
    base = random_inputs(1, seed=7)
    out = traced(base).numpy()
    for k in range(N):
        changed = {key: v.copy() for key, v in base.items()}
        changed["bars"][:, L + k:] = 1e6
        got = traced(changed).numpy()
        np.testing.assert_allclose(got[:, :k + 1], out[:, :k + 1], atol=1e-6, rtol=0)
