"""SavedModel warm-up requests in TF Serving's format (`assets.extra/tf_serving_warmup_requests`): the ONE
implementation, written by the Trainer's export (`components.trainer.export`) and replayed by the development
server (`serving.server`, through `serving.warmup`) and the pre-push check (`components.serving_check`).

`tensorflow_model_server --enable_model_warmup` (on by default) replays the `PredictionLog`s of that TFRecord
file when it loads a version, before the version takes traffic, so the first real order does not pay the
one-off costs. In a LEM SavedModel those are the XLA compilations of the small-batch path
(`lem_model.kernels.tensorflow_kernels.small_batch_xla`): batches up to the model's `xla_max_batch` are padded to
the next power of two, so each signature compiles once per batch size in `warmup_batch_sizes(xla_max_batch)` =
1, 2, 4, .. xla_max_batch (seconds each). The file holds one request per signature and batch size (plus one batch above
xla_max_batch for the plain path), each a flat synthetic order window on the bar grid.

    write_warmup_file(export_dir, window_bars=468, n_ahead=12)     # right after tf.saved_model.save
"""
from __future__ import annotations

import os

import numpy as np

from lem_model.presets import XLA_MAX_BATCH, paper_min_rate

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
#: Signatures of a LEM SavedModel the warm-up covers (components.trainer.export).
SIGNATURES = ("serving_default", "serve_scenario", "serve_tf_examples")
#: 2024-01-01 00:00 UTC, first bar of the synthetic warm-up window.
_START = 1_704_067_200


def warmup_batch_sizes(xla_max_batch: int = XLA_MAX_BATCH) -> tuple:
    """The batch sizes whose first call compiles something: the powers of two up to the model's `xla_max_batch`
    (the padded sizes `small_batch_xla` compiles for), then one batch beyond it (the plain path)."""
    sizes, b = [], 1
    while b <= max(int(xla_max_batch), 1):
        sizes.append(b)
        b *= 2
    return tuple(sizes) + (b,)


def warmup_inputs(window_bars: int, n_ahead: int, frequency_minutes: int = 15, batch: int = 1) -> dict:
    """`serving_default` inputs of `batch` flat synthetic order windows (strictly increasing timestamps in
    seconds on the bar grid, positive volumes, quote volume = 100 x volume, the default rates)."""
    ts = _START + 60 * int(frequency_minutes) * np.arange(window_bars, dtype=np.int64)
    return {"volume": np.ones((batch, window_bars), np.float32),
            "quote_volume": np.full((batch, window_bars), 100.0, np.float32),
            "timestamp": np.tile(ts[None], (batch, 1)),
            "frequency_minutes": np.full(batch, frequency_minutes, np.int64),
            "min_rate": np.full(batch, paper_min_rate(n_ahead), np.float32), "max_rate": np.ones(batch, np.float32)}


def warmup_examples(window_bars: int, n_ahead: int, frequency_minutes: int = 15, batch: int = 1) -> np.ndarray:
    """`serve_tf_examples` input: `batch` serialized tf.Examples of the same window (raw fields of
    docs/example-contract.md: volume, quote_volume, timestamp, asset, frequency_minutes, origin_time)."""
    import tensorflow as tf
    one = warmup_inputs(window_bars, n_ahead, frequency_minutes)
    feature = {
        "volume": tf.train.Feature(float_list=tf.train.FloatList(value=one["volume"][0])),
        "quote_volume": tf.train.Feature(float_list=tf.train.FloatList(value=one["quote_volume"][0])),
        "timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=one["timestamp"][0])),
        "asset": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"WARMUP"])),
        "frequency_minutes": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(frequency_minutes)])),
        "origin_time": tf.train.Feature(int64_list=tf.train.Int64List(
            value=[int(one["timestamp"][0, window_bars - n_ahead])])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    return np.array([example] * batch, dtype=object)


def signature_inputs(signature: str, window_bars: int, n_ahead: int, frequency_minutes: int = 15,
                     batch: int = 1) -> dict:
    """Warm-up inputs {name: ndarray} of one LEM signature."""
    if signature == "serve_tf_examples":
        return {"examples": warmup_examples(window_bars, n_ahead, frequency_minutes, batch)}
    inputs = warmup_inputs(window_bars, n_ahead, frequency_minutes, batch)
    if signature == "serve_scenario":
        inputs["scenario"] = np.arange(batch, dtype=np.int64) % (n_ahead + 1)
    elif signature != "serving_default":
        raise ValueError(f"no warm-up inputs for signature {signature!r}; known: {list(SIGNATURES)}")
    return inputs


def warmup_requests(window_bars: int, n_ahead: int, model_name: str = "lem", frequencies=(15,),
                    signatures=SIGNATURES, batch_sizes=None) -> list:
    """PredictRequests, one per signature, bar frequency and batch size (default `warmup_batch_sizes()`)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    requests = []
    for signature in signatures:
        for freq in frequencies:
            for batch in (warmup_batch_sizes() if batch_sizes is None else batch_sizes):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = model_name
                request.model_spec.signature_name = signature
                for name, value in signature_inputs(signature, window_bars, n_ahead, freq, int(batch)).items():
                    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
                requests.append(request)
    return requests


def write_warmup_file(export_dir: str, *, window_bars: int, n_ahead: int, model_name: str = "lem",
                      frequencies=(15,), signatures=SIGNATURES, batch_sizes=None) -> str:
    """Write `<export_dir>/assets.extra/tf_serving_warmup_requests` (replacing one there); returns its path."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for request in warmup_requests(window_bars, n_ahead, model_name, frequencies, signatures, batch_sizes):
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(export_dir: str) -> list:
    """The PredictRequests of a version's warm-up file ([] when it has none)."""
    path = os.path.join(export_dir, WARMUP_FILE)
    import tensorflow as tf
    if not tf.io.gfile.exists(path):
        return []
    from tensorflow_serving.apis import prediction_log_pb2
    out = []
    for record in tf.compat.v1.io.tf_record_iterator(path):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") == "predict_log":
            out.append(log.predict_log.request)
    return out
