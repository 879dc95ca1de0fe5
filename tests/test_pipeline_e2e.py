"""The whole pipeline under LocalDagRunner on tiny generated data (N=4, L=8, W=16, hidden 8, 1 epoch; the
exported model's small-batch XLA path bounded at batch 1, so the Trainer's export, the ServingCheck's warm-up
replay and the Evaluator compile it for one batch size instead of four).

Three runs on one pipeline root and ML Metadata store:
  1. no slice gated (`min_slice_orders` above the test split's orders: only non-finite values could fail):
     blessed and pushed to `<serving>/<model>/<version>/`;
  2. the same config again: everything up to the Trainer comes from the cache; the Evaluator now compares
     the candidate with the latest blessed model (champion/challenger) and blesses it again;
  3. every slice gated (`min_slice_orders=1`): the one-epoch model (its schedules a hair off TWAP, the std
     ratio of its match-VWAP head 1.01-1.05 with intervals of +-0.03 on this machine) is not significantly
     better than TWAP (volume) overall: not blessed, nothing new pushed.
"""
import glob
import json
import os

import numpy as np
import pytest

from lem_model_testutils import XLA_ALLOC_TOL

pytestmark = pytest.mark.slow

W, L, N = 16, 8, 4
UPSTREAM = ("MarketDataExampleGen", "StatisticsGen", "CuratedSchemaGen", "ExampleValidator", "AnomaliesGate",
            "Transform", "Trainer")


def _versions(config):
    base = config.resolved().push_base_directory
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from components.market_data.synthetic import generate_bars, write_tidy
    from pipeline import local_runner
    from pipeline.configs import (DataConfig, EvaluationConfig, ModelConfig, PipelineConfig, ReportConfig,
                                  ServingConfig, SizesConfig, TrainingConfig)

    root = tmp_path_factory.mktemp("lems_e2e")
    bars = generate_bars(["BTCUSDT", "ETHUSDT"], start="2024-01-01", periods=12 * 96, freq_minutes=15, seed=3)
    write_tidy(bars, str(root / "data" / "tidy" / "bars.parquet"))
    config = PipelineConfig(
        pipeline_name="lems-e2e", root=str(root / "run"),
        data=DataConfig(source=str(root / "data"), frequencies=[15], stride=2, eval_start="2024-01-08",
                        test_start="2024-01-10"),
        sizes=SizesConfig(n_ahead=N, lookback=L, norm_window=W),
        model=ModelConfig(hidden_size=8, num_embedding=4, num_heads=2, fused_mlp_hidden_dim=8, recurrent="lstm",
                          xla_max_batch=1),
        training=TrainingConfig(learning_rate=1e-3, batch_size=64, epochs=1, verbose=0, jit_compile=False),
        evaluation=EvaluationConfig(min_slice_orders=10**6),
        serving=ServingConfig(serving_dir=str(root / "serving")),
        report=ReportConfig(max_curves=50))
    out = {"config": config}
    out["first"] = local_runner.run(config)
    out["versions_first"] = _versions(config)
    out["again"] = local_runner.run(config)
    out["versions_again"] = _versions(config)
    out["strict_config"] = config.replace(evaluation={"min_slice_orders": 1})
    out["strict"] = local_runner.run(out["strict_config"])
    out["versions_strict"] = _versions(config)
    return out


@pytest.fixture(scope="module")
def pushed(runs):
    """The first run's pushed SavedModel, loaded once for the tests that call its signatures."""
    import tensorflow as tf
    return tf.saved_model.load(runs["first"].pushed_model_dir)


def test_first_run_records_every_artifact_in_ml_metadata(runs):
    first = runs["first"]
    assert set(first.states().values()) == {"COMPLETE"}, first.states()
    from components.report.component import ExecutionReport
    from pipeline import local_runner
    store = local_runner.metadata_store(runs["config"])
    for type_name in ("Examples", "ExampleStatistics", "Schema", "ExampleAnomalies", "TransformGraph", "Model",
                      "ModelRun", "ModelEvaluation", "ModelBlessing", "PushedModel", ExecutionReport.TYPE_NAME):
        artifacts = store.get_artifacts_by_type(type_name)
        assert artifacts, f"no {type_name} artifact recorded"
        assert all(os.path.exists(a.uri) for a in artifacts), type_name
    examples = first.nodes["MarketDataExampleGen"].outputs["examples"][0]
    for split in ("train", "eval", "test"):
        assert glob.glob(os.path.join(examples, f"Split-{split}", "*")), split
    model_run = first.nodes["Trainer"].outputs["model_run"][0]
    assert glob.glob(os.path.join(model_run, "**", "events.out.tfevents.*"), recursive=True)  # TensorBoard logs
    assert json.load(open(os.path.join(model_run, "history.json")))["history"]["loss"]


def test_blessed_run_is_pushed_in_tf_serving_layout(runs):
    first = runs["first"]
    assert first.blessed is True
    assert len(runs["versions_first"]) == 1 and runs["versions_first"][0].isdigit()
    pushed = first.pushed_model_dir
    assert pushed == os.path.join(runs["config"].resolved().push_base_directory, runs["versions_first"][0])
    assert os.path.exists(os.path.join(pushed, "saved_model.pb"))
    # pushed warm, after the TF-Serving-faithful check (session loader, warm-up replay, session vs Python)
    from components.trainer.warmup import WARMUP_FILE
    assert os.path.isfile(os.path.join(pushed, WARMUP_FILE))
    check = json.load(open(os.path.join(first.nodes["ServingCheck"].outputs["blessing"][0], "serving_check.json")))
    assert check["passed"] and check["details"]["comparisons"] >= 5 and check["details"]["warmup_requests"] > 0


def test_pushed_model_serves_valid_allocations_through_both_signatures(runs, pushed):
    import tensorflow as tf

    from components.report.component import read_raw_examples
    first = runs["first"]
    examples = first.nodes["MarketDataExampleGen"].outputs["examples"][0]
    raw = read_raw_examples(os.path.join(examples, "Split-test"))
    b = min(32, len(raw["serialized"]))
    loaded = pushed
    assert set(loaded.signatures) >= {"serving_default", "serve_tf_examples"}
    by_bars = loaded.signatures["serving_default"](
        volume=tf.constant(raw["volume"][:b]), quote_volume=tf.constant(raw["quote_volume"][:b]),
        timestamp=tf.constant(raw["timestamp"][:b]), frequency_minutes=tf.constant(raw["frequency_minutes"][:b]),
        min_rate=tf.fill([b], 1.0 / N ** 2), max_rate=tf.ones([b]))["allocations"].numpy()
    by_examples = loaded.signatures["serve_tf_examples"](
        examples=tf.constant(list(raw["serialized"][:b])))["allocations"].numpy()
    for alloc in (by_bars, by_examples):
        assert alloc.shape == (b, N, N + 1, 4, 2) and alloc.dtype == np.float32
        assert np.isfinite(alloc).all() and (alloc >= 0).all()
        np.testing.assert_allclose(alloc.sum(axis=1), 1.0, atol=1e-4)
    # serve_tf_examples defaults to the training constraints (min_rate 1/N^2, max_rate 1)
    np.testing.assert_allclose(by_bars, by_examples, **XLA_ALLOC_TOL)  # two signatures' graphs: float32
    # the order parameters reach the model: a tighter max rate changes the schedule
    tight = loaded.signatures["serving_default"](
        volume=tf.constant(raw["volume"][:b]), quote_volume=tf.constant(raw["quote_volume"][:b]),
        timestamp=tf.constant(raw["timestamp"][:b]), frequency_minutes=tf.constant(raw["frequency_minutes"][:b]),
        min_rate=tf.fill([b], 0.2), max_rate=tf.fill([b], 0.3))["allocations"].numpy()
    assert np.abs(tight - by_bars).max() > 1e-3
    meta = json.load(open(os.path.join(first.pushed_model_dir, "assets.extra", "lem_model.json")))
    assert (meta["n_ahead"], meta["lookback"], meta["norm_window"]) == (N, L, W)


def test_rerun_is_served_from_cache_and_compared_with_the_champion(runs):
    again = runs["again"]
    states = again.states()
    for node in UPSTREAM:
        assert states[node] == "CACHED", states
    assert again.nodes["Trainer"].outputs["model"] == runs["first"].nodes["Trainer"].outputs["model"]
    # the Evaluator ran again because its baseline input changed: the first run's model is now the champion
    from pipeline import local_runner
    store = local_runner.metadata_store(runs["config"])

    def blessing_properties(run):
        [artifact] = store.get_artifacts_by_uri(run.nodes["Evaluator"].outputs["blessing"][0])
        return {k: v.int_value or v.string_value for k, v in artifact.custom_properties.items()}
    first_model = blessing_properties(runs["first"])["current_model_id"]
    assert "baseline_model_id" not in blessing_properties(runs["first"])  # no champion yet
    assert blessing_properties(again)["baseline_model_id"] == first_model
    assert again.nodes["Evaluator"].state == "COMPLETE"
    assert again.blessed is True
    assert len(runs["versions_again"]) == 2


def test_blessing_follows_the_thresholds_and_blocks_the_push(runs):
    strict = runs["strict"]
    assert strict.blessed is False
    assert strict.pushed_model_dir is None
    assert runs["versions_strict"] == runs["versions_again"]  # nothing new in the serving directory
    states = strict.states()
    assert states["Evaluator"] == "COMPLETE" and all(states[n] == "CACHED" for n in UPSTREAM)
    import tensorflow_model_analysis as tfma
    validation = tfma.load_validation_result(strict.nodes["Evaluator"].outputs["evaluation"][0])
    failed = {f.metric_key.name for s in validation.metric_validations_per_slice for f in s.failures}
    assert "gate/overall_match_std_ratio_hi" in failed and failed <= {"gate/overall_match_std_ratio_hi",
                                                                    "gate/failures"}, failed
    # every slice is gated (min_slice_orders=1): overall, each asset, the frequency and asset x frequency
    from components.evaluator.eval_config import gate_rows, gate_summary_lines, slice_name, validation_lines
    evaluation = strict.nodes["Evaluator"].outputs["evaluation"][0]
    lines = validation_lines(evaluation)
    assert lines[0] == "validation_ok = False"
    assert any(line.startswith("FAILED [overall] overall_match_std_ratio_hi = ") and "required < 1" in line
               for line in lines[1:]), lines
    gates, _ = gate_rows(evaluation)
    assert {g["slice"] for g in gates} == {"overall", "asset=BTCUSDT", "asset=ETHUSDT", "frequency_minutes=15",
                                           "asset=BTCUSDT, frequency_minutes=15",
                                           "asset=ETHUSDT, frequency_minutes=15"}
    assert all(g["gated"] and len(g["checks"]) == 7 for g in gates)
    overall = [g for g in gates if g["slice"] == "overall"][0]
    assert not overall["better"] and "not significantly better than TWAP (volume)" in overall["result"]
    # the TFMA verdict per slice is the gate's: a slice fails "failures" exactly when one of its checks failed
    per_slice = {slice_name(s.slice_key): {f.metric_key.name for f in s.failures}
                 for s in validation.metric_validations_per_slice}
    for g in gates:
        assert ("gate/failures" in per_slice.get(g["slice"], set())) == any(c["verdict"] == "FAIL"
                                                                           for c in g["checks"]), g
    printed = gate_summary_lines(evaluation)
    assert sum(" match " in line and "std ratio vs TWAP" in line for line in printed) == len(gates)  # per head
    assert any(line.strip().startswith("overall significantly better") and line.endswith("NO") for line in printed)


def test_report_has_tables_and_figures(runs):
    for name in ("first", "strict"):
        report = runs[name].report_dir
        html = open(os.path.join(report, "index.html"), encoding="utf-8").read()
        assert "Table 1" in html and "Table 5" in html and "<img" in html
        assert ("NOT BLESSED" in html) == (name == "strict")
        summary = json.load(open(os.path.join(report, "summary.json")))
        assert summary["orders"] > 0
        # TWAP (notional), TWAP (volume), VWAP curve (volume) + BUY/SELL x (N heads + match), with intervals
        assert len(summary["tables"]["table1"]) == 3 + 2 * (N + 1)
        assert summary["tables"]["table1"][2]["order_type"] == "VWAP curve (volume)"
        assert all(np.isfinite(r["mean_lo"]) for r in summary["tables"]["table1"])
        for section in ("gates", "champion", "comparison", "per-asset", "per-frequency", "training"):
            assert f"id='{section}'" in html, section
        assert "training.png" in summary["figures"]
        assert {g["slice"] for g in summary["gates"]} >= {"overall", "asset=BTCUSDT", "frequency_minutes=15"}
        assert all(not g["result"].startswith("FAILED") for g in summary["gates"]) == (name != "strict")
        assert all(g["gated"] == (name == "strict") for g in summary["gates"])
        for fig in summary["figures"]:
            assert os.path.getsize(os.path.join(report, "figures", fig)) > 5000
    assert open(os.path.join(runs["first"].report_dir, "tables.txt")).read().startswith("Table 1")
    # the second run had a champion (the first run's model): the report compares them per slice
    assert not json.load(open(os.path.join(runs["first"].report_dir, "summary.json")))["champion"]
    champion = json.load(open(os.path.join(runs["again"].report_dir, "summary.json")))["champion"]
    assert {c["slice"] for c in champion} >= {"overall"} and all(np.isfinite(c["champion"]) for c in champion)
    # the champion is the same model: paired on the same orders, its std ratio is exactly 1 ([1, 1])
    assert all(c["ratio"] == pytest.approx(1.0) and c["lo"] == pytest.approx(1.0) and c["verdict"] == "pass"
               for c in champion)


def test_exported_signature_is_causal(runs, pushed):
    """Contract: the allocation of step k depends only on bars < o+k, through the embedded transform graph."""
    import tensorflow as tf

    from components.report.component import read_raw_examples
    first = runs["first"]
    raw = read_raw_examples(os.path.join(first.nodes["MarketDataExampleGen"].outputs["examples"][0], "Split-test"))
    b = min(16, len(raw["serialized"]))
    serve = pushed.signatures["serving_default"]

    def allocations(volume, quote_volume):
        return serve(volume=tf.constant(volume), quote_volume=tf.constant(quote_volume),
                     timestamp=tf.constant(raw["timestamp"][:b]),
                     frequency_minutes=tf.constant(raw["frequency_minutes"][:b]),
                     min_rate=tf.fill([b], 1.0 / N ** 2), max_rate=tf.ones([b]))["allocations"].numpy()

    base = allocations(raw["volume"][:b], raw["quote_volume"][:b])
    rng = np.random.default_rng(0)
    o = W + L
    for k in range(N):
        volume, quote = raw["volume"][:b].copy(), raw["quote_volume"][:b].copy()
        volume[:, o + k:] = rng.lognormal(3, 2, volume[:, o + k:].shape)   # any placeholder for unrealized bars
        quote[:, o + k:] = rng.lognormal(8, 2, quote[:, o + k:].shape)
        out = allocations(volume, quote)
        np.testing.assert_allclose(out[:, :k + 1], base[:, :k + 1], atol=1e-6, err_msg=f"step <= {k}")
        if k < N - 2:  # steps k+1..N-2 do see bar o+k (the last step is the remainder of the others)
            assert np.abs(out[:, k + 1:N - 1] - base[:, k + 1:N - 1]).max() > 1e-6
