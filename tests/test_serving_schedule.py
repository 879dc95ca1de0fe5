"""Order logic of the serving client without a server: scenario choice, request window, re-planning rule."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.scheduling import (Order, build_request_window, make_schedule, remaining_schedule,
                                scenario_indices)

N = 6


def _fractions(rng, n=N, finish_at=None):
    """Random model-like fractions (>= 0, sum 1), optionally all traded by step `finish_at`."""
    a = rng.gamma(1.0, size=n)
    if finish_at is not None:
        a[finish_at + 1:] = 0.0
    return a / a.sum()


def _order(**kw):
    base = dict(side="buy", target="volume", size=1000.0, benchmark="vwap", min_duration=1, max_duration=N)
    return Order(**{**base, **kw}).validate(N)


def test_scenario_indices_follow_side_benchmark_target_and_min_duration():
    # paths: buy-VWAP, buy-TWAP, sell-VWAP, sell-TWAP; targets: volume, notional
    assert scenario_indices(_order(side="sell", benchmark="twap", target="notional", min_duration=3), N) == (2, 3, 1)
    assert scenario_indices(_order(side="sell", benchmark="vwap", min_duration=2), N) == (1, 2, 0)
    assert scenario_indices(_order(side="buy", benchmark="twap", target="notional"), N) == (0, 1, 1)
    assert scenario_indices(_order(side="buy", benchmark="vwap", min_duration=1, max_duration=4), N) == (0, 0, 0)
    # no flexibility over the full window: the match-benchmark head, unless "beat" is asked
    assert scenario_indices(_order(min_duration=N, max_duration=N), N)[0] == N
    assert scenario_indices(_order(min_duration=N, max_duration=N, objective="beat"), N)[0] == N - 1
    assert scenario_indices(_order(min_duration=4, max_duration=4), N)[0] == 3
    assert scenario_indices(_order(min_duration=4, max_duration=4, objective="match"), N)[0] == N


@pytest.mark.parametrize("bad", [dict(min_duration=0), dict(min_duration=5, max_duration=4),
                                 dict(max_duration=N + 1), dict(size=0.0), dict(size=float("nan")),
                                 dict(min_rate=0.5, max_rate=0.2), dict(side="hold"), dict(target="shares"),
                                 dict(benchmark="close"), dict(objective="match", min_duration=2)])
def test_invalid_orders_are_refused_with_a_message(bad):
    with pytest.raises(ValueError):
        _order(**bad)


def _bars(n, freq=15, seed=0):
    rng = np.random.default_rng(seed)
    vol = rng.uniform(1, 10, n)
    return {"volume": vol, "quote_volume": vol * rng.uniform(99, 101, n),
            "timestamp": 1_700_000_100 - 1_700_000_100 % 900 + 900 * np.arange(n)}


def test_request_window_new_order_and_replanning_positions():
    bars = _bars(50)
    window_bars, hist = 20 + N, 20
    order = _order(frequency_minutes=15)
    w = build_request_window(bars, order, window_bars=window_bars, n_ahead=N)
    assert (w.origin, w.elapsed) == (hist, 0)
    np.testing.assert_allclose(w.volume[:hist], bars["volume"][-hist:], rtol=1e-6)
    assert w.timestamp[hist] == bars["timestamp"][-1] + 900          # first execution bar = the next bar
    assert np.all(np.diff(w.timestamp) == 900)
    np.testing.assert_allclose(w.volume[hist:], bars["volume"][-1], rtol=1e-6)   # placeholders
    # re-plan two bars later: same origin, realized bars in place, placeholders after them
    later = {k: np.concatenate([v, _bars(52, seed=1)[k][50:]]) if k != "timestamp" else
             np.concatenate([v, v[-1] + 900 * np.arange(1, 3)]) for k, v in bars.items()}
    w2 = build_request_window(later, _order(start_time=int(w.origin_time)), window_bars=window_bars, n_ahead=N)
    assert (w2.origin_time, w2.elapsed) == (w.origin_time, 2)
    np.testing.assert_array_equal(w2.timestamp, w.timestamp)
    np.testing.assert_allclose(w2.volume[:hist + 2], later["volume"][-(hist + 2):], rtol=1e-6)


@pytest.mark.parametrize("case", ["short_history", "nan", "negative", "unsorted", "bad_start", "too_late"])
def test_request_window_refuses_bad_bars(case):
    bars = _bars(30)
    kw = {}
    if case == "short_history":
        bars = _bars(10)
    elif case == "nan":
        bars["volume"][3] = np.nan
    elif case == "negative":
        bars["quote_volume"][5] = -1.0
    elif case == "unsorted":
        bars["timestamp"][[4, 5]] = bars["timestamp"][[5, 4]]
    elif case == "bad_start":
        kw = dict(start_time=int(bars["timestamp"][25]) + 7)
    elif case == "too_late":
        kw = dict(start_time=int(bars["timestamp"][22]))    # 8 bars realized > N
    with pytest.raises(ValueError):
        build_request_window(bars, _order(**kw), window_bars=20 + N, n_ahead=N)


def test_fresh_unconstrained_schedule_is_the_model_fractions():
    a = _fractions(np.random.default_rng(0))
    q, warnings = remaining_schedule(a, _order(min_rate=0.0), elapsed=0, executed=0.0)
    np.testing.assert_allclose(q, 1000.0 * a, rtol=1e-9, atol=1e-9)
    assert warnings == []


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10**6), t_max=st.integers(1, N), elapsed_frac=st.floats(0, 1),
       fill=st.floats(0.0, 1.3), max_rate=st.sampled_from([1.0, 0.5, 0.3, 0.2]),
       min_rate=st.sampled_from([0.0, 1 / N ** 2, 0.1]))
def test_remaining_schedule_invariants(seed, t_max, elapsed_frac, fill, max_rate, min_rate):
    """Sized to what is left, never negative, done by T_max, rates respected whenever feasible."""
    rng = np.random.default_rng(seed)
    a = _fractions(rng)
    order = _order(max_duration=t_max, max_rate=max_rate, min_rate=min(min_rate, max_rate))
    elapsed = min(int(elapsed_frac * t_max), t_max - 1)
    executed = fill * 1000.0 * a[:elapsed].sum()
    q, warnings = remaining_schedule(a, order, elapsed=elapsed, executed=executed)
    remaining = max(1000.0 - executed, 0.0)
    assert q.shape == (t_max - elapsed,)
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(), remaining, rtol=1e-9, atol=1e-6)
    feasible = remaining <= max_rate * 1000.0 * (t_max - elapsed) + 1e-6
    if feasible:
        assert not warnings
        assert np.all(q <= max_rate * 1000.0 + 1e-6)
        left = remaining - np.concatenate([[0.0], np.cumsum(q)[:-1]])      # before each step
        incomplete = left > 1e-6
        assert np.all(q[incomplete] >= np.minimum(order.min_rate * 1000.0, left[incomplete]) - 1e-6)
    else:
        assert warnings and np.allclose(q, remaining / len(q))


def test_remaining_schedule_is_causal_in_the_fractions():
    """Step k's quantity uses fractions of steps <= k only."""
    rng = np.random.default_rng(3)
    order = _order(max_duration=5, max_rate=0.4)
    for k in range(5):
        a = _fractions(rng)
        b = a.copy()
        b[k + 1:] = rng.gamma(1.0, size=N - k - 1)
        b[k + 1:] *= (1 - a[:k + 1].sum()) / b[k + 1:].sum()
        qa, _ = remaining_schedule(a, order, elapsed=1, executed=150.0)
        qb, _ = remaining_schedule(b, order, elapsed=1, executed=150.0)
        np.testing.assert_allclose(qa[:k], qb[:k], rtol=1e-12)


def test_tail_after_t_max_is_folded_in_time_and_overfills_trade_nothing():
    a = np.full(N, 1.0 / N)
    q, _ = remaining_schedule(a, _order(max_duration=3), elapsed=0, executed=0.0)
    np.testing.assert_allclose(q, [1000 / 6, 1000 / 6, 1000 * 4 / 6])
    # a max rate of 0.4: the tail is moved forward so that no bar exceeds it
    q, _ = remaining_schedule(a, _order(max_duration=3, max_rate=0.4), elapsed=0, executed=0.0)
    assert np.all(q <= 400 + 1e-9) and np.isclose(q.sum(), 1000)
    q, _ = remaining_schedule(a, _order(), elapsed=2, executed=1000.5)
    assert np.all(q == 0)
    with pytest.raises(ValueError, match="maximum duration"):
        remaining_schedule(a, _order(max_duration=3), elapsed=3, executed=10.0)


def test_make_schedule_reports_completion_and_units():
    rng = np.random.default_rng(5)
    alloc = np.zeros((N, N + 1, 4, 2))
    alloc[:] = _fractions(rng, finish_at=3)[:, None, None, None]
    window = build_request_window(_bars(40), _order(), window_bars=20 + N, n_ahead=N)
    s = make_schedule(alloc, _order(target="notional"), window, n_ahead=N)
    assert s.units == "notional" and s.completion_step == 3
    assert s.completion_time == window.timestamp[window.origin + 3]
    assert s.to_dict()["scenario"]["path"] == "buy_vwap"


def test_request_window_accepts_a_dataframe_with_datetime_timestamps():
    import pandas as pd
    bars = _bars(40)
    frame = pd.DataFrame({"timestamp": pd.to_datetime(bars["timestamp"], unit="s", utc=True),
                          "volume": bars["volume"], "quote_volume": bars["quote_volume"]})
    w = build_request_window(frame, _order(), window_bars=20 + N, n_ahead=N)
    w_ref = build_request_window(bars, _order(), window_bars=20 + N, n_ahead=N)
    np.testing.assert_array_equal(w.timestamp, w_ref.timestamp)
    np.testing.assert_array_equal(w.volume, w_ref.volume)


def test_schedule_refuses_overfills_and_infeasible_rates_unless_flagged():
    """`make_schedule` (the client's last step): an over-fill is a ValueError; rates that cannot finish the
    order in the bars left are refused unless the order allows it, and then reported."""
    from serving.scheduling import check_order_state, model_rates
    rng = np.random.default_rng(6)
    alloc = np.zeros((N, N + 1, 4, 2))
    alloc[:] = _fractions(rng)[:, None, None, None]
    window = build_request_window(_bars(40), _order(), window_bars=20 + N, n_ahead=N)
    with pytest.raises(ValueError, match="executed: .*over-fill"):
        make_schedule(alloc, _order(), window, executed=1000.01, n_ahead=N)
    with pytest.raises(ValueError, match="max_rate: infeasible"):
        make_schedule(alloc, _order(max_rate=0.1), window, n_ahead=N)
    s = make_schedule(alloc, _order(max_rate=0.1, allow_infeasible=True), window, n_ahead=N)
    assert s.infeasible and s.to_dict()["infeasible"] == s.infeasible and np.isclose(s.quantities.sum(), 1000.0)
    assert check_order_state(_order(max_rate=0.2), elapsed=0, executed=0.0) == []        # 0.2 x 6 >= 1
    with pytest.raises(ValueError, match="max_rate: infeasible"):                        # 0.4 left, 1 bar
        check_order_state(_order(max_rate=0.2), elapsed=N - 1, executed=600.0)
    assert model_rates(_order(max_duration=3, min_rate=0.3), N) == (1 / N, 1.0)
