"""Orders, the W+L+N request window and the remaining schedule: pure NumPy, no TensorFlow, no gRPC.

An order trades during execution bars `o .. o+T_max-1` (`o` = its first execution bar; sizes in bars of
its frequency). The model answers allocations `[N, N+1, 4, 2]` for one order window (docs/example-contract.md,
`lem_model.layout`); this module picks the order's scenario in that tensor and turns its fractions into
quantities for the bars that remain, given what is already executed.

Scenario rule (`scenario_indices`):
  * path index from side x benchmark (`lem_model.layout.path_index`), target index from volume / notional;
  * min-period index `m = T_min - 1` (the head whose benchmark window lasts at least `T_min` bars), except
    `T_min == T_max == N` with `objective="auto"` or `"match"`: `m = N`, the match-benchmark head (no time
    flexibility left, so the order tracks the benchmark instead of trying to beat it). `objective="beat"`
    keeps `m = T_min - 1` there (the paper's "no flexibility" row); `objective="match"` needs
    `T_min == T_max`.

Re-planning rule (`remaining_schedule`), causal by construction. Let `a_k` be the model's fractions of the
order for step `k`, `M_k = 1 - sum_{i<k} a_i` the share of the order the model still had to trade before
step `k`, and `c_k = a_k / M_k` its *conditional* rate (1 when `M_k - a_k` ~ 0: the model finishes). With
`R_j` = size - executed after `j` realized execution bars, the planned quantity of step `k = j .. T_max-1` is

    x_k = clip(c_k * R_k, lo_k, hi_k),   R_{k+1} = R_k - x_k,
    lo_k = max(min(min_rate * size, R_k), R_k - max_rate * size * (T_max - 1 - k))   (finish by T_max)
    hi_k = min(max_rate * size, R_k)

so the order always finishes in bar `T_max - 1` (the tail the model would trade after `T_max` is folded into
the bars up to `T_max`, as early as the maximum rate requires and no earlier), never trades more than what
remains (nothing done is re-traded; an over-filled order gets zeros), and trades at least the minimum rate
while incomplete. When what remains cannot be traded within the maximum rate in the bars left (`lo_k >
hi_k`, e.g. after missed fills) the maximum rate yields to the deadline: the remainder is spread evenly over
the bars left and a warning says so. `x_k` uses only `a_0 .. a_k`, which depend only on bars `< o+k`.

Order and bar semantics (`lem_model.request_rules`, the rule set the exported signatures check in their
graph too): `build_request_window` refuses bars not in Unix seconds, not strictly increasing, not spaced by
the order's frequency (a gap is an error: nothing is filled), of a frequency the model was not trained on
(when the caller knows them), with negative or inconsistent volumes. `schedule_from_fractions` /
`make_schedule` refuse an over-fill (executed > size) and rates infeasible for the bars left
(`min_rate * T_max > 1` or `max_rate * bars left < share left`) unless the order says `allow_infeasible=True`
(a desk's choice): then the schedule is computed with the deadline rule above and `Schedule.infeasible`
names the violated constraints (also in `to_dict()`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from lem_model import layout
from lem_model import request_rules
from lem_model.presets import paper_min_rate

#: Raw bar fields of a request (docs/example-contract.md), in signature order.
BAR_FIELDS = ("volume", "quote_volume", "timestamp")
OBJECTIVES = ("auto", "beat", "match")
_DONE_TOL = 1e-9   # relative to the order size: below this a remainder counts as done
_MODEL_DONE_TOL = 1e-5   # share of the order the float32 model output may leave over when it has finished


@dataclass(frozen=True)
class Order:
    """One parent order.

    side: "buy" | "sell"; target: "volume" (size in shares / coins) or "notional" (size in quote currency);
    benchmark: "vwap" | "twap"; min_duration / max_duration: `T_min` / `T_max` in bars (1 <= T_min <= T_max
    <= N; None for max_duration = N); min_rate / max_rate: fractions of the order per bar (None = training
    defaults 1/N^2 and 1); asset: symbol (informational: one model serves all assets); frequency_minutes: bar
    length; start_time: open time (Unix s) of the first execution bar, None = the bar after the last bar
    given (a new order); objective: "auto" | "beat" | "match" (see the module docstring); allow_infeasible:
    trade even when the rates cannot be met in the bars left (reported in `Schedule.infeasible`), instead of a
    ValueError.
    """
    side: str
    target: str
    size: float
    benchmark: str = "vwap"
    min_duration: int = 1
    max_duration: Optional[int] = None
    min_rate: Optional[float] = None
    max_rate: Optional[float] = None
    asset: str = ""
    frequency_minutes: int = 15
    start_time: Optional[int] = None
    objective: str = "auto"
    allow_infeasible: bool = False

    def validate(self, n_ahead: int) -> "Order":
        """Check the order against a model with `n_ahead` execution bars; returns it with defaults filled."""
        layout.path_index(self.side, self.benchmark)
        layout.target_index(self.target)
        if not (np.isfinite(self.size) and self.size > 0):
            raise ValueError(f"order size must be a finite number > 0, got {self.size!r}")
        t_max = n_ahead if self.max_duration is None else int(self.max_duration)
        if not 1 <= int(self.min_duration) <= t_max <= n_ahead:
            raise ValueError(f"need 1 <= min_duration <= max_duration <= N = {n_ahead} bars, got "
                             f"min_duration={self.min_duration}, max_duration={self.max_duration}")
        min_rate = paper_min_rate(n_ahead) if self.min_rate is None else float(self.min_rate)
        max_rate = 1.0 if self.max_rate is None else float(self.max_rate)
        if not (0.0 <= min_rate <= max_rate <= 1.0):
            raise ValueError(f"need 0 <= min_rate <= max_rate <= 1 (fractions of the order per bar), got "
                             f"min_rate={min_rate}, max_rate={max_rate}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "match" and int(self.min_duration) != t_max:
            raise ValueError("objective 'match' needs min_duration == max_duration (a fixed window)")
        if int(self.frequency_minutes) < 1:
            raise ValueError(f"frequency_minutes must be >= 1, got {self.frequency_minutes}")
        return dataclasses.replace(self, max_duration=t_max, min_duration=int(self.min_duration),
                                   min_rate=min_rate, max_rate=max_rate)


def scenario_indices(order: Order, n_ahead: int) -> tuple:
    """(m, path, target) indices of `order` in allocations `[N, N+1, 4, 2]` (rule in the module docstring)."""
    order = order.validate(n_ahead)
    path = layout.path_index(order.side, order.benchmark)
    target = layout.target_index(order.target)
    fixed_full = order.min_duration == order.max_duration == n_ahead
    if order.objective == "match" or (order.objective == "auto" and fixed_full):
        m = n_ahead
    else:
        m = order.min_duration - 1
    return m, path, target


@dataclass
class RequestWindow:
    """The W+L+N raw bars of one request and where the order stands in it.

    Arrays have shape [W+L+N]; `origin` = index of the first execution bar (W+L); `elapsed` = execution bars
    already realized (`j`); bars `origin + elapsed ..` are placeholders (`placeholder_from`).
    """
    volume: np.ndarray
    quote_volume: np.ndarray
    timestamp: np.ndarray
    origin: int
    elapsed: int

    @property
    def placeholder_from(self) -> int:
        return self.origin + self.elapsed

    @property
    def origin_time(self) -> int:
        return int(self.timestamp[self.origin])


def _unix_seconds(timestamp: np.ndarray) -> np.ndarray:
    """Bar open times as Unix seconds: integers pass through, datetime64 / datetime objects are converted
    (naive values are taken as UTC)."""
    if np.issubdtype(timestamp.dtype, np.datetime64):
        return timestamp.astype("datetime64[s]").astype(np.int64)
    if timestamp.dtype == object and timestamp.size and hasattr(timestamp.flat[0], "timestamp"):
        import pandas as pd
        return (pd.to_datetime(pd.Series(timestamp), utc=True).astype("int64") // 10**9).to_numpy(np.int64)
    return timestamp


def _bars_arrays(bars) -> tuple:
    """(volume, quote_volume, timestamp) from a mapping / DataFrame with those columns, validated."""
    try:
        cols = [np.asarray(bars[name]) for name in BAR_FIELDS]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"bars must have columns {BAR_FIELDS}: {exc}") from None
    volume, quote_volume, timestamp = (np.asarray(cols[0], np.float64), np.asarray(cols[1], np.float64),
                                       _unix_seconds(cols[2]))
    if not (volume.ndim == quote_volume.ndim == timestamp.ndim == 1) or not (
            len(volume) == len(quote_volume) == len(timestamp)):
        raise ValueError(f"bars columns must be 1-D of one length, got shapes {volume.shape}, "
                         f"{quote_volume.shape}, {timestamp.shape}")
    if not np.issubdtype(timestamp.dtype, np.integer):
        if not np.all(np.isfinite(timestamp.astype(np.float64))) or np.any(timestamp != np.round(timestamp)):
            raise ValueError("bars 'timestamp' must hold whole Unix seconds")
    timestamp = timestamp.astype(np.int64)
    for name, col in (("volume", volume), ("quote_volume", quote_volume)):
        bad = np.flatnonzero(~np.isfinite(col) | (col < 0))
        if bad.size:
            raise ValueError(f"bars '{name}' must be finite and >= 0; bad at row {bad[0]} "
                             f"({col[bad[0]]!r}), {bad.size} bad rows")
    if len(timestamp) > 1 and np.any(np.diff(timestamp) <= 0):
        row = int(np.flatnonzero(np.diff(timestamp) <= 0)[0]) + 1
        raise ValueError(f"bars 'timestamp' must be strictly increasing; row {row} ({timestamp[row]}) is not "
                         f"after row {row - 1} ({timestamp[row - 1]})")
    return volume, quote_volume, timestamp


def build_request_window(bars, order: Order, *, window_bars: int, n_ahead: int,
                         trained_frequencies=None, session_frequencies=None) -> RequestWindow:
    """Cut the W+L+N request window of `order` from the bars realized so far.

    `bars`: columns volume, quote_volume, timestamp (time order, Unix s): all realized bars up to now, at
    least `W+L` before the order's first execution bar. The first execution bar is the bar opening at
    `order.start_time` (or, for a new order, the bar after the last one given). Bars not yet realized are
    placeholders: the last realized bar's volume and notional repeated, timestamps continued at the order's
    frequency (causality makes their values irrelevant to every decidable step). The window is checked with
    the bar rules of `lem_model.request_rules` (ValueError naming the field); `trained_frequencies` /
    `session_frequencies`: the model's (its `lem_model.json`), None = not checked here (the server does).
    """
    volume, quote_volume, timestamp = _bars_arrays(bars)
    unit = request_rules.timestamp_unit(timestamp)
    if unit != "s":
        raise ValueError(f"bars 'timestamp' must be Unix seconds; the largest, {int(np.max(timestamp))}, looks like "
                         f"{unit} (divide by {dict(ms='1e3', us='1e6', ns='1e9')[unit]})")
    history = window_bars - n_ahead
    step = int(order.frequency_minutes) * 60
    if order.start_time is None:
        origin = len(timestamp)
    else:
        origin = int(np.searchsorted(timestamp, int(order.start_time), side="left"))
        if origin < len(timestamp) and timestamp[origin] != int(order.start_time):
            raise ValueError(f"order start_time {order.start_time} is not the open time of a given bar "
                             f"(next bar opens at {timestamp[origin]})")
        if origin == len(timestamp) and len(timestamp) and int(order.start_time) != timestamp[-1] + step:
            raise ValueError(f"order start_time {order.start_time} is neither a given bar nor the bar after the "
                             f"last one ({timestamp[-1] + step})")
    elapsed = len(timestamp) - origin
    if origin < history:
        raise ValueError(f"need at least W+L = {history} bars before the order's first execution bar, got "
                         f"{origin}")
    if elapsed > n_ahead:
        raise ValueError(f"{elapsed} execution bars already realized, more than the model's N = {n_ahead}")
    lo = origin - history
    realized = slice(lo, len(timestamp))
    n_future = n_ahead - elapsed
    if len(timestamp) == 0:
        raise ValueError("no bars given")
    last_ts = int(timestamp[-1])
    fut_ts = last_ts + step * np.arange(1, n_future + 1, dtype=np.int64)
    vol = np.concatenate([volume[realized], np.full(n_future, volume[-1])])
    qv = np.concatenate([quote_volume[realized], np.full(n_future, quote_volume[-1])])
    ts = np.concatenate([timestamp[realized], fut_ts])
    ctx = request_rules.context(horizon=n_ahead, trained_frequencies=trained_frequencies,
                                session_frequencies=session_frequencies)
    request_rules.check_numpy({"volume": vol[None], "quote_volume": qv[None], "timestamp": ts[None],
                               "frequency_minutes": [int(order.frequency_minutes)]}, ctx, request_rules.BAR_RULES)
    return RequestWindow(volume=vol.astype(np.float32), quote_volume=qv.astype(np.float32),
                         timestamp=ts.astype(np.int64), origin=history, elapsed=elapsed)


@dataclass
class Schedule:
    """Remaining schedule of one order.

    steps: execution steps `k` still to trade (`elapsed .. T_max-1`); times: their bar open times (Unix s);
    quantities: what to trade in each (order units: shares/coins for a volume target, quote currency for a
    notional target); fractions: the model's fractions of the whole order for all N steps of the chosen
    scenario (sum 1); scenario: (m, path, target) indices; completion_step / completion_time: the bar in which
    the order is expected to complete (None when nothing remains); remaining: size - executed (>= 0).
    """
    order: Order
    origin_time: int
    elapsed: int
    executed: float
    remaining: float
    steps: np.ndarray
    times: np.ndarray
    quantities: np.ndarray
    fractions: np.ndarray
    scenario: tuple
    completion_step: Optional[int]
    completion_time: Optional[int]
    units: str
    model_version: Optional[int] = None
    warnings: list = field(default_factory=list)
    infeasible: list = field(default_factory=list)   # violated rate constraints traded anyway (allow_infeasible)

    def to_dict(self) -> dict:
        m, p, t = self.scenario
        return {
            "order": dataclasses.asdict(self.order), "origin_time": self.origin_time, "elapsed": self.elapsed,
            "executed": self.executed, "remaining": self.remaining, "units": self.units,
            "scenario": {"min_period_index": m, "path": layout.PATHS[p], "target": layout.TARGETS[t]},
            "schedule": [{"step": int(k), "time": int(ts), "quantity": float(q)}
                         for k, ts, q in zip(self.steps, self.times, self.quantities)],
            "fractions": [float(f) for f in self.fractions],
            "completion_step": self.completion_step, "completion_time": self.completion_time,
            "model_version": self.model_version, "warnings": list(self.warnings),
            "infeasible": list(self.infeasible),
        }


def check_order_state(order: Order, *, elapsed: int, executed: float) -> list:
    """Over-fill and rate feasibility of a validated `order` with `elapsed` bars realized and `executed`
    traded (`lem_model.request_rules`): ValueError on an over-fill, and on infeasible rates unless
    `order.allow_infeasible`; returns the messages of the infeasible constraints traded anyway."""
    request_rules.check_executed(order.size, executed)
    share_left = max(float(order.size) - float(executed), 0.0) / float(order.size)
    if share_left <= _DONE_TOL:
        return []
    ctx = request_rules.context(horizon=int(order.max_duration), bars_left=int(order.max_duration) - int(elapsed),
                                share_left=share_left)
    request = {"min_rate": [order.min_rate], "max_rate": [order.max_rate]}
    bad = request_rules.violations(request, ctx, request_rules.FEASIBILITY_RULES)
    if bad and not order.allow_infeasible:
        raise ValueError(bad[0][0].text(ctx) + " (set allow_infeasible=True on the order to trade it anyway, "
                                                "finishing by max_duration)")
    return [rule.text(ctx) for rule, _ in bad]


def model_rates(order: Order, n_ahead: int) -> tuple:
    """(min_rate, max_rate) sent to the model: the order's, made feasible over the model's N bars (the
    signatures refuse `min_rate * N > 1` and `max_rate * N < 1`); the schedule applies the order's own."""
    lo, hi = float(order.min_rate), float(order.max_rate)
    return min(lo, 1.0 / n_ahead), max(hi, 1.0 / n_ahead)


def scenario_fractions(allocations: np.ndarray, scenario: tuple) -> np.ndarray:
    """Fractions `[N]` of one scenario from allocations `[N, N+1, 4, 2]` (float64)."""
    allocations = np.asarray(allocations, np.float64)
    if allocations.ndim != 4 or allocations.shape[1:] != (allocations.shape[0] + 1, layout.NUM_PATHS,
                                                           layout.NUM_TARGETS):
        raise ValueError(f"allocations must have shape [N, N+1, 4, 2], got {allocations.shape}")
    m, path, target = scenario
    return allocations[:, m, path, target]


def remaining_schedule(fractions: np.ndarray, order: Order, *, elapsed: int, executed: float) -> tuple:
    """Quantities for steps `elapsed .. T_max-1` (rule in the module docstring); returns
    (quantities [T_max - elapsed], warnings). `order` must be validated; `executed` in order units."""
    a = np.clip(np.nan_to_num(np.asarray(fractions, np.float64), nan=0.0), 0.0, None)
    n = len(a)
    t_max = int(order.max_duration)
    if not 0 <= elapsed <= t_max:
        raise ValueError(f"elapsed must be in 0..T_max = {t_max} bars, got {elapsed}")
    if not np.isfinite(executed) or executed < 0:
        raise ValueError(f"executed must be a finite quantity >= 0, got {executed!r}")
    size = float(order.size)
    tol = _DONE_TOL * size
    remaining = max(size - float(executed), 0.0)
    warnings = []
    if remaining > tol and elapsed == t_max:
        raise ValueError(f"the order's maximum duration ({t_max} bars) has passed with {remaining:g} still to "
                         "trade: nothing left to schedule")
    model_left = 1.0 - np.concatenate([[0.0], np.cumsum(a)[:-1]])      # M_k, uses a_0..a_{k-1}
    min_q, max_q = float(order.min_rate) * size, float(order.max_rate) * size
    out = np.zeros(t_max - elapsed)
    r = remaining
    spread_warned = False
    for i, k in enumerate(range(elapsed, t_max)):
        if r <= tol:
            r = 0.0
            break
        bars_after = t_max - 1 - k
        # the model is done after this step (float32 fractions: within 1e-5) -> trade all that remains
        done_after = k >= n - 1 or model_left[k] - a[k] <= _MODEL_DONE_TOL
        c = 1.0 if done_after else min(a[k] / model_left[k], 1.0)
        lo = max(min(min_q, r), r - max_q * bars_after)
        hi = min(max_q, r)
        if lo > hi + tol:
            x = r / (bars_after + 1)
            if not spread_warned:
                warnings.append(f"{r:g} left for {bars_after + 1} bars exceeds max_rate {order.max_rate:g} x size "
                                f"per bar from step {k}: spread evenly to finish by bar {t_max - 1}")
                spread_warned = True
        else:
            x = min(max(c * r, lo), hi)
        if bars_after == 0:
            x = r
        out[i] = x
        r -= x
    return out, warnings


def make_schedule(allocations: np.ndarray, order: Order, window: RequestWindow, *, executed: float = 0.0,
                  n_ahead: int, model_version: Optional[int] = None) -> Schedule:
    """Schedule of `order` from one request's allocations `[N, N+1, 4, 2]` (batch row already taken)."""
    order = order.validate(n_ahead)
    fractions = scenario_fractions(allocations, scenario_indices(order, n_ahead))
    return schedule_from_fractions(fractions, order, window, executed=executed, n_ahead=n_ahead,
                                   model_version=model_version)


def schedule_from_fractions(fractions: np.ndarray, order: Order, window: RequestWindow, *,
                            executed: float = 0.0, n_ahead: int, model_version: Optional[int] = None) -> Schedule:
    """Schedule of `order` from the model's fractions `[N]` of the order's own scenario (`scenario_indices`;
    e.g. the `serve_scenario` signature's output row)."""
    order = order.validate(n_ahead)
    scenario = scenario_indices(order, n_ahead)
    fractions = np.asarray(fractions, np.float64).reshape(-1)
    if fractions.shape != (n_ahead,):
        raise ValueError(f"fractions must have shape [N] = [{n_ahead}], got {fractions.shape}")
    infeasible = check_order_state(order, elapsed=window.elapsed, executed=executed)
    quantities, warnings = remaining_schedule(fractions, order, elapsed=window.elapsed, executed=executed)
    warnings = [f"infeasible constraint traded anyway (allow_infeasible): {m}" for m in infeasible] + warnings
    steps = np.arange(window.elapsed, order.max_duration)
    times = window.timestamp[window.origin + steps]
    remaining = max(float(order.size) - float(executed), 0.0)
    tol = _DONE_TOL * float(order.size)
    if remaining <= tol:
        completion = None
    else:
        left = remaining - np.cumsum(quantities)
        done = np.flatnonzero(left <= tol)
        completion = int(steps[done[0]]) if done.size else int(steps[-1])
    return Schedule(order=order, origin_time=window.origin_time, elapsed=window.elapsed,
                    executed=float(executed), remaining=remaining, steps=steps, times=times,
                    quantities=quantities, fractions=fractions, scenario=scenario, completion_step=completion,
                    completion_time=None if completion is None else int(window.timestamp[window.origin + completion]),
                    units="shares" if order.target == "volume" else "notional", model_version=model_version,
                    warnings=warnings, infeasible=infeasible)
