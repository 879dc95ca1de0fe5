"""SavedModel warm-up requests in TF Serving's format (`assets.extra/tf_serving_warmup_requests`).

`tensorflow_model_server --enable_model_warmup` (on by default) replays the `PredictionLog`s of that TFRecord
file when it loads a version, before the version takes traffic, so the first real order does not pay the
one-off costs; `lems serve` replays the same file. The requests are one synthetic order window (flat bars on
the bar grid, B = 1) for `serving_default` and, if asked, `serve_scenario`.

    write_warmup_file(export_dir, window_bars=468, model_name="lem")   # e.g. right after the Trainer's export
"""
from __future__ import annotations

import os

import numpy as np

from serving.tensors import to_tensor_proto

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def warmup_inputs(window_bars: int, n_ahead: int, frequency_minutes: int = 15) -> dict:
    """`serving_default` inputs of one flat synthetic order window (B = 1)."""
    ts = 1_704_067_200 + 60 * frequency_minutes * np.arange(window_bars, dtype=np.int64)   # 2024-01-01 UTC
    return {"volume": np.ones((1, window_bars), np.float32),
            "quote_volume": np.full((1, window_bars), 100.0, np.float32),
            "timestamp": ts[None], "frequency_minutes": np.array([frequency_minutes], np.int64),
            "min_rate": np.array([1.0 / n_ahead ** 2], np.float32), "max_rate": np.array([1.0], np.float32)}


def warmup_requests(window_bars: int, n_ahead: int, model_name: str = "lem",
                    frequencies=(15,), signatures=("serving_default",)) -> list:
    """PredictRequests, one per bar frequency and signature (`serving_default` and/or `serve_scenario`,
    whose first call compiles its XLA path)."""
    from tensorflow_serving.apis import predict_pb2
    requests = []
    for signature in signatures:
        if signature not in ("serving_default", "serve_scenario"):
            raise ValueError(f"no warm-up inputs for signature {signature!r}")
        for freq in frequencies:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            inputs = warmup_inputs(window_bars, n_ahead, freq)
            if signature == "serve_scenario":
                inputs["scenario"] = np.zeros(1, np.int64)
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(to_tensor_proto(value))
            requests.append(request)
    return requests


def write_warmup_file(export_dir: str, *, window_bars: int, n_ahead: int, model_name: str = "lem",
                      frequencies=(15,), signatures=("serving_default",)) -> str:
    """Write `<export_dir>/assets.extra/tf_serving_warmup_requests`; returns its path."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(export_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for request in warmup_requests(window_bars, n_ahead, model_name, frequencies, signatures):
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(export_dir: str) -> list:
    """The PredictRequests of a version's warm-up file ([] when it has none)."""
    path = os.path.join(export_dir, WARMUP_FILE)
    if not os.path.isfile(path):
        return []
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    out = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") == "predict_log":
            out.append(log.predict_log.request)
    return out
