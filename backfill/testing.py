"""Tools for tests and benchmarks: synthetic bar files and a pushed LEM with random (seeded) weights.

`export_untrained_model` goes through the real code path of a pushed model: the Transform module's
`preprocessing_fn` is analysed with `tensorflow_transform.beam` into a transform graph (as the Transform
component does; there are no analyzers, so a handful of windows suffice), and the Trainer's exporter
(`components.trainer.export.export_serving_model`) saves the Keras 3 LEM with that graph and the two
signatures into `<base>/<version>/` (the Pusher layout). Only the training is skipped: the weights are the
seeded initialisation, which is what a throughput measurement or a plumbing test needs.
"""
from __future__ import annotations

import functools
import os
import tempfile
from typing import Sequence

import numpy as np


def write_synthetic_source(directory: str, assets: Sequence[str] = ("BTCUSDT", "ETHUSDT"), *,
                           start: str = "2024-03-01", periods: int = 1500, freq_minutes: int = 15,
                           seed: int = 0) -> list[str]:
    """Generated bars (`components.market_data.synthetic`) as one tidy Parquet file per asset."""
    from components.market_data.synthetic import generate_bars, write_tidy
    bars = generate_bars(list(assets), start=start, periods=periods, freq_minutes=freq_minutes, seed=seed)
    return [write_tidy(bars[bars["asset"] == a], os.path.join(directory, f"{a}.parquet")) for a in assets]


def write_transform_graph(output_dir: str, *, norm_window: int, lookback: int, n_ahead: int,
                          frequencies: Sequence[int] = (15,)) -> str:
    """Analyse `components.transform.preprocessing.preprocessing_fn` for these sizes (raw schema of the
    ExampleGen) and write the transform graph to `output_dir`; returns it (a `tft.TFTransformOutput` dir)."""
    import tensorflow_transform as tft  # sets TF_USE_LEGACY_KERAS like the Transform component
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from components.example_gen.config import IngestionConfig
    from components.example_gen.schema import schema_for
    from components.transform.preprocessing import preprocessing_fn

    sizes = {"norm_window": norm_window, "lookback": lookback, "n_ahead": n_ahead}
    schema = schema_for(IngestionConfig(frequencies=tuple(frequencies), eval_start=None, test_start=None, **sizes))
    metadata = dataset_metadata.DatasetMetadata(schema)
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    total = norm_window + lookback + n_ahead
    rng = np.random.default_rng(0)
    instances = []
    for i in range(4):
        v = rng.uniform(1.0, 2.0, total).astype(np.float32)
        instances.append({"volume": v, "quote_volume": v * 100.0,
                          "timestamp": (1_700_000_000 + 900 * np.arange(total) + 900 * i).astype(np.int64),
                          "asset": b"X", "frequency_minutes": int(frequencies[0]),
                          "origin_time": 1_700_000_000 + 900 * (norm_window + lookback + i)})
    instances = [{k: v for k, v in x.items() if k in spec} for x in instances]
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp):
        transform_fn = ((instances, metadata)
                        | tft_beam.AnalyzeDataset(functools.partial(preprocessing_fn, custom_config=sizes)))
        _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
    metadata_io.write_metadata(metadata, os.path.join(output_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return output_dir


def export_untrained_model(base_dir: str, *, norm_window: int, lookback: int, n_ahead: int, version: int = 1,
                           seed: int = 0, frequencies: Sequence[int] = (15,), **hyperparams) -> str:
    """A seeded random-weight LEM pushed to `<base_dir>/<version>/` with the real transform graph."""
    import keras
    import tensorflow_transform as tft

    from components.trainer.export import export_serving_model
    from lem_model.features import NUM_BAR_FEATURES
    from lem_model.model import build_lem

    keras.utils.set_random_seed(seed)
    model = build_lem(num_features=NUM_BAR_FEATURES, lookback=lookback, n_ahead=n_ahead, **hyperparams)
    path = os.path.join(base_dir, str(version))
    with tempfile.TemporaryDirectory() as tft_dir:  # the SavedModel embeds the graph (assets copied)
        write_transform_graph(tft_dir, norm_window=norm_window, lookback=lookback, n_ahead=n_ahead,
                              frequencies=frequencies)
        export_serving_model(model, tft.TFTransformOutput(tft_dir), path, norm_window=norm_window,
                             lookback=lookback, n_ahead=n_ahead, metadata={"model": hyperparams, "untrained": True})
    return path
