"""Executor of the market-data ExampleGen: a `BaseExampleGenExecutor` that reads the input once and splits by time.

TFX's custom-ExampleGen pattern is a `beam.ptransform_fn` (here `ingest.MarketDataToExamples`) plus a tiny
executor. The base class calls `GetInputSourceToExamplePTransform` once per *input split pattern* and can only
split a single input by hashing (`output_config.split_config`, which we must never use for time series). So
this executor overrides `GenerateExamplesByBeam` instead: it reads the files once and partitions the examples
by time (`IngestionConfig` split dates and embargo). The base class still writes the splits, the artifact's
split names and payload/file formats. `Do` also writes `ingestion_report.json` (counts of rows read, drops
by reason, examples per split and frequency) next to the `Split-*` folders and fails the run when a split is
empty or outlier bars were flagged. A failed ingestion keeps its report: `"status": "failed"` and the error,
with everything the run had counted; since the TFX launcher deletes a failed execution's output folder, the
report is also written to `<pipeline root>/<component id>/ingestion_report.failed-<execution>.json` (the
error message names the path).

The `IngestionConfig` travels as JSON in `custom_config` (an `example_gen_pb2.CustomConfig` whose `Any`
holds a `google.protobuf.Struct` with the key `ingestion_config`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import apache_beam as beam
from google.protobuf import json_format, struct_pb2
from tfx import types
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.example_gen import ingest
from components.example_gen.config import SPLIT_NAMES, IngestionConfig
from components.market_data import readers

CONFIG_KEY = "ingestion_config"


def pack_custom_config(config: IngestionConfig) -> example_gen_pb2.CustomConfig:
    """`IngestionConfig` -> `CustomConfig` (Any(Struct{"ingestion_config": "<json>"}))."""
    s = struct_pb2.Struct()
    s.update({CONFIG_KEY: config.to_json()})
    cc = example_gen_pb2.CustomConfig()
    cc.custom_config.Pack(s)
    return cc


def unpack_custom_config(exec_properties: Dict[str, Any]) -> IngestionConfig:
    """Inverse of `pack_custom_config`, from the executor's `exec_properties`."""
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not raw:
        return IngestionConfig()
    cc = example_gen_pb2.CustomConfig()
    if isinstance(raw, str):
        json_format.Parse(raw, cc)
    else:
        cc.CopyFrom(raw)
    s = struct_pb2.Struct()
    if not cc.custom_config.Unpack(s):
        raise ValueError(f"custom_config must hold a google.protobuf.Struct with {CONFIG_KEY!r}")
    return IngestionConfig.from_json(s[CONFIG_KEY])


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def _unused_per_split(pipeline, exec_properties, split_pattern):  # pylint: disable=unused-argument
    raise NotImplementedError("MarketDataExampleGen reads all splits at once (GenerateExamplesByBeam)")


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Market-data files -> time-split order-window tf.Examples (see module docstring)."""

    _report_path: str | None = None

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _unused_per_split

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
                               ) -> Dict[str, beam.pvalue.PCollection]:
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        names = [s.name for s in input_config.splits]
        if sorted(names) != sorted(SPLIT_NAMES):
            raise ValueError(f"MarketDataExampleGen needs input_config splits {SPLIT_NAMES}, got {names}")
        config = unpack_custom_config(exec_properties)
        files = readers.list_input_files(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                                         config.input_patterns)
        outs = pipeline | "MarketDataToExamples" >> ingest.MarketDataToExamples(files, config)
        if self._report_path:
            ingest.write_report(outs["report"], self._report_path)
        return {name: outs[name] for name in names}

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        self._report_path = os.path.join(examples.uri, ingest.REPORT_FILE)
        config = unpack_custom_config(exec_properties)
        report = None
        try:
            super().Do(input_dict, output_dict, exec_properties)
            with open(self._report_path) as f:
                report = json.load(f)
            examples.set_string_custom_property("ingestion_report", json.dumps(report["examples_per_split"]))
            ingest.check_report(report, config)
        except Exception as e:  # pylint: disable=broad-except
            kept = failed_report_path(examples.uri)
            failed = ingest.failed_report(e, config, _listed_files(exec_properties, config), report)
            for path in (self._report_path, kept):
                ingest.write_report_file(failed, path)
            try:
                again = type(e)(f"{e}\n(ingestion report kept at {kept})")
            except Exception:  # pylint: disable=broad-except  (an exception type with other arguments)
                raise e
            raise again from e


def failed_report_path(examples_uri: str) -> str:
    """Where a failed ingestion's report survives the launcher's removal of `examples_uri`
    (`<root>/<component>/examples/<execution>` -> `<root>/<component>/ingestion_report.failed-<execution>.json`)."""
    uri = examples_uri.rstrip("/")
    component_dir = os.path.dirname(os.path.dirname(uri))
    return os.path.join(component_dir, f"{os.path.splitext(ingest.REPORT_FILE)[0]}.failed-{os.path.basename(uri)}.json")


def _listed_files(exec_properties: Dict[str, Any], config: IngestionConfig) -> list:
    try:
        return readers.list_input_files(exec_properties[standard_component_specs.INPUT_BASE_KEY], config.input_patterns)
    except Exception:  # pylint: disable=broad-except  (the error being reported may be this one)
        return []
