"""`lems serve`: a development gRPC server speaking TF Serving's PredictionService (Predict, GetModelMetadata),
ModelService.GetModelStatus and the gRPC health protocol, with TF Serving's REST API and Prometheus metrics on
request (`serving/rest.py`, `serving/metrics.py`).

FOR DEVELOPMENT AND TESTS ONLY. Production serves the same pushed SavedModel, unchanged, with the official
`tensorflow_model_server` (image `tensorflow/serving`, see serving/README.md); this server exists because that
binary cannot be installed on the development machines. It reproduces what the LEM client relies on:

  * model directory: `<model_base_path>/<version>/saved_model.pb` (TF Serving / Pusher layout); the highest
    version is served, and the directory is polled every `poll_seconds` for a newer one, which a background
    thread loads and warms up next to the old one, then swaps in (requests never see a half-loaded or cold
    model, and are answered by the old version meanwhile). The old version's session is closed when its
    last in-flight request is done (memory released). A version that fails to load is logged and retried
    with a backoff (a Pusher may still be copying it) while the previous one serves.
  * loading as `tensorflow_model_server` does: the MetaGraph tagged `serve` into a TF1-style session
    (`tf.compat.v1.saved_model.loader.load`, components.serving_check.session_model), Predict on any
    SignatureDef (`serving_default`, `serve_scenario`, `serve_tf_examples`) by its tensor names, with
    `output_filter`; GetModelMetadata with `metadata_field: "signature_def"`, from the same SignatureDefs;
  * warm-up: the version's `assets.extra/tf_serving_warmup_requests` (written by the Trainer's export,
    components.trainer.warmup) is replayed before it serves, as `--enable_model_warmup` does;
  * gRPC message limit `serving.tensors.MAX_MESSAGE_BYTES` (64 MiB) on receive and send; the batch limit of
    a signature is `max_batch` or the rows that fit in that limit, whichever is smaller;
  * `ModelService.GetModelStatus` as TF Serving answers it (the served version AVAILABLE, one being loaded
    LOADING, a newer one that failed to load END with its error; NOT_FOUND for another model or no version);
  * `grpc.health.v1.Health/Check` (serving/protos/health.proto): SERVING once a version is loaded;
  * on `rest_port`: TF Serving's REST API (`/v1/models/NAME`, `/v1/models/NAME/metadata`,
    `/v1/models/NAME:predict`, row and column JSON formats; serving/rest.py) and, with `metrics_path`, the
    request metrics in Prometheus' format under TF Serving's names (serving/metrics.py);
  * a version carrying the `lems push --unblessed` marker (serving/blessing.py) is served with a warning in
    the log.

Errors, never a crash (each request is checked against the signature before it runs):
  NOT_FOUND          unknown model name, a version other than the served one, unknown signature, no version
                     loaded yet;
  INVALID_ARGUMENT   missing or unexpected inputs, wrong dtype, wrong rank or fixed dimension, inconsistent
                     batch sizes, empty or too large batch (checked on the declared shapes before anything
                     is decoded or allocated), NaN/Inf in a float input, undecodable tensors,
                     unknown output in output_filter, errors the model itself raises on its inputs;
  INTERNAL           anything else (logged with its traceback; the server keeps serving).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Optional

import grpc
import numpy as np
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.tensors import (MAX_MESSAGE_BYTES, declared_shape, dtype_name, encode_tensor, from_tensor_proto,
                             grpc_options, itemsize)

log = logging.getLogger("lems.serving")

DEFAULT_MODEL_NAME = "lem"
DEFAULT_SIGNATURE = "serving_default"
MAX_RETRY_SECONDS = 60.0


class RequestError(Exception):
    """A request the server refuses: gRPC status code + message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class InputSpec:
    """One signature input: TF dtype enum and shape (None = any size)."""
    name: str
    dtype: int
    shape: Optional[tuple]   # None = unknown rank

    def describe(self) -> str:
        shape = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {dtype_name(self.dtype)} {shape}"


def _tensor_info_shape(info) -> Optional[tuple]:
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)


def _row_bytes(infos) -> int:
    """Bytes one batch row of these TensorInfos takes (fixed dims x dtype size; strings and unknown dims
    count 0)."""
    total = 0
    for info in infos:
        shape = _tensor_info_shape(info)
        if not shape or any(d is None for d in shape[1:]):
            continue
        n = 1
        for d in shape[1:]:
            n *= d
        total += n * itemsize(info.dtype)
    return total


class LoadedModel:
    """One version of the SavedModel, loaded as `tensorflow_model_server` loads it: the `serve` MetaGraph in
    its own session (components.serving_check.session_model), signatures run by SignatureDef tensor names.

    The warm-up file is replayed before the constructor returns (so before the version serves; `warmed_up`
    lists the (signature, batch) pairs replayed). In-flight requests hold a reference (`acquire`/`release`);
    `retire()` (the registry swapped a newer version in) closes the session once the last one is done, which
    releases the graph, the variables and the compiled XLA code.
    """

    def __init__(self, path: str, version: int, max_message_bytes: int = MAX_MESSAGE_BYTES):
        from tensorflow.core.protobuf import saved_model_pb2

        from components.serving_check.session_model import SessionModel

        self.path, self.version = path, int(version)
        pb = os.path.join(path, "saved_model.pb")
        with open(pb, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # protobuf warns on some corrupt files
            saved = saved_model_pb2.SavedModel.FromString(f.read())
        if not saved.meta_graphs:
            raise ValueError(f"{pb} holds no MetaGraph")
        self._session = SessionModel(path)
        self._lock = threading.Lock()
        self._refs, self._retired = 0, False
        try:
            self.signature_defs = dict(self._session.signature_defs)
            self.signatures = self.signature_defs        # name -> SignatureDef (what the server can run)
            self.inputs = {k: {name: InputSpec(name, info.dtype, _tensor_info_shape(info))
                               for name, info in sd.inputs.items()}
                           for k, sd in self.signature_defs.items()}
            self.outputs = {k: sorted(sd.outputs) for k, sd in self.signature_defs.items()}
            # most rows a request / an answer of each signature can hold within the gRPC message limit
            # (1 % + 64 kB left for the protobuf framing)
            usable = int(max_message_bytes * 0.99) - (64 << 10)
            self.message_rows = {k: usable // max(_row_bytes(sd.inputs.values()), _row_bytes(sd.outputs.values()), 1)
                                 for k, sd in self.signature_defs.items()}
            self.warmed_up: list = []
            self.warmup_requests = self._warm_up()
        except Exception:
            self._session.close()
            raise

    def run(self, signature: str, arrays: dict, outputs: list) -> dict:
        """{output: ndarray} of `signature` on the checked `arrays` (session run by tensor names)."""
        return self._session.run(signature, arrays, outputs)

    def _warm_up(self) -> int:
        """Replay `assets.extra/tf_serving_warmup_requests` (TF Serving's warm-up file) before the version
        serves; a failing warm-up request fails the load, as in TF Serving."""
        from serving.warmup import read_warmup_requests

        requests = read_warmup_requests(self.path)
        for i, request in enumerate(requests):
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature not in self.signatures:
                raise ValueError(f"warm-up request {i} names unknown signature {signature!r}")
            arrays = validate_inputs(request.inputs, self.inputs[signature], signature, max_batch=1 << 20)
            self.run(signature, arrays, self.outputs[signature])
            batch = next((len(v) for v in arrays.values() if np.ndim(v)), 1)
            self.warmed_up.append((signature, int(batch)))
        return len(requests)

    def acquire(self) -> bool:
        """Take a reference for one request; False once the version is retired (use the new one)."""
        with self._lock:
            if self._retired:
                return False
            self._refs += 1
            return True

    def release(self):
        with self._lock:
            self._refs -= 1
            done = self._retired and self._refs == 0
        if done:
            self._close()

    def retire(self):
        """No new requests; the session closes when the last in-flight one releases it (now if none)."""
        with self._lock:
            self._retired = True
            done = self._refs == 0
        if done:
            self._close()

    @property
    def closed(self) -> bool:
        return self._session.closed

    def _close(self):
        self._session.close()
        _return_freed_memory()
        log.info("released version %d (%s)", self.version, self.path)


def _return_freed_memory():
    """Hand the heap pages the closed session freed back to the OS (glibc keeps them otherwise)."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: the memory is reused by the next load instead
        pass


def list_versions(model_base_path: str) -> list:
    """Versions (ints, ascending) under `model_base_path` that hold a `saved_model.pb`."""
    try:
        names = os.listdir(model_base_path)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if n.isdigit()
                  and os.path.isfile(os.path.join(model_base_path, n, "saved_model.pb")))


class ModelRegistry:
    """The served model of one name: highest version under `model_base_path`, polled by a thread."""

    def __init__(self, model_base_path: str, model_name: str = DEFAULT_MODEL_NAME, poll_seconds: float = 2.0,
                 loader: Callable[[str, int], LoadedModel] = LoadedModel):
        self.model_base_path, self.model_name = os.path.abspath(model_base_path), model_name
        self.poll_seconds = float(poll_seconds)
        self._loader = loader
        self._current: Optional[LoadedModel] = None
        self._failures: dict = {}
        self._errors: dict = {}          # version -> message of its last failed load
        self._loading: Optional[int] = None
        self.blessing: Optional[dict] = None   # serving.blessing state of the served version
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def current(self) -> Optional[LoadedModel]:
        return self._current

    def poll_once(self) -> bool:
        """Load the highest loadable version if it is not the served one; True when a new one was swapped in.

        A version that fails to load (e.g. still being copied) is retried after a backoff (poll period x 2^k,
        at most `MAX_RETRY_SECONDS`); meanwhile the next lower version (or the served one) stays in service.
        """
        with self._poll_lock:
            current = self._current
            now = time.monotonic()
            for version in reversed(list_versions(self.model_base_path)):
                if current is not None and version == current.version:
                    return False
                attempts, retry_at = self._failures.get(version, (0, 0.0))
                if now < retry_at:
                    continue
                path = os.path.join(self.model_base_path, str(version))
                try:
                    started = time.monotonic()
                    self._loading = version
                    model = self._loader(path, version)
                except Exception as exc:  # noqa: BLE001 -- a bad version must never stop the server
                    attempts += 1
                    delay = min(self.poll_seconds * 2 ** attempts, MAX_RETRY_SECONDS)
                    self._failures[version] = (attempts, time.monotonic() + delay)
                    self._errors[version] = _error_summary(exc)
                    log.warning("model %s version %d failed to load (attempt %d; retry in %.1f s): %s",
                                self.model_name, version, attempts, delay, exc)
                    continue
                finally:
                    self._loading = None
                self._failures.pop(version, None)
                self._errors.pop(version, None)
                self.blessing = _blessing(path)
                self._current = model
                if current is not None:
                    current.retire()     # closed when its in-flight requests are done
                log.info("serving model %s version %d from %s (loaded in %.1f s, %d warm-up requests)",
                         self.model_name, version, path, time.monotonic() - started,
                         getattr(model, "warmup_requests", 0))
                if self.blessing and self.blessing["state"] != "blessed":
                    log.warning("model %s version %d is %s: %s. For development only: a blessed push (a higher "
                                "version) replaces it.", self.model_name, version, self.blessing["state"].upper(),
                                self.blessing["reason"])
                return True
            return False

    def acquire(self) -> Optional[LoadedModel]:
        """The served version with a reference taken for one request (release it after), or None."""
        while True:
            model = self._current
            if model is None:
                return None
            if not hasattr(model, "acquire") or model.acquire():
                return model
            if model is self._current:     # retired and not replaced: the registry was stopped
                return None
            # retired between the read and acquire: a newer version is current now, take that one

    def load_failures(self, version: int) -> int:
        """How many times `version` failed to load since it last loaded."""
        return self._failures.get(version, (0, 0.0))[0]

    def version_states(self) -> list:
        """[(version, state, error message or "")] as TF Serving's GetModelStatus reports them: the served
        version AVAILABLE; a version being loaded LOADING; a version above the served one whose load failed
        END with the error. Ascending by version; empty when the base path holds no version."""
        current, loading = self._current, self._loading
        out = {}
        if current is not None:
            out[current.version] = ("AVAILABLE", "")
        if loading is not None and loading not in out:
            out[loading] = ("LOADING", "")
        on_disk = set(list_versions(self.model_base_path))
        for version, message in list(self._errors.items()):
            if version in on_disk and version not in out and (current is None or version > current.version):
                out[version] = ("END", message)
        return [(v, *out[v]) for v in sorted(out)]

    def _run(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001
                log.exception("polling %s failed", self.model_base_path)

    def start(self):
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"poll-{self.model_name}", daemon=True)
            self._thread.start()

    def stop(self, release: bool = True):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_seconds + 120)   # a load in progress finishes first
            self._thread = None
        if release and self._current is not None and hasattr(self._current, "retire"):
            self._current.retire()


def _blessing(path: str) -> Optional[dict]:
    """`serving.blessing.blessing_of(path)`, None when the marker cannot be read (logged)."""
    from serving.blessing import blessing_of
    try:
        return blessing_of(path)
    except (OSError, ValueError) as exc:
        log.warning("cannot read the blessing marker of %s: %s", path, exc)
        return None


def _signature_and_model(registry: ModelRegistry, model_spec, default_signature: Optional[str], model):
    """Check the request's model spec against `model` (the version acquired for it) -> (model, signature)."""
    if model_spec.name != registry.model_name:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: model "
                           f"{model_spec.name!r} (this server serves {registry.model_name!r})")
    if model is None:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {registry.model_name!r} has no version loaded yet "
                           f"(none found under {registry.model_base_path})")
    if model_spec.HasField("version") and model_spec.version.value != model.version:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: model "
                           f"{registry.model_name!r} version {model_spec.version.value} (serving version "
                           f"{model.version})")
    if model_spec.version_label:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"version labels are not supported by the development "
                           f"server (got {model_spec.version_label!r}); serving version {model.version}")
    if default_signature is None:
        return model, None
    signature = model_spec.signature_name or default_signature
    if signature not in model.signatures:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"Serving signature key {signature!r} not found; model "
                           f"{registry.model_name!r} version {model.version} has {sorted(model.signatures)}")
    return model, signature


def _error_summary(exc: Exception) -> str:
    """One line a client can act on from a TensorFlow error: the failed assertion when there is one (graph
    errors start with "Graph execution error:" and a stack), else the first line of the message."""
    message = (getattr(exc, "message", None) or str(exc)).strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("assertion failed:"):
            return line
    return lines[0] if lines else type(exc).__name__


def validate_inputs(request_inputs, specs: dict, signature: str, max_batch: int,
                    max_bytes: int = MAX_MESSAGE_BYTES) -> dict:
    """Check the request's named tensors against a signature's inputs and decode them -> {name: ndarray}.

    Everything that bounds the size (dtype, declared shape, fixed dimensions, batch size 1..max_batch, decoded
    bytes <= max_bytes) is checked on the declared shapes BEFORE any tensor is decoded, so a small request
    declaring a huge tensor (e.g. batch 10^6 in the one-value fill encoding) is refused without allocating."""
    expected = ", ".join(s.describe() for s in specs.values())
    missing = sorted(set(specs) - set(request_inputs))
    if missing:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"missing input(s) {missing} for signature "
                           f"{signature!r}; expected {expected}")
    extra = sorted(set(request_inputs) - set(specs))
    if extra:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected input(s) {extra} for signature "
                           f"{signature!r}; expected {expected}")
    batch = None
    for name, spec in specs.items():
        proto = request_inputs[name]
        if proto.dtype != spec.dtype:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r} has dtype "
                               f"{dtype_name(proto.dtype)}; signature {signature!r} expects {spec.describe()}")
        try:
            shape = declared_shape(proto)
        except ValueError as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r} cannot be decoded: {exc}") from None
        if spec.shape is not None:
            if len(shape) != len(spec.shape) or any(d is not None and d != a for d, a in zip(spec.shape, shape)):
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r} has shape {list(shape)}; "
                                   f"signature {signature!r} expects {spec.describe()}")
            if spec.shape and spec.shape[0] is None:
                if not 1 <= shape[0] <= max_batch:
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"batch size {shape[0]} (input {name!r}) "
                                       f"out of range 1..{max_batch} for signature {signature!r}")
                if batch is None:
                    batch = (name, shape[0])
                elif shape[0] != batch[1]:
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"inputs disagree on the batch size: "
                                       f"{batch[0]!r} has {batch[1]}, {name!r} has {shape[0]}")
    arrays = {}
    for name, spec in specs.items():
        try:
            arr = from_tensor_proto(request_inputs[name], max_bytes=max_bytes)
        except ValueError as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r} cannot be decoded: {exc}") from None
        if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r} holds {len(bad)} NaN/Inf "
                               f"value(s), first at index {tuple(int(i) for i in bad[0])}")
        arrays[name] = arr
    return arrays


def run_request(method, request, metrics=None, api: str = "predict", entrypoint: str = "GRPC"):
    """`method(request)` with its outcome counted in `metrics` (serving.metrics.ServerMetrics): returns the
    response or raises RequestError (anything unexpected becomes INTERNAL, logged with its traceback)."""
    started, status = time.monotonic(), "OK"
    try:
        return method(request)
    except RequestError as err:
        status = err.code.name
        raise
    except Exception as exc:  # noqa: BLE001 -- never let a request take the server down
        log.exception("request failed")
        status = "INTERNAL"
        raise RequestError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}") from None
    finally:
        if metrics is not None:
            metrics.observe(api, entrypoint, status, time.monotonic() - started)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionService over a ModelRegistry (Predict, GetModelMetadata; the others answer
    UNIMPLEMENTED)."""

    def __init__(self, registry: ModelRegistry, max_batch: int = 4096, metrics=None):
        self.registry, self.max_batch, self.metrics = registry, int(max_batch), metrics

    def max_batch_for(self, model, signature: str) -> int:
        """`max_batch`, capped to the rows a request and its answer can hold within the message limit."""
        return min(self.max_batch, getattr(model, "message_rows", {}).get(signature, self.max_batch))

    def _guard(self, method, request, context, api: str = "predict"):
        try:
            return run_request(method, request, self.metrics, api, "GRPC")
        except RequestError as err:
            context.abort(err.code, err.message)

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        return self._guard(self._predict, request, context, "predict")

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._guard(self._metadata, request, context, "get_model_metadata")

    def _predict(self, request):
        from tensorflow_serving.apis import predict_pb2

        model = self.registry.acquire()
        try:
            return self._predict_with(model, request, predict_pb2.PredictResponse())
        finally:
            if model is not None and hasattr(model, "release"):
                model.release()

    def _predict_with(self, model, request, response):
        import tensorflow as tf

        model, signature = _signature_and_model(self.registry, request.model_spec, DEFAULT_SIGNATURE, model)
        arrays = validate_inputs(request.inputs, model.inputs[signature], signature,
                                 self.max_batch_for(model, signature))
        wanted = list(request.output_filter) or model.outputs[signature]
        unknown = sorted(set(wanted) - set(model.outputs[signature]))
        if unknown:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter names unknown output(s) {unknown}; "
                               f"signature {signature!r} has {model.outputs[signature]}")
        try:
            outputs = model.run(signature, arrays, wanted)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"the model rejected the inputs: {_error_summary(exc)}") from None
        response.model_spec.name = self.registry.model_name
        response.model_spec.version.value = model.version
        response.model_spec.signature_name = signature
        for name in wanted:
            encode_tensor(np.asarray(outputs[name]), response.outputs[name])   # TF Serving's TensorProto, in place
        return response

    def _metadata(self, request):
        from tensorflow_serving.apis import get_model_metadata_pb2

        fields = list(request.metadata_field)
        if not fields:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = sorted(set(fields) - {"signature_def"})
        if unsupported:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"metadata field(s) {unsupported} not supported; "
                               "only 'signature_def'")
        model, _ = _signature_and_model(self.registry, request.model_spec, None, self.registry.current)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.registry.model_name
        response.model_spec.version.value = model.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sd in model.signature_defs.items():
            sig_map.signature_def[name].CopyFrom(sd)
        response.metadata["signature_def"].Pack(sig_map)
        return response


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's ModelService.GetModelStatus over a ModelRegistry (HandleReloadConfigRequest answers
    UNIMPLEMENTED: the development server serves one model from its base path)."""

    def __init__(self, registry: ModelRegistry, metrics=None):
        self.registry, self.metrics = registry, metrics

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            return run_request(self.status, request, self.metrics, "get_model_status", "GRPC")
        except RequestError as err:
            context.abort(err.code, err.message)

    def status(self, request):
        """GetModelStatusResponse for `request` (TF Serving's answers: the versions' states, NOT_FOUND for an
        unknown model, a version it does not know, or a model with no version yet)."""
        from tensorflow_serving.apis import get_model_status_pb2
        spec = request.model_spec
        if spec.name != self.registry.model_name:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name!r} "
                                                          f"(this server serves {self.registry.model_name!r})")
        if spec.version_label:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"version labels are not supported by the development "
                                                          f"server (got {spec.version_label!r})")
        states = self.registry.version_states()
        if spec.HasField("version"):
            states = [s for s in states if s[0] == spec.version.value]
            if not states:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {spec.version.value} of "
                                                              f"model {self.registry.model_name!r}")
        if not states:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model "
                                                          f"{self.registry.model_name!r} (none under "
                                                          f"{self.registry.model_base_path})")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, message in states:
            status = response.model_version_status.add(version=version)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            if message:
                status.status.error_code = 2      # tensorflow.error.UNKNOWN: the load failed
                status.status.error_message = message
        return response


#: The services `Check` answers for besides "" (the whole server).
HEALTH_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def health_handler(registry: ModelRegistry):
    """A gRPC handler of `grpc.health.v1.Health/Check` (serving.protos.health): SERVING once a version is
    loaded, NOT_SERVING before; NOT_FOUND for a service this server does not implement."""
    from serving.protos import health

    def check(request, context):
        if request.service and request.service not in HEALTH_SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}; this server "
                                                     f"implements {list(HEALTH_SERVICES)}")
        status = health.SERVING if registry.current is not None else health.NOT_SERVING
        return health.HealthCheckResponse(status=status)

    return grpc.method_handlers_generic_handler(health.SERVICE_NAME, {
        "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=health.HealthCheckRequest.FromString,
                                                     response_serializer=health.HealthCheckResponse.SerializeToString)})


class DevServer:
    """The development server: a ModelRegistry (polling) + a gRPC server on `host:port` (port 0 = any free).

        with DevServer("runs/serving/lem", port=0) as server:
            client = LemClient(server.address)
    """

    def __init__(self, model_base_path: str, model_name: str = DEFAULT_MODEL_NAME, *, host: str = "127.0.0.1",
                 port: int = 8500, poll_seconds: float = 2.0, max_workers: int = 8, max_batch: int = 4096,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, rest_port: Optional[int] = None,
                 metrics_path: Optional[str] = None):
        from serving.metrics import ServerMetrics
        self.max_message_bytes = int(max_message_bytes)
        self.registry = ModelRegistry(model_base_path, model_name, poll_seconds,
                                      loader=lambda path, version: LoadedModel(path, version, self.max_message_bytes))
        self.host, self.requested_port = host, int(port)
        self.max_workers, self.max_batch = int(max_workers), int(max_batch)
        if metrics_path is not None and rest_port is None:
            raise ValueError("metrics are served on the REST port: give rest_port (TF Serving's is 8501) with "
                             "metrics_path")
        if metrics_path is not None and not metrics_path.startswith("/"):
            raise ValueError(f"metrics_path must start with '/', got {metrics_path!r}")
        self.requested_rest_port, self.metrics_path = rest_port, metrics_path
        self.metrics = ServerMetrics(model_name, lambda: getattr(self.registry.current, "version", None))
        self.port: Optional[int] = None
        self.rest_port: Optional[int] = None
        self._server = None
        self._rest = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def rest_address(self) -> Optional[str]:
        return None if self.rest_port is None else f"{self.host}:{self.rest_port}"

    def start(self) -> "DevServer":
        self.registry.poll_once()
        if self.registry.current is None:
            log.warning("no loadable version under %s yet; polling every %.1f s", self.registry.model_base_path,
                        self.registry.poll_seconds)
        self.registry.start()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.max_workers),
                             options=grpc_options(self.max_message_bytes))
        self.servicer = PredictionServicer(self.registry, self.max_batch, self.metrics)
        self.status_servicer = ModelStatusServicer(self.registry, self.metrics)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self.servicer, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(self.status_servicer, server)
        server.add_generic_rpc_handlers((health_handler(self.registry),))
        self.port = server.add_insecure_port(f"{self.host}:{self.requested_port}")
        if not self.port:
            self.registry.stop()
            raise OSError(f"cannot bind {self.host}:{self.requested_port}")
        server.start()
        self._server = server
        log.info("PredictionService, ModelService and grpc.health.v1.Health for model %r on %s (development "
                 "server)", self.registry.model_name, self.address)
        if self.requested_rest_port is not None:
            from serving.rest import RestServer
            try:
                self._rest = RestServer(self, self.host, self.requested_rest_port, metrics_path=self.metrics_path)
            except OSError:
                self.stop()
                raise
            self.rest_port = self._rest.port
            log.info("REST API for model %r on http://%s (/v1/models/%s, /v1/models/%s:predict%s)",
                     self.registry.model_name, self.rest_address, self.registry.model_name, self.registry.model_name,
                     f", metrics at {self.metrics_path}" if self.metrics_path else "")
        return self

    def stop(self, grace: float = 1.0):
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        self.registry.stop()

    def wait(self):
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
