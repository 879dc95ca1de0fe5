"""ExampleGen logic: time splits with embargo (a window belongs to the split of its execution bars, which never
straddle a boundary), per-asset series -> examples, the Beam ingestion entry point (files -> tf.Examples +
report), config plumbing."""
import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components.example_gen import executor, ingest
from components.example_gen.config import SPLIT_NAMES, IngestionConfig
from components.market_data import readers, synthetic

CFG = IngestionConfig(frequencies=(15, 90), norm_window=16, lookback=8, n_ahead=4, stride=3,
                      eval_start="2024-01-20", test_start="2024-01-27", end="2024-02-03")


def s(date):
    return int(pd.Timestamp(date, tz="UTC").value // 10**9)


def test_assign_splits_boundaries_and_embargo():
    cfg = IngestionConfig(eval_start="2020-01-02", test_start="2020-01-03", embargo_bars=2)
    bar = 900
    first = np.array([s("2020-01-01"), s("2020-01-02") - 10 * bar, s("2020-01-02"), s("2020-01-02") + 2 * bar,
                      s("2020-01-03") + 5 * bar])
    last = first + 10 * bar
    counts = {}
    out = ingest.assign_splits(first, last, cfg, 15, counts)
    # ends exactly at the boundary -> train; starts at the boundary -> embargo; 2 bars after -> eval
    assert out.tolist() == [0, 0, -1, 1, 2]
    assert counts == {"examples_in_embargo": 1}
    out = ingest.assign_splits(np.array([s("2020-01-02") - 5 * bar]), np.array([s("2020-01-02") + 5 * bar]), cfg,
                               15, counts)
    assert out.tolist() == [-1] and counts["examples_straddling_split"] == 1


def test_assign_splits_by_execution_bars_lookback_may_reach_back():
    """Issue 32: a window belongs to the split of its execution bars; its W+L earlier bars may lie in an earlier
    split, never before `start`; the embargo counts from the split's start to the first execution bar."""
    cfg = IngestionConfig(start="2020-01-01", eval_start="2020-01-02", test_start="2020-01-03", end="2020-01-04",
                          embargo_bars=2)
    bar, ctx, n = 900, 6, 4  # W+L = 6 context bars, N = 4 execution bars
    cases = [("2020-01-01", 6, 0),    # first bar at `start`: train
             ("2020-01-01", 5, -1),   # one bar before `start`: outside
             ("2020-01-02", -4, 0),   # execution ends exactly at eval_start: train
             ("2020-01-02", -3, -1),  # execution straddles eval_start
             ("2020-01-02", 0, -1),   # execution starts at eval_start: embargo
             ("2020-01-02", 1, -1),   # 1 bar after: embargo
             ("2020-01-02", 2, 1),    # 2 bars after: eval, its context [eval_start - 4 bars, ...) in train
             ("2020-01-03", 2, 2),    # test, context in eval
             ("2020-01-04", -4, 2),   # last execution bar closes at `end`
             ("2020-01-04", -3, -1)]  # closes after `end`: outside
    execution = np.array([s(d) + k * bar for d, k, _ in cases])
    counts = {}
    out = ingest.assign_splits(execution - ctx * bar, execution + n * bar, cfg, 15, counts,
                               execution_open_s=execution)
    assert out.tolist() == [want for _, _, want in cases]
    assert counts == {"examples_outside_range": 2, "examples_straddling_split": 1, "examples_in_embargo": 2}
    # The old rule (whole window in one split, embargo from bar 0) is what a caller without execution_open_s gets.
    old = ingest.assign_splits(execution - ctx * bar, execution + n * bar, cfg, 15, {})
    assert old.tolist() == [0, -1, 0, -1, -1, -1, -1, -1, 2, -1]


@pytest.mark.parametrize("eval_start,test_start,embargo", [("2024-01-20", "2024-01-27", 12),
                                                           ("2024-01-19T13:07", "2024-01-25T05:50", 3),
                                                           ("2024-01-12", "2024-01-14", 0)])
def test_no_training_window_executes_in_the_next_split_or_its_embargo(eval_start, test_start, embargo):
    """Fold boundaries (on or off the bar grid) with an embargo: every kept window's execution bars lie in its
    split, after the split's embargo; training (eval) execution bars never reach the eval (test) period or its
    embargo; eval and test windows read history from the previous split; no bar before start / after end."""
    cfg = IngestionConfig(**{**CFG.__dict__, "frequencies": (15, 60), "stride": 1, "start": "2024-01-03",
                             "eval_start": eval_start, "test_start": test_start, "end": "2024-02-01T06:00",
                             "embargo_bars": embargo})
    t = s("2024-01-01") + 900 * np.arange(96 * 32)
    rng = np.random.default_rng(0)
    counts = {}
    bounds = [cfg.boundary_seconds(x) for x in (cfg.start, cfg.eval_start, cfg.test_start, cfg.end)]
    o, n = cfg.norm_window + cfg.lookback, cfg.n_ahead
    reaching_back = {1: 0, 2: 0}
    per_split = np.zeros(3, int)
    for freq, ts, _, _, starts, splits in ingest.asset_series("X", [chunk("X", t, rng.uniform(1, 2, len(t)))],
                                                              cfg, counts):
        step = freq * 60
        first, ex_open, close = ts[starts], ts[starts + o], ts[starts + o + n - 1] + step
        assert np.all(first >= bounds[0]) and np.all(close <= bounds[3])
        for i in range(3):
            sel = splits == i
            per_split[i] += sel.sum()
            lo, hi = bounds[i], bounds[i + 1]
            assert np.all(ex_open[sel] >= lo + (embargo * step if i else 0)) and np.all(close[sel] <= hi)
            if i < 2:  # never in the next split's period or its embargo
                assert np.all(close[sel] <= bounds[i + 1]) and not np.any(close[sel] > bounds[i + 1] + embargo * step)
            if i:
                reaching_back[i] += int(np.sum(first[sel] < lo))
                # the earliest kept window of the split starts its execution right after the embargo
                # (stride 1: the first origin on the grid at or after lo + embargo)
                assert ex_open[sel].min() < lo + embargo * step + step
    assert per_split.min() > 0 and reaching_back[1] > 0 and reaching_back[2] > 0
    # exactly `embargo` grid origins per (split after the first, frequency) fall in [lo, lo + embargo bars)
    assert counts.get("examples_in_embargo", 0) == embargo * 2 * 2


def chunk(asset, ts, vol, minutes=15, file="f.csv"):
    ts = np.asarray(ts, np.int64)
    return readers.BarChunk(asset=asset, source_minutes=minutes, timestamp_us=ts * 10**6,
                            volume=np.asarray(vol, float), quote_volume=np.asarray(vol, float) * 3,
                            row=np.arange(2, 2 + len(ts)), file=file)


def test_asset_with_too_little_history_is_counted():
    ts = s("2024-01-02") + 900 * np.arange(20)  # 20 bars < W+L+N = 28
    counts = {}
    assert list(ingest.asset_examples("X", [chunk("X", ts, np.ones(20))], CFG, counts)) == []
    assert counts["segments_too_short"] >= 1 and counts["asset_frequency_without_examples"] == 2


def test_duplicates_across_files_error_or_count():
    ts = s("2024-01-02") + 900 * np.arange(40)
    parts = [chunk("X", ts[:30], np.ones(30), file="a.csv"), chunk("X", ts[25:], np.ones(15), file="b.csv")]
    with pytest.raises(readers.MarketDataError, match=r"b\.csv: row 2: duplicate timestamp .* also in a\.csv row 27"):
        list(ingest.asset_examples("X", parts, CFG, {}))
    counts = {}
    exs = list(ingest.asset_examples("X", parts, IngestionConfig(**{**CFG.__dict__, "bad_rows": "drop"}), counts))
    assert counts["rows_duplicate_across_files"] == 5 and exs


def test_daily_from_intraday_and_frequency_not_derivable():
    ts = s("2024-01-01") + 86400 * np.arange(40)
    counts = {}
    cfg = IngestionConfig(**{**CFG.__dict__, "frequencies": (15, 1440), "eval_start": None, "test_start": None,
                             "end": None})
    exs = list(ingest.asset_examples("AAPL", [chunk("AAPL", ts, np.ones(40), minutes=1440)], cfg, counts))
    assert counts["frequency_not_derivable"] == 1
    assert {ex["frequency_minutes"] for _, ex in exs} == {1440}


def parse(path_glob):
    spec = {"volume": tf.io.FixedLenFeature([CFG.window_length], tf.float32),
            "quote_volume": tf.io.FixedLenFeature([CFG.window_length], tf.float32),
            "timestamp": tf.io.FixedLenFeature([CFG.window_length], tf.int64),
            "asset": tf.io.FixedLenFeature([], tf.string),
            "frequency_minutes": tf.io.FixedLenFeature([], tf.int64),
            "origin_time": tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(glob.glob(path_glob), compression_type="GZIP")
    return [{k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()} for r in ds]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    data = root / "data"
    btc = synthetic.generate_bars(["BTCUSDT"], start="2024-01-10", periods=288 * 24, freq_minutes=5, seed=0)
    btc = btc[~btc.timestamp.between("2024-01-15 03:00", "2024-01-15 03:30", inclusive="left")]  # 6 missing bars
    synthetic.write_binance_klines(btc, str(data / "binance"), 5)
    xrp = synthetic.generate_bars(["XRPUSDT"], start="2024-01-10", periods=96 * 24, freq_minutes=15, seed=1)
    synthetic.write_tidy(xrp, str(data / "tidy" / "xrp.parquet"))
    report = ingest.run_ingestion(str(data), str(root / "out"), CFG)
    return root / "out", report, btc, xrp


def test_run_ingestion_writes_time_split_examples(ingested):
    out, report, btc, _ = ingested
    ranges = CFG.split_ranges()
    total = 0
    for i, name in enumerate(SPLIT_NAMES):
        exs = parse(str(out / f"Split-{name}" / "*.gz"))
        assert len(exs) == report["examples_per_split"][name] > 0
        total += len(exs)
        lo, hi = ranges[i]
        for ex in exs:
            f = int(ex["frequency_minutes"])
            ts = ex["timestamp"]
            # consecutive grid bars (zero-fill rule), ending at the last execution bar
            assert np.all(np.diff(ts) == f * 60) and np.all(ts % (f * 60) == 0)
            o = CFG.norm_window + CFG.lookback
            assert ex["origin_time"] == ts[o]
            # the execution bars (open of bar o .. close of the last) inside the split's range, the first one
            # at least embargo_bars after its start (eval, test); earlier bars may lie in earlier splits but
            # never before `start` (the train range's start) or after `end`
            assert (lo is None or ts[o] >= lo + (CFG.embargo_bars * f * 60 if i else 0))
            assert hi is None or ts[-1] + f * 60 <= hi
            assert ranges[-1][1] is None or ts[-1] + f * 60 <= ranges[-1][1]
    c = report["counts"]
    assert c["examples_emitted"] == total and c["bars_zero_filled"] >= 2 and c["examples_straddling_split"] > 0
    assert c["files_read"] == 3 and c["rows_read"] == len(btc) + 96 * 24
    assert set(report["examples_per_split"]) == set(SPLIT_NAMES)
    assert json.load(open(out / ingest.REPORT_FILE)) == report


def test_resampled_examples_match_pandas_resampling(ingested):
    out, _, btc, _ = ingested
    exs = [e for e in parse(str(out / "Split-train" / "*.gz")) if e["asset"] == b"BTCUSDT"
           and e["frequency_minutes"] == 90]
    ref = btc.set_index("timestamp")[["volume", "quote_volume"]].resample("90min", origin="epoch").sum()
    ex = exs[len(exs) // 2]
    idx = pd.to_datetime(ex["timestamp"], unit="s", utc=True)
    np.testing.assert_allclose(ex["volume"], ref.loc[idx, "volume"].values, rtol=1e-6)
    np.testing.assert_allclose(ex["quote_volume"], ref.loc[idx, "quote_volume"].values, rtol=1e-6)


def test_run_ingestion_fails_with_actionable_message_when_a_split_is_empty(ingested, tmp_path):
    out, _, _, _ = ingested
    cfg = IngestionConfig(**{**CFG.__dict__, "test_start": "2024-02-02T20:00"})
    with pytest.raises(ValueError, match=r"too few examples in split\(s\) \{'test': 0\}.*split dates"):
        ingest.run_ingestion(str(out.parent / "data"), str(tmp_path / "o"), cfg)


def test_bad_file_fails_the_beam_run_naming_file_and_row(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "BAD.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n"
                                            "2020-01-02,1,1,1,1,1,100\n2020-01-03,1,1,1,1,1,-7\n")
    with pytest.raises(Exception, match=r"BAD\.csv: row 3: negative volume"):
        ingest.run_ingestion(str(tmp_path / "d"), str(tmp_path / "o"), CFG)


def test_config_round_trips_through_json_and_custom_config():
    cfg = IngestionConfig(frequencies=(15, 250), stride_by_frequency={250: 2}, embargo_bars=3,
                          missing_bar_rule_by_frequency={1440: "skip", 15: "skip"})
    assert IngestionConfig.from_json(cfg.to_json()) == cfg
    from google.protobuf import json_format
    packed = json_format.MessageToJson(executor.pack_custom_config(cfg))
    assert executor.unpack_custom_config({"custom_config": packed}) == cfg
    with pytest.raises(ValueError, match="split dates must increase"):
        IngestionConfig(eval_start="2020-01-01", test_start="2019-01-01")
    with pytest.raises(ValueError, match="unknown ingestion config keys"):
        IngestionConfig.from_json('{"stride": 2, "strides": 3}')


def test_multi_asset_tidy_file_is_read_per_asset_with_the_same_examples(tmp_path):
    bars = synthetic.generate_bars(["XRPUSDT", "ADAUSDT"], start="2024-01-12", periods=96 * 18, freq_minutes=15,
                                   seed=4).sort_values(["timestamp", "asset"])  # assets interleaved row by row
    synthetic.write_tidy(bars, str(tmp_path / "d" / "two.parquet"))
    cfg = IngestionConfig(**{**CFG.__dict__, "chunk_rows": 500})
    report = ingest.run_ingestion(str(tmp_path / "d"), str(tmp_path / "o"), cfg)
    got = {(e["asset"], int(e["frequency_minutes"]), int(e["origin_time"])): e
           for name in SPLIT_NAMES for e in parse(str(tmp_path / "o" / f"Split-{name}" / "*.gz"))}
    want, counts = {}, {"files_read": 1}
    for asset in ("ADAUSDT", "XRPUSDT"):  # the dict path on the asset's bars read from the whole file
        chunks = [c for c in readers.read_file(str(tmp_path / "d" / "two.parquet"), chunk_rows=500)
                  if c.asset == asset]
        counts["rows_read"] = counts.get("rows_read", 0) + sum(c.n_read for c in chunks)
        for _, ex in ingest.asset_examples(asset, chunks, cfg, counts):
            want[(ex["asset"], ex["frequency_minutes"], ex["origin_time"])] = ex
    assert set(got) == set(want) and {k[0] for k in got} == {b"ADAUSDT", b"XRPUSDT"}
    assert report["counts"] == dict(sorted(counts.items()))
    for k, ex in want.items():
        np.testing.assert_array_equal(got[k]["volume"], ex["volume"])
        np.testing.assert_array_equal(got[k]["timestamp"], ex["timestamp"])
