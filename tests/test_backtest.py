"""`lems backtest`: periods and their pipeline configurations, scoring, and the walk-forward end to end on
generated bars with a tiny model (two folds), including a backtest killed mid-fold that resumes."""
import json
import os

import numpy as np
import pytest
import yaml

from walkforward import config as wf_config
from walkforward.scoring import Orders, period_slices

W, L, N = 16, 8, 4


def _backtest_dict(root, data_dir):
    return {
        "pipeline_name": "bt", "root": str(root / "run"),
        "data": {"source": str(data_dir), "frequencies": [15, 30], "stride": 2, "start": "2024-01-01",
                 "eval_start": "2024-01-05", "test_start": "2024-01-08", "embargo_bars": 4},
        "sizes": {"n_ahead": N, "lookback": L, "norm_window": W},
        # xla_max_batch 1: the exported model's small-batch XLA path compiled for one batch size, not four
        "model": {"hidden_size": 8, "num_embedding": 4, "num_heads": 2, "fused_mlp_hidden_dim": 8, "recurrent": "lstm",
                  "xla_max_batch": 1},
        "training": {"learning_rate": 1e-3, "batch_size": 64, "epochs": 1, "verbose": 0, "jit_compile": False},
        "evaluation": {"min_slice_orders": 1},
        "report": {"enabled": False},
        "backtest": {"name": "tiny", "output_dir": str(root / "results"),
                     "fold_boundaries": ["2024-01-07", "2024-01-09", "2024-01-11"],
                     "test": ["2024-01-11", "2024-01-12"], "final": ["2024-01-12", None], "validation_days": 1},
    }


def _write(tmp_path, values):
    path = tmp_path / "bt.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_periods_and_their_pipeline_configs(tmp_path):
    pipeline, backtest = wf_config.load(_write(tmp_path, _backtest_dict(tmp_path, tmp_path / "data")))
    folds = wf_config.periods(backtest)
    assert [(p.name, p.start, p.end) for p in folds] == [("fold-1", "2024-01-07", "2024-01-09"),
                                                         ("fold-2", "2024-01-09", "2024-01-11")]
    every = wf_config.periods(backtest, ("folds", "test", "final"))
    assert [p.name for p in every] == ["fold-1", "fold-2", "test", "final"] and every[-1].end is None
    c = wf_config.period_config(pipeline, backtest, folds[1])
    # trains before the validation split, validates on the last day before the fold, scores the fold
    assert (c.data.start, c.data.eval_start, c.data.test_start, c.data.end) == \
        ("2024-01-01", "2024-01-08", "2024-01-09", "2024-01-11")
    assert c.evaluation.split == "test" and c.report.split == "test"
    assert c.root.endswith(os.path.join("run", "fold-2")) and c.serving.serving_dir.startswith(c.root)
    assert c.pipeline_name == "bt-fold-2"
    # the hash ignores locations and changes with what the result depends on
    assert wf_config.config_hash(c) == wf_config.config_hash(c.replace(root="/elsewhere"))
    assert wf_config.config_hash(c) != wf_config.config_hash(c.replace(training={"epochs": 2}))


@pytest.mark.parametrize("change, message", [
    ({"fold_boundaries": ["2024-01-07"]}, "at least two dates"),
    ({"fold_boundaries": ["2024-01-09", "2024-01-07"]}, "must increase"),
    ({"test": ["2024-01-12", "2024-01-11"]}, "must end after it starts"),
    ({"validation_days": 0}, "validation_days"),
    ({"folds": 3}, "unknown key"),
])
def test_bad_backtest_sections_are_refused_naming_the_field(tmp_path, change, message):
    values = _backtest_dict(tmp_path, tmp_path / "data")
    values["backtest"].update(change)
    with pytest.raises(ValueError, match=message):
        wf_config.load(_write(tmp_path, values))


def test_a_fold_without_training_bars_is_refused(tmp_path):
    values = _backtest_dict(tmp_path, tmp_path / "data")
    values["data"]["start"] = "2024-01-06T12:00"
    with pytest.raises(ValueError, match="fold-1 .*no training bars"):
        wf_config.load(_write(tmp_path, values))


def _orders(b=600, n=N, seed=0, lem_scale=0.5, twap_scale=1.0):
    """Orders whose match and minimum-period-N heads have `lem_scale` times TWAP's noise."""
    rng = np.random.default_rng(seed)
    twap = rng.normal(0.0, 10.0 * twap_scale, b)
    lem = rng.normal(0.0, 10.0 * lem_scale, (b, n + 1, 4, 2))
    lem[:, 0] -= 2.0 * np.array([1, 1, -1, -1])[None, :, None]  # min-1 heads on the good side of TWAP's mean
    start = 1_704_067_200 + (np.arange(b) // 10) * 86_400
    names = ("twap_volume_vs_vwap", "twap_notional_vs_vwap", "twap_volume_vs_twap", "twap_notional_vs_twap",
             "vwap_curve_volume_vs_vwap", "vwap_curve_notional_vs_vwap", "vwap_curve_volume_vs_twap",
             "vwap_curve_notional_vs_twap")
    base = {k: (twap if k == "twap_volume_vs_vwap" else rng.normal(0, 10, b)) for k in names}
    assets = np.where(np.arange(b) % 2, "AAA", "BBB")
    freq = np.where(np.arange(b) % 3, 15, 90)
    return Orders(assets, freq, start.astype(np.int64), lem.astype(np.float32), base)


def test_scoring_gives_ratios_with_intervals_per_slice_and_asset(tmp_path):
    orders = _orders()
    out = period_slices(orders, level=0.95, margin=0.10, n_boot=200)
    assert set(out["slices"]) == {"15 min", "90 min", "overall"} and set(out["asset_slices"]) == {"AAA", "BBB"}
    overall = out["slices"]["overall"]
    r = overall["match_vwap_std_ratio"]
    assert 0.4 < r["lo"] < r["value"] < r["hi"] < 0.6  # the match head has half TWAP's std
    assert overall["orders"] == 600 and overall["days"] == 60
    for side in ("buy", "sell"):
        assert overall["min_n_std_ratio"][side]["hi"] < 1
        assert overall["min1_mean_twap_std_units"][side] == pytest.approx(
            overall["min1_mean_bps"][side]["value"] / np.std(orders.baselines["twap_volume_vs_vwap"], ddof=1))
    assert overall["gate"]["better"] and not overall["gate"]["failed"]
    json.dumps(out)  # JSON-serialisable
    # save / load round trip, and concatenation of periods
    path = str(tmp_path / "o.npz")
    orders.save(path)
    back = Orders.load(path)
    np.testing.assert_array_equal(back.lem, orders.lem.astype(np.float32))
    assert list(back.asset) == list(orders.asset) and len(Orders.concat([back, orders])) == 1200


def test_scoring_a_worse_model_fails_the_gate():
    out = period_slices(_orders(lem_scale=2.0), level=0.95, margin=0.10, n_boot=200)
    overall = out["slices"]["overall"]
    assert overall["match_vwap_std_ratio"]["lo"] > 1
    assert overall["gate"]["failed"] and not overall["gate"]["better"]


# ------------------------------------------------------------------------------- resuming, read-once periods
class _FakeSummary:
    def __init__(self, name):
        self.nodes, self.blessed, self.model_dir, self.run_id = {}, True, f"/models/{name}", f"run-{name}"

    def states(self):
        return {}


def test_finished_periods_are_read_back_and_test_is_scored_once(tmp_path, monkeypatch, capsys):
    from walkforward import runner
    pipeline, backtest = wf_config.load(_write(tmp_path, _backtest_dict(tmp_path, tmp_path / "data")))
    monkeypatch.setattr(runner, "period_orders", lambda summary, config: _orders(seed=len(summary.run_id)))
    calls = []

    def fake(config):
        calls.append(config.pipeline_name)
        if config.pipeline_name == "bt-fold-2" and calls.count("bt-fold-2") == 1:
            raise KeyboardInterrupt("killed")  # the process dies inside fold 2
        return _FakeSummary(config.pipeline_name)

    with pytest.raises(KeyboardInterrupt):
        runner.run(pipeline, backtest, runner=fake)
    result = runner.run(pipeline, backtest, runner=fake)
    assert calls == ["bt-fold-1", "bt-fold-2", "bt-fold-2"]   # fold 1 read back, fold 2 run again
    assert "fold-1 [2024-01-07, 2024-01-09): finished earlier" in capsys.readouterr().out
    assert [f["name"] for f in result["folds"]] == ["fold-1", "fold-2"]
    assert result["pooled"]["orders"] == 1200 and result["reads"] == {}
    # a changed configuration is not read back
    changed = pipeline.replace(training={"epochs": 2})
    runner.run(changed, backtest, runner=fake)
    assert calls[3:] == ["bt-fold-1", "bt-fold-2"]
    # the test period: scored once, then read back (reads stay 1); the folds stay in the JSON
    runner.run(changed, backtest, ("test",), runner=fake)
    again = runner.run(changed, backtest, ("test",), runner=fake)
    assert calls.count("bt-test") == 1 and again["reads"] == {"test": 1}
    assert [f["name"] for f in again["folds"]] == ["fold-1", "fold-2"] and again["test"]["orders"] == 600
    written = json.load(open(runner.output_paths(backtest)["json"]))
    assert written["reads"] == {"test": 1} and written["test"]["slices"]["overall"]["match_vwap_std_ratio"]["hi"] < 1


# ----------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_backtest_end_to_end_resumes_a_killed_fold(tmp_path, capsys):
    """`lems backtest` on generated bars with a tiny model: killed (SIGKILL) while fold 2 trains, then run
    again: fold 1 is read back, fold 2 resumes with every component before the Trainer from the cache."""
    import signal
    import subprocess
    import sys
    import time
    from components.market_data.synthetic import generate_bars, write_tidy
    from pipeline import local_runner
    from walkforward import runner

    data_dir = tmp_path / "data"
    bars = generate_bars(["BTCUSDT", "ETHUSDT"], start="2024-01-01", periods=12 * 96, freq_minutes=15, seed=3)
    write_tidy(bars, str(data_dir / "tidy" / "bars.parquet"))
    path = _write(tmp_path, _backtest_dict(tmp_path, data_dir))
    pipeline, backtest = wf_config.load(path)

    trainer_dir = tmp_path / "run" / "fold-2" / "pipeline_root" / "Trainer"
    proc = subprocess.Popen([sys.executable, "-m", "lems_cli.main", "backtest", "--config", path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 1800  # a guard against a hang only: fold 1 alone took 846 s on 2 loaded cores
    while not trainer_dir.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate()[0]
    assert trainer_dir.exists(), log
    assert "[backtest] 1/2 fold-1 [2024-01-07, 2024-01-09): done in" in log, log
    assert "[pipeline]" in log and "MarketDataExampleGen finished" in log  # one line per fold and component
    assert not (tmp_path / "run" / "fold-2" / runner.RESULT_FILE).exists()

    summaries = []

    def recording(config):
        summaries.append(local_runner.run(config))
        return summaries[-1]

    result = runner.run(pipeline, backtest, runner=recording)
    assert len(summaries) == 1 and summaries[0].nodes["Trainer"].state == "COMPLETE"
    states = summaries[0].states()
    assert states["MarketDataExampleGen"] == "CACHED" and states["Transform"] == "CACHED", states
    assert "fold-1 [2024-01-07, 2024-01-09): finished earlier" in capsys.readouterr().out

    # every training / validation window's execution bars lie before the fold, the fold's after its embargo
    embargo = pipeline.data.embargo_bars
    examples = summaries[0].nodes["MarketDataExampleGen"].outputs["examples"][0]
    from components.report.component import read_raw_examples
    fold_start = int(np.datetime64("2024-01-09T00:00:00", "s").astype(np.int64))
    val_start = fold_start - 86_400
    for split, lo, hi in (("train", None, val_start), ("eval", val_start, fold_start),
                          ("test", fold_start, fold_start + 2 * 86_400)):
        raw = read_raw_examples(os.path.join(examples, f"Split-{split}"))
        step = raw["frequency_minutes"].astype(np.int64) * 60
        timestamps = np.asarray(raw["timestamp"], np.int64)
        assert (timestamps[:, -1] + step <= hi).all(), split
        if lo is not None:
            assert (timestamps[:, W + L] >= lo + embargo * step).all(), split
            assert (timestamps[:, 0] < lo).any(), split  # lookback bars reach back into the split before
    # outputs
    paths = runner.output_paths(backtest)
    written = json.load(open(paths["json"]))
    assert [f["name"] for f in written["folds"]] == ["fold-1", "fold-2"]
    for fold in written["folds"]:
        assert fold["orders"] > 0 and fold["assets"] == ["BTCUSDT", "ETHUSDT"]
        assert set(fold["slices"]) == {"15 min", "30 min", "overall"}
        r = fold["slices"]["overall"]["match_vwap_std_ratio"]
        assert r["lo"] <= r["value"] <= r["hi"]
        assert fold["train_period"] == ["2024-01-01", fold["validation_period"][0]]
    assert written["pooled"]["orders"] == sum(f["orders"] for f in written["folds"])
    assert os.path.getsize(paths["png"]) > 1000 and "| pooled (2 folds) | overall |" in open(paths["md"]).read()
    assert result["folds"][1]["slices"]["overall"] == written["folds"][1]["slices"]["overall"]


@pytest.mark.slow
def test_backtest_compiles_one_kubeflow_spec_per_period(tmp_path):
    from kubeflow.runner import load_spec, summarize
    from walkforward import runner
    pipeline, backtest = wf_config.load(_write(tmp_path, _backtest_dict(tmp_path, tmp_path / "data")))
    pipeline = pipeline.replace(root="gs://bucket/bt", data={"source": "gs://bucket/bars"},
                                kubeflow={"image": "gcr.io/project/lems-tfx:0.1.0"})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = runner.compile_kubeflow(pipeline, backtest, ("folds", "test"), str(tmp_path / "specs"))
    assert [os.path.basename(p) for p in paths] == ["bt-fold-1.yaml", "bt-fold-2.yaml", "bt-test.yaml"]
    for p in paths:
        spec = load_spec(p)
        assert spec["defaultPipelineRoot"].startswith("gs://bucket/bt/")
        assert "Trainer" in summarize(spec)["tasks"]
    from kfp.components import load_component_from_file  # noqa: F401 - kfp's own loader of IR YAML
    import kfp.components as kc
    loaded = kc.load_component_from_file(paths[0])
    assert loaded.name
