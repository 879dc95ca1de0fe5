"""The one-scenario path (`LargeExecutionModel.allocate_scenario`, the `serve_scenario` signature's model
call): the same fractions as the full output at that scenario, in eager mode and in traced inference (XLA for
small batches, plain above `xla_max_batch`; both forms of the allocator kernel's products), and causal in the
same way."""
import numpy as np
import pytest

from lem_model import layout
from lem_model.kernels.tensorflow_kernels import MATMUL_T_NARROW
from lem_model.presets import XLA_MAX_BATCH
from lem_model_testutils import ALLOC_TOL, TINY, XLA_ALLOC_TOL, random_inputs, tiny_model

L, N = TINY["lookback"], TINY["n_ahead"]
P = layout.num_min_periods(N) * layout.PATHS_PER_MIN_PERIOD


def test_scenario_index_is_the_flattened_output_position():
    full = np.arange(N * P).reshape(N, N + 1, layout.NUM_PATHS, layout.NUM_TARGETS)
    for m in range(N + 1):
        for path in range(layout.NUM_PATHS):
            for target in range(layout.NUM_TARGETS):
                j = layout.scenario_index(m, path, target, N)
                assert np.array_equal(full.reshape(N, P)[:, j], full[:, m, path, target])
    with pytest.raises(ValueError):
        layout.scenario_index(N + 1, 0, 0, N)
    with pytest.raises(ValueError):
        layout.scenario_index(0, layout.NUM_PATHS, 0, N)


@pytest.mark.parametrize("recurrent", ["lstm", "tkan"])
def test_allocate_scenario_equals_the_full_output_at_that_scenario(recurrent):
    import tensorflow as tf
    model = tiny_model(recurrent)
    rng = np.random.default_rng(0)
    # XLA-compiled (padded) and plain traced paths; above MATMUL_T_NARROW the full allocator takes the
    # adjoint form of its per-path products (the training form), below it the transposed one
    for batch in (1, 3, XLA_MAX_BATCH + 3, MATMUL_T_NARROW + 5):
        x = random_inputs(batch, seed=batch, max_rate=0.4)
        scenario = rng.integers(0, P, size=batch)
        full = np.asarray(model(x)).reshape(batch, N, P)[np.arange(batch), :, scenario]
        eager = np.asarray(model.allocate_scenario(x, scenario))
        traced = tf.function(lambda x, s: model.allocate_scenario(x, s, training=False))(x, tf.constant(scenario))
        assert eager.shape == traced.shape == (batch, N)
        np.testing.assert_allclose(eager, full, **ALLOC_TOL)  # per-row gathered weights: other kernels
        np.testing.assert_allclose(traced.numpy(), full, **XLA_ALLOC_TOL)
        np.testing.assert_allclose(traced.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_allocate_scenario_is_causal():
    model = tiny_model("lstm")
    x = random_inputs(4, seed=3)
    scenario = np.array([0, 7, P // 2, P - 1])
    base = np.asarray(model.allocate_scenario(x, scenario))
    rng = np.random.default_rng(5)
    later = 0.0
    for k in range(N):
        xp = {key: v.copy() for key, v in x.items()}
        xp["bars"][:, L + k:] += rng.normal(scale=3.0, size=xp["bars"][:, L + k:].shape)
        out = np.asarray(model.allocate_scenario(xp, scenario))
        np.testing.assert_allclose(out[:, : k + 1], base[:, : k + 1], rtol=0, atol=1e-6, err_msg=f"step <= {k}")
        later = max(later, np.abs(out[:, k + 1:] - base[:, k + 1:]).max() if k + 1 < N else 0.0)
    assert later > 1e-4
