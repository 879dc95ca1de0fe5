"""`MarketDataExampleGen`: the market-data ExampleGen component, and `ingestion_components` for pipelines.

    from components.example_gen.component import MarketDataExampleGen, ingestion_components
    example_gen = MarketDataExampleGen(input_base=data_dir, config=IngestionConfig(...))
    # or the whole ingestion part: ExampleGen, StatisticsGen, ImportSchemaGen, ExampleValidator, gate
    parts = ingestion_components(input_base=data_dir, config=cfg, schema_dir=tmp)   # dict name -> component

It is TFX's `FileBasedExampleGen` (same spec, driver and artifact layout) with the custom executor
`components.example_gen.executor.Executor` and the `IngestionConfig` in `custom_config`. The three input
splits `train`, `eval`, `test` share one file pattern (`config.input_patterns`, default "*": everything under
`input_base`, recursively); the executor reads the files once and assigns splits by time.
"""
from __future__ import annotations

from typing import Optional

from tfx.components import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.example_gen import executor
from components.example_gen.config import SPLIT_NAMES, IngestionConfig


def MarketDataExampleGen(input_base: str, config: Optional[IngestionConfig] = None, **kwargs
                         ) -> FileBasedExampleGen:  # pylint: disable=invalid-name
    """ExampleGen over market-data files under `input_base` (Binance klines, Yahoo daily, tidy Parquet/CSV).

    Args:
      input_base: directory of the files (searched recursively).
      config: `IngestionConfig` (frequencies, W/L/N sizes, stride, split dates, embargo, missing-bar rule...).
      **kwargs: passed to `FileBasedExampleGen` (e.g. `range_config`).
    Output: `examples` with splits train/eval/test of serialized tf.Examples (docs/example-contract.md raw
    fields) and `ingestion_report.json` in the artifact folder.
    """
    config = config or IngestionConfig()
    pattern = config.input_patterns[0] if len(config.input_patterns) == 1 else "*"
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=name, pattern=pattern) for name in SPLIT_NAMES])
    return FileBasedExampleGen(
        input_base=input_base, input_config=input_config,
        custom_config=executor.pack_custom_config(config),
        custom_executor_spec=executor_spec.BeamExecutorSpec(executor.Executor), **kwargs)


def ingestion_components(input_base: str, config: IngestionConfig, schema_dir: str) -> dict:
    """The ingestion part of a pipeline, in order: `example_gen`, `statistics_gen`, `schema_gen`
    (ImportSchemaGen of `schema_for(config)`, written to `schema_dir`), `example_validator` and
    `anomalies_gate` (fails the run on anomalies). Downstream components (Transform, Trainer) should take
    `example_gen.outputs["examples"]` and `schema_gen.outputs["schema"]` and
    `.add_upstream_node(parts["anomalies_gate"])`."""
    from tfx.v1.components import ExampleValidator, ImportSchemaGen, StatisticsGen

    from components.example_gen.schema import write_schema
    from components.example_gen.validation import AnomaliesGate

    example_gen = MarketDataExampleGen(input_base=input_base, config=config)
    statistics_gen = StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = ImportSchemaGen(schema_file=write_schema(config, schema_dir))
    example_validator = ExampleValidator(statistics=statistics_gen.outputs["statistics"],
                                         schema=schema_gen.outputs["schema"])
    gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    return {"example_gen": example_gen, "statistics_gen": statistics_gen, "schema_gen": schema_gen,
            "example_validator": example_validator, "anomalies_gate": gate}
