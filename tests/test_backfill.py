"""Backfill (`backfill/`, `lems backfill`): generated bars + a pushed tiny LEM (real transform graph, the
Trainer's exporter) -> Parquet rows that match the ONE slippage evaluator, atomic reruns and restarts."""
import glob
import hashlib
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from backfill import commit as commit_lib
from backfill.beam_pipeline import run_backfill
from backfill.spec import BackfillSpec

SIZES = dict(norm_window=24, lookback=12, n_ahead=6)
HYPER = dict(hidden_size=8, num_embedding=4, num_heads=2, fused_mlp_hidden_dim=8, recurrent="lstm")
ASSETS = ("BTCUSDT", "ETHUSDT")
START, PERIODS, FREQ = "2024-03-01", 800, 15


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from backfill import testing
    root = tmp_path_factory.mktemp("backfill")
    testing.write_synthetic_source(str(root / "src"), ASSETS, start=START, periods=PERIODS, freq_minutes=FREQ)
    testing.export_untrained_model(str(root / "models" / "lem"), **SIZES, **HYPER)
    return root


def _spec(ws, out, **kw):
    args = dict(source=str(ws / "src"), model_dir=str(ws / "models" / "lem"), output_dir=str(out),
                start_date="2024-03-02", end_date="2024-03-04", assets=ASSETS, frequencies=(FREQ,),
                heads=("match", 2), batch_size=64)
    args.update(kw)
    return BackfillSpec(**args)


def _read(out) -> pd.DataFrame:
    return pd.read_parquet(str(out))


def _hashes(out) -> dict:
    files = sorted(glob.glob(os.path.join(str(out), "date=*", "asset=*", "*")))
    return {os.path.relpath(f, str(out)): hashlib.sha256(open(f, "rb").read()).hexdigest() for f in files}


def _expected_bps(ws, start="2024-03-02", end_day="2024-03-05"):
    """Independent path: window cutter on the generated bars -> SavedModel -> evaluate_allocations."""
    import tensorflow as tf
    from components.evaluator.order_slippage import labels_from_raw
    from components.market_data.synthetic import generate_bars
    from components.market_data.windows import cut_windows_batch
    from lem_model.slippage import evaluate_allocations
    bars = generate_bars(list(ASSETS), start=START, periods=PERIODS, freq_minutes=FREQ)
    model = tf.saved_model.load(str(ws / "models" / "lem" / "1")).signatures["serving_default"]
    lo, hi = (int(pd.Timestamp(x, tz="UTC").value // 10**9) for x in (start, end_day))
    out = {}
    for asset in ASSETS:
        b = bars[bars["asset"] == asset]
        win = cut_windows_batch(b["volume"].to_numpy(), b["quote_volume"].to_numpy(),
                                (b["timestamp"].astype("int64") // 10**9).to_numpy(), asset=asset,
                                frequency_minutes=FREQ, **SIZES)
        keep = (win["origin_time"] >= lo) & (win["origin_time"] < hi)
        win = {k: v[keep] for k, v in win.items()}
        n = len(win["origin_time"])
        alloc = model(volume=tf.constant(win["volume"]), quote_volume=tf.constant(win["quote_volume"]),
                      timestamp=tf.constant(win["timestamp"]), frequency_minutes=tf.constant(win["frequency_minutes"]),
                      min_rate=tf.fill([n], 1.0 / SIZES["n_ahead"] ** 2), max_rate=tf.ones([n]))["allocations"].numpy()
        labels = labels_from_raw(win["volume"], win["quote_volume"], win["timestamp"], win["frequency_minutes"], **SIZES)
        out[asset] = (win["origin_time"], evaluate_allocations(alloc, labels), alloc)
    return out


def test_backfill_rows_equal_the_evaluator(workspace, tmp_path):
    from lem_model import layout
    out = tmp_path / "out"
    record = run_backfill(_spec(workspace, out))
    df = _read(out)
    n_scen = 2 * 4 * 2
    expected = _expected_bps(workspace)
    n_windows = sum(len(v[0]) for v in expected.values())
    assert n_windows == 2 * 3 * 96  # every 15-minute origin of 3 days, 2 assets (stride 1)
    assert record["windows"] == n_windows and len(df) == n_windows * n_scen
    assert record["counters"]["windows_inferred"] == n_windows
    assert not df.duplicated(["asset", "origin_time", "side", "benchmark", "target", "min_period", "match_head"]).any()
    assert sorted(df["date"].astype(str).unique()) == ["2024-03-02", "2024-03-03", "2024-03-04"]
    n = SIZES["n_ahead"]
    checked = 0
    for asset, (origins, bps, alloc) in expected.items():
        sub = df[df["asset"].astype(str) == asset]
        t = sub["origin_time"].astype("int64") // 10**9
        row_of = {o: i for i, o in enumerate(origins)}
        i = t.map(row_of).to_numpy()
        m = np.where(sub["match_head"], n, sub["min_period"] - 1)
        p = [layout.path_index(s, b) for s, b in zip(sub["side"], sub["benchmark"])]
        tg = [layout.target_index(x) for x in sub["target"]]
        np.testing.assert_allclose(sub["slippage_bps"].to_numpy(), bps[i, m, p, tg], rtol=1e-9, atol=1e-9)
        sched = np.stack(sub["schedule"].to_numpy())
        np.testing.assert_allclose(sched, np.moveaxis(alloc, 1, -1)[i, m, p, tg], atol=1e-6)
        checked += len(sub)
    assert checked == len(df)
    # prices: achieved / benchmark - 1 in bps is the reported slippage; side sign convention of the evaluator
    np.testing.assert_allclose(1e4 * (df["achieved_price"] / df["benchmark_price"] - 1), df["slippage_bps"], atol=1e-6)
    np.testing.assert_allclose(df["improvement_bps"], np.where(df["side"] == "buy", -1, 1) * df["slippage_bps"])
    manifest = json.load(open(out / commit_lib.MANIFEST))
    assert manifest["total_rows"] == len(df) and len(manifest["partitions"]) == 6


def test_rerun_is_identical_and_replaces_only_its_range(workspace, tmp_path):
    out = tmp_path / "out"
    run_backfill(_spec(workspace, out))
    first, rows = _hashes(out), len(_read(out))
    run_backfill(_spec(workspace, out))
    assert _hashes(out) == first and len(_read(out)) == rows  # identical files, no duplicates
    # a narrower rerun (one day, one head) replaces exactly its partitions
    run_backfill(_spec(workspace, out, start_date="2024-03-03", end_date="2024-03-03", heads=("match",)))
    df = _read(out)
    per_date = df.groupby(df["date"].astype(str)).size().to_dict()
    assert per_date == {"2024-03-02": 2 * 96 * 16, "2024-03-03": 2 * 96 * 8, "2024-03-04": 2 * 96 * 16}
    after = _hashes(out)
    assert {k: v for k, v in after.items() if "2024-03-03" not in k} == \
           {k: v for k, v in first.items() if "2024-03-03" not in k}
    assert not os.listdir(out / commit_lib.STAGING) and not os.path.exists(out / commit_lib.JOURNAL)


def _assert_partitions_complete(out):
    """Every committed partition holds exactly one readable file whose rows match its manifest entry."""
    manifest = json.load(open(out / commit_lib.MANIFEST)) if os.path.exists(out / commit_lib.MANIFEST) else None
    for d in glob.glob(os.path.join(str(out), "date=*", "asset=*")):
        files = os.listdir(d)
        assert files == [commit_lib.PART_FILE], files
        n = len(pd.read_parquet(os.path.join(d, files[0])))
        if manifest is not None and os.path.relpath(d, str(out)) in manifest["partitions"]:
            entry = manifest["partitions"][os.path.relpath(d, str(out))]
            if commit_lib.file_sha256(os.path.join(d, files[0])) == entry["sha256"]:
                assert entry["rows"] == n


def test_killed_run_leaves_no_partial_partition_and_restart_completes(workspace, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run_backfill(_spec(workspace, reference))
    out = tmp_path / "out"
    run_backfill(_spec(workspace, out, heads=("match",)))  # an older version of the range
    before = _hashes(out)

    # killed inside Beam after 2 partitions were written: nothing committed changes
    monkeypatch.setenv("LEMS_BACKFILL_FAIL_AFTER_PARTITIONS", "2")
    with pytest.raises(Exception, match="injected failure"):
        run_backfill(_spec(workspace, out))
    monkeypatch.delenv("LEMS_BACKFILL_FAIL_AFTER_PARTITIONS")
    assert _hashes(out) == before
    assert os.listdir(out / commit_lib.STAGING)  # the dead run's staging is left behind ...
    _assert_partitions_complete(out)

    # killed in the middle of the commit (after 2 of 6 partition moves): each partition is old or new, whole
    from backfill import commit as c
    with pytest.raises(c.InjectedFailure):
        run_backfill(_spec(workspace, out), fail_after_commit_moves=2)
    assert os.path.exists(out / c.JOURNAL)
    _assert_partitions_complete(out)
    mid = _hashes(out)
    assert sum(mid[k] != before[k] for k in before) == 2 and set(mid) == set(before)

    # restart: rolls the interrupted commit forward, removes dead staging, and reruns the range
    run_backfill(_spec(workspace, out))
    assert not os.path.exists(out / c.JOURNAL) and not os.listdir(out / c.STAGING)
    assert not os.path.exists(out / c.TRASH) or not os.listdir(out / c.TRASH)
    assert _hashes(out) == _hashes(reference)
    _assert_partitions_complete(out)
    df = _read(out)
    assert not df.duplicated(["asset", "origin_time", "side", "benchmark", "target", "min_period", "match_head"]).any()


def test_spec_validation_and_cli_parsing(tmp_path):
    with pytest.raises(ValueError, match="before start_date"):
        BackfillSpec(source="s", model_dir="m", output_dir="o", start_date="2024-03-05", end_date="2024-03-01")
    spec = BackfillSpec(source="s", model_dir="m", output_dir="o", start_date="2024-03-01", end_date="2024-03-02",
                        heads=("match", 1, 6))
    assert spec.head_indices(6) == [0, 5, 6]
    with pytest.raises(ValueError, match="outside 1..N"):
        spec.head_indices(4)
    assert spec.dates() == ["2024-03-01", "2024-03-02"]
    from lems_cli.backfill import _constraints
    assert _constraints("default,0:0.5") == ((None, 1.0), (0.0, 0.5))
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        from backfill.spec import resolve_model_dir
        resolve_model_dir(str(tmp_path))


def test_cli_backfill(workspace, tmp_path, capsys):
    from lems_cli.main import main
    out = tmp_path / "cli"
    assert main(["backfill", "--source", str(workspace / "src"), "--model", str(workspace / "models" / "lem"),
                 "--output", str(out), "--start", "2024-03-03", "--end", "2024-03-03", "--assets", "ETHUSDT",
                 "--heads", "match", "--paths", "buy_vwap", "--targets", "volume",
                 "--constraints", "default,0:0.5", "--stride", "4", "--log-every", "8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    df = _read(out)
    assert printed["windows"] == 96 // 4 and len(df) == 2 * printed["windows"]  # 2 constraints x 1 scenario
    assert set(df["max_rate"]) == {0.5, 1.0} and set(df["asset"].astype(str)) == {"ETHUSDT"}
    assert (df["origin_time"].dt.minute.isin([0])).all()  # stride 4 x 15 min: origins on the hour
