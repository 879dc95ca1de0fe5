"""Order and bar semantics of a request: ONE rule set for the serving client, the serving signatures and
(for the bar values) the market-data ingestion.

A request carries, per order `b`, the raw bars `volume`, `quote_volume` `[B, T]`, `timestamp` `[B, T]` (bar
open times), `frequency_minutes` `[B]` and the rate constraints `min_rate`, `max_rate` `[B]` (fractions of
the order per bar). It is refused, never scheduled, unless

  * `timestamp` is in Unix seconds: `0 <= t < 1e11` (a date before year 5138; milliseconds, microseconds and
    nanoseconds of any date after 1973 are >= 1e11 and are refused with the unit their magnitude suggests);
  * `timestamp` is strictly increasing and the bars are `frequency_minutes * 60` s apart: no gap, no bar of
    another length. Only a frequency in `session_frequencies` (bars the model was trained on with the
    missing-bar rule "skip", e.g. trading days: the bars around a closed session are consecutive) may step by
    a whole number of bars;
  * `frequency_minutes >= 1`, and one of `trained_frequencies` (the model's own metadata) when known;
  * `volume` and `quote_volume` are finite and >= 0, and consistent: a bar is empty (volume <= ZERO_TOL)
    exactly when its quote volume is (<= ZERO_TOL), and a non-empty bar has a finite implied price
    `quote_volume / volume` > 0;
  * `0 <= min_rate <= max_rate <= 1`, and the rates are feasible: `min_rate * horizon <= 1` (trading the
    minimum every bar of the order's horizon does not exceed the order) and `max_rate * bars_left >=
    share_left` (what is left can be traded in the bars left at the maximum rate), within RATE_TOL. For the
    signatures `horizon = bars_left = N` and `share_left = 1`; the client uses the order's `T_max`, the bars
    it has left and the share of the order still to trade.

A VALID BAR (`bar_nonnegative`, `bar_consistent`, `valid_bars`: one boolean per bar) is the same everywhere:
finite volume and quote volume >= 0, empty on both sides or on neither, with a finite positive implied price.
The ingestion (`components.market_data.readers`) refuses a row that breaks it (its `bad_rows` policy: an error
naming file, row, asset and time, or a counted drop), so every bar of every example passes the serving rules.

Each rule is a predicate written against an array namespace `xp` (NumPy here; `tf.experimental.numpy` in
the exported signatures, `components.trainer.export`), returning one boolean per order; `check_numpy`
raises ValueError naming the field, the exporter turns the same predicates into `tf.debugging.Assert` ops
(INVALID_ARGUMENT "assertion failed: [<field>: <message>] ..." at the server). Pure NumPy: no TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

#: Largest Unix-seconds timestamp accepted (exclusive): 1e11 s is year 5138; 1e11 ms is 1973-03-03.
SECONDS_LIMIT = 10 ** 11
#: Below this a volume / quote volume counts as zero (an empty bar).
ZERO_TOL = 1e-9
#: Tolerance of the rate feasibility tests (rates travel as float32).
RATE_TOL = 1e-6
#: Relative tolerance above the order size before an executed quantity is an over-fill.
OVERFILL_TOL = 1e-9


@dataclass(frozen=True)
class Rule:
    """One semantic rule: the request field it is about, the message of a violation, and its predicate
    `check(xp, r, ctx) -> bool [B]` (True = the order satisfies it) on the request arrays `r` and the
    context `ctx` (trained / session frequencies, horizon, bars and share left)."""
    field: str
    message: str
    check: Callable

    def text(self, ctx: dict) -> str:
        return f"{self.field}: {self.message.format(**ctx)}"


def _f64(xp, x):
    return xp.asarray(x, dtype=np.float64)


def _i64(xp, x):
    return xp.asarray(x, dtype=np.int64)


def _freq_in(xp, freq, values):
    if not values:
        return xp.zeros_like(freq, dtype=bool)
    return xp.any(xp.equal(freq[:, None], _i64(xp, list(values))[None, :]), axis=1)


def _seconds(xp, r, ctx):
    ts = _i64(xp, r["timestamp"])
    return xp.all(xp.logical_and(ts >= 0, ts < SECONDS_LIMIT), axis=1)


def _increasing(xp, r, ctx):
    return xp.all(xp.diff(_i64(xp, r["timestamp"]), axis=1) > 0, axis=1)


def _freq_positive(xp, r, ctx):
    return _i64(xp, r["frequency_minutes"]) >= 1


def _freq_trained(xp, r, ctx):
    freq = _i64(xp, r["frequency_minutes"])
    if ctx.get("trained_frequencies") is None:
        return xp.ones_like(freq, dtype=bool)
    return _freq_in(xp, freq, ctx["trained_frequencies"])


def _spacing(xp, r, ctx):
    freq = _i64(xp, r["frequency_minutes"])
    step = xp.maximum(freq, 1) * 60
    diff = xp.diff(_i64(xp, r["timestamp"]), axis=1)
    exact = xp.all(xp.equal(diff, step[:, None]), axis=1)
    whole_bars = xp.all(xp.logical_and(diff > 0, xp.equal(diff % step[:, None], 0)), axis=1)
    session = _freq_in(xp, freq, ctx.get("session_frequencies") or ())
    return xp.logical_or(exact, xp.logical_and(session, whole_bars))


# ---- THE definition of a valid bar, per bar (ingestion, both serving signatures, the client, the backfill)
def bar_nonnegative(xp, x):
    """Per bar: `x` (a volume or a quote volume) is finite and >= 0."""
    x = _f64(xp, x)
    return xp.logical_and(xp.isfinite(x), x >= 0)


def bar_consistent(xp, volume, quote_volume):
    """Per bar: empty (volume <= ZERO_TOL) exactly when the quote volume is, and a non-empty bar has a finite
    implied price quote_volume / volume > 0. A bar with volume 0 and quote volume > 0 (or the reverse) is
    NOT a valid bar: neither side can be trusted, and no price can be read from it."""
    v, q = _f64(xp, volume), _f64(xp, quote_volume)
    v_empty, q_empty = v <= ZERO_TOL, q <= ZERO_TOL
    price = q / xp.where(v_empty, xp.ones_like(v), v)
    good_price = xp.logical_or(v_empty, xp.logical_and(xp.isfinite(price), price > 0))
    return xp.logical_and(xp.equal(v_empty, q_empty), good_price)


def valid_bars(volume, quote_volume) -> np.ndarray:
    """NumPy: per bar, True where the bar is valid (`bar_nonnegative` both sides and `bar_consistent`)."""
    with np.errstate(all="ignore"):
        return np.logical_and.reduce([bar_nonnegative(np, volume), bar_nonnegative(np, quote_volume),
                                      bar_consistent(np, volume, quote_volume)])


def _nonneg(name):
    def check(xp, r, ctx):
        return xp.all(bar_nonnegative(xp, r[name]), axis=1)
    return check


def _consistent(xp, r, ctx):
    return xp.all(bar_consistent(xp, r["volume"], r["quote_volume"]), axis=1)


def _rate_range(name):
    def check(xp, r, ctx):
        x = _f64(xp, r[name])
        return xp.logical_and(xp.isfinite(x), xp.logical_and(x >= 0, x <= 1))
    return check


def _rate_order(xp, r, ctx):
    return _f64(xp, r["min_rate"]) <= _f64(xp, r["max_rate"])


def _min_feasible(xp, r, ctx):
    return _f64(xp, r["min_rate"]) * float(ctx["horizon"]) <= 1.0 + RATE_TOL


def _max_feasible(xp, r, ctx):
    return _f64(xp, r["max_rate"]) * float(ctx["bars_left"]) >= float(ctx["share_left"]) - RATE_TOL


BAR_RULES = (
    Rule("timestamp", "bar open times must be Unix seconds (0 <= t < 1e11); values of 1e11 or more are "
                      "milliseconds, microseconds or nanoseconds: divide by 1e3, 1e6 or 1e9", _seconds),
    Rule("timestamp", "bar open times must be strictly increasing", _increasing),
    Rule("frequency_minutes", "must be >= 1 (the bar length in minutes)", _freq_positive),
    Rule("frequency_minutes", "the model was trained on bars of {trained_frequencies} minutes only",
         _freq_trained),
    Rule("timestamp", "bars must be exactly frequency_minutes * 60 s apart (a gap, or bars of another length "
                      "than frequency_minutes)", _spacing),
    Rule("volume", "must be finite and >= 0", _nonneg("volume")),
    Rule("quote_volume", "must be finite and >= 0", _nonneg("quote_volume")),
    Rule("quote_volume", "must be 0 exactly when volume is 0 (<= {zero_tol:g}), with a finite implied price "
                         "quote_volume / volume > 0 otherwise", _consistent),
)
RATE_RULES = (
    Rule("min_rate", "must be in [0, 1] (a fraction of the order per bar)", _rate_range("min_rate")),
    Rule("max_rate", "must be in [0, 1] (a fraction of the order per bar)", _rate_range("max_rate")),
    Rule("min_rate", "must be <= max_rate", _rate_order),
    Rule("min_rate", "infeasible: min_rate x {horizon} bars exceeds the whole order", _min_feasible),
    Rule("max_rate", "infeasible: max_rate x {bars_left} bars left cannot trade the {share_left:g} of the "
                     "order left", _max_feasible),
)
#: The rules whose violation a desk may choose to trade anyway (`Order.allow_infeasible`).
FEASIBILITY_RULES = RATE_RULES[3:]
RULES = BAR_RULES + RATE_RULES


def context(*, horizon: int, bars_left: Optional[int] = None, share_left: float = 1.0,
            trained_frequencies: Optional[Sequence[int]] = None,
            session_frequencies: Optional[Sequence[int]] = None) -> dict:
    """The rule context (see the module docstring); `bars_left` defaults to `horizon`."""
    return {"horizon": int(horizon), "bars_left": int(horizon if bars_left is None else bars_left),
            "share_left": float(share_left), "zero_tol": ZERO_TOL,
            "trained_frequencies": None if trained_frequencies is None else sorted(int(f) for f in trained_frequencies),
            "session_frequencies": sorted(int(f) for f in (session_frequencies or ()))}


def timestamp_unit(timestamp) -> str:
    """The unit the magnitude of the largest timestamp suggests: "s", "ms", "us" or "ns"."""
    top = float(np.max(np.abs(np.asarray(timestamp, np.float64)))) if np.size(timestamp) else 0.0
    for unit, limit in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if top < limit:
            return unit
    return "ns"


def violations(request: dict, ctx: dict, rules: Sequence[Rule] = RULES) -> list:
    """[(rule, first bad order index)] of the request (NumPy arrays `[B, T]` / `[B]`), in rule order."""
    r = {k: np.atleast_1d(np.asarray(v)) for k, v in request.items()}
    for k in ("volume", "quote_volume", "timestamp"):
        if k in r and r[k].ndim == 1:
            r[k] = r[k][None]
    out = []
    with np.errstate(all="ignore"):
        for rule in rules:
            ok = np.asarray(rule.check(np, r, ctx), bool).reshape(-1)
            if not ok.all():
                out.append((rule, int(np.flatnonzero(~ok)[0])))
    return out


def check_numpy(request: dict, ctx: dict, rules: Sequence[Rule] = RULES) -> None:
    """ValueError naming the field of the first violated rule (the order index when B > 1)."""
    bad = violations(request, ctx, rules)
    if bad:
        rule, row = bad[0]
        text = rule.text(ctx)
        if rule.field == "timestamp" and rule.check is _seconds:
            text += f" (these look like {timestamp_unit(request['timestamp'])})"
        batch = np.atleast_1d(np.asarray(request.get("frequency_minutes", [0]))).size
        raise ValueError(text + (f" [order {row}]" if batch > 1 else ""))


def check_executed(size: float, executed: float) -> None:
    """ValueError when `executed` is not a finite quantity in 0 .. size (an over-fill is an error)."""
    if not np.isfinite(executed) or executed < 0:
        raise ValueError(f"executed: must be a finite quantity >= 0, got {executed!r}")
    if executed > float(size) * (1.0 + OVERFILL_TOL):
        raise ValueError(f"executed: {executed:g} exceeds the order size {float(size):g} (an over-fill of "
                         f"{executed - float(size):g}); nothing is scheduled - reconcile the fills first")
