"""The ingestion part in a real TFX LocalDagRunner pipeline (tmp dir, SQLite metadata): MarketDataExampleGen on
Binance + tidy files -> StatisticsGen -> ImportSchemaGen (curated schema) -> ExampleValidator -> AnomaliesGate
-> Transform (preprocessing_fn = the ONE feature builder)."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components.example_gen.config import IngestionConfig
from components.market_data import synthetic

W, L, N = 16, 8, 4


@pytest.mark.slow
def test_local_dag_runner_ingestion_and_transform(tmp_path):
    from tfx import v1 as tfx
    from tfx.orchestration import metadata, pipeline as tfx_pipeline
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from components.example_gen.component import ingestion_components
    from components.transform.preprocessing import transform_custom_config
    from lem_model.features import NUM_BAR_FEATURES

    data = tmp_path / "data"
    btc = synthetic.generate_bars(["BTCUSDT"], start="2024-01-01", periods=288 * 40, freq_minutes=5, seed=0)
    synthetic.write_binance_klines(btc, str(data / "binance"), 5)
    xrp = synthetic.generate_bars(["XRPUSDT"], start="2024-01-01", periods=96 * 40, freq_minutes=15, seed=1)
    synthetic.write_tidy(xrp, str(data / "tidy" / "xrp.parquet"))
    cfg = IngestionConfig(frequencies=(15, 90), norm_window=W, lookback=L, n_ahead=N, stride=8,
                          eval_start="2024-01-28", test_start="2024-02-04", end="2024-02-09")
    parts = ingestion_components(str(data), cfg, str(tmp_path / "schema"))
    transform = tfx.components.Transform(
        examples=parts["example_gen"].outputs["examples"], schema=parts["schema_gen"].outputs["schema"],
        preprocessing_fn="components.transform.preprocessing.preprocessing_fn",
        custom_config=transform_custom_config(cfg))
    transform.add_upstream_node(parts["anomalies_gate"])
    root = tmp_path / "root"
    p = tfx_pipeline.Pipeline(
        pipeline_name="ingestion_test", pipeline_root=str(root), components=[*parts.values(), transform],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(str(tmp_path / "md.sqlite")),
        enable_cache=False)
    LocalDagRunner().run(p)

    (report_path,) = glob.glob(str(root / "FileBasedExampleGen" / "examples" / "*" / "ingestion_report.json"))
    report = json.load(open(report_path))
    assert all(report["examples_per_split"][s] > 0 for s in ("train", "eval", "test"))
    for split in ("train", "eval", "test"):
        files = glob.glob(str(root / "Transform" / "transformed_examples" / "*" / f"Split-{split}" / "*.gz"))
        spec = {"bars": tf.io.FixedLenFeature([L + N, NUM_BAR_FEATURES], tf.float32),
                "labels": tf.io.FixedLenFeature([N, 2], tf.float32),
                "asset": tf.io.FixedLenFeature([], tf.string),
                "frequency_minutes": tf.io.FixedLenFeature([], tf.int64),
                "origin_time": tf.io.FixedLenFeature([], tf.int64)}
        rows = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files, "GZIP")]
        assert len(rows) == report["examples_per_split"][split]
        bars = np.stack([r["bars"].numpy() for r in rows])
        assert np.isfinite(bars).all() and {int(r["frequency_minutes"]) for r in rows} == {15, 90}
    (graph,) = glob.glob(str(root / "Transform" / "transform_graph" / "*"))
    assert os.path.isdir(os.path.join(graph, "transform_fn"))
