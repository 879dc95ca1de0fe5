"""The pre-push serving check (components.serving_check) on a tiny LEM exported with the Trainer's exporter:
the warm-up file the export writes, the session-based (TF Serving) load, a good model blessed, corrupted
ones (tampered SignatureDef output, truncated variables, no warm-up file) blocked, and the stock Pusher
refusing to push what the ServingCheck component did not bless."""
import os
import shutil

import numpy as np
import pytest

import serving_testutils as U
from components.serving_check.check import check_serving_model
from components.serving_check.session_model import SessionModel
from components.trainer.warmup import SIGNATURES, WARMUP_FILE, read_warmup_requests, warmup_batch_sizes


#: The exported model's XLA path covers batches 1..2 only (2 compilations per signature and load instead of 4;
#: the mechanism is the same for any `xla_max_batch`).
XLA_MAX = 2


@pytest.fixture(scope="module")
def bars():
    return U.make_bars(600)


@pytest.fixture(scope="module")
def good_model(tmp_path_factory, bars):
    """<tmp>/model/Format-Serving: the Trainer artifact's layout (what the Pusher copies)."""
    root = tmp_path_factory.mktemp("check") / "model"
    path = str(root / "Format-Serving")
    from components.trainer.export import export_serving_model
    export_serving_model(U.train_tiny_lem(bars, epochs=1, xla_max_batch=XLA_MAX), U.FeatureTransformStandIn(**U.SIZES),
                         path, **U.SIZES)
    return path


@pytest.fixture(scope="module")
def examples(bars):
    """A few real windows of the bars as the ExampleGen serializes them."""
    from components.example_gen.serialize import to_tf_example
    from components.market_data.windows import cut_windows_batch
    win = cut_windows_batch(bars["volume"], bars["quote_volume"], bars["timestamp"], asset="BTCUSDT",
                            frequency_minutes=U.FREQ, stride=97, **U.SIZES)
    return [to_tf_example({k: win[k][i] for k in win}) for i in range(3)]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_export_writes_warmup_for_every_signature_at_every_xla_batch_size(good_model):
    requests = read_warmup_requests(good_model)
    covered = {(r.model_spec.signature_name, int(next(iter(r.inputs.values())).tensor_shape.dim[0].size))
               for r in requests}
    sizes = warmup_batch_sizes(XLA_MAX)
    assert sizes == (1, 2, 4)  # the padded sizes, then one batch on the plain path
    assert covered == {(s, b) for s in SIGNATURES for b in sizes}
    assert os.path.isfile(os.path.join(good_model, WARMUP_FILE))


def test_session_loader_runs_signatures_by_tensor_name(good_model):
    """The export's variables are initialized by the restore op (Keras 3's duplicated variables would leave
    the ones the functions read uninitialized: "Could not find variable")."""
    from components.trainer.warmup import signature_inputs
    T, N = U.WINDOW, U.SIZES["n_ahead"]
    with SessionModel(good_model) as model:
        assert {"serving_default", "serve_scenario", "serve_tf_examples"} <= set(model.signature_defs)
        out = model.run("serving_default", signature_inputs("serving_default", T, N, U.FREQ, batch=2))
        assert out["allocations"].shape == (2, N, N + 1, 4, 2) and np.all(np.isfinite(out["allocations"]))
    assert model.closed


def test_good_model_passes(good_model, examples):
    result = check_serving_model(good_model, examples)
    assert result.passed, result.failures
    assert result.details["warmup_requests"] == len(SIGNATURES) * len(warmup_batch_sizes(XLA_MAX))
    # serve_tf_examples once, the two bar signatures on all examples and on the first one alone
    assert result.details["comparisons"] == 1 + 2 * 2


def test_tampered_signature_output_is_blocked(good_model, examples, tmp_path):
    """serving_default's SignatureDef output points at another tensor: the Python path (object graph) still
    works, TF Serving's tensor-name path does not -- exactly what only this check sees."""
    from tensorflow.core.protobuf import saved_model_pb2
    path = _copy(good_model, tmp_path / "tampered")
    pb = os.path.join(path, "saved_model.pb")
    saved = saved_model_pb2.SavedModel.FromString(open(pb, "rb").read())
    sigs = saved.meta_graphs[0].signature_def
    sigs["serving_default"].outputs["allocations"].name = sigs["serve_tf_examples"].outputs["allocations"].name
    with open(pb, "wb") as f:
        f.write(saved.SerializeToString())
    result = check_serving_model(path, examples)
    assert not result.passed
    assert any("serving_default" in f for f in result.failures), result.failures
    assert not any("serve_scenario" in f for f in result.failures), result.failures


def test_truncated_variables_are_blocked(good_model, examples, tmp_path):
    path = _copy(good_model, tmp_path / "truncated")
    data = [f for f in os.listdir(os.path.join(path, "variables")) if f.startswith("variables.data")][0]
    full = os.path.join(path, "variables", data)
    size = os.path.getsize(full)
    with open(full, "r+b") as f:
        f.truncate(size // 2)
    result = check_serving_model(path, examples)
    assert not result.passed
    assert any("session-based SavedModel loader" in f for f in result.failures), result.failures


def test_missing_warmup_is_blocked(good_model, examples, tmp_path):
    path = _copy(good_model, tmp_path / "cold")
    os.remove(os.path.join(path, WARMUP_FILE))
    result = check_serving_model(path, examples)
    assert [f for f in result.failures if "warm-up" in f] and len(result.failures) == 1, result.failures


def _pipeline_push(tmp_path, model_artifact_dir, examples):
    """Importer(model), Importer(examples) -> ServingCheck -> stock Pusher, run by the local runner; returns
    (pushed version dirs, the check's blessing uri)."""
    import json

    from tfx import v1 as tfx

    from components.serving_check.component import ServingCheck
    ex_dir = tmp_path / "examples"
    (ex_dir / "Split-test").mkdir(parents=True)
    import tensorflow as tf
    with tf.io.TFRecordWriter(str(ex_dir / "Split-test" / "data.gz"), options="GZIP") as w:
        for e in examples:
            w.write(e)
    model_in = tfx.dsl.Importer(source_uri=model_artifact_dir, artifact_type=tfx.types.standard_artifacts.Model,
                                reimport=True).with_id("model_importer")
    ex_in = tfx.dsl.Importer(source_uri=str(ex_dir), artifact_type=tfx.types.standard_artifacts.Examples,
                             properties={"split_names": json.dumps(["test"])}, reimport=True).with_id("ex_importer")
    check = ServingCheck(model=model_in.outputs["result"], examples=ex_in.outputs["result"], split="test",
                         num_examples=2).with_id("ServingCheck")
    serving_dir = tmp_path / "serving"
    pusher = tfx.components.Pusher(model=model_in.outputs["result"], infra_blessing=check.outputs["blessing"],
                                   push_destination=tfx.proto.PushDestination(
                                       filesystem=tfx.proto.PushDestination.Filesystem(
                                           base_directory=str(serving_dir))))
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="serving-check-test", pipeline_root=str(tmp_path / "root"),
        components=[model_in, ex_in, check, pusher], enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "mlmd.sqlite")))
    tfx.orchestration.LocalDagRunner().run(pipeline)
    pushed = sorted(os.listdir(serving_dir)) if serving_dir.exists() else []
    blessing = [os.path.join(dp, "") for dp, _, files in os.walk(tmp_path / "root" / "ServingCheck")
                if "serving_check.json" in files]
    return pushed, blessing


def test_component_blessing_gates_the_stock_pusher(good_model, examples, tmp_path):
    good_artifact = os.path.dirname(good_model)
    pushed, blessing = _pipeline_push(tmp_path / "good", good_artifact, examples)
    assert len(pushed) == 1 and os.path.isfile(os.path.join(blessing[0], "INFRA_BLESSED"))
    assert os.path.isfile(os.path.join(tmp_path / "good" / "serving", pushed[0], WARMUP_FILE))
    bad_artifact = tmp_path / "bad_model"
    _copy(good_model, bad_artifact / "Format-Serving")
    data = [f for f in os.listdir(bad_artifact / "Format-Serving" / "variables") if f.startswith("variables.data")][0]
    with open(bad_artifact / "Format-Serving" / "variables" / data, "r+b") as f:
        f.truncate(10)
    pushed, blessing = _pipeline_push(tmp_path / "bad", str(bad_artifact), examples)
    assert pushed == [] and os.path.isfile(os.path.join(blessing[0], "INFRA_NOT_BLESSED"))
    with open(os.path.join(blessing[0], "serving_check.json")) as f:
        assert "session-based SavedModel loader" in f.read()
