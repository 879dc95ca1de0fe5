"""TF Serving's REST API on the development server (`lems serve --rest-port 8501`), over the same registry and
request checks as its gRPC PredictionService (serving/server.py).

Endpoints (TF Serving's, https://www.tensorflow.org/tfx/serving/api_rest describes them):

  GET  /v1/models/NAME[/versions/V]            model status: {"model_version_status": [{"version": "V",
                                               "state": "AVAILABLE", "status": {"error_code": "OK",
                                               "error_message": ""}}]}
  GET  /v1/models/NAME[/versions/V]/metadata   {"model_spec": ..., "metadata": {"signature_def": ...}}
  POST /v1/models/NAME[/versions/V]:predict    row format {"signature_name": S, "instances": [{input: value},
                                               ...]} -> {"predictions": [...]}; column format {"inputs":
                                               {input: batch}} -> {"outputs": ...}. One output: its values
                                               directly; several: one object per instance (rows) or per name
                                               (columns). A DT_STRING input takes {"b64": "..."} or text.
  GET  METRICS_PATH                            Prometheus text (serving/metrics.py), when enabled

JSON values are converted to the signature's declared dtypes, then the request goes through the gRPC path's
checks (`serving.server.validate_inputs` etc.); its errors come back as {"error": message} with HTTP 400
(INVALID_ARGUMENT), 404 (NOT_FOUND) or 500 (INTERNAL). Latencies and outcomes are counted under entrypoint
"REST".
"""
from __future__ import annotations

import base64
import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import grpc
import numpy as np

log = logging.getLogger("lems.serving")

_MODEL_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                         r"(?P<rest>/metadata|:predict|:classify|:regress)?$")
_HTTP_OF = {grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST, grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
            grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
            grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST}
#: Largest request body read (the gRPC message limit).
MAX_BODY_BYTES = 64 * 1024 * 1024


def _numpy_dtype(dtype_enum: int):
    from serving.protos import DT_STRING
    from serving.tensors import _DTYPE_TO_NUMPY
    if dtype_enum == DT_STRING:
        return object
    if dtype_enum not in _DTYPE_TO_NUMPY:
        from serving.tensors import dtype_name
        raise ValueError(f"dtype {dtype_name(dtype_enum)} is not supported over REST")
    return _DTYPE_TO_NUMPY[dtype_enum]


def _decode_strings(value):
    """JSON strings / {"b64": ...} (nested lists) -> bytes."""
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"expected a string or {{\"b64\": ...}}, got {type(value).__name__}")


def to_array(name: str, value, dtype_enum: int) -> np.ndarray:
    """One input's JSON value -> ndarray of the signature's dtype (ValueError naming the input)."""
    dtype = _numpy_dtype(dtype_enum)
    try:
        if dtype is object:
            return np.array(_decode_strings(value), dtype=object)
        arr = np.asarray(value)
        target = np.dtype(dtype)
        if arr.dtype == object or arr.dtype.kind in "US":
            raise ValueError("values are not all numbers of one nesting depth")
        if arr.dtype.kind == "b" and target.kind != "b":
            raise ValueError(f"true/false given for a {target.name} input")
        if target.kind in "iu" and arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError("integer input holds non-integer values")
        return arr.astype(target)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"input {name!r}: {exc}") from None


def _jsonable(arr: np.ndarray):
    if arr.dtype == object:
        return [_jsonable(a) for a in arr] if arr.ndim else {"b64": base64.b64encode(arr.item()).decode()}
    return arr.tolist()


def status_json(registry, version: Optional[int] = None) -> dict:
    """TF Serving's GetModelStatus REST answer (raises RequestError as the gRPC method does)."""
    from serving.server import RequestError
    states = registry.version_states()
    if version is not None:
        states = [s for s in states if s[0] == version]
        if not states:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model "
                                                          f"{registry.model_name!r}")
    if not states:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model "
                                                      f"{registry.model_name!r} (none under {registry.model_base_path})")
    return {"model_version_status": [
        {"version": str(v), "state": state,
         "status": {"error_code": "UNKNOWN" if message else "OK", "error_message": message}}
        for v, state, message in states]}


class RestServer:
    """ThreadingHTTPServer on `host:port` (0 = any free port) answering TF Serving's REST API for `dev_server`
    (a started serving.server.DevServer)."""

    def __init__(self, dev_server, host: str, port: int, *, metrics_path: Optional[str] = None):
        self.dev, self.metrics_path = dev_server, metrics_path
        handler = type("Handler", (_Handler,), {"rest": self})
        self._httpd = ThreadingHTTPServer((host, int(port)), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="lems-rest", daemon=True)
        self._thread.start()

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    # ---- the endpoints (each returns a JSON-able dict or raises RequestError) ----
    def _check_name(self, name: str):
        from serving.server import RequestError
        registry = self.dev.registry
        if name != registry.model_name:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name!r} (this "
                                                          f"server serves {registry.model_name!r})")

    def status(self, name: str, version: Optional[int]) -> dict:
        self._check_name(name)
        return status_json(self.dev.registry, version)

    def metadata(self, name: str, version: Optional[int]) -> dict:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        request.metadata_field.append("signature_def")
        response = self.dev.servicer._metadata(request)
        from serving.protos import unpack_signature_def_map
        sig_map = json_format.MessageToDict(unpack_signature_def_map(response))
        return {"model_spec": {"name": name, "signature_name": "", "version": str(response.model_spec.version.value)},
                "metadata": {"signature_def": sig_map}}

    def predict(self, name: str, version: Optional[int], body: dict) -> dict:
        from tensorflow_serving.apis import predict_pb2

        from serving.server import DEFAULT_SIGNATURE, RequestError
        from serving.tensors import encode_tensor, from_tensor_proto
        bad = lambda message: RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)  # noqa: E731
        if not isinstance(body, dict):
            raise bad("the request body must be a JSON object with 'instances' or 'inputs'")
        if ("instances" in body) == ("inputs" in body):
            raise bad("the request must hold exactly one of 'instances' (row format) or 'inputs' (column format)")
        unknown = sorted(set(body) - {"instances", "inputs", "signature_name"})
        if unknown:
            raise bad(f"unknown key(s) {unknown} in the request; allowed: instances or inputs, signature_name")
        self._check_name(name)
        signature = body.get("signature_name") or DEFAULT_SIGNATURE
        model = self.dev.registry.current
        if model is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {name!r} has no version loaded yet")
        if signature not in model.signatures:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Serving signature key {signature!r} not found; model "
                                                          f"{name!r} version {model.version} has "
                                                          f"{sorted(model.signatures)}")
        specs = model.inputs[signature]
        if "instances" in body:
            instances = body["instances"]
            if not isinstance(instances, list) or not instances:
                raise bad("'instances' must be a non-empty list")
            named = all(isinstance(i, dict) for i in instances) and not (
                len(specs) == 1 and all(set(i) == {"b64"} for i in instances))   # a single input's b64 values
            if named:
                missing = sorted({k for i in instances for k in specs if k not in i})
                extra = sorted({k for i in instances for k in i if k not in specs})
                if missing or extra:
                    raise bad(f"instances: missing input(s) {missing}, unexpected input(s) {extra}; signature "
                              f"{signature!r} expects {sorted(specs)}")
                columns = {k: [i[k] for i in instances] for k in specs}
            elif len(specs) == 1:
                columns = {next(iter(specs)): instances}
            else:
                raise bad(f"instances must be objects naming the inputs {sorted(specs)} of signature {signature!r}")
        else:
            inputs = body["inputs"]
            if len(specs) == 1 and not isinstance(inputs, dict):
                inputs = {next(iter(specs)): inputs}
            if not isinstance(inputs, dict):
                raise bad(f"'inputs' must be an object naming the inputs {sorted(specs)} of signature {signature!r}")
            columns = inputs
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        extra = sorted(set(columns) - set(specs))
        if extra:
            raise bad(f"unexpected input(s) {extra} for signature {signature!r}; expected {sorted(specs)}")
        for key, value in columns.items():
            try:
                encode_tensor(to_array(key, value, specs[key].dtype), request.inputs[key])
            except ValueError as exc:
                raise bad(str(exc)) from None
        response = self.dev.servicer._predict(request)
        outputs = {k: from_tensor_proto(v) for k, v in response.outputs.items()}
        if "instances" in body:
            if len(outputs) == 1:
                return {"predictions": _jsonable(next(iter(outputs.values())))}
            n = len(next(iter(outputs.values())))
            return {"predictions": [{k: _jsonable(v[i]) if isinstance(v[i], np.ndarray) else v[i].item()
                                     for k, v in outputs.items()} for i in range(n)]}
        if len(outputs) == 1:
            return {"outputs": _jsonable(next(iter(outputs.values())))}
        return {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}


class _Handler(BaseHTTPRequestHandler):
    rest: RestServer = None            # set per server (RestServer builds a subclass)
    protocol_version = "HTTP/1.1"
    server_version = "lems-serve"

    def log_message(self, fmt, *args):  # requests are counted in the metrics, not logged one by one
        log.debug("rest: " + fmt, *args)

    def _send(self, code: int, body: bytes, content_type: str):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, value: dict):
        self._send(code, json.dumps(value).encode("utf-8"), "application/json")

    def _dispatch(self, method: str):
        from serving.server import RequestError, run_request
        path = self.path.split("?", 1)[0]
        rest = self.rest
        if method == "GET" and rest.metrics_path and path == rest.metrics_path:
            return self._send(200, rest.dev.metrics.render().encode("utf-8"), "text/plain; version=0.0.4")
        m = _MODEL_PATH.match(path)
        if m is None:
            return self._json(404, {"error": f"Malformed request: {method} {path} (this server answers "
                                             f"/v1/models/NAME[:predict|/metadata]"
                                             f"{' and ' + rest.metrics_path if rest.metrics_path else ''})"})
        name, what = m.group("name"), m.group("rest") or ""
        version = int(m.group("version")) if m.group("version") else None
        if m.group("label"):
            return self._json(404, {"error": f"version labels are not supported by the development server "
                                             f"(got {m.group('label')!r})"})
        if what in (":classify", ":regress"):
            return self._json(501, {"error": f"{what[1:]} is not implemented by the development server"})
        if (what == ":predict") != (method == "POST"):
            return self._json(405, {"error": f"{method} is not allowed on {path}"})
        if what == ":predict":
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY_BYTES:
                return self._json(400, {"error": f"a predict request needs a JSON body of 1..{MAX_BODY_BYTES} "
                                                 f"bytes (Content-Length {self.headers.get('Content-Length')})"})
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError as exc:
                return self._json(400, {"error": f"the request body is not JSON: {exc}"})
            call, api = (lambda _: rest.predict(name, version, body)), "predict"
        elif what == "/metadata":
            call, api = (lambda _: rest.metadata(name, version)), "get_model_metadata"
        else:
            call, api = (lambda _: rest.status(name, version)), "get_model_status"
        try:
            result = run_request(call, None, rest.dev.metrics, api, "REST")
        except RequestError as err:
            return self._json(int(_HTTP_OF.get(err.code, HTTPStatus.INTERNAL_SERVER_ERROR)), {"error": err.message})
        return self._json(200, result)

    def do_GET(self):  # noqa: N802
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")
