"""From any run to a served model, on purpose: after a NOT BLESSED run `lems serve` explains the empty serving
directory (the run's verdict, its trained model, the command to push it), `lems push --unblessed` pushes the
Trainer's model in TF Serving's layout with a marker, the server warns while it serves it, and `lems backfill`
warns and writes `unblessed` into every row and its manifest; a blessed push is backfilled with the run's
VWAP-curve profile found through ML Metadata.

The runs are ML Metadata records in the shape LocalDagRunner writes (tests/run_testutils.py) around a real
SavedModel exported with the Trainer's exporter; the commands are the real ones."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

import serving_testutils as U
from lems_cli.main import main
from run_testutils import record_run
from serving import blessing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = {"train_split": "train",
           "profiles": {f"BTCUSDT/{U.FREQ}": (1.0 + np.sin(np.arange(96) / 7.0) ** 2).round(6).tolist()}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny trained LEM exported by the Trainer's exporter (the run's `Format-Serving`)."""
    base = tmp_path_factory.mktemp("export")
    return U.export_version(U.train_tiny_lem(U.make_bars(600), epochs=1), str(base), 1)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from backfill import testing
    src = tmp_path_factory.mktemp("bars")
    testing.write_synthetic_source(str(src), ("BTCUSDT",), start="2024-03-01", periods=800, freq_minutes=U.FREQ)
    return str(src)


@pytest.fixture(scope="module")
def not_blessed(tmp_path_factory, exported):
    """runs/demo after a NOT BLESSED run: nothing under its serving directory."""
    root = str(tmp_path_factory.mktemp("runs") / "demo")
    base = os.path.join(root, "serving", "lem")
    uris = record_run(root, pipeline_name="lems-demo", model_dir=exported, blessed=False, push_base=base,
                      profile=PROFILE)
    return root, base, uris


def _backfill(source, model, out, capsys, *extra):
    rc = main(["backfill", "--source", source, "--model", model, "--output", str(out), "--start", "2024-03-04",
               "--end", "2024-03-04", "--heads", "match", "--stride", "4", *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out), captured.err, pd.read_parquet(str(out))


def test_serve_explains_an_empty_base_path_after_a_not_blessed_run(not_blessed, capsys):
    root, base, uris = not_blessed
    assert main(["serve", "--model-base-path", base, "--port", "0"]) == 1
    err = capsys.readouterr().err
    trained = os.path.join(uris["Trainer"], "Format-Serving")
    assert f"nothing to serve: {base} does not exist" in err
    assert "NOT BLESSED by the Evaluator (the Pusher pushes only blessed models)" in err
    assert f"Its trained model: {trained}" in err
    assert f"lems push --unblessed --run {root} --model-base-path {base}" in err
    assert "--wait" in err


def test_serve_without_any_run_says_how_to_get_one(tmp_path, capsys):
    assert main(["serve", "--model-base-path", str(tmp_path / "serving" / "lem"), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "No pipeline run was found" in err and "lems demo" in err
    assert main(["serve", "--model-base-path", str(tmp_path), "--metrics"]) == 2
    assert capsys.readouterr().err.strip() == ("error: lems serve: --metrics serves the metrics on the REST port: add "
                                               "--rest-port PORT (TF Serving's is 8501)")


def test_push_unblessed_then_serve_warns_and_backfill_records_it(not_blessed, source, tmp_path, capsys, caplog):
    root, base, uris = not_blessed
    trained = os.path.join(uris["Trainer"], "Format-Serving")
    # without --unblessed: refused, naming the verdict and the flag
    assert main(["push", "--run", root]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: lems push: the latest run ") and "NOT BLESSED" in err and err.endswith(
        "add --unblessed") and "\n" not in err
    assert not os.path.exists(base)

    assert main(["push", "--unblessed", "--run", root]) == 0
    captured = capsys.readouterr()
    assert "WARNING: pushed an UNBLESSED model, for development only" in captured.err
    (version,) = os.listdir(base)
    vdir = os.path.join(base, version)
    assert version.isdigit() and f"to       {vdir}" in captured.out
    assert os.path.isfile(os.path.join(vdir, "saved_model.pb")) and os.path.isdir(os.path.join(vdir, "variables"))
    state = blessing.blessing_of(vdir)
    assert state["state"] == "unblessed" and "NOT BLESSED" in state["reason"]
    marker = state["marker"]
    assert marker["source_model"] == trained and marker["evaluator_blessed"] is False
    assert marker["vwap_curve_profile"] == os.path.join(uris["VwapCurveBaseline"], "vwap_curve_profile.json")
    # the same model again: nothing new
    assert main(["push", "--unblessed", "--run", root]) == 0
    assert "already pushed, UNBLESSED" in capsys.readouterr().out and os.listdir(base) == [version]

    # the server loads it and warns that it is unblessed
    from serving.server import ModelRegistry
    registry = ModelRegistry(base, "lem", poll_seconds=60)
    with caplog.at_level(logging.INFO, logger="lems.serving"):
        assert registry.poll_once()
    registry.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"version {version} is UNBLESSED" in w and "NOT BLESSED" in w for w in warnings), warnings

    # the backfill warns, marks every row and its manifest, and takes the run's profile from the marker
    record, err, df = _backfill(source, base, tmp_path / "out", capsys)
    assert "WARNING: the model is UNBLESSED" in err
    assert record["model_blessing"] == "unblessed" and record["vwap_curve_profile"] == marker["vwap_curve_profile"]
    assert len(df) > 0 and set(df["model_blessing"]) == {"unblessed"}
    assert df["vwap_curve_slippage_bps"].notna().all()
    manifest = json.load(open(tmp_path / "out" / "_manifest.json"))
    assert {p["model_blessing"] for p in manifest["partitions"].values()} == {"unblessed"}


def test_blessed_push_is_backfilled_with_its_runs_profile(tmp_path, exported, source, capsys):
    root = str(tmp_path / "runs" / "prod")
    base = str(tmp_path / "serving" / "lem")           # outside the run root: found through the Pusher's record
    record_run(root, model_dir=exported, blessed=True, push_base=base, pushed_version=17, profile=PROFILE)
    assert main(["push", "--unblessed", "--run", root]) == 0
    assert "nothing to do" in capsys.readouterr().out and os.listdir(base) == ["17"]
    assert blessing.blessing_of(os.path.join(base, "17"))["state"] == "blessed"
    record, err, df = _backfill(source, base, tmp_path / "out", capsys, "--run", root)
    assert "the run that pushed" in err and "WARNING" not in err
    assert record["model_blessing"] == "blessed" and set(df["model_blessing"]) == {"blessed"}
    assert record["vwap_curve_profile"].endswith("vwap_curve_profile.json")
    # the profile's curve differs from TWAP: the two baseline columns differ
    assert df["vwap_curve_slippage_bps"].notna().all()
    assert not np.allclose(df["vwap_curve_slippage_bps"], df["twap_volume_slippage_bps"])


def test_serve_subprocess_logs_the_load_and_the_unblessed_warning(not_blessed):
    """`lems serve` as a user starts it: the version's load line and the UNBLESSED warning are in its log by
    default; REST status and metrics answer on --rest-port."""
    root, base, _ = not_blessed
    if not os.path.isdir(base):
        assert main(["push", "--unblessed", "--run", root]) == 0
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "lems_cli.main", "serve", "--model-base-path", base, "--port", "0",
                             "--rest-port", "0", "--metrics"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line, deadline = "", time.monotonic() + 300
        while "(gRPC)" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "(gRPC), REST http://127.0.0.1:" in line, line
        rest = line.split("REST http://")[1].split()[0]
        with urllib.request.urlopen(f"http://{rest}/v1/models/lem", timeout=60) as resp:
            status = json.loads(resp.read())
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        with urllib.request.urlopen(f"http://{rest}/monitoring/prometheus/metrics", timeout=60) as resp:
            assert ':tensorflow:serving:request_count{model_name="lem",status="OK"} 1' in resp.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "serving model lem version" in err and "UNBLESSED" in err, err[-3000:]


def test_serve_wait_keeps_polling_and_says_so(tmp_path):
    base = tmp_path / "serving" / "lem"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "lems_cli.main", "serve", "--model-base-path", str(base), "--port",
                             "0", "--wait"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line, deadline = "", time.monotonic() + 300
        while "(gRPC)" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "(gRPC)" in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"nothing to serve: {base} does not exist" in err and "No pipeline run was found" in err
    assert f"--wait: serving with no model version yet; polling {base} every 2 s" in err
