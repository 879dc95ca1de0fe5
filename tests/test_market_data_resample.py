"""Grid alignment, resampling (conserves volume and quote volume) and the missing-bar rules."""
import numpy as np
import pandas as pd
import pytest

from components.market_data import resample


def test_resampling_conserves_volume_and_quote_volume_and_uses_the_epoch_grid():
    rng = np.random.default_rng(0)
    n = 5000
    ts_s = 1_600_000_000 // 300 * 300 + 300 * np.sort(rng.choice(np.arange(2 * n), n, replace=False))
    v = rng.lognormal(0, 1, n)
    q = v * rng.uniform(10, 20, n)
    for target in (15, 90, 250, 1440):
        t2, v2, q2 = resample.resample(ts_s, v, q, 5, target)
        assert np.isclose(v2.sum(), v.sum(), rtol=1e-12) and np.isclose(q2.sum(), q.sum(), rtol=1e-12)
        assert np.all(t2 % (target * 60) == 0) and np.all(np.diff(t2) > 0)
        # each target bar = the source bars inside [open, open + target)
        for i in rng.choice(len(t2), 5):
            inside = (ts_s >= t2[i]) & (ts_s < t2[i] + target * 60)
            assert np.isclose(v2[i], v[inside].sum()) and np.isclose(q2[i], q[inside].sum())
    # 250-minute bars: anchored at 1970-01-01 00:00 UTC
    t250, _, _ = resample.resample(np.array([0, 250 * 60 - 60, 250 * 60]), np.ones(3), np.ones(3), 1, 250)
    assert t250.tolist() == [0, 15000]


def test_resample_rejects_non_multiple():
    with pytest.raises(ValueError, match="250-minute bars from 15-minute"):
        resample.resample(np.array([0]), np.ones(1), np.ones(1), 15, 250)


def test_align_off_grid_binance_open_and_merge():
    t = pd.to_datetime(["2018-02-09 15:57:00", "2018-02-09 15:58:14.789", "2018-02-09 15:59:00"], utc=True)
    us = t.astype("int64").to_numpy() // 1000
    drops = {}
    ts, v, q = resample.align_to_grid(us, np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]), 1, drops)
    assert pd.to_datetime(ts, unit="s", utc=True).strftime("%H:%M:%S").tolist() == ["15:57:00", "15:58:00",
                                                                                      "15:59:00"]
    assert drops == {"bars_aligned_off_grid": 1}
    us2 = np.array([0, 30_000_000, 60_000_000])  # two bars in the first minute
    ts, v, q = resample.align_to_grid(us2, np.ones(3), np.ones(3), 1, drops)
    assert ts.tolist() == [0, 60] and v.tolist() == [2.0, 1.0] and drops["bars_merged_after_alignment"] == 1


def test_missing_rules_zero_fill_skip_and_breaks():
    step = 900
    idx = np.array([0, 1, 2, 5, 6, 20, 21])  # gap of 2 bars, then a gap of 13 bars
    ts, v, q = idx * step, np.arange(1.0, 8.0), np.arange(1.0, 8.0) * 10
    drops = {}
    segs = resample.apply_missing_rule(ts, v, q, 15, rule="zero_fill", max_gap_bars=8, drops=drops)
    assert len(segs) == 2
    assert (segs[0][0] // step).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert segs[0][1].tolist() == [1, 2, 3, 0, 0, 4, 5] and segs[0][2][3:5].tolist() == [0, 0]
    assert drops == {"series_breaks": 1, "bars_in_breaks": 13, "bars_zero_filled": 2}
    drops = {}
    segs = resample.apply_missing_rule(ts, v, q, 15, rule="skip", max_gap_bars=8, drops=drops)
    assert (segs[0][0] // step).tolist() == [0, 1, 2, 5, 6] and drops["bars_skipped"] == 2
    assert sum(s[1].sum() for s in segs) == v.sum()
