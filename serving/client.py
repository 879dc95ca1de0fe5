"""The LEM serving client: TF Serving's PredictionService over gRPC + order logic, without TensorFlow.

Needs only grpcio, protobuf and NumPy (the `client` extra; serving/README.md): the messages are the thin ones
of `serving.protos` (this project's own wire-compatible restatement of TF Serving's), sent through grpc's
generic `channel.unary_unary` on PredictionService's method paths, so `import serving.client` loads neither
TensorFlow nor Keras nor TFX.

Talks to `tensorflow_model_server` or to the development server (`lems serve`) alike: signature
`serving_default` with inputs `volume`, `quote_volume` float32 [B, W+L+N], `timestamp` int64 [B, W+L+N],
`frequency_minutes` int64 [B], `min_rate`, `max_rate` float32 [B]; output `allocations` [B, N, N+1, 4, 2]
(docs/example-contract.md). W+L+N and N are read from the model's metadata (signature shapes).
When the served model also has `serve_scenario` (same inputs plus `scenario` int64 [B],
`lem_model.layout.scenario_index`; output `allocations` [B, N]), `plan` uses it: it computes only the
order's scenario, the same fractions for a fraction of the cost.

    client = LemClient("localhost:8500", model_name="lem")
    order = Order(side="buy", target="volume", size=50_000, benchmark="vwap", min_duration=6,
                  max_duration=12, asset="BTCUSDT", frequency_minutes=15)
    plan = client.plan(order, bars)                         # bars: realized bars up to now (new order)
    ... after each bar closes, with the fills so far:
    plan = client.plan(dataclasses.replace(order, start_time=plan.origin_time), bars, executed=filled)

Re-planning keeps the order's origin: the request window stays the one of the original order, the realized
execution bars replace their placeholders, and `serving.scheduling.remaining_schedule` spreads what is left
(size - executed) over the bars left, finishing by `max_duration`.

Order and bar semantics are checked before anything is sent (`lem_model.request_rules` through
`serving.scheduling`: seconds, spacing at the order's frequency, volumes, over-fills, feasible rates unless
`Order.allow_infeasible`): a violation is a ValueError naming the field, never a schedule. The served
signatures check the same rules in their graph (trained frequencies included, from the model's own
export); a request they refuse (INVALID_ARGUMENT) is a ValueError from `plan` too. Pass
`trained_frequencies=` (the model's `lem_model.json`) to refuse a wrong frequency before the call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import grpc
import numpy as np

from lem_model import layout
from serving import protos
from serving.scheduling import (Order, Schedule, build_request_window, check_order_state, make_schedule,
                                model_rates, scenario_indices, schedule_from_fractions)
from serving.tensors import encode_tensor, from_tensor_proto, grpc_options

SIGNATURE = "serving_default"
SCENARIO_SIGNATURE = "serve_scenario"
OUTPUT = "allocations"


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about the served model: version, W+L+N and N (bars), and whether it
    has the one-scenario signature `serve_scenario`."""
    version: int
    window_bars: int
    n_ahead: int
    scenario_signature: bool = False


def model_info_from_metadata(response, signature: str = SIGNATURE) -> ModelInfo:
    """ModelInfo from a GetModelMetadataResponse (thin or TF Serving's; signature shapes); ValueError when they
    are not fixed."""
    sig_map = protos.unpack_signature_def_map(response)
    if signature not in sig_map.signature_def:
        raise ValueError(f"served model has no signature {signature!r} (has {sorted(sig_map.signature_def)})")
    sd = sig_map.signature_def[signature]
    try:
        window = sd.inputs["volume"].tensor_shape.dim[1].size
        n_ahead = sd.outputs[OUTPUT].tensor_shape.dim[1].size
    except (KeyError, IndexError):
        raise ValueError(f"signature {signature!r} lacks input 'volume' [B, W+L+N] or output {OUTPUT!r} "
                         "[B, N, N+1, 4, 2]") from None
    if window <= 0 or n_ahead <= 0:
        raise ValueError(f"signature {signature!r} does not fix W+L+N ({window}) or N ({n_ahead}); pass "
                         "window_bars= and n_ahead= to LemClient")
    return ModelInfo(int(response.model_spec.version.value), int(window), int(n_ahead),
                     SCENARIO_SIGNATURE in sig_map.signature_def)


class LemClient:
    """PredictionService client for a pushed LEM (one gRPC channel; thread-safe like the stub).

    target: "host:port" of the gRPC endpoint; model_name: the served name (`ServingConfig.model_name`);
    timeout: seconds per call; window_bars / n_ahead: override what the metadata says (models exported with
    unfixed shapes); use_scenario_signature: let `plan` call `serve_scenario` when the model has it;
    trained_frequencies / session_frequencies: the model's (`trained_frequencies` / `session_frequencies` of
    its `assets.extra/lem_model.json`) to check orders here as the server does (None: left to the server).
    """

    def __init__(self, target: str = "localhost:8500", model_name: str = "lem", *, signature: str = SIGNATURE,
                 timeout: float = 10.0, window_bars: Optional[int] = None, n_ahead: Optional[int] = None,
                 use_scenario_signature: bool = True, trained_frequencies=None, session_frequencies=None):
        self.target, self.model_name, self.signature, self.timeout = target, model_name, signature, float(timeout)
        self.use_scenario_signature = bool(use_scenario_signature)
        self._channel = grpc.insecure_channel(target, options=grpc_options())   # message limits of the server
        self._stub = PredictionServiceStub(self._channel)
        self._override = (window_bars, n_ahead)
        self._info: Optional[ModelInfo] = None
        self.trained_frequencies, self.session_frequencies = trained_frequencies, session_frequencies

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- raw API -------------------------------------------------------------------------------------------
    def metadata(self, refresh: bool = False) -> ModelInfo:
        """Version, W+L+N and N of the served model (cached; `refresh` asks again)."""
        if self._info is None or refresh:
            request = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.name = self.model_name
            response = self._stub.GetModelMetadata(request, timeout=self.timeout)
            window, n_ahead = self._override
            if window is not None and n_ahead is not None:
                sig_map = protos.unpack_signature_def_map(response)
                self._info = ModelInfo(int(response.model_spec.version.value), int(window), int(n_ahead),
                                       SCENARIO_SIGNATURE in sig_map.signature_def)
            else:
                self._info = model_info_from_metadata(response, self.signature)
        return self._info

    def predict_raw(self, inputs: dict, *, signature: Optional[str] = None, version: Optional[int] = None):
        """Predict with already-built named inputs -> (outputs {name: ndarray}, served version). Inputs: NumPy
        arrays (or what np.asarray takes) or TensorProtos, thin (`serving.tensors.to_tensor_proto`) or
        TensorFlow's (`tf.make_tensor_proto`, re-encoded by its bytes)."""
        request = protos.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature or self.signature
        if version is not None:
            request.model_spec.version.value = int(version)
        for name, value in inputs.items():
            if isinstance(value, protos.TensorProto):
                request.inputs[name].CopyFrom(value)
            elif getattr(getattr(value, "DESCRIPTOR", None), "full_name", None) == "tensorflow.TensorProto":
                request.inputs[name].ParseFromString(value.SerializeToString())
            else:
                encode_tensor(value, request.inputs[name])
        response = self._stub.Predict(request, timeout=self.timeout)
        return ({k: from_tensor_proto(v) for k, v in response.outputs.items()},
                int(response.model_spec.version.value))

    def predict_allocations(self, volume, quote_volume, timestamp, frequency_minutes, min_rate, max_rate):
        """Allocations [B, N, N+1, 4, 2] for a batch of raw windows ([B, W+L+N] bars, [B] scalars)."""
        outputs, version = self.predict_raw(
            _bar_inputs(volume, quote_volume, timestamp, frequency_minutes, min_rate, max_rate))
        return outputs[OUTPUT], version

    def predict_scenario(self, volume, quote_volume, timestamp, frequency_minutes, min_rate, max_rate, scenario):
        """Fractions [B, N] of one scenario per window (`scenario` [B], `lem_model.layout.scenario_index`),
        through `serve_scenario`."""
        inputs = _bar_inputs(volume, quote_volume, timestamp, frequency_minutes, min_rate, max_rate)
        inputs["scenario"] = np.asarray(scenario, np.int64).reshape(-1)
        outputs, version = self.predict_raw(inputs, signature=SCENARIO_SIGNATURE)
        return outputs[OUTPUT], version

    # --- order API -----------------------------------------------------------------------------------------
    def plan(self, order: Order, bars, executed: float = 0.0) -> Schedule:
        """Remaining schedule of `order` given the realized `bars` (columns volume, quote_volume, timestamp;
        at least W+L bars before the first execution bar) and the quantity `executed` so far (order units).

        A new order (`order.start_time` None) starts at the bar after the last one given; to re-plan, pass the
        first plan's `origin_time` as `start_time`.
        """
        for attempt in range(2):
            info = self.metadata(refresh=attempt > 0)
            checked = order.validate(info.n_ahead)
            window = build_request_window(bars, checked, window_bars=info.window_bars, n_ahead=info.n_ahead,
                                          trained_frequencies=self.trained_frequencies,
                                          session_frequencies=self.session_frequencies)
            check_order_state(checked, elapsed=window.elapsed, executed=executed)   # before any call
            request = (window.volume[None], window.quote_volume[None], window.timestamp[None],
                       [checked.frequency_minutes], *([r] for r in model_rates(checked, info.n_ahead)))
            one_scenario = self.use_scenario_signature and info.scenario_signature and self.signature == SIGNATURE
            try:
                if one_scenario:
                    scenario = layout.scenario_index(*scenario_indices(checked, info.n_ahead), info.n_ahead)
                    alloc, version = self.predict_scenario(*request, [scenario])
                else:
                    alloc, version = self.predict_allocations(*request)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ValueError(f"the served model refused the order: {exc.details()}") from exc
                raise
            if version != info.version:   # a new version was swapped in between metadata and predict
                fresh = self.metadata(refresh=True)
                if (fresh.window_bars, fresh.n_ahead) != (info.window_bars, info.n_ahead):
                    continue
            build = schedule_from_fractions if one_scenario else make_schedule
            return build(alloc[0], checked, window, executed=executed, n_ahead=info.n_ahead,
                         model_version=version)
        raise RuntimeError("the served model changed its window size twice during one plan() call")


def _serialize(message) -> bytes:
    return message.SerializeToString()


class PredictionServiceStub:
    """The two methods of TF Serving's `tensorflow.serving.PredictionService` the client calls, as generic gRPC
    unary-unary callables (`stub.Predict(request, timeout=...)`, `stub.GetModelMetadata(...)`) taking the thin
    `serving.protos` requests (or TF Serving's own: anything with SerializeToString) and answering thin
    responses: what TF Serving's generated PredictionServiceStub does for these two, without TensorFlow."""

    def __init__(self, channel):
        self.Predict = channel.unary_unary(protos.PREDICT_METHOD, request_serializer=_serialize,
                                           response_deserializer=protos.PredictResponse.FromString)
        self.GetModelMetadata = channel.unary_unary(
            protos.GET_MODEL_METADATA_METHOD, request_serializer=_serialize,
            response_deserializer=protos.GetModelMetadataResponse.FromString)


def _bar_inputs(volume, quote_volume, timestamp, frequency_minutes, min_rate, max_rate) -> dict:
    """The raw-bar request inputs of `serving_default` / `serve_scenario` as typed arrays."""
    return {"volume": np.asarray(volume, np.float32), "quote_volume": np.asarray(quote_volume, np.float32),
            "timestamp": np.asarray(timestamp, np.int64),
            "frequency_minutes": np.asarray(frequency_minutes, np.int64).reshape(-1),
            "min_rate": np.asarray(min_rate, np.float32).reshape(-1),
            "max_rate": np.asarray(max_rate, np.float32).reshape(-1)}
