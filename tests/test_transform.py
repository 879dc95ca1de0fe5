"""components/transform/preprocessing.py under TF Transform's Beam implementation equals an independent NumPy
computation of the features (tests/test_features.reference_features), with rank-3 `bars` and passthroughs."""
import os
import tempfile

import numpy as np
import pytest

from components.example_gen.config import IngestionConfig
from components.example_gen.schema import schema_for
from components.transform import preprocessing
from test_features import random_windows, reference_features

W, L, N = 6, 5, 3


def test_preprocessing_fn_under_tft_matches_numpy_reference():
    import tensorflow_transform as tft  # noqa: F401  (sets up the TFT environment first)
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata

    config = IngestionConfig(frequencies=(15, 90, 250, 1440), norm_window=W, lookback=L, n_ahead=N)
    rng = np.random.default_rng(11)
    v, q, ts, f = random_windows(rng, B=12)
    raw = [{"volume": v[i], "quote_volume": q[i], "timestamp": ts[i], "asset": f"A{i % 3}".encode(),
            "frequency_minutes": int(f[i]), "origin_time": int(ts[i, W + L])} for i in range(len(v))]
    metadata = dataset_metadata.DatasetMetadata(schema_for(config))
    custom = preprocessing.transform_custom_config(config)

    def fn(inputs):
        return preprocessing.preprocessing_fn(inputs, custom)

    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp, force_tf_compat_v1=False):
        (out, out_meta), _ = (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(fn, output_record_batches=False)
    schema = {feat.name: feat for feat in out_meta.schema.feature}
    assert [d.size for d in schema["bars"].shape.dim] == [L + N, 12]
    assert [d.size for d in schema["labels"].shape.dim] == [N, 2]
    bars = np.stack([np.asarray(r["bars"]).reshape(L + N, -1) for r in out])
    labels = np.stack([np.asarray(r["labels"]).reshape(N, 2) for r in out])
    ref_bars, ref_labels = reference_features(v, q, ts, f, W, L, N)
    np.testing.assert_allclose(bars, ref_bars, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(labels, ref_labels, rtol=1e-4, atol=1e-5)
    assert [r["asset"] for r in out] == [x["asset"] for x in raw]
    assert [int(r["frequency_minutes"]) for r in out] == list(f)
    assert [int(r["origin_time"]) for r in out] == list(ts[:, W + L])


def test_custom_config_sizes_are_used():
    config = IngestionConfig(norm_window=7, lookback=3, n_ahead=2)
    assert preprocessing.transform_custom_config(config) == {"norm_window": 7, "lookback": 3, "n_ahead": 2}
