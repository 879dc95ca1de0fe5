"""Curated schema + ExampleValidator's check (TFDV) + AnomaliesGate: bad examples stop the run with a message."""
import os

import numpy as np
import pytest
import tensorflow as tf

from components.example_gen import ingest, validation
from components.example_gen.config import IngestionConfig
from components.example_gen.schema import load_curated_schema, schema_for

CFG = IngestionConfig(frequencies=(15, 90), norm_window=4, lookback=3, n_ahead=2)


def test_curated_file_is_the_default_config_schema():
    assert load_curated_schema() == schema_for(IngestionConfig())
    sch = {f.name: f for f in schema_for(CFG).feature}
    assert sch["volume"].shape.dim[0].size == 9 and sch["volume"].float_domain.min == 0
    assert (sch["frequency_minutes"].int_domain.min, sch["frequency_minutes"].int_domain.max) == (15, 90)


def _examples(n, T, bad=None):
    out = []
    for i in range(n):
        v = np.ones(T, np.float32)
        ex = {"volume": v, "quote_volume": v * 2, "timestamp": np.arange(T) * 900, "asset": b"X",
              "frequency_minutes": 15, "origin_time": 7 * 900}
        if bad and i == 1:  # one bad example among clean ones
            bad(ex)
        out.append(ingest.to_tf_example(ex))
    return out


def _validate(tmp_path, records):
    import tensorflow_data_validation as tfdv
    path = str(tmp_path / "ex.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    stats = tfdv.generate_statistics_from_tfrecord(path)
    anomalies = tfdv.validate_statistics(stats, schema_for(CFG))
    split_dir = tmp_path / "anomalies" / "Split-train"
    split_dir.mkdir(parents=True)
    (split_dir / validation.SCHEMA_DIFF_FILE).write_bytes(anomalies.SerializeToString())
    return str(tmp_path / "anomalies")


def test_clean_examples_pass_the_gate(tmp_path):
    validation.check_anomalies(_validate(tmp_path, _examples(5, 9)), ["train"])


BAD = {
    "volume": lambda ex: ex.update(volume=np.full(9, -1.0, np.float32)),
    "quote_volume": lambda ex: ex.update(quote_volume=np.full(9, np.nan, np.float32)),
    "timestamp": lambda ex: ex.update(timestamp=np.arange(5)),
    "frequency_minutes": lambda ex: ex.update(frequency_minutes=1440),
}


def test_anomalies_stop_the_run_with_each_feature_named(tmp_path):
    records = [r for bad in BAD.values() for r in _examples(2, 9, bad)]
    uri = _validate(tmp_path, records)
    with pytest.raises(validation.DataAnomaliesError) as err:
        validation.check_anomalies(uri, ["train"])
    for feature in BAD:
        assert f"train: {feature}: " in str(err.value)
