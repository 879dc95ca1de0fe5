"""PipelineConfig: file round trips, strict keys, validation, and a pure create_pipeline."""
import json
import os

import pytest

from pipeline.configs import PipelineConfig, demo_config


def test_yaml_and_json_round_trip(tmp_path):
    config = demo_config(str(tmp_path / "demo")).replace(training={"epochs": 3}, evaluation={"interval_level": 0.9})
    for name in ("c.yaml", "c.json"):
        path = str(tmp_path / name)
        config.save(path)
        loaded = PipelineConfig.from_file(path)
        assert loaded == config
        assert loaded.training.epochs == 3 and loaded.evaluation.interval_level == 0.9
        assert loaded.sizes.n_ahead == 12 and loaded.data.stride_by_frequency == {90: 1}


def test_partial_file_keeps_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"sizes": {"n_ahead": 4}, "training": {"learning_rate": 0.01}}))
    config = PipelineConfig.from_file(str(path))
    assert config.sizes.n_ahead == 4 and config.sizes.lookback == 120
    assert config.training.learning_rate == 0.01 and config.training.batch_size == 256  # paper recipe defaults
    assert config.training.early_stopping_patience == 2 and config.training.reduce_lr_patience == 1
    assert config.training.min_rates == [None] and config.training.max_rates == [1.0]


@pytest.mark.parametrize("values, message", [
    ({"trainer": {}}, "unknown key(s) ['trainer'] in config"),
    ({"training": {"epoch": 1}}, "unknown key(s) ['epoch'] in config.training"),
    ({"sizes": 3}, "config.sizes must be a mapping"),
])
def test_unknown_or_malformed_keys_are_errors(tmp_path, values, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError) as err:
        PipelineConfig.from_file(str(path))
    assert message in str(err.value) and "bad.json" in str(err.value)


@pytest.mark.parametrize("field, value", [("interval_level", 0.0), ("interval_level", 1.0), ("interval_level", 1.5),
                                          ("max_std_ratio_margin", -0.1)])
def test_validate_names_a_bad_gate_setting(field, value):
    with pytest.raises(ValueError) as err:  # when the value is read (a file, --set, replace) or at validate()
        PipelineConfig().replace(evaluation={field: value}).validate()
    message = str(err.value)
    assert f"evaluation.{field}" in message and "\n" not in message, message
    assert PipelineConfig().replace(evaluation={"interval_level": 0.9, "max_std_ratio_margin": 0.0}).validate()


def test_gate_defaults_are_defined_once():
    from components.evaluator import gate
    from components.evaluator.config import EvaluationConfig
    assert (EvaluationConfig().interval_level, EvaluationConfig().max_std_ratio_margin) == (0.95, 0.10)
    assert (gate.DEFAULT_LEVEL, gate.DEFAULT_MARGIN) == (0.95, 0.10)
    assert not hasattr(EvaluationConfig(), "max_match_std_ratio")


def test_validate_rejects_infeasible_constraints():
    config = PipelineConfig().replace(sizes={"n_ahead": 4}, training={"min_rates": [0.5], "max_rates": [1.0]})
    with pytest.raises(ValueError, match="infeasible"):
        config.validate()
    with pytest.raises(ValueError, match="split dates must increase"):
        PipelineConfig().replace(data={"eval_start": "2021-01-01", "test_start": "2020-01-01"}).validate()


def test_every_data_field_reaches_the_example_gen_config():
    """`data` and the ExampleGen's IngestionConfig share one set of field names; each value flows through."""
    import dataclasses

    from components.example_gen.config import IngestionConfig
    from pipeline.configs import INGESTION_DATA_FIELDS, DataConfig

    ingestion_fields = {f.name for f in dataclasses.fields(IngestionConfig)}
    sizes = {"norm_window", "lookback", "n_ahead"}
    assert set(INGESTION_DATA_FIELDS) <= ingestion_fields
    assert ingestion_fields - set(INGESTION_DATA_FIELDS) == sizes | {"chunk_rows"}  # chunk_rows: a memory knob
    # one definition of each default: the pipeline's data section has the ExampleGen's (lists for tuples)
    data, ingestion = DataConfig(), IngestionConfig()
    for name in INGESTION_DATA_FIELDS:
        value = getattr(ingestion, name)
        assert getattr(data, name) == (list(value) if isinstance(value, tuple) else value), name
    changed = {"frequencies": [60, 1440], "stride": 3, "stride_by_frequency": {"1440": 1},
               "start": "2019-01-01", "eval_start": "2020-06-01", "test_start": "2021-01-01", "end": "2022-01-01",
               "embargo_bars": 5, "missing_bar_rule": "skip", "missing_bar_rule_by_frequency": {"60": "zero_fill"},
               "max_gap_bars": 3, "bad_rows": "drop", "quote_volume": "volume_x_adj_close", "min_examples_per_split": 7, "input_patterns": ["binance"],
               "source_bar_minutes": 15, "source_bar_minutes_by_asset": {"AAPL": 1440}, "outliers": "drop",
               "outlier_window": 48, "outlier_volume_z": 9.5, "outlier_return_z": 150, "screen_volume_z": 7,
               "screen_vwap_z": 0, "missing_quote_volume": "drop", "timezone": "America/New_York"}
    assert set(changed) == set(INGESTION_DATA_FIELDS)
    config = PipelineConfig().replace(data=changed, sizes={"n_ahead": 6, "lookback": 20, "norm_window": 40})
    got = config.validate().ingestion_config()
    assert got == IngestionConfig(
        frequencies=(60, 1440), norm_window=40, lookback=20, n_ahead=6, stride=3, stride_by_frequency={1440: 1},
        start="2019-01-01", eval_start="2020-06-01", test_start="2021-01-01", end="2022-01-01", embargo_bars=5,
        missing_bar_rule="skip", missing_bar_rule_by_frequency={60: "zero_fill"}, max_gap_bars=3, bad_rows="drop", quote_volume="volume_x_adj_close",
        min_examples_per_split=7, input_patterns=("binance",), source_bar_minutes=15,
        source_bar_minutes_by_asset={"AAPL": 1440}, outliers="drop", outlier_window=48, outlier_volume_z=9.5,
        outlier_return_z=150.0, screen_volume_z=7.0, screen_vwap_z=0.0, missing_quote_volume="drop",
        timezone="America/New_York")


def test_overrides_set_fields_as_a_file_would():
    base = demo_config("./runs/d")
    config = base.with_overrides(["model.input_clip=5", "training.epochs=3", "root=./runs/v6",
                                  "data.frequencies=[15, 90]", "pipeline_name=v6", "training.learning_rate=1e-4"])
    assert config == base.replace(model={"input_clip": 5.0}, training={"epochs": 3, "learning_rate": 1e-4},
                                  root="./runs/v6", data={"frequencies": [15, 90]}, pipeline_name="v6")
    assert config.model.input_clip == 5.0 and config.model.hidden_size == base.model.hidden_size
    assert base.with_overrides([]) == base and base.model.input_clip != 5.0   # a copy; the original unchanged
    assert base.with_overrides(["model.input_clip=5", "model.input_clip=7"]).model.input_clip == 7.0   # in order


@pytest.mark.parametrize("override, message", [
    ("model.input_clp=5", "unknown key(s) ['input_clp'] in config.model"),
    ("modle.input_clip=5", "'modle' is not a section"),
    ("model=5", "'model' is a section"),
    ("model.input_clip", "expected SECTION.FIELD=VALUE"),
    ("model.recurrent.x=1", "expected SECTION.FIELD=VALUE"),
    ("training.epochs=many", "config.training.epochs"),
])
def test_bad_overrides_are_errors_naming_them(override, message):
    with pytest.raises(ValueError) as err:
        demo_config().with_overrides([override])
    assert message in str(err.value)


def test_resolved_makes_local_paths_absolute_only():
    config = PipelineConfig(root="runs/x").replace(serving={"serving_dir": "gs://bucket/serving"}).resolved()
    assert os.path.isabs(config.root) and os.path.isabs(config.data.source)
    assert config.serving.serving_dir == "gs://bucket/serving"
    assert config.push_base_directory == "gs://bucket/serving/lem"


def test_create_pipeline_is_pure_and_wires_config(tmp_path):
    from pipeline.pipeline import create_pipeline
    root = tmp_path / "nothing-here"
    config = demo_config(str(root)).replace(beam_pipeline_args=["--direct_num_workers=2"],
                                            evaluation={"interval_level": 0.75,
                                                                        "max_std_ratio_margin": 0.25})
    pipeline = create_pipeline(config)
    assert not root.exists()  # defining the pipeline writes nothing
    ids = [c.id for c in pipeline.components]
    for node in ("MarketDataExampleGen", "StatisticsGen", "CuratedSchemaGen", "ExampleValidator", "AnomaliesGate",
                 "Transform", "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher", "ExecutionReport"):
        assert node in ids
    assert pipeline.beam_pipeline_args == ["--direct_num_workers=2"]
    by_id = {c.id: c for c in pipeline.components}
    trainer_cfg = json.loads(by_id["Trainer"].exec_properties["custom_config"])
    assert trainer_cfg["sizes"] == {"n_ahead": 12, "lookback": 32, "norm_window": 96}
    assert trainer_cfg["training"]["batch_size"] == config.training.batch_size
    eval_cfg = by_id["Evaluator"].exec_properties["eval_config"]
    assert "LemSlippage" in eval_cfg and "gate/failures" in eval_cfg
    parsed = json.loads(eval_cfg)
    spec = (parsed.get("metrics_specs") or parsed["metricsSpecs"])[0]
    metric = json.loads(spec["metrics"][0]["config"])
    assert (metric["level"], metric["margin"]) == (0.75, 0.25)
    push = by_id["Pusher"].exec_properties["push_destination"]
    assert os.path.join(str(root), "serving", "lem") in push


@pytest.mark.parametrize("text, field, detail", [
    ("model: {recurrent: transformer}", "config.model.recurrent", "choose one of tkan, lstm, gru"),
    ("data: {frequencies: '15'}", "config.data.frequencies", "expected a list, got '15'"),
    ("data: {frequencies: ['15', 90]}", "config.data.frequencies[0]", "expected an integer, got '15' (str)"),
    ("data: {frequencies: [0]}", "config.data.frequencies[0]", "must be >= 1"),
    ("model: {tilt_bound: -0.5}", "config.model.tilt_bound", "must be >= 0"),
    ("data: {missing_bar_rule_by_frequency: {60: fill}}", "config.data.missing_bar_rule_by_frequency[60]",
     "choose one of zero_fill, skip"),
    ("data: {bad_rows: ignore}", "config.data.bad_rows", "choose one of error, drop"),
    ("training: {epochs: 2.5}", "config.training.epochs", "expected an integer"),
    ("training: {use_gpu: 'yes'}", "config.training.use_gpu", "expected true/false"),
    ("training: {learning_rate: fast}", "config.training.learning_rate", "expected a number"),
    ("training: {jit_compile: 1}", "config.training.jit_compile", "choose one of auto, true, false"),
    ("training: {min_rates: [x], max_rates: [1]}", "config.training.min_rates[0]", "expected a number or null"),
    ("evaluation: {split: valid}", "config.evaluation.split", "choose one of train, eval, test"),
    ("kubeflow: {beam_pipeline_args: [--runner=DataflowRunner, 3]}", "config.kubeflow.beam_pipeline_args[1]",
     "expected a string"),
    ("training: {epoch: 3}", "unknown key(s) ['epoch'] in config.training", "did you mean config.training.epochs"),
])
def test_types_and_choices_are_checked_when_the_file_is_read(tmp_path, text, field, detail):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError) as err:
        PipelineConfig.from_file(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: ") and field in message and detail in message, message


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training: {learning_rate: 1e-5, min_learning_rate: 5E-7, shuffle_buffer: 1e4, "
                    "min_rates: [null, 1e-3], max_rates: [1, 5e-1]}\n"
                    "data: {stride_by_frequency: {'90': 2}, frequencies: [15, 90.0]}\n")
    config = PipelineConfig.from_file(str(path)).validate()
    t = config.training
    assert (t.learning_rate, t.min_learning_rate, t.shuffle_buffer) == (1e-5, 5e-7, 10_000)
    assert type(t.learning_rate) is float and type(t.shuffle_buffer) is int
    assert t.min_rates == [None, 1e-3] and t.max_rates == [1.0, 0.5] and type(t.max_rates[0]) is float
    assert config.data.stride_by_frequency == {90: 2} and config.data.frequencies == [15, 90]
    assert all(type(f) is int for f in config.data.frequencies)
    with pytest.raises(ValueError, match=r"config.training.shuffle_buffer: expected an integer, got '1.50005e4'"):
        PipelineConfig.from_dict({"training": {"shuffle_buffer": "1.50005e4"}})


@pytest.mark.parametrize("data, message", [
    ({"frequencies": [15, 15]}, r"frequencies lists \[15\] more than once"),
    ({"embargo_bars": -12}, "embargo_bars must be >= 0"),
    ({"frequencies": [15], "stride_by_frequency": {9: 1}}, r"stride_by_frequency has key\(s\) \[9\]"),
    ({"frequencies": [15, 90], "stride_by_frequency": {90: 0}}, "stride"),
])
def test_semantic_data_errors_name_the_field(data, message):
    from pipeline.configs import PipelineConfig
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_dict({"data": data}).validate()


@pytest.mark.parametrize("model, message", [({"num_heads": 0}, "model.num_heads must be >= 1"),
                                            ({"dropout": 1.5}, r"model.dropout must be in \[0, 1\)"),
                                            ({"dropout": -0.1}, r"model.dropout must be in \[0, 1\)")])
def test_semantic_model_errors_name_the_field(model, message):
    from pipeline.configs import PipelineConfig
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_dict({"model": model}).validate()


def test_fixed_horizon_pnl_without_its_risk_term_is_refused_and_the_demo_trains_that_head_as_a_tracker():
    cfg = demo_config("/tmp/demo")
    assert cfg.training.fixed_horizon_risk is True and cfg.training.fixed_horizon_pnl is False
    cfg.validate()
    cfg.training.fixed_horizon_risk = False
    with pytest.raises(ValueError, match="fixed_horizon_pnl"):
        cfg.validate()
