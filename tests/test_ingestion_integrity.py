"""Issue 36, ingestion side: one definition of a valid bar (ingestion refuses what serving refuses), corrupted
market data refused or counted (a VWAP outside the bar's range, flipped bytes, isolated spikes by the
whole-series screen, generated bursts pass), filled quote volume counted with a policy, input file hashes in
the report, and timezones (naive wall-clock times of a declared zone, offsets that change at DST)."""
import hashlib
import json
import struct

import numpy as np
import pandas as pd
import pytest

from components.example_gen import ingest
from components.example_gen.config import IngestionConfig
from components.market_data import outliers, readers, resample, synthetic
from components.market_data.readers import MarketDataError
from lem_model import request_rules as R

CFG = IngestionConfig(frequencies=(15,), norm_window=16, lookback=8, n_ahead=4, stride=4,
                      eval_start="2024-01-06", test_start="2024-01-08", end="2024-01-10", embargo_bars=2)


def cfg(**kw):
    return IngestionConfig(**{**CFG.__dict__, **kw})


def bars(asset="BTCUSDT", start="2024-01-01", days=9, minutes=15, seed=0):
    return synthetic.generate_bars([asset], start=start, periods=days * 1440 // minutes, freq_minutes=minutes,
                                   seed=seed)


def tidy(tmp_path, frame, name="bars.parquet", columns=("timestamp", "asset", "volume", "quote_volume", "close")):
    d = tmp_path / "data"
    synthetic.write_tidy(frame, str(d / name), columns=columns)
    return d, str(d / name)


# ------------------------------------------------------------------------------- one valid bar
def test_valid_bar_is_one_definition():
    v = np.array([1.0, 0.0, 0.0, 2.0, -1.0, np.nan])
    q = np.array([5.0, 0.0, 3.0, 0.0, -5.0, 1.0])
    np.testing.assert_array_equal(R.valid_bars(v, q), [True, True, False, False, False, False])
    # the serving rule refuses the window holding the bar with volume 0 and quote volume > 0
    ctx = R.context(horizon=2)
    bad = {"volume": [[1.0, 0.0, 1.0]], "quote_volume": [[5.0, 3.0, 5.0]], "timestamp": [[0, 900, 1800]],
           "frequency_minutes": [15]}
    with pytest.raises(ValueError, match="quote_volume: must be 0 exactly when volume is 0"):
        R.check_numpy(bad, ctx, R.BAR_RULES)


def test_ingestion_refuses_a_bar_serving_refuses_naming_file_row_asset_and_time(tmp_path):
    b = bars()
    b.loc[48, "volume"] = 0.0  # volume 0, quote volume > 0
    d, path = tidy(tmp_path, b)
    with pytest.raises(MarketDataError, match=r"bars\.parquet: row 49: volume and quote volume disagree.*asset "
                                              r"BTCUSDT, bar 2024-01-01T12:00:00\+00:00"):
        ingest.run_ingestion(str(d), str(tmp_path / "o"), CFG)
    report = json.load(open(tmp_path / "o" / ingest.REPORT_FILE))
    assert report["status"] == "failed" and "row 49" in report["error"]
    report = ingest.run_ingestion(str(d), str(tmp_path / "o2"), cfg(bad_rows="drop"))
    assert report["counts"][readers.DROP_INCONSISTENT_VOLUME] == 1
    assert report["assets"]["BTCUSDT"]["rows_dropped"] == {readers.DROP_INCONSISTENT_VOLUME: 1}
    assert report["counts"]["bars_zero_filled"] == 1  # the dropped bar is a missing bar, zero-filled (valid)


def test_every_ingested_example_passes_the_serving_rules(tmp_path):
    import tensorflow as tf
    b = bars()
    b.loc[[10, 200], "volume"] = 0.0          # two bad bars, dropped and zero-filled
    b.loc[300:302, ["volume", "quote_volume"]] = 0.0  # genuine empty bars
    d, _ = tidy(tmp_path, b)
    out = tmp_path / "o"
    ingest.run_ingestion(str(d), str(out), cfg(bad_rows="drop"))
    ctx = R.context(horizon=CFG.n_ahead, trained_frequencies=[15])
    files = sorted(str(p) for p in out.glob("Split-*/*.gz"))
    n = 0
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        ex = tf.train.Example.FromString(record.numpy()).features.feature
        request = {"volume": np.array(ex["volume"].float_list.value)[None],
                   "quote_volume": np.array(ex["quote_volume"].float_list.value)[None],
                   "timestamp": np.array(ex["timestamp"].int64_list.value)[None],
                   "frequency_minutes": np.array(ex["frequency_minutes"].int64_list.value)}
        assert R.violations(request, ctx, R.BAR_RULES) == []
        n += 1
    assert n > 50


# ------------------------------------------------------------------------------- quote volume filled
@pytest.mark.parametrize("policy", ["fill", "drop", "fail"])
def test_empty_quote_volume_is_filled_and_counted_or_dropped_or_refused(tmp_path, policy):
    b = bars()
    b.loc[[5, 60, 61], "quote_volume"] = np.nan
    d, _ = tidy(tmp_path, b)
    if policy == "fail":
        with pytest.raises(MarketDataError, match=r"row 6: empty quote_volume \(asset BTCUSDT, bar "
                                                  r"2024-01-01T01:15:00\+00:00; 3 such rows"):
            ingest.run_ingestion(str(d), str(tmp_path / "o"), cfg(missing_quote_volume=policy))
        return
    report = ingest.run_ingestion(str(d), str(tmp_path / "o"), cfg(missing_quote_volume=policy))
    c, asset = report["counts"], report["assets"]["BTCUSDT"]
    if policy == "fill":
        assert c[readers.MISSING_QUOTE_FILLED] == 3 and asset[readers.MISSING_QUOTE_FILLED] == 3
        assert c["bars_quote_volume_estimated"] == 3
    else:
        assert c[readers.DROP_MISSING_QUOTE] == 3 and asset["rows_dropped"] == {readers.DROP_MISSING_QUOTE: 3}
        assert asset[readers.MISSING_QUOTE_FILLED] == 0 and c["bars_zero_filled"] == 3


# ------------------------------------------------------------------------------- file hashes
def test_report_keeps_each_input_file_hash_and_a_rerun_names_the_changed_file(tmp_path):
    d, path = tidy(tmp_path, bars())
    _, other = tidy(tmp_path, bars("ETHUSDT", seed=1), name="eth.parquet")
    out = str(tmp_path / "o")
    report = ingest.run_ingestion(str(d), out, CFG)
    assert report["file_sha256"] == {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (path, other)}
    b = bars()
    b.loc[100, ["volume", "quote_volume"]] *= 1.5
    synthetic.write_tidy(b, path)
    report = ingest.run_ingestion(str(d), out, CFG)
    assert report["files_changed_since_previous_run"] == {"changed": [path], "added": [], "removed": []}
    assert json.load(open(f"{out}/{ingest.REPORT_FILE}"))["files_changed_since_previous_run"]["changed"] == [path]


# ------------------------------------------------------------------------------- corrupted values
def _flip_volume_bits(path, volume, n_flips, seed):
    """Flip `n_flips` random bits (mantissa and the two lowest exponent bits) of the volume values stored in an
    uncompressed, dictionary-free Parquet file, in place; returns the corrupted volumes."""
    raw = bytearray(open(path, "rb").read())
    v = np.array(volume, np.float64)
    rng = np.random.default_rng(seed)
    for _ in range(n_flips):
        i, bit = int(rng.integers(len(v))), int(rng.integers(54))
        if v[i] == 0:
            continue
        at = raw.find(struct.pack("<d", v[i]))
        assert at >= 0
        word = struct.unpack("<Q", bytes(raw[at:at + 8]))[0] ^ (1 << bit)
        raw[at:at + 8] = struct.pack("<Q", word)
        v[i] = struct.unpack("<d", struct.pack("<Q", word))[0]
    open(path, "wb").write(raw)
    return v


@pytest.mark.parametrize("seed", [0, 1])
def test_flipped_bytes_in_a_parquet_file_stop_the_ingestion_or_are_dropped_and_counted(tmp_path, seed):
    b = bars(seed=seed)
    d = tmp_path / "data"
    d.mkdir()
    path = str(d / "bars.parquet")
    b[["timestamp", "asset", "volume", "quote_volume", "low", "high", "close"]].to_parquet(
        path, index=False, compression=None, use_dictionary=False)
    corrupt = _flip_volume_bits(path, b.volume.to_numpy(), 200, seed)
    factor = np.where(b.volume > 0, corrupt / np.where(b.volume > 0, b.volume, 1.0), 1.0)
    changed = np.abs(np.log(factor)) > 1e-9
    assert changed.sum() > 80  # about half the bars, most by a tiny amount
    with pytest.raises(MarketDataError, match=r"bars\.parquet: row \d+: bar VWAP \(quote volume / volume\) outside "
                                              r"the bar's \[low, high\].*asset BTCUSDT"):
        ingest.run_ingestion(str(d), str(tmp_path / "o"), CFG)
    report = ingest.run_ingestion(str(d), str(tmp_path / "o2"), cfg(bad_rows="drop", outliers="drop"))
    kept = readers.read_bars(path, bad_rows="drop").timestamp.to_numpy()
    kept_mask = np.isin(b.timestamp.to_numpy(), kept)
    assert report["counts"][readers.DROP_VWAP_OUTSIDE_RANGE] == int((~kept_mask).sum()) > 10
    assert not (kept_mask & (np.abs(np.log(factor)) > 0.02)).any()  # no bar altered by more than 2 % is kept
    assert not (~kept_mask & ~changed).any()                          # and no clean bar is dropped


@pytest.mark.parametrize("at", [2, 150, 400, 700, 860])
def test_isolated_1000x_spike_with_the_same_vwap_is_flagged_wherever_it_sits(tmp_path, at):
    b = bars()
    b.loc[at, ["volume", "quote_volume"]] *= 1000.0
    d, _ = tidy(tmp_path, b)
    with pytest.raises(ingest.IngestionCheckError, match=r"outlier bar"):
        ingest.run_ingestion(str(d), str(tmp_path / "o"), CFG)
    report = ingest.run_ingestion(str(d), str(tmp_path / "o2"), cfg(outliers="drop"))
    t = b.timestamp.iloc[at].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [o["time"] for o in report["outliers"]] == [t]
    assert report["counts"]["bars_outlier_dropped"] == 1


def test_screen_flags_isolated_spikes_the_causal_scores_miss():
    b = bars()
    v, q = b.volume.to_numpy(), b.quote_volume.to_numpy()
    causal, screened = [], []
    for at in range(10, 860, 25):
        v2, q2 = v.copy(), q.copy()
        v2[at] *= 100.0
        q2[at] *= 100.0
        causal.append(outliers.detect(v2, q2, window=96, volume_z=CFG.outlier_volume_z,
                                      return_z=CFG.outlier_return_z).any[at])
        s = outliers.screen(v2, q2, window=96, volume_z=8.0, vwap_z=CFG.screen_vwap_z)
        assert np.flatnonzero(s.any).tolist() in ([at], [])  # never another bar
        screened.append(s.any[at])
        # a quote volume altered alone (VWAP x0.7) is an isolated VWAP
        q3 = q.copy()
        q3[at] *= 0.7
        assert np.flatnonzero(outliers.screen(v, q3, window=96, volume_z=CFG.screen_volume_z, vwap_z=60.0).vwap
                              ).tolist() == [at]
    # a 100x spike with the same VWAP: the trailing scores flag it rarely, the screen (at z 8) nearly always
    assert np.mean(causal) < 0.15 and np.mean(screened) > 0.85


def test_screen_tells_a_decaying_burst_from_an_isolated_spike():
    b = bars()
    v, q = b.volume.to_numpy(), b.quote_volume.to_numpy()
    burst, spike = np.ones(len(v)), np.ones(len(v))
    burst[400:406] = [300.0, 120.0, 50.0, 20.0, 8.0, 3.0]   # a news burst: decays over bars
    spike[400] = 300.0                                     # one bar only
    s_burst = outliers.screen(v * burst, q * burst, window=96, volume_z=CFG.screen_volume_z, vwap_z=CFG.screen_vwap_z)
    s_spike = outliers.screen(v * spike, q * spike, window=96, volume_z=CFG.screen_volume_z, vwap_z=CFG.screen_vwap_z)
    assert not s_burst.any.any()
    assert np.flatnonzero(s_spike.any).tolist() == [400]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_bars_with_news_bursts_pass_the_screen(seed):
    b = synthetic.generate_bars(["BTCUSDT", "ETHUSDT", "XRPUSDT"], start="2024-01-01", periods=96 * 60,
                                freq_minutes=15, seed=seed)
    for _, g in b.groupby("asset"):
        s = outliers.screen(g.volume.to_numpy(), g.quote_volume.to_numpy(), window=96,
                            volume_z=CFG.screen_volume_z, vwap_z=CFG.screen_vwap_z)
        assert not s.any.any()
    five = synthetic.generate_bars(["BTCUSDT", "ETHUSDT"], start="2024-01-01", periods=288 * 30, freq_minutes=5,
                                   seed=seed)
    for _, g in five.groupby("asset"):
        ts = g.timestamp.astype("int64").to_numpy() // 10**9
        for f in (15, 90, 250):
            _, v, q = resample.resample(ts, g.volume.to_numpy(), g.quote_volume.to_numpy(), 5, f)
            s = outliers.screen(v, q, window=96, volume_z=CFG.screen_volume_z, vwap_z=CFG.screen_vwap_z)
            assert not s.any.any(), f


def test_generated_default_dataset_ingests_without_outliers(tmp_path):
    synthetic.write_default_dataset(str(tmp_path / "data"), crypto_days=20, equity_days=300, tidy_days=20)
    config = cfg(frequencies=(15, 90, 250, 1440), eval_start="2024-11-10", test_start="2024-11-15",
                 end="2024-11-21", min_examples_per_split=0)
    report = ingest.run_ingestion(str(tmp_path / "data"), str(tmp_path / "o"), config)
    assert report["counts"].get("bars_outlier", 0) == 0
    assert len(report["file_sha256"]) == len(report["files"]) and all(report["file_sha256"].values())


# ------------------------------------------------------------------------------- timezones
def _new_york(days=("2024-03-08", "2024-03-13"), seed=0):
    """15-minute bars over a DST change, with naive New York wall-clock times and ISO strings with offsets."""
    utc = bars(start=days[0], days=(pd.Timestamp(days[1]) - pd.Timestamp(days[0])).days, seed=seed)
    local = utc.timestamp.dt.tz_convert("America/New_York")
    return utc, local


@pytest.mark.parametrize("days", [("2024-03-08", "2024-03-13"), ("2024-11-01", "2024-11-06")],
                         ids=["spring_forward", "fall_back"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_naive_wall_clock_times_of_a_declared_zone_are_converted_across_dst(tmp_path, days, fmt):
    utc, local = _new_york(days)
    frame = utc.assign(timestamp=local.dt.tz_localize(None))
    if fmt == "csv":
        frame = frame.assign(timestamp=frame.timestamp.dt.strftime("%Y-%m-%d %H:%M:%S"))
    d, path = tidy(tmp_path, frame, name=f"ny.{fmt}")
    got = pd.concat([pd.Series(c.timestamp_us) for c in readers.read_file(path, timezone="America/New_York")])
    assert (got.to_numpy() == utc.timestamp.astype("int64").to_numpy() // 1000).all()
    day = pd.Timestamp(days[0])
    config = cfg(eval_start=str((day + pd.Timedelta(days=2)).date()),
                 test_start=str((day + pd.Timedelta(days=3)).date()), end=days[1], timezone="America/New_York",
                 min_examples_per_split=0)
    report = ingest.run_ingestion(str(d), str(tmp_path / "o"), config)
    assert "bars_zero_filled" not in report["counts"]  # no zero-filled spring-forward hour, nothing merged
    assert "bars_merged_after_alignment" not in report["counts"]
    if days[0].startswith("2024-03"):  # read as UTC (the default), the same file is shifted by 4-5 hours
        utc_read = pd.concat([pd.Series(c.timestamp_us) for c in readers.read_file(path)])
        shift = utc.timestamp.astype("int64").to_numpy() // 1000 - utc_read.to_numpy()
        assert set(shift // (3600 * 10**6)) == {4, 5}
    else:  # the repeated hour read as UTC goes back in time
        with pytest.raises(MarketDataError, match="go backwards"):
            list(readers.read_file(path))


def test_a_time_the_declared_zone_skips_is_refused(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("timestamp,asset,volume,quote_volume\n2024-03-10 01:45:00,A,1,1\n2024-03-10 02:00:00,A,1,1\n")
    with pytest.raises(MarketDataError, match=r"row 3: timestamp 2024-03-10 02:00:00 does not exist in time zone "
                                              r"America/New_York"):
        list(readers.read_file(str(p), timezone="America/New_York"))
    with pytest.raises(ValueError, match="timezone must name a time zone"):
        cfg(timezone="Mars/Olympus")


def test_iso_offsets_that_change_at_dst_are_one_zone(tmp_path):
    utc, local = _new_york(("2024-11-01", "2024-11-06"))
    iso = local.dt.strftime("%Y-%m-%dT%H:%M:%S%z").str.replace(r"(\d\d)(\d\d)$", r"\1:\2", regex=True)
    assert set(iso.str[-6:]) == {"-04:00", "-05:00"}
    d, path = tidy(tmp_path, utc.assign(timestamp=iso), name="iso.csv")
    got = pd.concat([pd.Series(c.timestamp_us) for c in readers.read_file(path)])
    assert (got.to_numpy() == utc.timestamp.astype("int64").to_numpy() // 1000).all()
