"""LEM model: output shape, allocation validity (property test), distinct initial schedules, config."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lem_model import LargeExecutionModel
from lem_model.layers import soft_clip_tolerance
from lem_model_testutils import NUM_FEATURES, TINY, random_inputs, tiny_model

N = TINY["n_ahead"]


@pytest.fixture(scope="module")
def model():
    return tiny_model("lstm")


def test_output_shape_and_feature_count_inferred(model):
    out = np.asarray(model(random_inputs(3)))
    assert out.shape == (3, N, N + 1, 4, 2)
    assert model.num_features == NUM_FEATURES
    other = tiny_model("gru", num_features=7)
    assert np.asarray(other(random_inputs(2, num_features=7))).shape == (2, N, N + 1, 4, 2)


def test_bad_inputs_raise_clear_errors(model):
    x = random_inputs(2)
    with pytest.raises(ValueError, match="lookback \\+ n_ahead"):
        model({**x, "bars": x["bars"][:, 1:]})
    with pytest.raises(ValueError, match="min_rate"):
        model({"bars": x["bars"]})
    with pytest.raises(ValueError, match="divisible"):
        LargeExecutionModel(hidden_size=10, num_heads=4)
    with pytest.raises(ValueError, match="recurrent"):
        LargeExecutionModel(recurrent="transformer")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31 - 1), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
       min_rate=st.floats(0.0, 0.3), max_rate=st.floats(0.05, 1.0))
def test_allocations_are_valid(model, seed, scale, min_rate, max_rate):
    x = random_inputs(4, seed=seed, scale=scale, min_rate=min_rate, max_rate=max_rate)
    a = np.asarray(model(x), dtype=np.float64)                         # [B, N, M, 4, 2]
    assert np.all(np.isfinite(a))
    assert a.min() >= 0.0
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-5)
    if N * max_rate >= 1.0:  # finishing within max_rate is feasible: every step respects it
        assert a.max() <= max_rate + soft_clip_tolerance(model.clip_sharpness) + 1e-5
    if min_rate <= max_rate:  # every decided step trades at least min(min_rate, what remains)
        remaining = 1.0 - np.cumsum(a, axis=1) + a
        assert np.all(a[:, :-1] >= np.minimum(min_rate, remaining[:, :-1]) - 1e-5)


def test_every_scenario_starts_at_twap_and_the_paths_separate_in_training():
    # at initialisation every (minimum period, path, target) schedule is TWAP at the paper's minimum rate 1/N^2
    fresh = tiny_model("lstm", random_output=False)
    x = random_inputs(8, seed=3, min_rate=1.0 / N ** 2, max_rate=1.0)
    np.testing.assert_allclose(np.asarray(fresh(x)), 1.0 / N, atol=1e-6)
    # one optimiser step on the LEM loss moves buy and sell paths apart (opposite PnL gradients)
    from lem_model.model import compile_lem
    labels = np.stack([np.ones((8, N)), np.exp(np.cumsum(0.01 * np.random.default_rng(0).normal(size=(8, N)), 1))],
                      -1).astype("float32")
    compile_lem(fresh, learning_rate=1e-2, metrics=False, jit_compile=False)
    fresh.train_on_batch(x, labels)
    a = np.asarray(fresh(x))                                           # [B, N, M, 4, 2]
    buy, sell = a[..., 0, 0], a[..., 2, 0]                             # VWAP paths, volume target
    assert np.abs(buy - sell).max() > 1e-4
    assert np.abs(a - 1.0 / N).max() > 1e-4


def test_non_finite_placeholders_give_finite_allocations(model):
    x = random_inputs(2)
    x["bars"][:, -3:] = np.nan
    x["bars"][:, -4] = np.inf
    assert np.all(np.isfinite(np.asarray(model(x))))


def test_config_round_trip(model):
    clone = LargeExecutionModel.from_config(model.get_config())
    for key in ("lookback", "n_ahead", "hidden_size", "num_embedding", "num_heads", "fused_mlp_hidden_dim",
                "fused_mlp_layers", "recurrent", "clip_sharpness"):
        assert getattr(clone, key) == getattr(model, key)


def test_volume_clip_bounds_the_linear_volume_feature_only():
    """volume_clip: only column VOLUME_COLUMN is bounded (from above); a surge beyond it changes nothing more,
    while every other feature, and the volume below the bound, still moves the allocations. Saved in the
    config; the default adds no bound."""
    from lem_model.features import VOLUME_COLUMN
    plain = tiny_model()
    clipped = tiny_model(volume_clip=3.0)
    clipped.set_weights(plain.get_weights())
    assert LargeExecutionModel.from_config(clipped.get_config()).volume_clip == 3.0
    assert plain.volume_clip == plain.input_clip  # default: no extra bound
    x = random_inputs(3, scale=0.5)
    np.testing.assert_allclose(np.asarray(clipped(x)), np.asarray(plain(x)), rtol=0, atol=1e-6)  # all below 3
    # The changes span eight lookback bars: the initialisation is unseeded, and a one-bar surge (20 -> 80) moved
    # the plain model's allocations by only 5e-5 in one CI draw. Over eight bars, the smallest moves in 40 draws
    # were 0.73 (plain, volume 4 -> 80) and 0.10 (clipped, next feature +2), against the 1e-2 asserted.
    surge, bigger = ({k: v.copy() for k, v in x.items()} for _ in range(2))
    surge["bars"][:, 2:10, VOLUME_COLUMN] = 4.0
    bigger["bars"][:, 2:10, VOLUME_COLUMN] = 80.0
    np.testing.assert_array_equal(np.asarray(clipped(surge)), np.asarray(clipped(bigger)))
    assert np.abs(np.asarray(plain(surge)) - np.asarray(plain(bigger))).max() > 1e-2
    other = {k: v.copy() for k, v in surge.items()}
    other["bars"][:, 2:10, VOLUME_COLUMN + 1] += 2.0
    assert np.abs(np.asarray(clipped(other)) - np.asarray(clipped(surge))).max() > 1e-2
    with pytest.raises(ValueError, match="volume_clip must be > 0"):
        tiny_model(volume_clip=0.0)


def test_tilt_bound_keeps_every_orders_rate_within_its_band_around_the_base_rate():
    """tilt_bound c: the first step's allocation, raw + min_rate at max_rate 1, stays within softplus(b -+ c) +
    min_rate of the base rate softplus(b) (b: the step's output bias, TWAP at initialisation) whatever the inputs,
    where the unbounded model with the same weights leaves that band; saved in the config; 0 (default) = the
    paper's form."""
    from lem_model.layers import StepwiseFusedAllocator
    c, min_rate = 0.5, 1.0 / N ** 2
    plain = tiny_model()
    bounded = tiny_model(tilt_bound=c)
    bounded.set_weights(plain.get_weights())
    assert plain.tilt_bound == 0.0 and plain.allocator.tilt_bound == 0.0
    assert LargeExecutionModel.from_config(bounded.get_config()).tilt_bound == c
    assert StepwiseFusedAllocator.from_config(bounded.allocator.get_config()).tilt_bound == c
    b = np.asarray(bounded.allocator.b_out)[0, :, 0, 0]                  # step 0's bias per path [P]
    softplus = lambda v: np.logaddexp(0.0, v)
    lo, hi = softplus(b - c) + min_rate, softplus(b + c) + min_rate       # [P]
    x = random_inputs(16, seed=4, scale=30.0, min_rate=min_rate, max_rate=1.0)
    first = lambda m: np.asarray(m(x)).reshape(16, N, -1)[:, 0]           # [B, P]: step 0, every path
    tol = 1e-5
    got = first(bounded)
    assert np.all(got >= lo - tol) and np.all(got <= hi + tol)
    free = first(plain)
    assert np.any(free < lo - 1e-3) or np.any(free > hi + 1e-3)          # the band binds: without it, it is left
    with pytest.raises(ValueError, match="tilt_bound must be >= 0"):
        tiny_model(tilt_bound=-1.0)
