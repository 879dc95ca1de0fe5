"""`CuratedSchemaGen`: writes `components.example_gen.schema.schema_for(config)` as a Schema artifact.

Like `ImportSchemaGen` of the curated `schemas/schema.pbtxt`, but the adaptation to the run's sizes (bar
lengths W+L+N, frequency range) happens inside the component at run time, so `create_pipeline(config)`
writes no file while the pipeline is defined (it runs unchanged on Kubeflow, whose pipeline root is remote).
Output layout = SchemaGen's: `<uri>/schema.pbtxt`.
"""

import os

from tfx import v1 as tfx
from tfx.types import standard_artifacts

SCHEMA_FILE = "schema.pbtxt"


@tfx.dsl.components.component
def CuratedSchemaGen(  # pylint: disable=invalid-name
    schema: tfx.dsl.components.OutputArtifact[standard_artifacts.Schema],
    ingestion_config_json: tfx.dsl.components.Parameter[str],
) -> None:
    """schema.pbtxt for the `IngestionConfig` given as JSON (`IngestionConfig.to_json()`)."""
    from google.protobuf import text_format

    from components.example_gen.config import IngestionConfig
    from components.example_gen.schema import schema_for

    proto = schema_for(IngestionConfig.from_json(ingestion_config_json))
    if not tfx.dsl.io.fileio.exists(schema.uri):
        tfx.dsl.io.fileio.makedirs(schema.uri)
    with tfx.dsl.io.fileio.open(os.path.join(schema.uri, SCHEMA_FILE), "w") as f:
        f.write(text_format.MessageToString(proto))
