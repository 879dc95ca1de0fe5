"""The curated raw-example schema (`schemas/schema.pbtxt`) adapted to an `IngestionConfig`.

The file states the contract for the default sizes; `schema_for(config)` sets the fixed lengths of `volume`,
`quote_volume`, `timestamp` to W+L+N and the `frequency_minutes` domain to [min, max] of the configured
frequencies (TFDV int domains are ranges: the ExampleGen emits only configured frequencies, and the range
catches any other value outside it). `write_schema` writes it for `ImportSchemaGen`.
"""
from __future__ import annotations

import os

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components.example_gen.config import IngestionConfig

CURATED_SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "schemas", "schema.pbtxt")
BAR_FIELDS = ("volume", "quote_volume", "timestamp")


def load_curated_schema(path: str = CURATED_SCHEMA) -> schema_pb2.Schema:
    with open(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def schema_for(config: IngestionConfig, path: str = CURATED_SCHEMA) -> schema_pb2.Schema:
    """The curated schema with lengths W+L+N and the frequency range of `config`."""
    schema = load_curated_schema(path)
    for feat in schema.feature:
        if feat.name in BAR_FIELDS:
            feat.shape.ClearField("dim")
            feat.shape.dim.add(size=config.window_length)
        elif feat.name == "frequency_minutes":
            feat.int_domain.min = min(int(f) for f in config.frequencies)
            feat.int_domain.max = max(int(f) for f in config.frequencies)
    return schema


def write_schema(config: IngestionConfig, directory: str) -> str:
    """Write `schema_for(config)` to `<directory>/schema.pbtxt` and return the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "schema.pbtxt")
    with open(path, "w") as f:
        f.write(text_format.MessageToString(schema_for(config)))
    return path
