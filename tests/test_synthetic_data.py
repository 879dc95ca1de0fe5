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
