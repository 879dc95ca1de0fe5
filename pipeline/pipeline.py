"""`create_pipeline(config) -> tfx.dsl.Pipeline`: the LEM pipeline, pure (taxi-template style).

    MarketDataExampleGen -> StatisticsGen -> CuratedSchemaGen -> ExampleValidator -> AnomaliesGate
                         -> Transform (preprocessing_fn: the ONE feature builder)
                         -> Trainer (run_fn: components.trainer.module)
    VwapCurveBaseline (volume-curve schedule of the evaluated splits, profile from the train split)
    latest blessed model (Resolver) -> Evaluator (TFMA, LemSlippage metric, per-slice thresholds) -> Pusher
                          Trainer's model -> ServingCheck (TF Serving's session loader, warm-up) -> Pusher
                                    -> ExecutionReport (HTML + PNG, test split)

Nothing here is local-only: paths, Beam arguments and the metadata connection come from the config or the
runner (`pipeline.local_runner` locally, KubeflowV2DagRunner later), and user code is referenced by Python
path (`components...`), so a container with this package installed runs it unchanged.
"""
from __future__ import annotations

import json
import os

from tfx import v1 as tfx

from pipeline.configs import PipelineConfig

TRAINER_RUN_FN = "components.trainer.module.run_fn"
PREPROCESSING_FN = "components.transform.preprocessing.preprocessing_fn"
TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"


def sizes_dict(config: PipelineConfig) -> dict:
    s = config.sizes
    return {"n_ahead": int(s.n_ahead), "lookback": int(s.lookback), "norm_window": int(s.norm_window)}


def trainer_custom_config(config: PipelineConfig) -> dict:
    """What the Trainer's run_fn receives (and what its cache key depends on)."""
    import dataclasses
    data = config.data
    frequencies = sorted(int(f) for f in data.frequencies)
    # the bar lengths the model is trained on, and those whose missing bars are skipped (session time): the
    # exported signatures refuse requests of other frequencies / with gaps (lem_model.request_rules)
    session = [f for f in frequencies
               if data.missing_bar_rule_by_frequency.get(f, data.missing_bar_rule) == "skip"]
    return {"sizes": sizes_dict(config), "model": dataclasses.asdict(config.model),
            "training": dataclasses.asdict(config.training), "frequencies": frequencies,
            "session_frequencies": session}


def eval_config(config: PipelineConfig):
    from components.evaluator.eval_config import build_eval_config
    return build_eval_config(config.evaluation, **sizes_dict(config))


def create_pipeline(config: PipelineConfig, metadata_connection_config=None) -> tfx.dsl.Pipeline:
    """The whole pipeline for `config` (validated). Pure: builds objects, runs nothing, writes nothing.

    metadata_connection_config: ML Metadata connection (the local runner passes SQLite; Kubeflow supplies its
    own and passes None)."""
    config.validate()
    components = []

    # Ingestion: MarketDataExampleGen -> StatisticsGen -> CuratedSchemaGen -> ExampleValidator -> AnomaliesGate
    from components.curated_schema.component import CuratedSchemaGen
    from components.example_gen.component import MarketDataExampleGen
    from components.example_gen.validation import AnomaliesGate
    ingestion = config.ingestion_config()
    example_gen = MarketDataExampleGen(input_base=config.data.source, config=ingestion).with_id("MarketDataExampleGen")
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = CuratedSchemaGen(ingestion_config_json=ingestion.to_json()).with_id("CuratedSchemaGen")
    example_validator = tfx.components.ExampleValidator(statistics=statistics_gen.outputs["statistics"],
                                                        schema=schema_gen.outputs["schema"])
    gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"]).with_id("AnomaliesGate")
    components += [example_gen, statistics_gen, schema_gen, example_validator, gate]

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN, custom_config=sizes_dict(config), disable_statistics=True,
        splits_config=tfx.proto.SplitsConfig(analyze=[TRAIN_SPLIT], transform=[TRAIN_SPLIT, EVAL_SPLIT]))
    transform.add_upstream_node(gate)  # no training on data with anomalies
    components.append(transform)

    trainer = tfx.components.Trainer(
        run_fn=TRAINER_RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[TRAIN_SPLIT]),
        eval_args=tfx.proto.EvalArgs(splits=[EVAL_SPLIT]),
        custom_config=trainer_custom_config(config))
    components.append(trainer)

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    components.append(model_resolver)

    # The evaluated splits, annotated with the volume-curve VWAP baseline schedule estimated on the train split.
    from components.evaluator.vwap_curve import VwapCurveBaseline
    eval_splits = [config.evaluation.split] + ([config.report.split] if config.report.enabled else [])
    vwap_curve = VwapCurveBaseline(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"], **sizes_dict(config),
        splits=",".join(dict.fromkeys(eval_splits)), train_split=TRAIN_SPLIT).with_id("VwapCurveBaseline")
    components.append(vwap_curve)

    evaluator = tfx.components.Evaluator(
        examples=vwap_curve.outputs["baseline_examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        schema=vwap_curve.outputs["baseline_schema"],
        eval_config=eval_config(config),
        example_splits=[config.evaluation.split])
    components.append(evaluator)

    # TF Serving's way (session loader, SignatureDef tensor names, warm-up replay) vs the Python path on a few
    # examples of the evaluated split; its InfraBlessing gates the Pusher like InfraValidator's would
    from components.serving_check.component import ServingCheck
    serving_check = ServingCheck(model=trainer.outputs["model"], examples=example_gen.outputs["examples"],
                                 split=config.evaluation.split).with_id("ServingCheck")
    components.append(serving_check)

    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_check.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.push_base_directory)))
    components.append(pusher)

    if config.report.enabled:
        from components.report.component import ExecutionReportComponent
        report = ExecutionReportComponent(
            examples=vwap_curve.outputs["baseline_examples"], model=trainer.outputs["model"],
            model_run=trainer.outputs["model_run"],
            blessing=evaluator.outputs["blessing"], evaluation=evaluator.outputs["evaluation"],
            split=config.report.split, title=config.pipeline_name, max_curves=config.report.max_curves,
        ).with_id("ExecutionReport")
        components.append(report)

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        beam_pipeline_args=list(config.beam_pipeline_args),
        metadata_connection_config=metadata_connection_config,
    )


def config_fingerprint(config: PipelineConfig) -> str:
    """Stable JSON of the config (for logs and run records)."""
    return json.dumps(config.to_dict(), sort_keys=True)
