"""Bad bars are caught or counted (issue 20 item 5) and the ingestion's source rules (issue 21): causal
outlier bars flagged / dropped and counted; open-time units by magnitude; one source bar length per asset;
read errors naming the file; Binance .CHECKSUM; input patterns; a failed ingestion keeps its report."""
import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from components.example_gen import ingest
from components.example_gen.config import IngestionConfig
from components.market_data import outliers, readers, synthetic
from components.market_data.readers import MarketDataError

CFG = IngestionConfig(frequencies=(15,), norm_window=16, lookback=8, n_ahead=4, stride=4,
                      eval_start="2024-01-06", test_start="2024-01-08", end="2024-01-10", embargo_bars=2)


def bars(asset="BTCUSDT", start="2024-01-01", days=9, minutes=15, seed=0):
    return synthetic.generate_bars([asset], start=start, periods=days * 1440 // minutes, freq_minutes=minutes,
                                   seed=seed)


def spiked(frame, at, volume_factor=1.0, quote_factor=1000.0):
    out = frame.copy()
    out.loc[at, "volume"] *= volume_factor
    out.loc[at, "quote_volume"] *= quote_factor
    return out


# ------------------------------------------------------------------------------------------- outliers
def test_spikes_are_flagged_and_the_detector_is_causal():
    b = bars(days=9)
    v, q = b.volume.to_numpy(), b.quote_volume.to_numpy()
    clean = outliers.detect(v, q, window=96, volume_z=12, return_z=200)
    assert not clean.any.any()  # the synthetic series itself has no outlier
    v2, q2 = v.copy(), q.copy()
    q2[500] *= 1000  # 1000x quote volume: VWAP 1000x
    v2[700] *= 1e5
    q2[700] *= 1e5  # 1e5x volume at the same VWAP
    f = outliers.detect(v2, q2, window=96, volume_z=12, return_z=200)
    assert np.flatnonzero(f.vwap_return).tolist() == [500]  # not the bar after it
    assert np.flatnonzero(f.volume).tolist() == [700]
    # Causality: perturbing bar t changes no flag or score of a bar before t.
    for t in (300, 500, 701):
        v3, q3 = v2.copy(), q2.copy()
        v3[t:] *= np.linspace(0.01, 50, len(v3) - t)
        q3[t:] *= np.linspace(80, 0.2, len(v3) - t)
        g = outliers.detect(v3, q3, window=96, volume_z=12, return_z=200)
        for name in ("volume", "vwap_return", "volume_z", "return_z"):
            np.testing.assert_array_equal(getattr(g, name)[:t], getattr(f, name)[:t])


def _tidy_dir(tmp_path, frame, name="user_bars.parquet"):
    d = tmp_path / "data"
    synthetic.write_tidy(frame, str(d / name))
    return d


def test_flagged_outlier_stops_the_ingestion_naming_the_bar_and_keeps_the_report(tmp_path):
    b = spiked(bars(), 400)
    d = _tidy_dir(tmp_path, b)
    with pytest.raises(ingest.IngestionCheckError, match=r"flagged 1 outlier bar.*\n  BTCUSDT 15 min bar "
                                                        r"2024-01-05T04:00:00Z: vwap_return"):
        ingest.run_ingestion(str(d), str(tmp_path / "o"), CFG)
    report = json.load(open(tmp_path / "o" / ingest.REPORT_FILE))
    assert report["status"] == "failed" and "outlier" in report["error"]
    assert report["counts"]["bars_outlier"] == 1 and report["counts"]["bars_outlier_vwap_return_15m"] == 1
    assert report["outliers"][0]["time"] == "2024-01-05T04:00:00Z"


def test_dropped_outlier_is_counted_and_absent_from_the_examples(tmp_path):
    b = spiked(bars(), 400)
    d = _tidy_dir(tmp_path, b)
    cfg = IngestionConfig(**{**CFG.__dict__, "outliers": "drop"})
    report = ingest.run_ingestion(str(d), str(tmp_path / "o"), cfg)
    c = report["counts"]
    assert c["bars_outlier"] == 1 and c["bars_outlier_dropped"] == 1 and c["bars_zero_filled"] == 1
    spike_t = int(b.timestamp.iloc[400].value // 10**9)
    exs = [ex for _, ex in ingest.asset_examples("BTCUSDT", readers.read_file(str(d / "user_bars.parquet")),
                                                 cfg, {})]
    hits = [ex for ex in exs if spike_t in ex["timestamp"]]
    assert hits and all(ex["volume"][list(ex["timestamp"]).index(spike_t)] == 0 for ex in hits)
    off = IngestionConfig(**{**CFG.__dict__, "outliers": "off"})
    report_off = ingest.run_ingestion(str(d), str(tmp_path / "o2"), off)
    assert "bars_outlier" not in report_off["counts"]


# ------------------------------------------------------------------------------------------- open-time units
def _klines(tmp_path, unit_scale, name="BTCUSDT-15m-2024-01.csv"):
    t = 1704067200 + 900 * np.arange(4)  # 2024-01-01 00:00 UTC
    lines = [f"{ts * unit_scale},2.5,2.5,2.5,2.5,{i + 1},{(ts + 900) * unit_scale - 1},{(i + 1) * 2.5},1,0,0,0"
             for i, ts in enumerate(t)]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@pytest.mark.parametrize("scale", [1, 1000, 10**6, 10**9], ids=["s", "ms", "us", "ns"])
def test_open_time_units_by_magnitude(tmp_path, scale):
    df = readers.read_bars(_klines(tmp_path, scale))
    assert list(df.timestamp) == list(pd.date_range("2024-01-01", periods=4, freq="15min", tz="UTC"))
    np.testing.assert_allclose(df.quote_volume, [2.5, 5.0, 7.5, 10.0])


def test_open_time_of_unknown_unit_is_refused(tmp_path):
    p = tmp_path / "BTCUSDT-15m-2024-01.csv"
    p.write_text("1704067200000,1,1,1,1,1,1704068099999,1,1,0,0,0\n19723,1,1,1,1,1,19724,1,1,0,0,0\n")
    with pytest.raises(MarketDataError, match=r"BTCUSDT-15m-2024-01\.csv: row 2: open_time 19723 is not a Unix "
                                              r"time in seconds, milliseconds"):
        readers.read_bars(str(p))


# ------------------------------------------------------------------------------------------- bar lengths
def _mixed_file(tmp_path):
    """BTCUSDT at 15 minutes for 9 days plus a 1-minute sample day (labelled), ETHUSDT 1-minute only."""
    b15 = bars().assign(frequency="15m")
    b1 = bars(start="2024-01-03", days=1, minutes=1, seed=3).assign(frequency="1m")
    e1 = bars("ETHUSDT", start="2024-01-03", days=1, minutes=1, seed=4).assign(frequency="1m")
    frame = pd.concat([b15, b1, e1]).sort_values(["asset", "frequency", "timestamp"]).reset_index(drop=True)
    d = tmp_path / "data"
    d.mkdir()
    frame.to_parquet(d / "klines_paper_pairs.parquet")
    return d, b15


def test_one_asset_at_two_bar_lengths_is_refused_naming_them_and_the_report_is_kept(tmp_path):
    d, _ = _mixed_file(tmp_path)
    with pytest.raises(MarketDataError, match=r"klines_paper_pairs\.parquet: asset BTCUSDT has bars of 2 source "
                                              r"bar lengths \(1 min: 1440 rows; 15 min: 864 rows\)\. Ingestion takes ONE"):
        ingest.run_ingestion(str(d), str(tmp_path / "o"), CFG)
    report = json.load(open(tmp_path / "o" / ingest.REPORT_FILE))
    assert report["status"] == "failed" and "source_bar_minutes" in report["error"]
    assert report["files"] == [str(d / "klines_paper_pairs.parquet")]


def test_declared_source_bar_length_takes_only_its_rows(tmp_path):
    d, b15 = _mixed_file(tmp_path)
    cfg = IngestionConfig(**{**CFG.__dict__, "source_bar_minutes": 15})
    report = ingest.run_ingestion(str(d), str(tmp_path / "o"), cfg)
    c = report["counts"]
    assert c["rows_other_bar_length"] == 2 * 1440 and c["assets_without_declared_bar_length"] == 1  # ETHUSDT
    assert "bars_merged_after_alignment" not in c and "target_bars_partial" not in c
    (series,) = report["series"]
    assert (series["asset"], series["source_minutes"], series["bars"]) == ("BTCUSDT", 15, len(b15))
    # the same as reading the 15-minute rows alone
    alone = tmp_path / "alone"
    synthetic.write_tidy(b15, str(alone / "btc.parquet"))
    assert ingest.run_ingestion(str(alone), str(tmp_path / "o2"), CFG)["examples_per_split"] == \
        report["examples_per_split"]
    # Declared for BTCUSDT only: ETHUSDT's only length (1 min) is used, BTCUSDT's 15-minute rows as above.
    per_asset = IngestionConfig(**{**CFG.__dict__, "source_bar_minutes_by_asset": {"BTCUSDT": 15}})
    both = ingest.run_ingestion(str(d), str(tmp_path / "o3"), per_asset)
    assert [(x["asset"], x["source_minutes"], x["bars"]) for x in both["series"]] == [("BTCUSDT", 15, len(b15)),
                                                                                    ("ETHUSDT", 1, 96)]
    assert both["counts"]["rows_other_bar_length"] == 1440
    assert both["counts"]["examples_train_15m"] > report["counts"]["examples_train_15m"]


def test_unlabelled_tidy_file_with_two_bar_lengths_is_refused(tmp_path):
    b15 = bars(days=3)
    b5 = bars(start="2024-01-04", days=2, minutes=5, seed=2)
    p = tmp_path / "mixed.csv"
    synthetic.write_tidy(pd.concat([b15, b5], ignore_index=True), str(p))
    with pytest.raises(MarketDataError, match=r"mixed\.csv: asset BTCUSDT has bars of 2 lengths and no 'frequency' "
                                              r"column: 5 min \(575 gaps\), 15 min \(288 gaps\)"):
        readers.read_bars(str(p))
    synthetic.write_tidy(b15, str(tmp_path / "one.csv"))  # one length with missing bars: accepted
    assert len(readers.read_bars(str(tmp_path / "one.csv"))) == len(b15)


# ------------------------------------------------------------------------------------------- read errors
def test_corrupt_zip_and_truncated_parquet_name_the_file(tmp_path):
    paths = synthetic.write_binance_klines(bars(days=2), str(tmp_path / "z"), 15)
    data = open(paths[0], "rb").read()
    with open(paths[0], "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(MarketDataError, match=r"BTCUSDT-15m-2024-01\.zip: cannot read the file \(BadZipFile"):
        readers.read_bars(paths[0])
    pq = str(tmp_path / "t" / "x.parquet")
    synthetic.write_tidy(bars(days=2), pq)
    data = open(pq, "rb").read()
    with open(pq, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(MarketDataError, match=r"x\.parquet: cannot read the file \(ArrowInvalid"):
        readers.list_assets(pq)
    with pytest.raises(MarketDataError, match=r"x\.parquet: cannot read the file"):
        readers.read_bars(pq)
    bad_csv = tmp_path / "t" / "y.csv"
    bad_csv.write_text('timestamp,asset,volume,quote_volume\n2024-01-01,"BTC,1,2\n')
    with pytest.raises(MarketDataError, match=r"y\.csv: cannot read the file \(ParserError"):
        readers.read_bars(str(bad_csv))


def test_binance_checksum_is_verified(tmp_path):
    (p,) = synthetic.write_binance_klines(bars(days=2), str(tmp_path), 15)
    digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
    with open(p + ".CHECKSUM", "w") as f:
        f.write(f"{digest}  {os.path.basename(p)}\n")
    assert readers.verify_checksum(p) and len(readers.read_bars(p)) == 192
    with open(p + ".CHECKSUM", "w") as f:
        f.write(f"{'0' * 64}  {os.path.basename(p)}\n")
    with pytest.raises(MarketDataError, match=r"BTCUSDT-15m-2024-01\.zip: sha256 [0-9a-f]{64} does not match "
                                              r"BTCUSDT-15m-2024-01\.zip\.CHECKSUM"):
        readers.read_bars(p)
    assert readers.list_input_files(str(tmp_path)) == [p]  # the .CHECKSUM file itself is not market data


def test_non_finite_and_float32_overflow_bars_are_errors_or_counted(tmp_path):
    b = bars(days=2)
    b.loc[10, "volume"] = np.inf
    b.loc[20, "quote_volume"] = 1e39  # finite in float64, inf in the float32 examples
    p = str(tmp_path / "b.parquet")
    synthetic.write_tidy(b, p)
    with pytest.raises(MarketDataError, match=r"b\.parquet: row 11: NaN or infinite"):
        readers.read_bars(p)
    drops = {}
    df = readers.read_bars(p, bad_rows="drop", drops=drops)
    assert drops == {readers.DROP_NON_FINITE: 2} and len(df) == len(b) - 2


# ------------------------------------------------------------------------------------------- input patterns
def test_input_patterns_find_user_files_and_no_match_lists_the_files_seen(tmp_path):
    d = tmp_path / "mine"
    synthetic.write_tidy(bars(days=1), str(d / "binance_vision_klines_paper_pairs.parquet"))
    synthetic.write_tidy(bars("AAPL", days=1), str(d / "equities" / "dow30_daily.parquet"))
    (d / "README.md").write_text("x")
    find = lambda pats: [os.path.relpath(p, d) for p in readers.list_input_files(str(d), pats)]  # noqa: E731
    assert find(["binance", "tidy"]) == ["binance_vision_klines_paper_pairs.parquet"]
    assert find(["KLINES"]) == ["binance_vision_klines_paper_pairs.parquet"]
    assert find(["equities"]) == [os.path.join("equities", "dow30_daily.parquet")]
    assert find(["dow30_*"]) == [os.path.join("equities", "dow30_daily.parquet")]
    assert len(find(["*.parquet"])) == 2 and len(find(["*"])) == 2
    with pytest.raises(MarketDataError, match=r"no market-data file matches input_patterns \['yahoo'\]: files seen: "
                                              r"binance_vision_klines_paper_pairs\.parquet, equities"):
        readers.list_input_files(str(d), ["yahoo"])


# ------------------------------------------------------------------------------------------- too few examples
def test_too_few_examples_names_the_source_bar_length_and_date_ranges(tmp_path):
    d = _tidy_dir(tmp_path, bars(days=9))
    # 4 bars each: fewer than embargo_bars + N = 2 + 4 (the lookback may reach back into train, issue 32)
    cfg = IngestionConfig(**{**CFG.__dict__, "eval_start": "2024-01-09T22:00", "test_start": "2024-01-09T23:00"})
    with pytest.raises(ingest.IngestionCheckError) as e:
        ingest.run_ingestion(str(d), str(tmp_path / "o"), cfg)
    msg = str(e.value)
    assert "too few examples in split(s) {'eval': 0, 'test': 0}" in msg
    assert ("BTCUSDT 15 min from 15-min source bars: 864 bars 2024-01-01T00:00:00Z .. 2024-01-09T23:45:00Z"
            in msg)
    assert "eval [2024-01-09T22:00, 2024-01-09T23:00)" in msg
    assert "belongs to the split holding its last N = 4 (execution) bars" in msg and "embargo_bars = 2" in msg
    report = json.load(open(tmp_path / "o" / ingest.REPORT_FILE))
    assert report["status"] == "failed" and report["series"][0]["examples"]["eval"] == 0


def test_failed_example_gen_run_keeps_its_report_beside_the_removed_artifact(tmp_path):
    """Through the TFX launcher (which deletes a failed execution's output folder): the refused mixed-length
    file leaves `<root>/<component>/ingestion_report.failed-<execution>.json` and the error names it."""
    from tfx.orchestration import metadata, pipeline as tfx_pipeline
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from components.example_gen.component import MarketDataExampleGen

    d, _ = _mixed_file(tmp_path)
    root = tmp_path / "root"
    gen = MarketDataExampleGen(input_base=str(d), config=CFG).with_id("MarketDataExampleGen")
    p = tfx_pipeline.Pipeline(
        pipeline_name="failed_ingestion", pipeline_root=str(root), components=[gen], enable_cache=False,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(str(tmp_path / "md.sqlite")))
    with pytest.raises(Exception, match=r"asset BTCUSDT has bars of 2 source bar lengths") as e:
        LocalDagRunner().run(p)
    (kept,) = (root / "MarketDataExampleGen").glob("ingestion_report.failed-*.json")
    assert f"ingestion report kept at {kept}" in str(e.value)
    report = json.load(open(kept))
    assert report["status"] == "failed" and "1 min: 1440 rows; 15 min: 864 rows" in report["error"]
    assert report["files"] == [str(d / "klines_paper_pairs.parquet")]
    assert not list((root / "MarketDataExampleGen" / "examples").glob("*/ingestion_report.json"))


def test_tidy_times_in_1970_are_refused_as_a_unit_error(tmp_path):
    b = bars(days=1)
    b["timestamp"] = pd.to_datetime(b.timestamp.astype("int64") // 10**9 * 1000, utc=True)  # seconds as us
    p = str(tmp_path / "b.parquet")
    synthetic.write_tidy(b, p)
    with pytest.raises(MarketDataError, match=r"b\.parquet: row 1: timestamp 1970-01-01 00:28:24.067200\+00:00 is before "
                                              r"1971: a Unix time written in the wrong unit"):
        readers.read_bars(p)


def test_unlabelled_overlapping_series_are_refused_even_when_duplicates_are_dropped(tmp_path):
    b15 = bars(days=2)
    b5 = bars(days=2, minutes=5, seed=2)
    p = tmp_path / "overlap.csv"
    synthetic.write_tidy(pd.concat([b15, b5]).sort_values("timestamp", kind="stable"), str(p))
    with pytest.raises(MarketDataError, match=r"overlap\.csv: row \d+: duplicate timestamp"):
        readers.read_bars(str(p))
    with pytest.raises(MarketDataError, match=r"overlap\.csv: asset BTCUSDT has 192 rows repeating an open time out "
                                              r"of 768 and no 'frequency' column"):
        readers.read_bars(str(p), bad_rows="drop")


def test_non_finite_bars_are_counted_in_the_beam_metrics_the_backfill_records(tmp_path):
    """The backfill runs `MarketDataToExamples` and records its `lems_ingestion` counters (`ingestion.*`):
    an inf bar and a float32-overflow bar are counted drops there, not silent zero-volume bars."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    b = bars(days=3)
    b.loc[50, "volume"] = np.inf
    b.loc[60, "quote_volume"] = 1e39
    d = _tidy_dir(tmp_path, b)
    cfg = IngestionConfig(**{**CFG.__dict__, "bad_rows": "drop", "eval_start": None, "test_start": None,
                             "end": None, "min_examples_per_split": 0})
    p = beam.Pipeline(runner=FnApiRunner())
    _ = p | ingest.MarketDataToExamples(readers.list_input_files(str(d)), cfg)
    result = p.run()
    result.wait_until_finish()
    got = {m.key.metric.name: m.committed for m in result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(ingest.METRICS_NAMESPACE))["counters"]}
    assert got[readers.DROP_NON_FINITE] == 2 and got["bars_zero_filled"] == 2 and got["examples_emitted"] > 0
