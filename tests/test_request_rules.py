"""Order and bar semantics where they enter (`lem_model.request_rules`): the same rule set refuses a bad order
at the client (ValueError naming the field, nothing sent) and in the exported signatures (INVALID_ARGUMENT
from `lems serve`), over a tiny LEM exported with the Trainer's exporter (seeded init: the checks do not
depend on the weights). Over-fills are errors; infeasible rates are refused unless the order says
`allow_infeasible=True`, which the schedule then reports."""
import dataclasses
import json
import os
import shutil

import grpc
import numpy as np
import pytest

import serving_testutils as U
from lem_model import request_rules as R
from serving.client import LemClient
from serving.scheduling import Order
from serving.server import DevServer

W, L, N = U.SIZES["norm_window"], U.SIZES["lookback"], U.SIZES["n_ahead"]
T, O = W + L + N, W + L
TRAINED = (U.FREQ, 90)  # conftest.SEEDED_LEM_FREQUENCIES


@pytest.fixture(scope="module")
def bars():
    return U.make_bars(120)


@pytest.fixture(scope="module")
def model_base(tmp_path_factory, seeded_lem_export):
    """The session's seeded tiny LEM (conftest.seeded_lem_export, exported as trained on TRAINED) as version 1."""
    base = str(tmp_path_factory.mktemp("rules") / "lem")
    shutil.copytree(seeded_lem_export, os.path.join(base, "1"))
    return base


@pytest.fixture(scope="module")
def server(model_base):
    srv = DevServer(model_base, "lem", port=0, poll_seconds=5.0).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with LemClient(server.address, "lem", timeout=60, trained_frequencies=TRAINED) as c:
        yield c


def _order(**kw):
    base = dict(side="buy", target="volume", size=1000.0, benchmark="vwap", min_duration=2, max_duration=N,
                frequency_minutes=U.FREQ)
    return Order(**{**base, **kw})


def _history(bars, end=100):
    return {k: v[:end].copy() for k, v in bars.items()}


def _inputs(bars, origin=100):
    sl = slice(origin - O, origin - O + T)
    return {"volume": bars["volume"][None, sl].astype(np.float32),
            "quote_volume": bars["quote_volume"][None, sl].astype(np.float32),
            "timestamp": bars["timestamp"][None, sl].astype(np.int64),
            "frequency_minutes": np.array([U.FREQ], np.int64),
            "min_rate": np.array([1 / N ** 2], np.float32), "max_rate": np.array([1.0], np.float32)}


def _bad_bars(bars):
    """Bad cases as (client history + order, server request, field named in both errors)."""
    hist = _history(bars)
    ms = dict(hist, timestamp=hist["timestamp"] * 1000)
    neg = dict(hist, volume=hist["volume"].copy())
    neg["volume"][-3] = -1.0
    gap = dict(hist, timestamp=hist["timestamp"] + 900 * (np.arange(len(hist["timestamp"])) >= 90))
    inputs = _inputs(bars)
    srv_ms = dict(inputs, timestamp=inputs["timestamp"] * 1000)
    srv_neg = dict(inputs, volume=inputs["volume"].copy())
    srv_neg["volume"][0, O - 2] = -1.0      # (also an inconsistent bar: the first rule, volume, is named)
    srv_gap = dict(inputs, timestamp=inputs["timestamp"] + 900 * (np.arange(T) >= O - 5))
    return {
        "ms_timestamps": (ms, _order(), srv_ms, "timestamp"),
        # an order of 90-minute bars given 15-minute bars: the spacing rule
        "order_frequency_is_not_the_bars": (hist, _order(frequency_minutes=90), dict(
            inputs, frequency_minutes=np.array([90], np.int64)), "timestamp"),
        # 60-minute bars: a frequency the model was not trained on
        "untrained_frequency": ({"volume": hist["volume"], "quote_volume": hist["quote_volume"],
                                 "timestamp": hist["timestamp"][0] + 3600 * np.arange(len(hist["volume"]))},
                                _order(frequency_minutes=60),
                                dict(inputs, frequency_minutes=np.array([60], np.int64),
                                     timestamp=inputs["timestamp"][:, :1] + 3600 * np.arange(T)[None]),
                                "frequency_minutes"),
        "negative_volume": (neg, _order(), srv_neg, "volume"),
        "gap": (gap, _order(), srv_gap, "timestamp"),
    }


CASES = sorted(_bad_bars({"volume": np.ones(200), "quote_volume": np.ones(200),
                          "timestamp": 1_709_251_200 + 900 * np.arange(200)}))


def test_the_valid_order_is_served(client, bars):
    """The reference for the cases below: the same history and order give a schedule (so each refusal is
    caused by the one change of its case)."""
    plan = client.plan(_order(), _history(bars))
    assert plan.quantities.shape == (N,) and np.isclose(plan.quantities.sum(), 1000.0) and plan.infeasible == []
    out, _ = client.predict_raw(_inputs(bars))
    assert np.all(np.isfinite(out["allocations"]))


@pytest.mark.parametrize("case", CASES)
def test_bad_bars_and_orders_are_refused_by_client_and_server(server, client, bars, case):
    hist, order, request, field = _bad_bars(bars)[case]
    with pytest.raises(ValueError, match=field):
        client.plan(order, hist)
    for signature, extra in (("serving_default", {}), ("serve_scenario", {"scenario": np.zeros(1, np.int64)})):
        with pytest.raises(grpc.RpcError) as err:
            client.predict_raw(dict(request, **extra), signature=signature)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert f"{field}:" in err.value.details(), err.value.details()
    # the server refuses what the client refuses, also when the client does not know the trained frequencies
    # (the order gets a ValueError from the server's INVALID_ARGUMENT)
    if case == "untrained_frequency":
        with LemClient(server.address, "lem", timeout=60) as plain:
            with pytest.raises(ValueError, match="frequency_minutes"):
                plain.plan(order, hist)


@pytest.mark.parametrize("change,field", [
    (dict(min_rate=np.array([0.5], np.float32), max_rate=np.array([0.4], np.float32)), "min_rate"),
    (dict(min_rate=np.array([0.0], np.float32), max_rate=np.array([0.0], np.float32)), "max_rate"),
    (dict(max_rate=np.array([0.1], np.float32)), "max_rate"),      # 0.1 x 6 bars < the whole order
    (dict(min_rate=np.array([0.5], np.float32)), "min_rate"),      # 0.5 x 6 bars > the whole order
    (dict(frequency_minutes=np.array([-15], np.int64)), "frequency_minutes"),
    (dict(quote_volume=np.zeros((1, T), np.float32)), "quote_volume")])
def test_server_refuses_invalid_rates_frequency_and_inconsistent_volumes(client, bars, change, field):
    with pytest.raises(grpc.RpcError) as err:
        client.predict_raw(dict(_inputs(bars), **change))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and f"{field}:" in err.value.details()


def test_infeasible_rates_are_refused_unless_flagged_and_then_reported(client, bars):
    hist = _history(bars)
    for order in (_order(max_rate=0.1), _order(max_rate=0.0, min_rate=0.0), _order(max_duration=4, max_rate=0.2)):
        with pytest.raises(ValueError, match="max_rate: infeasible"):
            client.plan(order, hist)
    with pytest.raises(ValueError, match="min_rate: infeasible"):
        client.plan(_order(min_rate=0.3), hist)
    plan = client.plan(_order(max_rate=0.1, allow_infeasible=True), hist)
    assert len(plan.infeasible) == 1 and "max_rate" in plan.infeasible[0]
    assert plan.to_dict()["infeasible"] == plan.infeasible and plan.to_dict()["order"]["allow_infeasible"]
    np.testing.assert_allclose(plan.quantities.sum(), 1000.0, rtol=1e-9)     # still finishes by T_max
    # a re-plan after missed fills: the last bar cannot trade 60 % of the order at max_rate 0.5
    order = _order(max_rate=0.5, start_time=int(bars["timestamp"][100]))
    with pytest.raises(ValueError, match="max_rate: infeasible"):
        client.plan(order, _history(bars, 100 + N - 1), executed=400.0)
    late = client.plan(dataclasses.replace(order, allow_infeasible=True), _history(bars, 100 + N - 1),
                       executed=400.0)
    assert late.infeasible and np.isclose(late.quantities.sum(), 600.0)


def test_overfill_is_an_error_not_a_schedule(client, bars):
    order = _order(start_time=int(bars["timestamp"][100]))
    with pytest.raises(ValueError, match="executed: .* exceeds the order size"):
        client.plan(order, _history(bars, 102), executed=1000.5)
    done = client.plan(order, _history(bars, 102), executed=1000.0)     # exactly filled: nothing left
    assert np.all(done.quantities == 0) and done.completion_step is None


def test_export_records_the_trained_frequencies(model_base):
    from components.trainer.export import read_metadata
    meta = read_metadata(os.path.join(model_base, "1"))
    assert meta["trained_frequencies"] == sorted(TRAINED) and meta["session_frequencies"] == []
    json.dumps(meta)


def test_rules_numpy_units_and_session_time():
    ts = 1_709_251_200 + 86_400 * np.array([0, 1, 2, 3, 6, 7])         # 4 days, a 3-day gap, 1 day (skip rule)
    req = {"volume": np.ones((1, 6)), "quote_volume": np.ones((1, 6)), "timestamp": ts[None],
           "frequency_minutes": [1440], "min_rate": [0.0], "max_rate": [1.0]}
    with pytest.raises(ValueError, match="timestamp: bars must be exactly"):
        R.check_numpy(req, R.context(horizon=6))
    R.check_numpy(req, R.context(horizon=6, session_frequencies=[1440]))
    for scale, unit in ((1, "s"), (10**3, "ms"), (10**6, "us"), (10**9, "ns")):
        assert R.timestamp_unit(ts * scale) == unit
    with pytest.raises(ValueError, match="look like us"):
        R.check_numpy(dict(req, timestamp=ts[None] * 10**6), R.context(horizon=6))
