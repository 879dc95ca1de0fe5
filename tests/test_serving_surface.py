"""`lems serve` speaks more of TF Serving's surface, over loopback against a tiny LEM exported with the Trainer's
exporter: ModelService.GetModelStatus, the gRPC health check, the REST API (status, metadata, predict in row
and column format, errors) and the Prometheus metrics (request count by status, latency histogram)."""
import base64
import json
import os
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

import serving_testutils as U
from serving.client import LemClient
from serving.server import DevServer

W, L, N = U.SIZES["norm_window"], U.SIZES["lookback"], U.SIZES["n_ahead"]
T = W + L + N


@pytest.fixture(scope="module")
def bars():
    return U.make_bars(600)


@pytest.fixture(scope="module")
def model_base(tmp_path_factory, bars):
    base = str(tmp_path_factory.mktemp("surface") / "lem")
    U.export_version(U.train_tiny_lem(bars, epochs=1), base, 3)
    return base


@pytest.fixture(scope="module")
def server(model_base):
    srv = DevServer(model_base, "lem", port=0, poll_seconds=0.2, rest_port=0,
                    metrics_path="/monitoring/prometheus/metrics").start()
    yield srv
    srv.stop()


def _inputs(bars, origin=400, batch=2):
    sl = slice(origin - W - L, origin + N)
    return {"volume": np.tile(bars["volume"][sl].astype(np.float32), (batch, 1)),
            "quote_volume": np.tile(bars["quote_volume"][sl].astype(np.float32), (batch, 1)),
            "timestamp": np.tile(bars["timestamp"][sl].astype(np.int64), (batch, 1)),
            "frequency_minutes": np.full(batch, U.FREQ, np.int64),
            "min_rate": np.full(batch, 1 / N ** 2, np.float32), "max_rate": np.array([1.0, 0.5][:batch], np.float32)}


def _http(server, path, body=None):
    """(HTTP status, parsed JSON or text) of a GET (body None) or POST to the REST port."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://{server.rest_address}{path}", data=data,
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            code, text, ctype = resp.status, resp.read().decode(), resp.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        code, text, ctype = err.code, err.read().decode(), err.headers["Content-Type"]
    return code, (json.loads(text) if ctype.startswith("application/json") else text)


def test_get_model_status_answers_like_tf_serving(server):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
    with grpc.insecure_channel(server.address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "lem"
        (status,) = stub.GetModelStatus(request, timeout=30).model_version_status
        assert status.version == 3
        assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert status.status.error_code == 0 and status.status.error_message == ""
        request.model_spec.version.value = 3
        assert stub.GetModelStatus(request, timeout=30).model_version_status[0].version == 3
        for name, version in (("lem", 7), ("other", None)):
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = name
            if version:
                request.model_spec.version.value = version
            with pytest.raises(grpc.RpcError) as err:
                stub.GetModelStatus(request, timeout=30)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and name in err.value.details()


def test_health_check_serving_and_unknown_service(server, tmp_path):
    from serving.protos import health
    with grpc.insecure_channel(server.address) as channel:
        check = channel.unary_unary(health.CHECK_METHOD, request_serializer=health.HealthCheckRequest.SerializeToString,
                                    response_deserializer=health.HealthCheckResponse.FromString)
        for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
            assert check(health.HealthCheckRequest(service=service), timeout=30).status == health.SERVING
        with pytest.raises(grpc.RpcError) as err:
            check(health.HealthCheckRequest(service="no.such.Service"), timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # a server with no version yet: NOT_SERVING, and GetModelStatus / REST status say there is none
    empty = DevServer(str(tmp_path / "empty"), "lem", port=0, poll_seconds=30, rest_port=0).start()
    try:
        with grpc.insecure_channel(empty.address) as channel:
            check = channel.unary_unary(health.CHECK_METHOD,
                                        request_serializer=health.HealthCheckRequest.SerializeToString,
                                        response_deserializer=health.HealthCheckResponse.FromString)
            assert check(health.HealthCheckRequest(), timeout=30).status == health.NOT_SERVING
        code, body = _http(empty, "/v1/models/lem")
        assert code == 404 and "Could not find any versions of model 'lem'" in body["error"]
    finally:
        empty.stop()


def test_rest_status_and_metadata(server):
    code, body = _http(server, "/v1/models/lem")
    assert code == 200 and body == {"model_version_status": [
        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert _http(server, "/v1/models/lem/versions/3")[0] == 200
    assert _http(server, "/v1/models/lem/versions/4")[0] == 404
    assert _http(server, "/v1/models/nope")[0] == 404
    code, meta = _http(server, "/v1/models/lem/metadata")
    assert code == 200 and meta["model_spec"]["version"] == "3"
    sigs = meta["metadata"]["signature_def"]["signatureDef"]
    assert {"serving_default", "serve_scenario"} <= set(sigs)
    assert set(sigs["serving_default"]["inputs"]) == {"volume", "quote_volume", "timestamp", "frequency_minutes",
                                                      "min_rate", "max_rate"}


def test_rest_predict_row_and_column_formats_equal_grpc(server, bars):
    inputs = _inputs(bars)
    with LemClient(server.address, "lem", timeout=60) as client:
        expected, version = client.predict_raw(inputs)
    assert version == 3
    want = expected["allocations"]
    rows = [{k: v[i].tolist() for k, v in inputs.items()} for i in range(2)]
    code, body = _http(server, "/v1/models/lem:predict", {"instances": rows})
    assert code == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"]), want, rtol=1e-6, atol=1e-7)
    code, body = _http(server, "/v1/models/lem/versions/3:predict",
                       {"signature_name": "serving_default", "inputs": {k: v.tolist() for k, v in inputs.items()}})
    assert code == 200, body
    np.testing.assert_allclose(np.asarray(body["outputs"]), want, rtol=1e-6, atol=1e-7)
    # serve_tf_examples: serialized tf.Examples as {"b64": ...}, one input -> instances are its values
    import tensorflow as tf
    feats = {"volume": tf.train.Feature(float_list=tf.train.FloatList(value=inputs["volume"][0])),
             "quote_volume": tf.train.Feature(float_list=tf.train.FloatList(value=inputs["quote_volume"][0])),
             "timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=inputs["timestamp"][0])),
             "frequency_minutes": tf.train.Feature(int64_list=tf.train.Int64List(value=[U.FREQ])),
             "asset": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"BTCUSDT"])),
             "origin_time": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(inputs["timestamp"][0, W + L])]))}
    example = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
    code, body = _http(server, "/v1/models/lem:predict", {"signature_name": "serve_tf_examples",
                                                          "instances": [{"b64": base64.b64encode(example).decode()}]})
    assert code == 200, body
    assert np.asarray(body["predictions"]).shape == (1,) + want.shape[1:]


def test_rest_errors_are_tf_serving_json_with_http_codes(server, bars):
    good = {k: v.tolist() for k, v in _inputs(bars, batch=1).items()}
    cases = {
        "missing input": ({"inputs": {k: v for k, v in good.items() if k != "max_rate"}}, 400, "max_rate"),
        "unexpected input": ({"inputs": dict(good, asset=["BTC"])}, 400, "asset"),
        "NaN": ({"inputs": dict(good, min_rate=[float("nan")])}, 400, "min_rate"),
        "wrong length": ({"inputs": dict(good, volume=[good["volume"][0][1:]])}, 400, "volume"),
        "text for a number": ({"inputs": dict(good, max_rate=["one"])}, 400, "max_rate"),
        "both formats": ({"inputs": good, "instances": [good]}, 400, "exactly one"),
        "unknown signature": ({"signature_name": "bogus", "inputs": good}, 404, "bogus"),
    }
    for name, (body, code, word) in cases.items():
        got, answer = _http(server, "/v1/models/lem:predict", body)
        assert got == code and word in answer["error"], (name, got, answer)
    got, answer = _http(server, "/v1/models/lem:predict", b"{not json")
    assert got == 400 and "not JSON" in answer["error"]
    assert _http(server, "/v1/models/other:predict", {"inputs": good})[0] == 404
    assert _http(server, "/v1/nothing/here")[0] == 404


def test_prometheus_metrics_count_requests_errors_and_latency(server, bars):
    from prometheus_client.parser import text_string_to_metric_families
    before = server.metrics.counts()
    good = {k: v.tolist() for k, v in _inputs(bars, batch=1).items()}
    assert _http(server, "/v1/models/lem:predict", {"inputs": good})[0] == 200
    assert _http(server, "/v1/models/lem:predict", {"inputs": dict(good, volume=[[1.0]])})[0] == 400
    with LemClient(server.address, "lem", timeout=60) as client:
        client.predict_raw(_inputs(bars, batch=1))
    code, text = _http(server, "/monitoring/prometheus/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}  # Prometheus' own parser
    counts = {s.labels["status"]: s.value for s in families[":tensorflow:serving:request_count"].samples}
    assert counts["OK"] - before.get("OK", 0) >= 2 and counts["INVALID_ARGUMENT"] - before.get("INVALID_ARGUMENT", 0) >= 1
    latency = families[":tensorflow:serving:request_latency"]
    assert latency.type == "histogram"
    entrypoints = {s.labels.get("entrypoint") for s in latency.samples if s.name.endswith("_count")}
    assert {"GRPC", "REST"} <= entrypoints
    inf = [s for s in latency.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"
           and s.labels["API"] == "predict" and s.labels["entrypoint"] == "REST"]
    total = [s for s in latency.samples if s.name.endswith("_count") and s.labels["API"] == "predict"
             and s.labels["entrypoint"] == "REST"]
    assert inf[0].value == total[0].value >= 2
    (version,) = families["lems_serving_model_version"].samples
    assert version.value == 3


def test_metrics_need_the_rest_port(model_base):
    with pytest.raises(ValueError, match="REST port"):
        DevServer(model_base, "lem", port=0, metrics_path="/metrics")


def test_status_reports_a_newer_version_that_fails_to_load(server, model_base):
    """A version above the served one that cannot load is END with its error in GetModelStatus (REST and
    gRPC), while the served one stays AVAILABLE."""
    broken = os.path.join(model_base, "9")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    try:
        deadline = time.monotonic() + 60
        while server.registry.load_failures(9) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        code, body = _http(server, "/v1/models/lem")
        states = {s["version"]: s for s in body["model_version_status"]}
        assert states["3"]["state"] == "AVAILABLE"
        assert states["9"]["state"] == "END" and states["9"]["status"]["error_code"] == "UNKNOWN"
        assert states["9"]["status"]["error_message"]
    finally:
        import shutil
        shutil.rmtree(broken)
