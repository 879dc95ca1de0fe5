"""The synthetic bars of the demo and the tests look like real ones where VWAP tracking depends on it: log volume
is persistent (real 15-minute crypto bars: autocorrelation 0.77-0.85 at lag 1, 0.38-0.52 at one day) and the
time of day explains only a few per cent of it (components.market_data.synthetic docstring)."""
import numpy as np
import pandas as pd
import pytest

from components.market_data import synthetic


def _log_volume_shape(bars: pd.DataFrame) -> dict:
    bars = bars[bars["volume"] > 0]
    ts = pd.DatetimeIndex(bars["timestamp"])
    lv = pd.Series(np.log(bars["volume"].to_numpy()), index=ts)
    resid = lv - lv.groupby(ts.hour * 60 + ts.minute).transform("mean")
    r = resid.to_numpy()
    acf = {lag: float(np.corrcoef(r[:-lag], r[lag:])[0, 1]) for lag in (1, 12, 96)}
    return {"acf": acf, "time_of_day_share": float(1.0 - resid.var() / lv.var()), "std": float(r.std())}


def test_log_volume_is_persistent_like_real_15_minute_bars():
    shape = _log_volume_shape(synthetic.generate_bars(["BTCUSDT"], start="2024-01-01", periods=120 * 96,
                                                      freq_minutes=15, seed=3))
    assert 0.7 < shape["acf"][1] < 0.9
    assert shape["acf"][12] > 0.45
    assert 0.25 < shape["acf"][96] < 0.55
    assert shape["time_of_day_share"] < 0.1
    assert 0.55 < shape["std"] < 0.85


def test_activity_follows_its_half_lives_at_any_bar_length():
    # the same half-lives in minutes give the same persistence per unit of time at 5 and 15 minutes
    p = synthetic.AssetParams(vol_slow_weight=0.0, vol_fast_weight=1.0, vol_fast_halflife=60.0)
    for minutes in (5, 15):
        u = synthetic.volume_activity(200_000, minutes, p, np.random.default_rng(0))
        lag = 60 // minutes
        assert np.corrcoef(u[:-lag], u[lag:])[0, 1] == pytest.approx(0.5, abs=0.02)
        assert u.std() == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="vol_slow_weight"):
        synthetic.volume_activity(10, 15, synthetic.AssetParams(vol_slow_weight=0.8, vol_fast_weight=0.4),
                                  np.random.default_rng(0))


def _burst_rates(volume: np.ndarray) -> dict:
    """Per-day rates of bars above 5x / 10x the trailing one-day median volume and of burst onsets (a bar above
    5x after one below 2x), on 15-minute bars (the statistics of the module docstring's calibration)."""
    lv = np.log(np.maximum(volume, 1e-12))
    x = lv - pd.Series(lv).rolling(96, min_periods=48).median().shift(1).to_numpy()
    ok = np.isfinite(x)
    onset = (x > np.log(5)) & (np.roll(x, 1) < np.log(2)) & ok
    return {"above_5x": np.mean(x[ok] > np.log(5)) * 96, "above_10x": np.mean(x[ok] > np.log(10)) * 96,
            "onsets": onset[1:].mean() * 96}


def _to_15_minutes(bars: pd.DataFrame) -> np.ndarray:
    return bars.groupby(bars["timestamp"].dt.floor("15min"))["volume"].sum().to_numpy()


def test_volume_bursts_like_real_15_minute_bars():
    # real BTC/ETH/XRP 15-minute bars 2021-2024: 1.9-2.6 / 0.34-0.54 / 0.53-0.84 per day (module docstring)
    five = synthetic.generate_bars(["ETHUSDT"], start="2024-01-01", periods=120 * 288, freq_minutes=5, seed=4)
    rates = _burst_rates(_to_15_minutes(five))
    assert 1.2 < rates["above_5x"] < 3.2
    assert 0.2 < rates["above_10x"] < 0.9
    assert 0.35 < rates["onsets"] < 1.1
    calm = synthetic.generate_bars({"ETHUSDT": synthetic.AssetParams(event_rate_per_day=0.0)}, start="2024-01-01",
                                   periods=120 * 288, freq_minutes=5, seed=4)
    quiet = _burst_rates(_to_15_minutes(calm))
    assert quiet["above_10x"] < 0.05 and quiet["onsets"] < 0.05


def test_event_bursts_are_the_same_at_any_bar_length():
    # the multiplier is integrated exactly over each bar: three 5-minute bars average to their 15-minute bar
    p = synthetic.AssetParams(event_rate_per_day=6.0, event_grid_minutes=0.0)
    t5 = pd.date_range("2024-01-01", periods=3 * 2000, freq="5min", tz="UTC")
    t15 = pd.date_range("2024-01-01", periods=2000, freq="15min", tz="UTC")
    m5 = synthetic.event_multiplier(t5, 5, p, np.random.default_rng(1))
    m15 = synthetic.event_multiplier(t15, 15, p, np.random.default_rng(1))
    assert m15.max() > 3.0  # events happened
    # (each burst is cut off 20 slow half-lives after its onset: 2^-20 of its excess, ~1e-6, may differ)
    np.testing.assert_allclose(m5.reshape(-1, 3).mean(axis=1), m15, rtol=1e-5)
    assert (m15 >= 1.0).all()
    # bars with gaps (trading days only): an event between two bars lifts the next one, never lowers a bar
    days = pd.bdate_range("2020-01-01", periods=3000, freq="B", tz="UTC")
    m_days = synthetic.event_multiplier(days, 1440, p, np.random.default_rng(2))
    assert np.isfinite(m_days).all() and (m_days >= 1.0).all() and m_days.max() > 1.0
    np.testing.assert_array_equal(synthetic.event_multiplier(t15, 15, synthetic.AssetParams(event_rate_per_day=0.0),
                                                             np.random.default_rng(1)), np.ones(2000))
