"""The ONE window cutter and the synthetic generator + writers (round trip through the readers)."""
import os

import numpy as np
import pandas as pd
import pytest

from components.market_data import readers, synthetic, windows

W, L, N = 4, 3, 2


def test_windows_are_consecutive_slices_with_origin_and_stride():
    n = 30
    ts = 1_000_000_800 // 900 * 900 + 900 * np.arange(n)
    v = np.arange(1, n + 1, dtype=np.float32)
    exs = list(windows.cut_windows(v, v * 2, ts, asset="X", frequency_minutes=15, norm_window=W, lookback=L,
                                   n_ahead=N, stride=3))
    origins = windows.origin_positions(n, norm_window=W, lookback=L, n_ahead=N, stride=3)
    assert origins.tolist() == list(range(W + L, n - N + 1, 3))
    assert len(exs) == len(origins)
    for ex, o in zip(exs, origins):
        assert ex["timestamp"].tolist() == ts[o - W - L:o + N].tolist()   # nothing after the last execution bar
        assert ex["volume"].tolist() == v[o - W - L:o + N].tolist()
        assert ex["origin_time"] == ts[o] and ex["asset"] == b"X" and ex["frequency_minutes"] == 15
        assert ex["volume"].dtype == np.float32 and ex["timestamp"].dtype == np.int64
    assert list(windows.cut_windows(v[:8], v[:8], ts[:8], asset="X", frequency_minutes=15, norm_window=W,
                                    lookback=L, n_ahead=N)) == []


def test_uninformative_windows_are_counted():
    n = 12
    v = np.ones(n, np.float32)
    v[:W] = 0.0              # first window: no volume in the norm window
    q = v * 5
    drops = {}
    batch = windows.cut_windows_batch(v, q, np.arange(n) * 60, asset="X", frequency_minutes=1, norm_window=W,
                                      lookback=L, n_ahead=N, drops=drops)
    assert drops == {windows.DROP_NO_NORM_VOLUME: 1}
    assert batch["volume"].shape == (n - W - L - N + 1 - 1, W + L + N)
    v2 = np.ones(n, np.float32)
    q2 = np.zeros(n, np.float32)  # volume but never a notional: no price before the origin
    drops = {}
    assert windows.cut_windows_batch(v2, q2, np.arange(n) * 60, asset="X", frequency_minutes=1, norm_window=W,
                                     lookback=L, n_ahead=N, drops=drops)["volume"].shape == (0, W + L + N)
    assert drops == {windows.DROP_NO_PRICE: n - W - L - N + 1}


def test_synthetic_is_seeded_and_realistic():
    a = synthetic.generate_bars(["BTCUSDT", "ETHUSDT"], start="2024-01-01", periods=96 * 60, freq_minutes=15, seed=7)
    b = synthetic.generate_bars(["BTCUSDT", "ETHUSDT"], start="2024-01-01", periods=96 * 60, freq_minutes=15, seed=7)
    c = synthetic.generate_bars(["BTCUSDT", "ETHUSDT"], start="2024-01-01", periods=96 * 60, freq_minutes=15, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.volume, c.volume)
    assert list(a.columns) == list(synthetic.TIDY_COLUMNS) and str(a.timestamp.dt.tz) == "UTC"
    btc = a[a.asset == "BTCUSDT"].reset_index(drop=True)
    assert (btc.volume >= 0).all() and (btc.close > 0).all() and (btc.high >= btc.low).all()
    # intraday U shape: mean volume at the day's edges above mid-day
    hour = btc.timestamp.dt.hour
    assert btc.volume[(hour <= 1) | (hour >= 22)].mean() > 1.3 * btc.volume[(hour >= 10) & (hour <= 13)].mean()
    r = np.diff(np.log(btc.close.values))
    # volatility clustering: squared returns are autocorrelated; volume moves with volatility
    r2 = r ** 2
    assert np.corrcoef(r2[1:], r2[:-1])[0, 1] > 0.05
    assert np.corrcoef(np.abs(r), btc.volume.values[1:])[0, 1] > 0.1
    eq = synthetic.generate_bars(["AAPL"], start="2020-01-01", periods=50, freq_minutes=1440, trading_days_only=True)
    assert (eq.timestamp.dt.dayofweek < 5).all()


def test_writers_round_trip_through_readers(tmp_path):
    bars = synthetic.generate_bars(["ETHUSDT"], start="2024-12-30", periods=288 * 4, freq_minutes=5, seed=1)
    paths = synthetic.write_binance_klines(bars, str(tmp_path / "b"), 5)
    assert [os.path.basename(p) for p in paths] == ["ETHUSDT-5m-2024-12.zip", "ETHUSDT-5m-2025-01.zip"]
    back = readers.read_bars(paths)
    assert len(back) == len(bars) and (back.timestamp.values == bars.timestamp.values).all()
    np.testing.assert_allclose(back.volume, bars.volume, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(back.quote_volume, bars.quote_volume, rtol=1e-7, atol=1e-6)
    # 2025 file carries microsecond open times (Binance spot since 2025)
    import zipfile
    with zipfile.ZipFile(paths[1]) as zf:
        assert len(zf.read(zf.namelist()[0]).split(b",")[0]) == 16
    daily = synthetic.write_binance_klines(bars, str(tmp_path / "d"), 5, period="daily", zipped=False, header=True)
    assert len(readers.read_bars(daily)) == len(bars)
    eq = synthetic.generate_bars(["AAPL"], start="2020-01-01", periods=30, freq_minutes=1440, trading_days_only=True)
    y = readers.read_bars(synthetic.write_yahoo_daily(eq, str(tmp_path / "y" / "AAPL.csv")))
    assert (y.timestamp.values == eq.timestamp.values).all() and (y.source_minutes == 1440).all()
    t = readers.read_bars(synthetic.write_tidy(bars, str(tmp_path / "t" / "x.parquet")))
    np.testing.assert_allclose(t.quote_volume, bars.quote_volume)


def test_default_dataset_has_all_three_formats(tmp_path):
    out = synthetic.write_default_dataset(str(tmp_path), crypto_days=3, equity_days=20, tidy_days=2)
    assert {readers.detect_format(p) for p in out["binance"]} == {"binance"}
    assert {readers.detect_format(p) for p in out["yahoo"]} == {"yahoo"}
    assert {readers.detect_format(p) for p in out["tidy"]} == {"tidy"}
    assert any(p.endswith(".zip") for p in out["binance"]) and any(p.endswith(".csv") for p in out["binance"])


def test_window_starts_is_the_rule_of_cut_windows_and_the_batch():
    n = 60
    rng = np.random.default_rng(2)
    v = rng.uniform(0, 2, n).astype(np.float32)
    v[10:20] = 0.0
    q = v * 3
    q[30:40] = 0.0
    ts = 900 * np.arange(n) + 1_700_000_100
    for stride in (1, 2, 5):
        d1, d2, d3 = {}, {}, {}
        starts = windows.window_starts(v, q, norm_window=W, lookback=L, n_ahead=N, stride=stride, drops=d1)
        exs = list(windows.cut_windows(v, q, ts, asset="X", frequency_minutes=15, norm_window=W, lookback=L,
                                       n_ahead=N, stride=stride, drops=d2))
        batch = windows.cut_windows_batch(v, q, ts, asset="X", frequency_minutes=15, norm_window=W, lookback=L,
                                          n_ahead=N, stride=stride, drops=d3)
        assert d1 == d2 == d3 and d1[windows.DROP_NO_NORM_VOLUME] > 0
        assert [ex["origin_time"] for ex in exs] == ts[starts + W + L].tolist() == batch["origin_time"].tolist()
        np.testing.assert_array_equal(np.stack([ex["volume"] for ex in exs]), batch["volume"])
        np.testing.assert_array_equal(np.stack([ex["timestamp"] for ex in exs]), batch["timestamp"])
        assert batch["asset"].tolist() == [b"X"] * len(exs) and batch["frequency_minutes"].tolist() == [15] * len(exs)
