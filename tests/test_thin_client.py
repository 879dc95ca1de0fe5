"""The thin client (`serving.client` on `serving.protos`): no TensorFlow on import, messages wire-compatible with
TF Serving's, and a whole plan / re-plan from a fresh venv that has only grpcio, protobuf and NumPy.

The first tests compare the thin messages with TensorFlow's and TF Serving's generated ones in this process (they
import TensorFlow on purpose); the last one builds a venv without TensorFlow (cached across sessions under
pytest's temporary root), installs the project's client there with `pip install --no-deps` and plans an order
against `lems serve` (DevServer, loopback) over a tiny trained LEM.
"""
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from serving import protos
from serving.client import LemClient, model_info_from_metadata
from serving.scheduling import Order
from serving.tensors import encode_tensor, from_tensor_proto, to_tensor_proto

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "tensorflow_serving", "keras", "tfx", "tf_keras", "jax", "torch")
THIN_MESSAGES = (protos.PredictRequest, protos.PredictResponse, protos.GetModelMetadataRequest,
                 protos.GetModelMetadataResponse, protos.SignatureDefMap)


def _tf_pool():
    # imported for their side effect: TensorFlow's / TF Serving's descriptors registered in the default pool
    from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: F401
    from tensorflow.core.protobuf import meta_graph_pb2  # noqa: F401
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2  # noqa: F401
    from google.protobuf import descriptor_pool
    return descriptor_pool.Default()


def _compare_message(thin, pool, seen):
    if thin.full_name in seen:
        return
    seen.add(thin.full_name)
    ref = pool.FindMessageTypeByName(thin.full_name)
    assert ref.GetOptions().map_entry == thin.GetOptions().map_entry, thin.full_name
    for field in thin.fields:
        theirs = ref.fields_by_name.get(field.name)
        assert theirs is not None, f"{thin.full_name}.{field.name} is not in TensorFlow's message"
        assert (field.number, field.type, field.label) == (theirs.number, theirs.type, theirs.label), \
            f"{thin.full_name}.{field.name}"
        oneofs = [f.containing_oneof.name if f.containing_oneof else None for f in (field, theirs)]
        assert oneofs[0] == oneofs[1], f"{thin.full_name}.{field.name}"
        if field.message_type is not None:
            assert field.message_type.full_name == theirs.message_type.full_name
            _compare_message(field.message_type, pool, seen)
        if field.enum_type is not None:
            assert field.enum_type.full_name == theirs.enum_type.full_name


def test_thin_messages_have_tf_serving_field_numbers_types_and_labels():
    pool = _tf_pool()
    seen = set()
    for cls in THIN_MESSAGES:
        _compare_message(cls.DESCRIPTOR, pool, seen)
    assert {"tensorflow.TensorProto", "tensorflow.TensorShapeProto.Dim", "tensorflow.SignatureDef",
            "tensorflow.TensorInfo", "tensorflow.serving.ModelSpec", "google.protobuf.Int64Value"} <= seen
    tf_dtype = pool.FindEnumTypeByName("tensorflow.DataType")
    for value in protos.DataType.DESCRIPTOR.values:
        assert tf_dtype.values_by_name[value.name].number == value.number, value.name
    service = pool.FindServiceByName("tensorflow.serving.PredictionService")
    paths = {f"/{service.full_name}/{m.name}": (m.input_type.full_name, m.output_type.full_name)
             for m in service.methods}
    assert paths[protos.PREDICT_METHOD] == ("tensorflow.serving.PredictRequest", "tensorflow.serving.PredictResponse")
    assert paths[protos.GET_MODEL_METADATA_METHOD] == ("tensorflow.serving.GetModelMetadataRequest",
                                                       "tensorflow.serving.GetModelMetadataResponse")


def _sample_inputs():
    rng = np.random.default_rng(0)
    return {"volume": rng.uniform(0, 10, (2, 42)).astype(np.float32),
            "timestamp": (1_700_000_000 + 900 * np.arange(84)).reshape(2, 42).astype(np.int64),
            "frequency_minutes": np.array([15, 15], np.int64), "max_rate": np.array([0.5, 1.0], np.float32),
            "flag": np.array([True, False]), "half": np.array([1.5, -2.0], np.float16),
            "examples": np.array([b"a", "b\xe9"], object), "scalar": np.asarray(np.float64(2.5))}


def test_thin_request_serializes_byte_identically_to_tf_serving_generated_classes():
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
    inputs = _sample_inputs()
    thin = protos.PredictRequest()
    thin.model_spec.name, thin.model_spec.signature_name = "lem", "serve_scenario"
    thin.model_spec.version.value = 1_700_000_123
    thin.output_filter.append("allocations")
    ref = predict_pb2.PredictRequest()
    ref.model_spec.name, ref.model_spec.signature_name = "lem", "serve_scenario"
    ref.model_spec.version.value = 1_700_000_123
    ref.output_filter.append("allocations")
    for name, value in inputs.items():
        encode_tensor(value, thin.inputs[name])
        # what the TensorFlow-based client sent: a TensorProto built with TF's generated classes
        arr = np.asarray(value)
        proto = tensor_pb2.TensorProto(tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in arr.shape]))
        if arr.dtype == object:
            proto.dtype = tf.string.as_datatype_enum
            proto.string_val.extend(v.encode() if isinstance(v, str) else v for v in arr)
        else:
            proto.dtype = tf.as_dtype(arr.dtype).as_datatype_enum
            proto.tensor_content = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        ref.inputs[name].CopyFrom(proto)
    assert thin.SerializeToString(deterministic=True) == ref.SerializeToString(deterministic=True)
    # and TF parses what the thin client sends into the same tensors
    parsed = predict_pb2.PredictRequest.FromString(thin.SerializeToString())
    for name, value in inputs.items():
        got = tf.make_ndarray(parsed.inputs[name])
        assert got.dtype == value.dtype or value.dtype == object
        np.testing.assert_array_equal(got, value if value.dtype != object else [b"a", "b\xe9".encode()])
    thin_meta = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
    thin_meta.model_spec.name = "lem"
    ref_meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    ref_meta.model_spec.name = "lem"
    assert thin_meta.SerializeToString(deterministic=True) == ref_meta.SerializeToString(deterministic=True)


def test_thin_responses_read_what_tf_serving_sends():
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
    alloc = np.random.default_rng(1).dirichlet(np.ones(6), size=(2, 7, 4, 2)).transpose(0, 4, 1, 2, 3)
    alloc = alloc.astype(np.float32)
    response = predict_pb2.PredictResponse()
    response.model_spec.name, response.model_spec.version.value = "lem", 3
    response.outputs["allocations"].CopyFrom(tf.make_tensor_proto(alloc))
    response.outputs["fill"].CopyFrom(tf.make_tensor_proto(2.5, shape=[2, 3]))       # one-value encoding
    thin = protos.PredictResponse.FromString(response.SerializeToString())
    np.testing.assert_array_equal(from_tensor_proto(thin.outputs["allocations"]), alloc)
    np.testing.assert_array_equal(from_tensor_proto(thin.outputs["fill"]), np.full((2, 3), 2.5, np.float32))
    assert thin.model_spec.version.value == 3
    # metadata: a SignatureDefMap packed in an Any, as TF Serving answers GetModelMetadata
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, outputs in (("serving_default", [-1, 6, 7, 4, 2]), ("serve_scenario", [-1, 6])):
        sd = sig_map.signature_def[name]
        sd.method_name = "tensorflow/serving/predict"
        sd.inputs["volume"].CopyFrom(meta_graph_pb2.TensorInfo(
            name="serving_default_volume:0", dtype=tf.float32.as_datatype_enum,
            tensor_shape=tf.TensorShape([None, 42]).as_proto()))
        sd.outputs["allocations"].CopyFrom(meta_graph_pb2.TensorInfo(
            name="StatefulPartitionedCall:0", dtype=tf.float32.as_datatype_enum,
            tensor_shape=tf.TensorShape([None if d < 0 else d for d in outputs]).as_proto()))
    meta = get_model_metadata_pb2.GetModelMetadataResponse()
    meta.model_spec.name, meta.model_spec.version.value = "lem", 3
    meta.metadata["signature_def"].Pack(sig_map)
    thin_meta = protos.GetModelMetadataResponse.FromString(meta.SerializeToString())
    info = model_info_from_metadata(thin_meta)
    assert (info.version, info.window_bars, info.n_ahead, info.scenario_signature) == (3, 42, 6, True)
    assert model_info_from_metadata(meta) == info           # TF Serving's own message is read the same way
    thin_sigs = protos.unpack_signature_def_map(thin_meta)
    assert thin_sigs.signature_def["serving_default"].inputs["volume"].name == "serving_default_volume:0"
    # and the thin messages re-serialize to the same bytes (nothing lost on the fields they declare)
    assert thin_sigs.SerializeToString(deterministic=True) == sig_map.SerializeToString(deterministic=True)


def test_thin_and_tf_messages_live_side_by_side():
    """TensorFlow's descriptors in the default pool and the thin ones in the private pool do not clash, and a
    TensorFlow TensorProto is accepted where the client takes tensors."""
    import tensorflow as tf
    from google.protobuf import descriptor_pool
    assert protos.POOL is not descriptor_pool.Default()
    tf_descriptor = descriptor_pool.Default().FindMessageTypeByName("tensorflow.TensorProto")
    assert tf_descriptor is not protos.TensorProto.DESCRIPTOR
    value = np.arange(6, dtype=np.int64).reshape(2, 3)
    thin = protos.TensorProto()
    thin.ParseFromString(tf.make_tensor_proto(value).SerializeToString())
    np.testing.assert_array_equal(from_tensor_proto(thin), value)
    np.testing.assert_array_equal(from_tensor_proto(tf.make_tensor_proto(value)), value)
    assert isinstance(to_tensor_proto(value), protos.TensorProto)
    assert protos.DataType.Name(protos.DT_INT64) == "DT_INT64"


def test_proto_reader_refuses_what_it_does_not_read():
    kinds = {}
    with pytest.raises(protos.ProtoSyntaxError, match="field options"):
        protos.read_proto('syntax = "proto3"; package p; message M { repeated int32 x = 1 [packed = false]; }',
                          "bad.proto", kinds)
    with pytest.raises(protos.ProtoSyntaxError, match="unknown type 'Nope'"):
        protos.read_proto('syntax = "proto3"; package p; message M { Nope x = 1; }', "bad.proto", {})
    with pytest.raises(protos.ProtoSyntaxError, match="proto3"):
        protos.read_proto('syntax = "proto2"; package p;', "bad.proto", {})


def test_import_loads_no_tensorflow_keras_or_tfx():
    """In this venv TensorFlow is installed; importing the client must still not load it (fresh interpreter)."""
    code = ("import sys, json, time; t = time.perf_counter(); import serving.client, serving.tensors, serving.protos; "
            "dt = time.perf_counter() - t; print(json.dumps([dt, sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {HEAVY!r})]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr
    seconds, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [], f"import serving.client loaded {heavy} ({seconds:.2f} s)"


# --- a venv without TensorFlow ------------------------------------------------------------------------------------
CLIENT_PACKAGES = ("grpcio", "protobuf", "numpy")


def _pins() -> list:
    """The constraints.txt lines of the client's packages and of grpcio's own dependency."""
    with open(os.path.join(REPO, "constraints.txt"), encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    names = CLIENT_PACKAGES + ("typing-extensions",)
    return sorted(line for line in lines if re.split(r"[=<>!~ ]", line, 1)[0].lower() in names)


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _make_thin_venv(path: str) -> str:
    """Create `path` (python -m venv, no system site-packages) with the client's packages pinned as in
    constraints.txt; returns why it could not, or "" when done. pip tries its configured local sources
    first (--no-index: find-links, a wheelhouse), then the index."""
    made = _run([sys.executable, "-m", "venv", path], timeout=300)
    if made.returncode:
        return f"python -m venv failed: {made.stderr.strip()[-400:]}"
    py = os.path.join(path, "bin", "python")
    base = [py, "-m", "pip", "install", "--disable-pip-version-check", "--only-binary=:all:",
            "-c", os.path.join(REPO, "constraints.txt"), *CLIENT_PACKAGES]
    errors = []
    for extra in (["--no-index"], []):
        done = _run(base[:4] + extra + base[4:], timeout=900)
        if done.returncode == 0:
            return ""
        lines = done.stderr.strip().splitlines()
        errors.append(next((line for line in lines if "No matching distribution" in line or "Could not find" in line),
                           next((line for line in lines if line.startswith("ERROR:")), lines[-1] if lines else "?")))
    return ("pip could not install " + ", ".join(_pins()) + " into a fresh venv, neither from local sources "
            f"(--no-index: {errors[0]}) nor from the index (offline? {errors[1]})")


@pytest.fixture(scope="session")
def thin_venv(tmp_path_factory):
    """A venv with only grpcio, protobuf, NumPy (and grpcio's typing-extensions), cached across sessions under
    pytest's temporary root, keyed by the interpreter and the pins; the project's client is (re)installed
    into it from a copy of this checkout every session."""
    key = hashlib.sha256(json.dumps([sys.version, _pins()]).encode()).hexdigest()[:12]
    root = tmp_path_factory.getbasetemp().parent / "lems-thin-client-venv"
    root.mkdir(parents=True, exist_ok=True)
    venv, ready = root / key, root / f"{key}.ready"
    import fcntl
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)            # another session on this machine may be building it
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)
            why = _make_thin_venv(str(venv))
            if why:
                shutil.rmtree(venv, ignore_errors=True)
                pytest.skip(why)
            ready.write_text(json.dumps(_pins()))
        # the project as a user installs it for the client (serving/README.md): pip install --no-deps, from a
        # copy holding setup.py and the packages the client and `lems` need (pip builds in the copy, so nothing is
        # written into the checkout, which other sessions may be using)
        src = tmp_path_factory.mktemp("thin-client-src")
        for name in ("setup.py", "README.md"):
            shutil.copy(os.path.join(REPO, name), src / name)
        for package in ("lem_model", "serving", "lems_cli"):
            shutil.copytree(os.path.join(REPO, package), src / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        py = str(venv / "bin" / "python")
        done = _run([py, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--no-build-isolation",
                     "--force-reinstall", str(src)], timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return py


THIN_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys, time
    t0 = time.perf_counter(); c0 = time.process_time()
    import serving.client
    import_s, import_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    from serving.client import LemClient
    from serving.scheduling import Order
    import numpy as np
    address, bars_path = sys.argv[1], sys.argv[2]
    bars = {k: np.asarray(v) for k, v in json.load(open(bars_path)).items()}
    first_end = 430
    order = Order(side="buy", target="volume", size=10_000.0, benchmark="vwap", min_duration=2, max_duration=5,
                  max_rate=0.6, frequency_minutes=15)
    with LemClient(address, "lem", timeout=60) as client:
        info = client.metadata()
        first = client.plan(order, {k: v[:first_end] for k, v in bars.items()})
        order = dataclasses.replace(order, start_time=first.origin_time)
        filled = float(first.quantities[0]) * 0.8
        again = client.plan(order, {k: v[:first_end + 1] for k, v in bars.items()}, executed=filled)
    import google.protobuf, grpc
    print(json.dumps({"import_s": import_s, "import_cpu_s": import_cpu_s, "heavy": heavy,
                      "module": serving.client.__file__, "info": dataclasses.asdict(info),
                      "first": first.to_dict(), "again": again.to_dict(), "filled": filled,
                      "versions": [grpc.__version__, google.protobuf.__version__, np.__version__]}))
""").replace("HEAVY", repr(HEAVY))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`lems serve`'s DevServer over a tiny LEM exported by the Trainer's exporter; untrained (random output
    weights: allocations that move with the bars), since only the client is under test here."""
    import keras
    import serving_testutils as U
    from lem_model.features import NUM_BAR_FEATURES
    from lem_model.model import build_lem
    from lem_model_testutils import random_output_layer
    from serving.server import DevServer
    bars = U.make_bars(600)
    keras.utils.set_random_seed(0)
    model = build_lem(num_features=NUM_BAR_FEATURES, lookback=U.SIZES["lookback"], n_ahead=U.SIZES["n_ahead"],
                      **U.HYPER)
    random_output_layer(model, 0)
    base = str(tmp_path_factory.mktemp("thin-serving") / "lem")
    U.export_version(model, base, 1)
    srv = DevServer(base, "lem", port=0, poll_seconds=5).start()
    yield srv, bars
    srv.stop()


def test_fresh_venv_without_tensorflow_plans_and_replans(thin_venv, served, tmp_path):
    srv, bars = served
    py = thin_venv
    no_tf = _run([py, "-c", "import tensorflow"], cwd=str(tmp_path), timeout=60)
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr
    script, bars_path = tmp_path / "thin.py", tmp_path / "bars.json"
    script.write_text(THIN_SCRIPT)
    bars_path.write_text(json.dumps({k: v.tolist() for k, v in bars.items()}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = _run([py, str(script), srv.address, str(bars_path)], cwd=str(tmp_path), env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [], f"import serving.client loaded {got['heavy']}"
    assert os.path.realpath(got["module"]).startswith(os.path.realpath(os.path.dirname(os.path.dirname(py))))
    pins = {line.split("==")[0].lower(): line.split("==")[1] for line in _pins() if "==" in line}
    assert got["versions"] == [pins.get("grpcio", got["versions"][0]), pins.get("protobuf", got["versions"][1]),
                               pins.get("numpy", got["versions"][2])]
    # the same plans as this (TensorFlow) process's client gets from the same server
    order = Order(side="buy", target="volume", size=10_000.0, benchmark="vwap", min_duration=2, max_duration=5,
                  max_rate=0.6, frequency_minutes=15)
    with LemClient(srv.address, "lem", timeout=60) as client:
        first = client.plan(order, {k: v[:430] for k, v in bars.items()})
        again = client.plan(dataclasses.replace(order, start_time=first.origin_time),
                            {k: v[:431] for k, v in bars.items()}, executed=got["filled"])
    assert got["info"]["version"] == 1 and got["info"]["scenario_signature"]
    for mine, theirs in ((first.to_dict(), got["first"]), (again.to_dict(), got["again"])):
        assert [r["time"] for r in mine["schedule"]] == [r["time"] for r in theirs["schedule"]]
        np.testing.assert_allclose([r["quantity"] for r in theirs["schedule"]],
                                   [r["quantity"] for r in mine["schedule"]], rtol=1e-6)
        np.testing.assert_allclose(theirs["fractions"], mine["fractions"], rtol=1e-6)
        assert theirs["scenario"] == mine["scenario"] and theirs["completion_step"] == mine["completion_step"]
    assert got["again"]["elapsed"] == 1 and got["again"]["origin_time"] == got["first"]["origin_time"]
    np.testing.assert_allclose(sum(r["quantity"] for r in got["again"]["schedule"]), 10_000.0 - got["filled"],
                               rtol=1e-9)
    # the import's cost is a benchmark figure (benchmarks/client_import.py), not asserted here
