"""`lems serve` (DevServer in-process, loopback) through pushes: a version is warmed up from the export's own
warm-up file before it serves, a hot swap under 8 client threads fails no request and releases the old
version's session, a request declaring a huge tensor is refused before anything is decoded, and the largest
batch fits the gRPC message limits of both ends."""
import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

import serving_testutils as U
from components.trainer.warmup import SIGNATURES, warmup_batch_sizes
from serving.client import LemClient
from serving.server import DevServer, InputSpec, RequestError, validate_inputs

W, L, N = U.SIZES["norm_window"], U.SIZES["lookback"], U.SIZES["n_ahead"]
T = W + L + N
POLL = 0.2


@pytest.fixture(scope="module")
def bars():
    return U.make_bars(600)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, bars):
    """Two exported versions aside (v1 trained, v2 another init), not yet under a served directory."""
    import keras
    from lem_model.features import NUM_BAR_FEATURES
    from lem_model.model import build_lem
    aside = tmp_path_factory.mktemp("aside")
    v1 = U.export_version(U.train_tiny_lem(bars, epochs=1), str(aside / "a"), 1)
    keras.utils.set_random_seed(11)
    v2 = U.export_version(build_lem(num_features=NUM_BAR_FEATURES, lookback=L, n_ahead=N, **U.HYPER),
                          str(aside / "b"), 2)
    return v1, v2


@pytest.fixture(scope="module")
def served(tmp_path_factory, versions):
    base = str(tmp_path_factory.mktemp("served") / "lem")
    shutil.copytree(versions[0], os.path.join(base, "1"))
    srv = DevServer(base, "lem", port=0, poll_seconds=POLL).start()
    yield srv, base
    srv.stop()


def _inputs(bars, origin, batch=1):
    sl = slice(origin - W - L, origin - W - L + T)
    return {"volume": np.tile(bars["volume"][sl].astype(np.float32), (batch, 1)),
            "quote_volume": np.tile(bars["quote_volume"][sl].astype(np.float32), (batch, 1)),
            "timestamp": np.tile(bars["timestamp"][sl].astype(np.int64), (batch, 1)),
            "frequency_minutes": np.full(batch, U.FREQ, np.int64),
            "min_rate": np.full(batch, 1 / N ** 2, np.float32), "max_rate": np.ones(batch, np.float32)}


def test_version_is_warmed_up_from_the_export_before_it_serves(served):
    """The export wrote the warm-up file; the server replayed every request of it at load (each signature at
    each batch size the XLA path compiles for) before the version took its first request."""
    srv, _ = served
    model = srv.registry.current
    assert model.version == 1
    assert model.warmup_requests == len(SIGNATURES) * len(warmup_batch_sizes())
    assert sorted(set(model.warmed_up)) == sorted((s, b) for s in SIGNATURES for b in warmup_batch_sizes())


def test_largest_batch_fits_both_ends_message_limits(served, bars):
    """4,096 windows (the default max batch): the answer of serving_default is above gRPC's default 4 MiB."""
    srv, _ = served
    batch = srv.max_batch
    answer_bytes = batch * N * (N + 1) * 4 * 2 * 4
    assert answer_bytes > 4 * 1024 * 1024
    assert srv.registry.current.message_rows["serving_default"] >= batch
    with LemClient(srv.address, "lem", timeout=120) as client:
        out, _ = client.predict_raw(_inputs(bars, 420, batch))
    assert out["allocations"].shape == (batch, N, N + 1, 4, 2)
    with LemClient(srv.address, "lem", timeout=60) as client, pytest.raises(grpc.RpcError) as err:
        client.predict_raw(_inputs(bars, 420, batch + 1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "batch size" in err.value.details()


def _declared(dtype, shape, fill):
    """A tiny TensorProto declaring `shape`, one value in the fill encoding."""
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]))
    if dtype == types_pb2.DT_FLOAT:
        proto.float_val.append(fill)
    else:
        proto.int64_val.append(int(fill))
    return proto


@pytest.mark.parametrize("shape", [(10 ** 6, T), (2 ** 40, 140), (2 ** 40, T)])
def test_oversize_declared_shape_is_refused_before_decoding(served, monkeypatch, shape):
    srv, _ = served
    specs = srv.registry.current.inputs["serving_default"]
    request = {name: _declared(spec.dtype, (shape[0],) + tuple(shape[1:len(spec.shape)]), 1.0)
               for name, spec in specs.items()}
    import serving.server as server_module

    def no_decoding(*_a, **_k):
        raise AssertionError("a tensor was decoded before the declared shape was checked")

    monkeypatch.setattr(server_module, "from_tensor_proto", no_decoding)
    with pytest.raises(RequestError) as err:
        validate_inputs(request, specs, "serving_default", max_batch=4096)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(shape[0]) in err.value.message or "shape" in err.value.message
    monkeypatch.undo()
    # the same through gRPC: a ~200-byte request, answered INVALID_ARGUMENT without allocating
    from tensorflow_serving.apis import predict_pb2
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "lem"
    for name, proto in request.items():
        req.inputs[name].CopyFrom(proto)
    assert req.ByteSize() < 1000
    with LemClient(srv.address, "lem", timeout=30) as client, pytest.raises(grpc.RpcError) as rpc:
        client._stub.Predict(req, timeout=30)
    assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_declared_bytes_limit_without_fixed_dims():
    """A signature input of unknown rank still cannot be expanded past the byte limit."""
    spec = {"x": InputSpec("x", types_pb2.DT_FLOAT, None)}
    with pytest.raises(RequestError) as err:
        validate_inputs({"x": _declared(types_pb2.DT_FLOAT, (2 ** 20, 2 ** 10), 1.0)}, spec, "s", max_batch=8,
                        max_bytes=1 << 20)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in err.value.message


def test_hot_swap_under_8_threads_fails_no_request(served, versions, bars):
    srv, base = served
    old = srv.registry.current
    inputs = _inputs(bars, 430)
    failures, answered, stop = [], [], threading.Event()

    def worker(k):
        with LemClient(srv.address, "lem", timeout=30) as client:
            while not stop.is_set():
                sig = "serve_scenario" if k % 2 else "serving_default"
                req = dict(inputs, scenario=np.array([k], np.int64)) if k % 2 else inputs
                try:
                    started = time.monotonic()
                    _, version = client.predict_raw(req, signature=sig)
                    answered.append((started, version))
                except grpc.RpcError as exc:   # noqa: PERF203
                    failures.append(f"{exc.code()}: {exc.details()}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        staged = os.path.join(os.path.dirname(base), "staging-2")
        shutil.copytree(versions[1], staged)
        os.rename(staged, os.path.join(base, "2"))       # what a Pusher's atomic move looks like
        deadline = time.monotonic() + 300
        while srv.registry.current.version != 2 and time.monotonic() < deadline:
            time.sleep(POLL)
        swapped = time.monotonic()   # requests sent after this moment must be answered by version 2
        while sum(started > swapped for started, _ in list(answered)) < 16 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == []
    assert srv.registry.current.version == 2 and {1, 2} <= {v for _, v in answered}
    # (requests already in flight at the swap may still finish on version 1, in any order)
    after = [v for started, v in answered if started > swapped]
    assert len(after) >= 16 and set(after) == {2}
    deadline = time.monotonic() + 30       # the last in-flight v1 requests finish, then its session closes
    while not old.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old.closed and not srv.registry.current.closed
