"""Request metrics of `lems serve` in Prometheus' text exposition format, under TF Serving's metric names.

TF Serving exports, when its monitoring config enables Prometheus (`prometheus_config { enable: true path:
"/monitoring/prometheus/metrics" }`, on the REST port), among others:

  :tensorflow:serving:request_count{model_name, status}                 counter (status "OK" or the error)
  :tensorflow:serving:request_latency{model_name, API, entrypoint}      histogram, microseconds

`lems serve --rest-port P --metrics` serves the same two names at the same path, so a dashboard or an alert
written for one works on the other, plus `lems_serving_model_version{model_name}` (gauge: the version
served, 0 before one is loaded). Errors are the requests whose `status` is not "OK" (e.g. `INVALID_ARGUMENT`,
`NOT_FOUND`, `INTERNAL`, the gRPC status names). API: `predict`, `get_model_metadata`, `get_model_status`;
entrypoint: `GRPC` or `REST`. Latency buckets: `LATENCY_BUCKETS_US` (upper bounds, microseconds).

No dependency: the few lines of the format are written here (`render`).
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
MODEL_VERSION = "lems_serving_model_version"
#: Histogram bucket upper bounds in microseconds: 100 us .. 60 s (1-2.5-5 steps), then +Inf.
LATENCY_BUCKETS_US = tuple(m * 10 ** e for e in range(2, 8) for m in (1, 2.5, 5)) + (6e7,)
#: Where TF Serving's Prometheus config puts the metrics by default (and `lems serve --metrics` too).
DEFAULT_PATH = "/monitoring/prometheus/metrics"


def _labels(**labels) -> str:
    def esc(v):
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _number(x: float) -> str:
    return repr(float(x)) if x != int(x) else str(int(x))


class ServerMetrics:
    """Thread-safe request counts and latency histograms of one served model name."""

    def __init__(self, model_name: str, version: Callable[[], Optional[int]] = lambda: None):
        self.model_name = model_name
        self._version = version
        self._lock = threading.Lock()
        self._counts: dict = {}        # status -> n
        self._latency: dict = {}       # (api, entrypoint) -> [bucket counts..., +Inf], sum_us, n

    def observe(self, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """Count one finished request (`status`: "OK" or the error code's name) and its latency."""
        us = max(float(seconds), 0.0) * 1e6
        with self._lock:
            self._counts[status] = self._counts.get(status, 0) + 1
            buckets, total, n = self._latency.get((api, entrypoint), ([0] * (len(LATENCY_BUCKETS_US) + 1), 0.0, 0))
            for i, bound in enumerate(LATENCY_BUCKETS_US):
                if us <= bound:
                    buckets[i] += 1
            buckets[-1] += 1
            self._latency[(api, entrypoint)] = (buckets, total + us, n + 1)

    def counts(self) -> dict:
        """{status: requests} so far."""
        with self._lock:
            return dict(self._counts)

    def render(self) -> str:
        """The metrics in Prometheus' text exposition format (version 0.0.4)."""
        name = self.model_name
        with self._lock:
            counts = dict(self._counts)
            latency = {k: (list(b), s, n) for k, (b, s, n) in self._latency.items()}
        out = [f"# HELP {REQUEST_COUNT} The total number of requests, by status (OK or the error code).",
               f"# TYPE {REQUEST_COUNT} counter"]
        for status, n in sorted(counts.items()):
            out.append(f"{REQUEST_COUNT}{_labels(model_name=name, status=status)} {n}")
        out += [f"# HELP {REQUEST_LATENCY} Distribution of request latency in microseconds.",
                f"# TYPE {REQUEST_LATENCY} histogram"]
        for (api, entrypoint), (buckets, total, n) in sorted(latency.items()):
            base = dict(model_name=name, API=api, entrypoint=entrypoint)
            for bound, c in zip(LATENCY_BUCKETS_US, buckets):
                out.append(f"{REQUEST_LATENCY}_bucket{_labels(**base, le=_number(bound))} {c}")
            out.append(f"{REQUEST_LATENCY}_bucket{_labels(**base, le='+Inf')} {buckets[-1]}")
            out.append(f"{REQUEST_LATENCY}_sum{_labels(**base)} {_number(total)}")
            out.append(f"{REQUEST_LATENCY}_count{_labels(**base)} {n}")
        out += [f"# HELP {MODEL_VERSION} The model version served (0 = none loaded yet).",
                f"# TYPE {MODEL_VERSION} gauge",
                f"{MODEL_VERSION}{_labels(model_name=name)} {int(self._version() or 0)}"]
        return "\n".join(out) + "\n"
