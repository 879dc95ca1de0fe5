"""`AnomaliesGate`: a tiny component after ExampleValidator that stops the run when any split has anomalies.

TFX 1.16's ExampleValidator only records anomalies (and a `blessed` custom property): it never fails. The
gate reads the `SchemaDiff.pb` of every split and raises `DataAnomaliesError` listing, per split and
feature, the anomaly and its description (e.g. `volume: FLOAT_TYPE_SMALL_FLOAT: ... min -3 < 0`) with the
hint to fix the input data or the curated schema (`schemas/schema.pbtxt`). Make later components depend on
it (`transform.add_upstream_node(gate)`; `ingestion_components` does so for what it builds).
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

SCHEMA_DIFF_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
    """Raised when ExampleValidator found anomalies."""


def anomaly_messages(anomalies_uri: str, split_names) -> list:
    """One line per anomaly: "<split>: <feature>: <type>: <description>"."""
    out = []
    for split in split_names:
        path = os.path.join(anomalies_uri, f"Split-{split}", SCHEMA_DIFF_FILE)
        with open(path, "rb") as f:
            anomalies = anomalies_pb2.Anomalies.FromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            kinds = ", ".join(anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason) or "ANOMALY"
            desc = " ".join(r.description for r in info.reason) or info.description
            out.append(f"{split}: {feature}: {kinds}: {desc}")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            out.append(f"{split}: (dataset): {' '.join(r.description for r in info.reason) or info.description}")
    return out


def check_anomalies(anomalies_uri: str, split_names) -> None:
    """Raise `DataAnomaliesError` if any split has anomalies."""
    msgs = anomaly_messages(anomalies_uri, split_names)
    if msgs:
        raise DataAnomaliesError(
            "the examples do not match the curated schema (schemas/schema.pbtxt); fix the input files "
            "(see the ExampleGen's ingestion_report.json) or, if the data are right, the schema:\n  "
            + "\n  ".join(msgs))


@component
def AnomaliesGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]):  # pylint: disable=invalid-name
    """Fails the pipeline run when ExampleValidator reported anomalies in any split."""
    check_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
