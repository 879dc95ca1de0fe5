"""benchmarks/reproduce_gpu.py: its windows are the ExampleGen's own, its volume curve sees only training bars, and
its three stages (prepare on generated bars, train under the JAX backend in a subprocess, report with the
report's tables) run end to end, so the script cannot rot."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import reproduce_gpu  # noqa: E402

SCRIPT = os.path.join(ROOT, "benchmarks", "reproduce_gpu.py")


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("gpu-quick"))
    out = os.path.join(work, "data.npz")
    subprocess.run([sys.executable, SCRIPT, "prepare", "--quick", work, "--out", out], check=True, cwd=ROOT,
                   capture_output=True)
    return work, out


def test_windows_are_the_example_gens_cut(quick_data):
    from components.example_gen import ingest
    from components.example_gen.config import SPLIT_NAMES
    from components.market_data import readers
    from pipeline.configs import PipelineConfig
    work, path = quick_data
    meta, arrays = reproduce_gpu.load_data(path)
    config = PipelineConfig.from_file(os.path.join(work, "crypto-quick.yaml"))
    ing = config.ingestion_config()
    o = ing.norm_window + ing.lookback
    files = readers.list_input_files(config.data.source, ing.input_patterns)
    expected = {s: [] for s in SPLIT_NAMES}
    for asset in ("BTCUSDT", "ETHUSDT", "XRPUSDT"):
        chunks = ingest.read_asset(asset, files, ing, {})
        for split, ex in ingest.asset_examples(asset, chunks, ing, {}):
            expected[SPLIT_NAMES[split]].append(ex)
    for split in SPLIT_NAMES:
        got = reproduce_gpu.gather(meta, arrays, split)
        assert len(got["asset"]) == len(expected[split]) > 0
        key = lambda a, f, t: (a.decode() if isinstance(a, bytes) else str(a), int(f), int(t))  # noqa: E731
        want = {key(e["asset"], e["frequency_minutes"], e["timestamp"][o]): e for e in expected[split]}
        for i in range(len(got["asset"])):
            e = want[key(got["asset"][i], got["frequency_minutes"][i], got["timestamp"][i, o])]
            np.testing.assert_array_equal(got["timestamp"][i], e["timestamp"])
            np.testing.assert_array_equal(got["volume"][i], np.asarray(e["volume"], np.float32))
            np.testing.assert_array_equal(got["quote_volume"][i], np.asarray(e["quote_volume"], np.float32))


def test_volume_curve_uses_training_bars_only(quick_data):
    _, path = quick_data
    meta, arrays = reproduce_gpu.load_data(path)
    test = reproduce_gpu.gather(meta, arrays, "test")
    before = reproduce_gpu.vwap_curve_schedules(meta, arrays, test)
    # raise every bar that no training window covers: the schedules must not move
    t = sum(meta["sizes"].values())
    changed = dict(arrays)
    for k in range(len(meta["series"])):
        covered = np.zeros(len(arrays[f"series{k}_volume"]), bool)
        for j in arrays["train_start"][arrays["train_series"] == k]:
            covered[j:j + t] = True
        v = arrays[f"series{k}_volume"].copy()
        v[~covered] *= 50.0
        changed[f"series{k}_volume"] = v
    np.testing.assert_array_equal(reproduce_gpu.vwap_curve_schedules(meta, changed, test), before)
    # and a training bar does move it (the check can fail)
    changed["series0_volume"] = arrays["series0_volume"].copy()
    changed["series0_volume"][arrays["train_start"][arrays["train_series"] == 0][0]] *= 1e4
    assert not np.array_equal(reproduce_gpu.vwap_curve_schedules(meta, changed, test), before)


def test_pad_rows_adds_weightless_rows():
    data = {"bars": np.arange(10.0).reshape(5, 2), "weight": np.ones(5, np.float32)}
    out = reproduce_gpu.pad_rows(data, 4)
    assert out["bars"].shape == (8, 2) and np.array_equal(out["bars"][5:], np.repeat(data["bars"][-1:], 3, 0))
    assert out["weight"].tolist() == [1.0] * 5 + [0.0] * 3
    assert reproduce_gpu.pad_rows(data, 5)["bars"].shape == (5, 2)


def test_three_stages_end_to_end(quick_data, tmp_path):
    _, path = quick_data
    run_dir = str(tmp_path / "run")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT}
    train = subprocess.run([sys.executable, SCRIPT, "train", "--data", path, "--out", run_dir, "--budget-s", "600",
                            "--steps-per-epoch", "3", "--set", "epochs=2", "--set", "batch_size=32",
                            "--set", "fixed_horizon_risk=true", "--set", "risk_term=squared"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    with open(os.path.join(run_dir, "train.json")) as f:
        run = json.load(f)
    assert run["backend"] == "jax" and run["epochs_run"] == 2 and run["optimizer_steps"] == 6
    assert run["stop_reason"] == "epochs" and run["training"]["batch_size"] == 32
    assert run["training"]["fixed_horizon_risk"] is True
    # the overrides reach the loss the model was compiled with (train.json reads it back from model.loss)
    assert run["loss"]["fixed_horizon_risk"] is True and run["loss"]["risk_term"] == "squared"
    output = str(tmp_path / "report.json")
    rep = subprocess.run([sys.executable, SCRIPT, "report", "--data", path, "--run", run_dir, "--output", output,
                          "--cpu-result", ""], cwd=ROOT, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    with open(output) as f:
        result = json.load(f)
    res = result["results"]
    meta, arrays = reproduce_gpu.load_data(path)
    assert res["orders"] == meta["windows"]["test"] == sum(res["orders_per_slice"][f"{f} min"] for f in (15, 90, 240))
    for f in (15, 90, 240):
        s = res["slices"][f"{f} min"]
        assert s["orders"] == res["orders_per_slice"][f"{f} min"]
        assert 0 < s["match_vwap_std_ratio"]["value"] < 10 and s["match_vwap_std_ratio"]["lo"] <= s["match_vwap_std_ratio"]["hi"]
        assert "ratio_without_top" in res["concentration"][f"{f} min"]
    names = [t["target"] for t in res["targets"]]
    assert "15 min: match-VWAP std / TWAP (volume) std" in names and "240 min: SELL std at min period N=4" in names
    assert result["targets"][0]["target"].startswith("crypto (GPU, paper size, fixed-horizon risk, seed 42) ")
    md_path = os.path.splitext(output)[0] + ".md"
    md = open(md_path).read()
    assert "ours vs paper Table 6" in md and "Trained on" in md
    # render: the same Markdown from the JSON alone
    os.remove(md_path)
    assert reproduce_gpu.main(["render", output]) == 0
    assert open(md_path).read() == md


def test_volume_curve_pools_the_segments_of_a_series():
    """A gap splits an (asset, frequency) series into segments: the profile comes from the bars of all of them."""
    from lem_model import baselines
    rng = np.random.default_rng(0)
    sizes = {"norm_window": 4, "lookback": 2, "n_ahead": 2}
    t, o, freq = 8, 6, 360                      # 6-hour bars: 4 per day
    arrays, series = {}, []
    for k, start_day in enumerate((0, 30)):    # two segments, 30 days apart
        ts = (start_day * 86400 + 21600 * np.arange(40)).astype(np.int64)
        vol = rng.uniform(1.0, 5.0, 40).astype(np.float32) * (1 + k * np.arange(40) % 4)
        arrays.update({f"series{k}_timestamp": ts, f"series{k}_volume": vol, f"series{k}_quote_volume": vol})
        series.append({"asset": "A", "frequency": freq, "bars": 40})
    arrays["train_series"] = np.array([0, 0, 1], np.int32)
    arrays["train_start"] = np.array([0, 32, 0], np.int32)   # covers bars 0..7 and 32..39 of segment 0, 0..7 of 1
    meta = {"sizes": sizes, "series": series}
    test = {"asset": np.array(["A"]), "frequency_minutes": np.array([freq]),
            "timestamp": np.tile(np.arange(t, dtype=np.int64) * 21600, (1, 1))}
    got = reproduce_gpu.vwap_curve_schedules(meta, arrays, test)
    cov = (np.r_[0:8, 32:40], np.r_[0:8])
    ts = np.concatenate([arrays["series0_timestamp"][cov[0]], arrays["series1_timestamp"][cov[1]]])
    vol = np.concatenate([arrays["series0_volume"][cov[0]], arrays["series1_volume"][cov[1]]])
    profile = baselines.volume_curve_profile(ts, vol, freq)
    want = baselines.volume_curve_schedule(profile, baselines.time_of_bar(test["timestamp"][:, o], freq), 2)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    one_segment = baselines.volume_curve_profile(arrays["series1_timestamp"][cov[1]], arrays["series1_volume"][cov[1]], freq)
    assert not np.allclose(got, baselines.volume_curve_schedule(one_segment, baselines.time_of_bar(test["timestamp"][:, o], freq), 2))


def test_paired_with_run_aligns_orders_by_asset_frequency_and_start(quick_data, monkeypatch):
    import reproduce_tails
    from lem_model import bootstrap, layout
    _, path = quick_data
    meta, arrays = reproduce_gpu.load_data(path)
    orders = reproduce_gpu.gather(meta, arrays, "test")
    n, o = meta["sizes"]["n_ahead"], meta["sizes"]["norm_window"] + meta["sizes"]["lookback"]
    k = len(orders["asset"])
    rng = np.random.default_rng(1)
    bps = rng.normal(size=(k, n + 1, 4, 2))
    t = layout.target_index("volume")
    perm = rng.permutation(k)  # the other run lists the same orders in another order, with twice our slippage
    other = {"asset": orders["asset"][perm], "frequency": orders["frequency_minutes"][perm],
             "start": orders["timestamp"][perm, o], "model_dir": np.asarray("m"),
             **{f"lem_{side}": 2 * bps[perm, n, layout.path_index(side, "vwap"), t] for side in layout.SIDES}}
    monkeypatch.setattr(reproduce_tails, "per_order", lambda root, split: other)
    blocks = bootstrap.day_blocks(orders["timestamp"][:, o])
    out = reproduce_gpu.paired_with_run(bps, orders, o, n, "root", "test", blocks)
    for name in ["overall", "15 min", "90 min", "240 min"]:
        for side in ("buy", "sell"):
            assert out[name][side]["std_ratio"] == pytest.approx(0.5)
    other["start"] = other["start"] + 60   # no order matches: refused
    with pytest.raises(ValueError, match="not found"):
        reproduce_gpu.paired_with_run(bps, orders, o, n, "root", "test", blocks)


def test_train_refuses_constraints_it_does_not_apply(quick_data, tmp_path):
    _, path = quick_data
    proc = subprocess.run([sys.executable, SCRIPT, "train", "--data", path, "--out", str(tmp_path / "r"),
                           "--set", "max_rates=[0.5]", "--set", "min_rates=[null]"],
                          cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT},
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "paper's constraint only" in proc.stderr


def test_overrides_read_json_values_and_plain_text():
    assert reproduce_gpu._overrides(["learning_rate=1e-4", "recurrent=tkan", "fixed_horizon_risk=true",
                                     "max_rates=[1.0]", "min_rates=[null]"]) == {
        "learning_rate": 1e-4, "recurrent": "tkan", "fixed_horizon_risk": True, "max_rates": [1.0],
        "min_rates": [None]}
    with pytest.raises(SystemExit):
        reproduce_gpu._overrides(["learning_rate"])


@pytest.mark.parametrize("experiment", ["crypto", "dow"])
def test_committed_paper_size_configs_read_the_same_data_as_the_cpu_configs(experiment):
    """The paper-size GPU config differs from the committed CPU config in strides, model and recipe only (so the
    GPU model is scored on the CPU run's test orders), and keeps its loss (chosen on eval: HISTORY, session 18)."""
    directory = os.path.join(ROOT, "benchmarks", "reproduce")
    paper = reproduce_gpu._load_config(os.path.join(directory, f"{experiment}-paper.yaml"))
    cpu = reproduce_gpu._load_config(os.path.join(directory, f"{experiment}.yaml"))
    reproduce_gpu.check_configs_agree(paper, cpu)
    assert paper.training.fixed_horizon_risk == cpu.training.fixed_horizon_risk
    assert paper.training.risk_term == cpu.training.risk_term
    assert paper.model.hidden_size == 200 and paper.training.learning_rate == 1e-5 and paper.training.batch_size == 256


def test_configs_that_read_other_data_are_refused():
    import dataclasses
    cfg = reproduce_gpu._load_config(os.path.join(ROOT, "benchmarks", "reproduce", "crypto.yaml"))
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_start="2023-02-01"))
    with pytest.raises(ValueError, match="data.test_start"):
        reproduce_gpu.check_configs_agree(cfg, other)
    other = dataclasses.replace(cfg, sizes=dataclasses.replace(cfg.sizes, n_ahead=6))
    with pytest.raises(ValueError, match="sizes"):
        reproduce_gpu.check_configs_agree(cfg, other)
