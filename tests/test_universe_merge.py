"""The 20-pair universe (issue 32 item 1): files with true quote volume (Binance Data Vision klines) and files
with an estimated one (freqtrade caches, `quote_volume_is_estimate`) for the same asset and bar length merge
per bar, the true quote volume preferred, never a bar twice; the estimated flag survives resampling and the
ingestion report counts it per asset. Small generated fixtures only (tmp_path), never /work/shared."""
import numpy as np
import pandas as pd
import pytest

from components.example_gen import ingest
from components.example_gen.config import SPLIT_NAMES, IngestionConfig
from components.market_data import readers, resample, synthetic
from components.market_data.readers import ESTIMATE_COLUMN, MarketDataError

CFG = IngestionConfig(frequencies=(15, 60), norm_window=16, lookback=8, n_ahead=4, stride=4, start="2024-01-01",
                      eval_start="2024-01-06", test_start="2024-01-08", end="2024-01-10", embargo_bars=2,
                      source_bar_minutes=15)
HOLE = ("2024-01-05 10:00", "2024-01-05 12:00")  # missing in the true-quote file, filled by the estimated one
OFF_GRID = pd.Timestamp("2024-01-04 06:00", tz="UTC")  # the true file's bar opens at 06:13 (Binance 2018 quirk)


def _universe(tmp_path, est_name="a_freqtrade.parquet", true_name="b_vision.parquet"):
    """Two tidy Parquet files overlapping 2024-01-04 .. 2024-01-06: the estimated one (15m rows of BTCUSDT
    days 1-6 with quote volume x 1.0004, one day of 1h rows, ETHBTC 15m days 1-9) and the true one (BTCUSDT
    15m days 4-9 without the HOLE, one bar off the grid)."""
    base = synthetic.generate_bars(["BTCUSDT", "ETHBTC"], start="2024-01-01", periods=9 * 96, freq_minutes=15,
                                   seed=5).assign(frequency="15m")
    btc = base[base.asset == "BTCUSDT"]
    est = pd.concat([btc[btc.timestamp < "2024-01-07"], base[base.asset == "ETHBTC"]]).assign(**{ESTIMATE_COLUMN: True})
    est["quote_volume"] *= 1.0004
    hourly = btc[btc.timestamp >= "2024-01-09"].set_index("timestamp")[["volume", "quote_volume"]].resample(
        "60min").sum().reset_index().assign(asset="BTCUSDT", frequency="1h", close=1.0, **{ESTIMATE_COLUMN: True})
    est = pd.concat([est, hourly]).sort_values(["asset", "frequency", "timestamp"])
    true = btc[(btc.timestamp >= "2024-01-04")
               & ~btc.timestamp.between(*HOLE, inclusive="left")].assign(**{ESTIMATE_COLUMN: False})
    true.loc[true.timestamp == OFF_GRID, "timestamp"] = OFF_GRID + pd.Timedelta(minutes=13)
    d = tmp_path / "data"
    d.mkdir()
    cols = ["timestamp", "asset", "frequency", "volume", "quote_volume", "close", ESTIMATE_COLUMN]
    est[cols].to_parquet(d / est_name, index=False)
    true[cols].to_parquet(d / true_name, index=False)
    return d, btc, est, true


@pytest.mark.parametrize("est_name", ["a_freqtrade.parquet", "z_freqtrade.parquet"])  # either path order
def test_universe_merge_prefers_true_quote_volume_and_never_counts_a_bar_twice(tmp_path, est_name):
    d, btc, est, true = _universe(tmp_path, est_name=est_name)
    report = ingest.run_ingestion(str(d), str(tmp_path / "o"), CFG)  # bad_rows="error": overlaps are no error
    c = report["counts"]
    overlap = btc.timestamp.between("2024-01-04", "2024-01-07", inclusive="left") & \
        ~btc.timestamp.between(*HOLE, inclusive="left")
    assert c["bars_duplicate_replaced_by_true_quote"] == overlap.sum() == 3 * 96 - 8
    assert c["rows_other_bar_length"] == 24  # the 1h rows
    assert "rows_duplicate_across_files" not in c and "bars_merged_after_alignment" not in c
    b = report["assets"]["BTCUSDT"]
    assert b["source_minutes"] == 15 and b["source_bars"] == len(btc) == 9 * 96  # every bar once
    assert b["source_bars_quote_volume_estimated"] == 3 * 96 + 8  # days 1-3 and the hole
    assert b["bars_duplicate_replaced_by_true_quote"] == 3 * 96 - 8 and b["rows_other_bar_length"] == 24
    e = report["assets"]["ETHBTC"]  # a BTC-quoted pair from the estimated file only
    assert e["source_bars"] == e["source_bars_quote_volume_estimated"] == 9 * 96
    assert e["examples_with_estimated_execution_bar"] == e["examples"] and e["examples"]["test"] > 0
    # Per split: BTCUSDT's estimated bars all lie before eval_start (2024-01-06 is true-quote only).
    assert b["examples_with_estimated_execution_bar"]["eval"] == b["examples_with_estimated_execution_bar"]["test"] == 0
    assert 0 < b["examples_with_estimated_execution_bar"]["train"] < b["examples"]["train"]
    for split in SPLIT_NAMES:
        assert report["examples_per_split"][split] == b["examples"][split] + e["examples"][split]
        assert c[f"examples_with_estimated_execution_bar_{split}"] == (
            b["examples_with_estimated_execution_bar"][split] + e["examples_with_estimated_execution_bar"][split])
    series = {(x["asset"], x["frequency_minutes"]): x for x in report["series"]}
    assert series[("BTCUSDT", 15)]["bars"] == 9 * 96 and series[("BTCUSDT", 15)]["bars_quote_volume_estimated"] == 296
    # an hour is estimated when any of its 15-minute bars is: days 1-3 and the hole's 2 hours
    assert series[("BTCUSDT", 60)]["bars_quote_volume_estimated"] == 3 * 24 + 2
    assert c["bars_quote_volume_estimated_60m"] == 3 * 24 + 2 + 9 * 24  # + ETHBTC's

    # The bars themselves: the true file's quote volume wherever it has the bar, the estimated one elsewhere.
    chunks = ingest.read_asset("BTCUSDT", [str(d / est_name), str(d / "b_vision.parquet")], CFG, {})
    segs = list(ingest.asset_series("BTCUSDT", chunks, CFG, {}))
    ts, q = next((x[1], x[3]) for x in segs if x[0] == 15)
    assert np.array_equal(ts, btc.timestamp.astype("int64").to_numpy() // 10**9)  # one gap-free series
    from_true = btc.timestamp >= "2024-01-04"
    from_true &= ~btc.timestamp.between(*HOLE, inclusive="left")
    want = np.where(from_true, btc.quote_volume, btc.quote_volume * 1.0004)
    np.testing.assert_allclose(q, want, rtol=1e-12)


def test_same_kind_overlap_keeps_todays_rule(tmp_path):
    """Two files of the same kind (here both estimated) giving one bar: an error by default, or with
    bad_rows='drop' the first file in path order, counted `rows_duplicate_across_files`."""
    d, _, est, _ = _universe(tmp_path)
    (d / "b_vision.parquet").unlink()
    again = est[(est.asset == "BTCUSDT") & (est.frequency == "15m") & (est.timestamp >= "2024-01-06")].copy()
    again["quote_volume"] *= 1.005  # (within the bar's price range: not a corrupt VWAP)
    again.to_parquet(d / "c_other_cache.parquet", index=False)
    with pytest.raises(MarketDataError, match=r"c_other_cache\.parquet: row 1: duplicate timestamp for BTCUSDT "
                                              r"\(15-minute bars\), also in .*a_freqtrade\.parquet"):
        ingest.run_ingestion(str(d), str(tmp_path / "o"), CFG)
    counts = {}
    cfg = IngestionConfig(**{**CFG.__dict__, "bad_rows": "drop"})
    chunks = ingest.read_asset("BTCUSDT", [str(d / "a_freqtrade.parquet"), str(d / "c_other_cache.parquet")], cfg,
                               counts)
    (ts, _, qv, flag), = ingest._merge_chunks("BTCUSDT", ingest.select_source_bars("BTCUSDT", chunks, cfg, counts),
                                              cfg, counts).values()
    assert counts["rows_duplicate_across_files"] == 96 and len(ts) == 6 * 96 and flag.all()
    np.testing.assert_allclose(qv[-96:], again.quote_volume.to_numpy() / 1.005)  # the first file's


def test_readers_flag_estimated_quote_volume(tmp_path):
    frame = synthetic.generate_bars(["XRPUSDT"], start="2024-01-01", periods=6, freq_minutes=15, seed=1)
    p = tmp_path / "flags.csv"
    frame.assign(**{ESTIMATE_COLUMN: ["True", "false", "", "1", "0", "TRUE"]}).to_csv(p, index=False)
    assert readers.read_bars(str(p))[ESTIMATE_COLUMN].tolist() == [True, False, False, True, False, True]
    p2 = tmp_path / "flags.parquet"
    frame.assign(**{ESTIMATE_COLUMN: [True, None, False, True, None, False]}).to_parquet(p2, index=False)
    assert readers.read_bars(str(p2))[ESTIMATE_COLUMN].tolist() == [True, False, False, True, False, False]
    # made here from volume x close: estimated (all rows without quote_volume, or the rows where it is empty)
    p3 = synthetic.write_tidy(frame, str(tmp_path / "noq.csv"), columns=("timestamp", "asset", "volume", "close"))
    assert readers.read_bars(p3)[ESTIMATE_COLUMN].all()
    holes = frame.copy()
    holes.loc[holes.index[2], "quote_volume"] = np.nan
    p4 = synthetic.write_tidy(holes, str(tmp_path / "holes.parquet"))
    assert readers.read_bars(p4)[ESTIMATE_COLUMN].tolist() == [False, False, True, False, False, False]
    bad = tmp_path / "bad.csv"
    frame.assign(**{ESTIMATE_COLUMN: ["True", "maybe", "", "1", "0", "x"]}).to_csv(bad, index=False)
    with pytest.raises(MarketDataError, match=r"bad\.csv: row 3: quote_volume_is_estimate must be true/false"):
        readers.read_bars(str(bad))
    # Binance klines carry Binance's own quote volume: never estimated
    kl = synthetic.write_binance_klines(frame, str(tmp_path / "k"), 15)
    assert not readers.read_bars(kl)[ESTIMATE_COLUMN].any()


def test_estimate_flag_through_alignment_resampling_and_missing_bars():
    us = np.array([0, 15, 30, 61, 75, 150]) * 60 * 10**6  # 61 min: off the 15-min grid, lands in the 60-min bar
    est = np.array([False, True, False, False, False, True])
    ts, v, q, e = resample.align_to_grid(us, np.ones(6), np.ones(6), 15, estimate=est)
    assert (ts // 60).tolist() == [0, 15, 30, 60, 75, 150] and e.tolist() == [False, True, False, False, False, True]
    t60, v60, _, e60 = resample.resample(ts, v, q, 15, 60, estimate=e)
    assert (t60 // 60).tolist() == [0, 60, 120] and e60.tolist() == [True, False, True]
    assert len(resample.resample(ts, v, q, 15, 60)) == 3  # without `estimate`: as before
    segs = resample.apply_missing_rule(ts, v, q, 15, max_gap_bars=8, estimate=e)
    (seg_ts, seg_v, _, seg_e), = segs
    assert len(seg_ts) == 11 and seg_e.tolist() == [False, True, False, False, False, False, False, False, False,
                                                   False, True]  # zero-filled bars are not estimated


def test_patchy_coverage_first_bar_after_a_break_is_not_a_vwap_outlier(tmp_path):
    """Patchy coverage (freqtrade caches): the price after a month-long hole differs from the last price before
    it; that gap "return" is not a bar's VWAP return (no window crosses the break), so it is not flagged;
    a wrong bar inside a segment still is."""
    from components.market_data import outliers
    a = synthetic.generate_bars(["ADAUSDT"], start="2024-01-01", periods=3 * 96, freq_minutes=15, seed=2)
    b = synthetic.generate_bars(["ADAUSDT"], start="2024-02-05", periods=3 * 96, freq_minutes=15, seed=3)
    b["quote_volume"] *= 1.8  # the price moved 80 % during the hole
    frame = pd.concat([a, b], ignore_index=True)
    v, q = frame.volume.to_numpy(), frame.quote_volume.to_numpy()
    assert outliers.detect(v, q, window=96, volume_z=12, return_z=50).vwap_return[3 * 96]  # without breaks
    breaks = np.zeros(len(v), bool)
    breaks[3 * 96] = True
    assert not outliers.detect(v, q, window=96, volume_z=12, return_z=50, breaks=breaks).any.any()
    d = tmp_path / "data"
    bad = frame.copy()
    bad.loc[100, "quote_volume"] *= 50
    synthetic.write_tidy(bad.assign(frequency="15m"), str(d / "ada.parquet"))
    cfg = IngestionConfig(**{**CFG.__dict__, "frequencies": (15,), "outlier_return_z": 50, "eval_start": "2024-02-06",
                             "test_start": "2024-02-07", "end": None, "start": None})
    with pytest.raises(ingest.IngestionCheckError, match="flagged 1 outlier bar"):
        ingest.run_ingestion(str(d), str(tmp_path / "o"), cfg)
    report = ingest.run_ingestion(str(d), str(tmp_path / "o2"), IngestionConfig(**{**cfg.__dict__, "outliers": "drop"}))
    assert [x["time"] for x in report["outliers"]] == ["2024-01-02T01:00:00Z"]
