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
from lem_model_testutils import ALLOC_TOL, BPS_TOL

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


ROW_KEY = ["asset", "origin_time", "side", "benchmark", "target", "min_period", "match_head", "min_rate", "max_rate"]


def _assert_same_rows(out, reference):
    """Two runs over the same range hold the same partitions and the same rows. Values that come from the model
    agree to float32 rounding, not bit for bit: Beam's BatchElements sizes its batches by timing, so the two runs
    call the model on other batches (other oneDNN kernels); everything else is exact."""
    assert set(_hashes(out)) == set(_hashes(reference))
    a, b = (_read(d).sort_values(ROW_KEY).reset_index(drop=True) for d in (out, reference))
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for c in a.columns:
        if c == "schedule":
            np.testing.assert_allclose(np.stack(a[c].to_numpy()), np.stack(b[c].to_numpy()), **ALLOC_TOL)
        elif a[c].dtype.kind == "f":
            tol = BPS_TOL if c.endswith("_bps") else dict(rtol=1e-6, atol=0)  # prices: bps / 1e4
            np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), equal_nan=True, err_msg=c, **tol)
        else:
            assert (a[c].astype(str) == b[c].astype(str)).all(), c


def _windows_in(asset, start, end_day):
    """The generated source's windows of `asset` whose origin lies in [start, end_day) (independent of the
    backfill: the window cutter on the generated bars)."""
    from components.market_data.synthetic import generate_bars
    from components.market_data.windows import cut_windows_batch
    bars = generate_bars(list(ASSETS), start=START, periods=PERIODS, freq_minutes=FREQ)
    b = bars[bars["asset"] == asset]
    win = cut_windows_batch(b["volume"].to_numpy(), b["quote_volume"].to_numpy(),
                            (b["timestamp"].astype("int64") // 10**9).to_numpy(), asset=asset,
                            frequency_minutes=FREQ, **SIZES)
    lo, hi = (int(pd.Timestamp(x, tz="UTC").value // 10**9) for x in (start, end_day))
    keep = (win["origin_time"] >= lo) & (win["origin_time"] < hi)
    return {k: v[keep] for k, v in win.items()}


def _expected_bps(ws, start="2024-03-02", end_day="2024-03-05"):
    """Independent path: window cutter on the generated bars -> SavedModel -> evaluate_allocations."""
    import tensorflow as tf
    from components.evaluator.order_slippage import labels_from_raw
    from lem_model.slippage import evaluate_allocations
    model = tf.saved_model.load(str(ws / "models" / "lem" / "1")).signatures["serving_default"]
    out = {}
    for asset in ASSETS:
        win = _windows_in(asset, start, end_day)
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
        # the backfill's model outputs come from other batches than this reference's (other oneDNN kernels):
        # float32 agreement, and the bps derived from them accordingly (lem_model_testutils)
        np.testing.assert_allclose(sub["slippage_bps"].to_numpy(), bps[i, m, p, tg], **BPS_TOL)
        sched = np.stack(sub["schedule"].to_numpy())
        np.testing.assert_allclose(sched, np.moveaxis(alloc, 1, -1)[i, m, p, tg], **ALLOC_TOL)
        checked += len(sub)
    assert checked == len(df)
    # prices: achieved / benchmark - 1 in bps is the reported slippage; side sign convention of the evaluator
    np.testing.assert_allclose(1e4 * (df["achieved_price"] / df["benchmark_price"] - 1), df["slippage_bps"], atol=1e-6)
    np.testing.assert_allclose(df["improvement_bps"], np.where(df["side"] == "buy", -1, 1) * df["slippage_bps"])
    manifest = json.load(open(out / commit_lib.MANIFEST))
    assert manifest["total_rows"] == len(df) and len(manifest["partitions"]) == 6


def test_backfill_rows_carry_the_baselines_of_the_same_order(workspace, tmp_path):
    """TWAP-volume and VWAP-curve slippage of each row's order, vs the row's benchmark, by the ONE evaluator."""
    from components.evaluator.order_slippage import labels_from_raw
    from lem_model import baselines, slippage
    n = SIZES["n_ahead"]
    profile = 1.0 + np.sin(np.arange(baselines.bars_per_day(FREQ)) / 7.0) ** 2  # BTCUSDT only: ETH gets TWAP
    path = tmp_path / "vwap_curve_profile.json"
    path.write_text(json.dumps({"profiles": {f"BTCUSDT/{FREQ}": profile.tolist()}}))
    out = tmp_path / "out"
    run_backfill(_spec(workspace, out, start_date="2024-03-03", end_date="2024-03-03", heads=("match",)),
                 vwap_curve_profile=str(path))
    df = _read(out)
    for asset in ASSETS:
        win = _windows_in(asset, "2024-03-03", "2024-03-04")
        labels = labels_from_raw(win["volume"], win["quote_volume"], win["timestamp"], win["frequency_minutes"],
                                 **SIZES)
        first = baselines.time_of_bar(win["origin_time"], FREQ)
        curve = baselines.volume_curve_schedule(profile if asset == "BTCUSDT" else np.ones(96), first, n)
        sub = df[df["asset"].astype(str) == asset]
        row_of = {o: i for i, o in enumerate(win["origin_time"])}
        for bench in ("vwap", "twap"):
            rows = sub[sub["benchmark"] == bench]
            i = (rows["origin_time"].astype("int64") // 10**9).map(row_of).to_numpy()
            twap = slippage.slippage(np.full((len(i), n), 1 / n), labels[i, :, 0], labels[i, :, 1], n, "buy",
                                     bench, "volume").bps
            vc = slippage.slippage(curve[i], labels[i, :, 0], labels[i, :, 1], n, "buy", bench, "volume").bps
            np.testing.assert_allclose(rows["twap_volume_slippage_bps"], twap, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(rows["vwap_curve_slippage_bps"], vc, rtol=1e-9, atol=1e-9)
        same = np.allclose(sub["vwap_curve_slippage_bps"], sub["twap_volume_slippage_bps"])
        assert same == (asset == "ETHUSDT")  # no profile: the Evaluator's TWAP fallback
    # without a profile the VWAP-curve column is NaN, the TWAP column is still there
    out2 = tmp_path / "out2"
    run_backfill(_spec(workspace, out2, start_date="2024-03-03", end_date="2024-03-03", heads=("match",)))
    df2 = _read(out2)
    assert df2["vwap_curve_slippage_bps"].isna().all() and df2["twap_volume_slippage_bps"].notna().all()


def test_rerun_gives_the_same_rows_and_replaces_only_its_range(workspace, tmp_path):
    out = tmp_path / "out"
    run_backfill(_spec(workspace, out))
    rows = len(_read(out))
    shutil.copytree(out, tmp_path / "first")
    run_backfill(_spec(workspace, out))
    _assert_same_rows(out, tmp_path / "first")  # the same rows (float32 agreement), no duplicates
    assert len(_read(out)) == rows
    first = _hashes(out)
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


class _Killed(RuntimeError):
    """What the tests raise to kill a backfill midway (a crash of the process at that point)."""


def test_killed_run_leaves_no_partial_partition_and_restart_completes(workspace, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run_backfill(_spec(workspace, reference))
    out = tmp_path / "out"
    run_backfill(_spec(workspace, out, heads=("match",)))  # an older version of the range
    before = _hashes(out)

    # killed inside Beam after 2 partitions were written: nothing committed changes
    import pyarrow.parquet as pq
    write_table = pq.write_table

    def killed_after(n, real):
        calls = []

        def call(*args, **kwargs):
            if len(calls) >= n:
                raise _Killed(f"killed after {n} call(s) of {real.__name__}")
            calls.append(1)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(pq, "write_table", killed_after(2, write_table))
    with pytest.raises(Exception, match="killed after 2"):
        run_backfill(_spec(workspace, out))
    monkeypatch.setattr(pq, "write_table", write_table)
    assert _hashes(out) == before
    assert os.listdir(out / commit_lib.STAGING)  # the dead run's staging is left behind ...
    _assert_partitions_complete(out)

    # killed in the middle of the commit, after 2 of 6 partition moves: each partition is old or new, whole.
    # Each move renames the committed partition into the trash and the staged one into place: 2 renames each.
    from backfill import commit as c
    rename = os.rename
    monkeypatch.setattr(c.os, "rename", killed_after(4, rename))
    with pytest.raises(_Killed):
        run_backfill(_spec(workspace, out))
    monkeypatch.setattr(c.os, "rename", rename)
    assert os.path.exists(out / c.JOURNAL)
    _assert_partitions_complete(out)
    mid = _hashes(out)
    assert sum(mid[k] != before[k] for k in before) == 2 and set(mid) == set(before)

    # restart: rolls the interrupted commit forward, removes dead staging, and reruns the range
    run_backfill(_spec(workspace, out))
    assert not os.path.exists(out / c.JOURNAL) and not os.listdir(out / c.STAGING)
    assert not os.path.exists(out / c.TRASH) or not os.listdir(out / c.TRASH)
    _assert_same_rows(out, reference)
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
    from lems_cli.backfill import parse_constraints
    assert parse_constraints("default,0:0.5") == ((None, 1.0), (0.0, 0.5))
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
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    df = _read(out)
    # no run found near the model: the VWAP-curve column is NaN, and the command says why and how to fill it
    assert "warning: vwap_curve_slippage_bps will be NaN: no pipeline run found" in captured.err
    assert "--run ROOT" in captured.err and df["vwap_curve_slippage_bps"].isna().all()
    assert printed["model_blessing"] == "blessed" and set(df["model_blessing"]) == {"blessed"}
    from backfill.rows import COLUMNS
    assert [c for c in df.columns if c not in ("date", "asset")] == list(COLUMNS)
    assert printed["windows"] == 96 // 4 and len(df) == 2 * printed["windows"]  # 2 constraints x 1 scenario
    assert set(df["max_rate"]) == {0.5, 1.0} and set(df["asset"].astype(str)) == {"ETHUSDT"}
    assert (df["origin_time"].dt.minute.isin([0])).all()  # stride 4 x 15 min: origins on the hour


def test_empty_selection_is_refused_with_counts(workspace, tmp_path, capsys):
    """A range without bars, or assets the source lacks: non-zero exit, the counts that explain it, and the
    committed output of an earlier run left exactly as it was (an empty commit would delete its range)."""
    from backfill.beam_pipeline import EmptySelectionError
    from lems_cli.main import main
    out = tmp_path / "out"
    run_backfill(_spec(workspace, out, start_date="2024-03-03", end_date="2024-03-03", heads=("match",)))
    before = _hashes(out)
    with pytest.raises(EmptySelectionError) as err:  # the source ends on 2024-03-09
        run_backfill(_spec(workspace, out, start_date="2025-01-01", end_date="2025-01-02"))
    counts = err.value.counts
    assert counts["input_files"] == len(ASSETS) and counts["windows_selected"] == 0
    assert counts["windows_cut"] == 0 and "empty selection" in str(err.value) and "windows_selected=0" in str(err.value)
    assert _hashes(out) == before and not os.listdir(out / commit_lib.STAGING)
    rc = main(["backfill", "--source", str(workspace / "src"), "--model", str(workspace / "models" / "lem"),
               "--output", str(out), "--start", "2024-03-03", "--end", "2024-03-03", "--assets", "XRPUSDT",
               "--heads", "match"])
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert rc == 1 and printed["error"] == "empty selection" and "XRPUSDT" in captured.err
    assert printed["counts"]["windows_selected"] == 0 and printed["counts"]["windows_other_assets"] > 0
    assert _hashes(out) == before


def test_shrinking_source_keeps_the_other_assets_partitions_unless_removal_is_asked(workspace, tmp_path, capsys):
    """A rerun whose source lacks an asset replaces only what it produced: the absent asset's partitions stay
    (byte for byte) and are reported as kept; `--remove-absent` removes them, reported as removed."""
    from lems_cli.main import main
    out = tmp_path / "out"
    one_day = dict(assets=None, start_date="2024-03-03", end_date="2024-03-03", heads=("match",), stride=4)
    first = run_backfill(_spec(workspace, out, **one_day))
    assert first["partitions"]["added"] == [["2024-03-03", a] for a in ASSETS]
    before, rows = _hashes(out), len(_read(out))
    eth = [k for k in before if "ETHUSDT" in k]
    assert len(eth) == 1

    record = run_backfill(_spec(workspace, out, input_patterns=("BTCUSDT*",), **one_day))
    assert record["partitions"]["replaced"] == [["2024-03-03", "BTCUSDT"]]
    assert record["partitions"]["kept"] == [["2024-03-03", "ETHUSDT"]] and record["partitions"]["removed"] == []
    after = _hashes(out)
    assert set(after) == set(before) and after[eth[0]] == before[eth[0]]   # ETH untouched, nothing lost
    assert len(_read(out)) == rows                              # BTC rewritten (batches differ: same rows)
    manifest = json.load(open(out / commit_lib.MANIFEST))
    assert manifest["last_run_partitions"] == {"replaced": 1, "added": 0, "kept": 1, "removed": 0}
    assert os.path.relpath(os.path.dirname(os.path.join(str(out), eth[0])), str(out)) in manifest["partitions"]
    runs = json.load(open(out / commit_lib.RUNS / f"{record['run_id']}.json"))
    assert runs["partitions"]["kept"] == [["2024-03-03", "ETHUSDT"]]

    assert main(["backfill", "--source", str(workspace / "src"), "--model", str(workspace / "models" / "lem"),
                 "--output", str(out), "--start", "2024-03-03", "--end", "2024-03-03", "--heads", "match",
                 "--stride", "4", "--input-patterns", "BTCUSDT*", "--remove-absent"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["partitions"]["removed"] == [["2024-03-03", "ETHUSDT"]] and printed["partitions"]["kept"] == []
    assert set(_read(out)["asset"].astype(str)) == {"BTCUSDT"} and not any("ETHUSDT" in k for k in _hashes(out))
