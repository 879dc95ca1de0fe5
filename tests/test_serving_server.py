"""The real client against `lems serve` (DevServer in-process, loopback) over a tiny trained LEM exported with
the Trainer's exporter: schedules, re-planning, malformed requests, serving-level causality, version pick-up,
and the two CLI commands (server as a subprocess)."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

import serving_testutils as U
from lem_model_testutils import XLA_ALLOC_TOL
from lem_model import layout
from serving.client import LemClient
from serving.scheduling import Order, build_request_window, make_schedule, scenario_indices
from serving.server import DevServer
from serving.tensors import to_tensor_proto
from serving.warmup import write_warmup_file

W, L, N = U.SIZES["norm_window"], U.SIZES["lookback"], U.SIZES["n_ahead"]
T, O = W + L + N, W + L
POLL = 0.2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bars():
    return U.make_bars(600)


@pytest.fixture(scope="module")
def model_base(tmp_path_factory, bars):
    base = str(tmp_path_factory.mktemp("serving") / "lem")
    U.export_version(U.train_tiny_lem(bars), base, 1)
    return base


@pytest.fixture(scope="module")
def server(model_base):
    srv = DevServer(model_base, "lem", port=0, poll_seconds=POLL).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with LemClient(server.address, "lem", timeout=30) as c:
        yield c


def _history(bars, end):
    return {k: v[:end] for k, v in bars.items()}


def _window(bars, origin):
    sl = slice(origin - O, origin - O + T)
    return bars["volume"][sl], bars["quote_volume"][sl], bars["timestamp"][sl]


def test_metadata_gives_the_window_sizes(client):
    info = client.metadata(refresh=True)
    assert (info.window_bars, info.n_ahead, info.version) == (T, N, 1)
    assert info.scenario_signature


def test_scenario_signature_matches_the_full_signature(client, bars):
    """`serve_scenario` returns, per order, the `serving_default` fractions at its scenario (small batches
    run XLA-compiled, larger ones plain)."""
    rng = np.random.default_rng(2)
    for batch in (1, 5, 12):
        inputs = _valid_inputs(bars, origin=420, batch=batch)
        inputs["max_rate"] = rng.uniform(0.3, 1.0, batch).astype(np.float32)
        scenario = rng.integers(0, (N + 1) * 8, batch)
        full = _predict(client, inputs).reshape(batch, N, -1)[np.arange(batch), :, scenario]
        got = _predict(client, dict(inputs, scenario=scenario.astype(np.int64)), "serve_scenario")
        assert got.shape == (batch, N)
        np.testing.assert_allclose(got, full, **XLA_ALLOC_TOL)  # other signature and batch: float32


def test_plan_through_either_signature_is_the_same(server, client, bars):
    order = Order(side="sell", target="notional", size=1e5, benchmark="vwap", min_duration=2, max_duration=N - 1,
                  max_rate=0.7, frequency_minutes=U.FREQ)
    with LemClient(server.address, "lem", timeout=30, use_scenario_signature=False) as full_client:
        full = full_client.plan(order, _history(bars, 440))
    fast = client.plan(order, _history(bars, 440))
    np.testing.assert_allclose(fast.fractions, full.fractions, **XLA_ALLOC_TOL)
    np.testing.assert_allclose(fast.quantities, full.quantities, rtol=1e-4, atol=1e-2)
    assert fast.scenario == full.scenario and fast.completion_step == full.completion_step


@pytest.mark.parametrize("side,benchmark,target,t_min,t_max", [
    ("buy", "vwap", "volume", 1, N), ("sell", "twap", "notional", 3, N), ("sell", "vwap", "volume", N, N),
    ("buy", "twap", "notional", 2, 4)])
def test_schedule_is_the_chosen_scenario_sized_to_the_order(client, bars, side, benchmark, target, t_min, t_max):
    order = Order(side=side, target=target, size=2500.0, benchmark=benchmark, min_duration=t_min,
                  max_duration=t_max, max_rate=1.0, min_rate=0.0, frequency_minutes=U.FREQ)
    plan = client.plan(order, _history(bars, 400))
    window = build_request_window(_history(bars, 400), order, window_bars=T, n_ahead=N)
    alloc, version = client.predict_allocations(window.volume[None], window.quote_volume[None],
                                                window.timestamp[None], [U.FREQ], [0.0], [1.0])
    m, p, t = scenario_indices(order, N)
    assert (m == N) == (t_min == t_max == N)
    np.testing.assert_allclose(plan.fractions, alloc[0, :, m, p, t], **XLA_ALLOC_TOL)
    assert plan.units == ("shares" if target == "volume" else "notional") and plan.model_version == version == 1
    assert len(plan.quantities) == t_max and np.all(plan.quantities >= 0)
    np.testing.assert_allclose(plan.quantities.sum(), 2500.0, rtol=1e-9)
    if t_max == N:   # nothing to fold: the schedule is the scenario's fractions times the size
        np.testing.assert_allclose(plan.quantities, 2500.0 * plan.fractions, rtol=1e-4, atol=1e-3)
    assert plan.completion_step <= t_max - 1
    assert plan.origin_time == bars["timestamp"][400]


def test_replanning_after_partial_fills_never_retrades_and_finishes_by_t_max(client, bars):
    rng = np.random.default_rng(0)
    t_max = N - 1
    # under-fills may leave more than max_rate x the bars left: the desk trades it anyway (allow_infeasible)
    order = Order(side="buy", target="volume", size=10_000.0, benchmark="vwap", min_duration=2,
                  max_duration=t_max, max_rate=0.6, frequency_minutes=U.FREQ, allow_infeasible=True)
    plan = client.plan(order, _history(bars, 450))
    order = dataclasses.replace(order, start_time=plan.origin_time)
    executed = 0.0
    for j in range(t_max):
        plan = client.plan(order, _history(bars, 450 + j), executed=executed)
        assert plan.elapsed == j and list(plan.steps) == list(range(j, t_max))
        assert np.all(plan.quantities >= 0)
        np.testing.assert_allclose(plan.quantities.sum(), max(10_000.0 - executed, 0.0), rtol=1e-9, atol=1e-6)
        fill = plan.quantities[0] if j == t_max - 1 else plan.quantities[0] * rng.uniform(0.3, 1.0)
        executed += fill
    np.testing.assert_allclose(executed, 10_000.0, rtol=1e-9)
    # an over-filled order is an error, not a schedule; an exactly filled one re-plans to nothing
    with pytest.raises(ValueError, match="over-fill"):
        client.plan(order, _history(bars, 452), executed=10_500.0)
    done = client.plan(order, _history(bars, 452), executed=10_000.0)
    assert np.all(done.quantities == 0) and done.completion_step is None and done.remaining == 0


def test_replanning_with_exact_fills_and_bars_as_expected_keeps_the_plan(client, bars):
    """Consistency: when the realized bar is the placeholder the client assumed and the fill is the planned
    quantity, the re-plan is the rest of the previous plan."""
    order = Order(side="sell", target="notional", size=1e6, benchmark="twap", min_duration=3,
                  frequency_minutes=U.FREQ)
    hist = _history(bars, 420)
    first = client.plan(order, hist)
    expected = {"volume": np.append(hist["volume"], hist["volume"][-1]),
                "quote_volume": np.append(hist["quote_volume"], hist["quote_volume"][-1]),
                "timestamp": np.append(hist["timestamp"], hist["timestamp"][-1] + 60 * U.FREQ)}
    again = client.plan(dataclasses.replace(order, start_time=first.origin_time), expected,
                        executed=first.quantities[0])
    np.testing.assert_allclose(again.quantities, first.quantities[1:], rtol=1e-5, atol=1e-3)


def _predict(client, inputs, signature="serving_default"):
    return client.predict_raw(inputs, signature=signature)[0]["allocations"]


def _valid_inputs(bars, origin=400, batch=1):
    vol, qv, ts = _window(bars, origin)
    return {"volume": np.tile(vol.astype(np.float32), (batch, 1)),
            "quote_volume": np.tile(qv.astype(np.float32), (batch, 1)),
            "timestamp": np.tile(ts.astype(np.int64), (batch, 1)),
            "frequency_minutes": np.full(batch, U.FREQ, np.int64),
            "min_rate": np.full(batch, 1 / N ** 2, np.float32), "max_rate": np.ones(batch, np.float32)}


def _bad_requests(bars):
    good = _valid_inputs(bars)
    nan = dict(good, volume=good["volume"].copy())
    nan["volume"][0, 5] = np.nan
    inf_rate = dict(good, min_rate=np.array([np.inf], np.float32))
    missing = {k: v for k, v in good.items() if k != "max_rate"}
    broken = to_tensor_proto(good["volume"])
    broken.tensor_content = broken.tensor_content[:-4]
    return {
        "wrong_dtype": (dict(good, volume=good["volume"].astype(np.float64)), {}, grpc.StatusCode.INVALID_ARGUMENT),
        "wrong_length": (dict(good, volume=good["volume"][:, 1:]), {}, grpc.StatusCode.INVALID_ARGUMENT),
        "wrong_rank": (dict(good, frequency_minutes=good["frequency_minutes"][:, None]), {},
                       grpc.StatusCode.INVALID_ARGUMENT),
        "batch_mismatch": (dict(good, min_rate=np.ones(2, np.float32)), {}, grpc.StatusCode.INVALID_ARGUMENT),
        "nan": (nan, {}, grpc.StatusCode.INVALID_ARGUMENT),
        "inf_rate": (inf_rate, {}, grpc.StatusCode.INVALID_ARGUMENT),
        "missing_input": (missing, {}, grpc.StatusCode.INVALID_ARGUMENT),
        "unexpected_input": (dict(good, asset=np.array([b"BTCUSDT"], object)), {}, grpc.StatusCode.INVALID_ARGUMENT),
        "truncated_tensor": (dict(good, volume=broken), {}, grpc.StatusCode.INVALID_ARGUMENT),
        "empty_batch": ({k: v[:0] for k, v in good.items()}, {}, grpc.StatusCode.INVALID_ARGUMENT),
        "unknown_signature": (good, dict(signature="serve_bogus"), grpc.StatusCode.NOT_FOUND),
        "unknown_model": (good, dict(model_name="other"), grpc.StatusCode.NOT_FOUND),
        "unknown_version": (good, dict(version=99), grpc.StatusCode.NOT_FOUND),
        "garbage_examples": ({"examples": np.array([b"not a tf.Example"], object)},
                             dict(signature="serve_tf_examples"), grpc.StatusCode.INVALID_ARGUMENT),
        "scenario_out_of_range": (dict(good, scenario=np.array([(N + 1) * 8], np.int64)),
                                  dict(signature="serve_scenario"), grpc.StatusCode.INVALID_ARGUMENT),
        "scenario_negative": (dict(good, scenario=np.array([-1], np.int64)),
                              dict(signature="serve_scenario"), grpc.StatusCode.INVALID_ARGUMENT),
        "scenario_missing": (good, dict(signature="serve_scenario"), grpc.StatusCode.INVALID_ARGUMENT),
    }


@pytest.mark.parametrize("case", sorted(_bad_requests({"volume": np.ones(600), "quote_volume": np.ones(600),
                                                       "timestamp": np.arange(600)})))
def test_malformed_requests_get_a_clear_status_and_the_server_keeps_serving(server, client, bars, case):
    inputs, opts, code = _bad_requests(bars)[case]
    target = client if "model_name" not in opts else LemClient(server.address, opts["model_name"], timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        target.predict_raw(inputs, signature=opts.get("signature"), version=opts.get("version"))
    assert err.value.code() == code, err.value.details()
    assert len(err.value.details()) > 10
    if case in ("wrong_dtype", "nan", "missing_input", "unexpected_input"):
        assert "volume" in err.value.details() or "max_rate" in err.value.details() or "asset" in err.value.details()
    if case.startswith("scenario"):
        assert "scenario" in err.value.details()
    out = _predict(client, _valid_inputs(bars))                # still serving
    assert out.shape == (1, N, N + 1, 4, 2)


def test_metadata_request_without_field_is_invalid(server, client):
    from tensorflow_serving.apis import get_model_metadata_pb2
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "lem"
    with pytest.raises(grpc.RpcError) as err:
        client._stub.GetModelMetadata(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tf_examples_signature_matches_the_raw_bars_signature(client, bars):
    import tensorflow as tf
    inputs = _valid_inputs(bars, origin=430)
    feature = {
        "volume": tf.train.Feature(float_list=tf.train.FloatList(value=inputs["volume"][0])),
        "quote_volume": tf.train.Feature(float_list=tf.train.FloatList(value=inputs["quote_volume"][0])),
        "timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=inputs["timestamp"][0])),
        "frequency_minutes": tf.train.Feature(int64_list=tf.train.Int64List(value=[U.FREQ])),
        "asset": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"BTCUSDT"])),
        "origin_time": tf.train.Feature(int64_list=tf.train.Int64List(value=[inputs["timestamp"][0, O]])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    from_examples = _predict(client, {"examples": np.array([example], object)}, "serve_tf_examples")
    np.testing.assert_allclose(from_examples, _predict(client, inputs), **XLA_ALLOC_TOL)


def test_serving_level_causality(client, bars):
    """Changing any request bar at or after execution bar o+k leaves the allocations of steps <= k (and the
    client's schedule of steps < k) unchanged, for every k. One order per request, as the client sends
    them (float32 kernels may round differently with the batch layout, ~1e-4 after the model)."""
    rng = np.random.default_rng(1)
    base = _valid_inputs(bars, origin=470)
    ref = _predict(client, base)[0]
    order = Order(side="buy", target="volume", size=1000.0, benchmark="vwap", min_duration=2,
                  max_duration=N - 1, max_rate=0.5, frequency_minutes=U.FREQ).validate(N)
    window = build_request_window(_history(bars, 470), order, window_bars=T, n_ahead=N)
    ref_plan = make_schedule(ref, order, window, n_ahead=N).quantities
    changed_later = 0.0
    for k in range(N):
        req = {key: v.copy() for key, v in base.items()}
        req["volume"][0, O + k:] = rng.uniform(0, 50, T - O - k) * req["volume"][0, O + k:].max()
        req["quote_volume"][0, O + k:] = req["volume"][0, O + k:] * rng.uniform(10, 1e5, T - O - k)
        got = _predict(client, req)[0]
        np.testing.assert_allclose(got[: k + 1], ref[: k + 1], rtol=0, atol=1e-6, err_msg=f"step <= {k}")
        plan = make_schedule(got, order, window, n_ahead=N).quantities
        np.testing.assert_allclose(plan[:k], ref_plan[:k], rtol=0, atol=1e-3)
        changed_later = max(changed_later, np.abs(got[k + 1:] - ref[k + 1:]).max() if k + 1 < N else 0.0)
    assert changed_later > 1e-4       # the perturbations did reach the later steps (the test can fail)


def test_new_versions_are_picked_up_and_broken_ones_do_not_stop_serving(server, client, model_base, bars,
                                                                        tmp_path):
    import keras
    from lem_model.features import NUM_BAR_FEATURES
    from lem_model.model import build_lem
    inputs = _valid_inputs(bars)
    v1 = _predict(client, inputs)
    # broken versions appear: a corrupt saved_model.pb (3), a model whose warm-up request does not fit its
    # signature (4); both are logged and retried, version 1 keeps serving
    os.makedirs(os.path.join(model_base, "3"))
    with open(os.path.join(model_base, "3", "saved_model.pb"), "wb") as f:
        f.write(b"\x00 not a saved model")
    shutil.copytree(os.path.join(model_base, "1"), str(tmp_path / "4"))
    write_warmup_file(str(tmp_path / "4"), window_bars=T - 1, n_ahead=N)
    os.rename(str(tmp_path / "4"), os.path.join(model_base, "4"))
    deadline = time.monotonic() + 60
    while min(server.registry.load_failures(3), server.registry.load_failures(4)) < 1 and time.monotonic() < deadline:
        time.sleep(POLL)
    assert server.registry.load_failures(3) >= 1 and server.registry.load_failures(4) >= 1
    np.testing.assert_array_equal(_predict(client, inputs), v1)
    assert client.metadata(refresh=True).version == 1
    # version 2 (another model, with a valid warm-up file) is written aside and moved in
    keras.utils.set_random_seed(7)
    other = build_lem(num_features=NUM_BAR_FEATURES, lookback=L, n_ahead=N, **U.HYPER)
    from lem_model_testutils import random_output_layer
    random_output_layer(other, 7)  # a different model from version 1 (a fresh LEM is TWAP)
    staged = U.export_version(other, str(tmp_path), 2)
    write_warmup_file(staged, window_bars=T, n_ahead=N, frequencies=(15, 1440),
                      signatures=("serving_default", "serve_scenario"), batch_sizes=(1,))
    for broken in ("3", "4"):
        shutil.rmtree(os.path.join(model_base, broken))
    os.rename(staged, os.path.join(model_base, "2"))
    deadline = time.monotonic() + 120
    while client.metadata(refresh=True).version != 2 and time.monotonic() < deadline:
        time.sleep(POLL)
    assert client.metadata().version == 2
    assert server.registry.current.warmup_requests == 4
    out, version = client.predict_raw(inputs)
    assert version == 2 and np.abs(out["allocations"] - v1).max() > 1e-4
    with pytest.raises(grpc.RpcError) as err:                  # only the highest version is served
        client.predict_raw(inputs, version=1)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_cli_serve_subprocess_and_predict(model_base, bars, tmp_path, capsys):
    import pandas as pd
    from lems_cli.main import main
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "lems_cli.main", "serve", "--model-base-path", model_base,
                             "--port", "0", "--poll-seconds", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line, deadline = "", time.monotonic() + 120
        while "on 127.0.0.1:" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "on 127.0.0.1:" in line, "lems serve did not start"
        address = line.split(" on ")[1].split()[0]
        path = tmp_path / "bars.csv"
        pd.DataFrame(_history(bars, 410)).to_csv(path, index=False)
        rc = main(["predict", "--server", address, "--bars", str(path), "--frequency", str(U.FREQ), "--side", "sell",
                   "--target", "notional", "--size", "5000", "--min-duration", "2", "--max-duration", "4", "--json"])
        assert rc == 0
        plan = json.loads(capsys.readouterr().out)
        assert len(plan["schedule"]) == 4 and plan["scenario"]["path"] == layout.PATHS[2]
        np.testing.assert_allclose(sum(r["quantity"] for r in plan["schedule"]), 5000.0, rtol=1e-9)
        assert plan["origin_time"] == int(bars["timestamp"][410])
        rc = main(["predict", "--server", address, "--model-name", "nope", "--bars", str(path), "--frequency",
                   str(U.FREQ), "--side", "buy", "--size", "1"])
        assert rc == 1 and "NOT_FOUND" in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0


def test_serving_level_causality_of_the_scenario_signature(client, bars):
    """As above for `serve_scenario` (the signature `LemClient.plan` uses): changing bars >= o+k leaves the
    returned fractions of steps <= k unchanged, for every k and several scenarios."""
    rng = np.random.default_rng(4)
    scenario = np.array([0, 13, (N + 1) * 8 - 1], np.int64)
    base = _valid_inputs(bars, origin=470, batch=3)
    base["scenario"] = scenario
    ref = _predict(client, base, "serve_scenario")
    changed_later = 0.0
    for k in range(N):
        req = {key: v.copy() for key, v in base.items()}
        req["volume"][:, O + k:] = rng.uniform(0, 50, (3, T - O - k)) * req["volume"][:, O + k:].max()
        req["quote_volume"][:, O + k:] = req["volume"][:, O + k:] * rng.uniform(10, 1e5, (3, T - O - k))
        got = _predict(client, req, "serve_scenario")
        np.testing.assert_allclose(got[:, : k + 1], ref[:, : k + 1], rtol=0, atol=1e-6, err_msg=f"step <= {k}")
        changed_later = max(changed_later, np.abs(got[:, k + 1:] - ref[:, k + 1:]).max() if k + 1 < N else 0.0)
    assert changed_later > 1e-4
