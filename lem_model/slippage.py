"""The ONE slippage evaluator (NumPy, vectorised) and the paper's table statistics and layout.

Every consumer (Evaluator component, backfill, benchmarks, quickstart, tests) calls this module; the Keras
loss and metrics (`lem_model.loss`) implement the same rule in `keras.ops` and a test checks they agree.

The benchmark-window rule (paper eq. 1-2 and 28-32), stated once
-----------------------------------------------------------------
An order of `N` execution bars with allocations `a_0..a_{N-1}` (fractions of the order, >= 0, summing to 1)
and minimum period `min_period` (bars, 1..N) has the benchmark window

    bar t is in the window  <=>  t < min_period  or  remaining_t > COMPLETION_TOL,
    remaining_t = a_t + a_{t+1} + ... + a_{N-1}   (the part of the order not yet traded before bar t),

i.e. the window ends at the later of bar `min_period - 1` and the completion bar (the last bar with a trade).
The metrics use exactly this hard rule. The training loss uses a soft version of the completion part,
`tanh(sharpness * remaining_t)`, which is exactly 0 once the order is complete (remaining_t == 0) and tends
to the hard rule as `sharpness` grows (unlike the reference's sigmoid, which weighs completed bars by 0.5).

Prices and benchmark (per order, window weights w_t in {0, 1}):
  - achieved, volume target   (a_t = fraction of shares):   P = sum_t a_t p_t / sum_t a_t;
  - achieved, notional target (a_t = fraction of notional): shares_t = a_t / p_t, P = sum_t a_t / sum_t shares_t;
  - VWAP benchmark = sum_t w_t v_t p_t / sum_t w_t v_t (falls back to the TWAP of the window when the window
    has no volume);  TWAP benchmark = sum_t w_t p_t / sum_t w_t;
  - slippage (bps) = 1e4 * (P_achieved / P_benchmark - 1), the paper's sign for both sides: lower is better
    for buys, higher is better for sells (`improvement_bps` flips it for buys so that higher is better).
Undefined cases (non-positive benchmark or achieved price) give NaN here (counted by `table_statistics`);
the training loss maps them to 0 instead so that gradients stay finite.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from lem_model import layout

#: A bar belongs to the window through completion while more than this fraction of the order remains.
COMPLETION_TOL = 1e-6
#: Allocations must be >= -ALLOC_TOL and sum to 1 within ALLOC_TOL (float32 model outputs pass).
ALLOC_TOL = 1e-4
#: Column order of the paper's tables.
STAT_COLUMNS = ("mean", "std", "median", "p5", "p95", "q25", "q75")
STAT_HEADERS = ("Mean (bps)", "Std (bps)", "Median (bps)", "P5 (bps)", "P95 (bps)", "Q25 (bps)", "Q75 (bps)")


@dataclass(frozen=True)
class SlippageResult:
    """Per-order results, each of shape [B]: prices in the units of `price`, slippage in bps."""
    achieved: np.ndarray
    benchmark: np.ndarray
    bps: np.ndarray
    improvement_bps: np.ndarray  # -bps for buys, +bps for sells: higher is better on both sides
    window_bars: np.ndarray      # number of bars in the benchmark window (1..N)


def reverse_cumsum(alloc: np.ndarray) -> np.ndarray:
    """remaining_t = sum_{s >= t} a_s along the last axis (exactly 0 after the last non-zero allocation)."""
    return np.flip(np.cumsum(np.flip(alloc, -1), -1), -1)


def window_mask(alloc: np.ndarray, min_period, tol: float = COMPLETION_TOL) -> np.ndarray:
    """Benchmark-window membership (bool, shape of `alloc` [..., N]) per the module's rule.

    `min_period`: bars (1..N), scalar or broadcastable to `alloc.shape[:-1]`.
    """
    alloc = np.asarray(alloc, dtype=np.float64)
    n = alloc.shape[-1]
    mp = np.asarray(min_period)[..., None]
    forced = np.arange(n) < mp
    return forced | (reverse_cumsum(alloc) > tol)


def _check_inputs(alloc, volume, price, min_period):
    alloc = np.asarray(alloc, dtype=np.float64)
    volume = np.asarray(volume, dtype=np.float64)
    price = np.asarray(price, dtype=np.float64)
    if alloc.ndim != 2:
        raise ValueError(f"allocations must have shape [B, N], got {alloc.shape}")
    b, n = alloc.shape
    for name, arr in (("volumes", volume), ("prices", price)):
        if arr.shape != (b, n):
            raise ValueError(f"{name} must have the allocations' shape {alloc.shape}, got {arr.shape}")
    for name, arr in (("allocations", alloc), ("volumes", volume), ("prices", price)):
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise ValueError(f"{name}: non-finite values in {int(bad.sum())} row(s), first row {int(np.argmax(bad))}")
    neg = (alloc < -ALLOC_TOL).any(axis=1)
    if neg.any():
        raise ValueError(f"allocations: negative fractions in {int(neg.sum())} row(s), first row {int(np.argmax(neg))}")
    off = np.abs(alloc.sum(axis=1) - 1.0) > ALLOC_TOL
    if off.any():
        r = int(np.argmax(off))
        raise ValueError(f"allocations must sum to 1 per order: {int(off.sum())} row(s) do not, "
                         f"first row {r} sums to {alloc[r].sum():.6f}")
    if (volume < 0).any():
        raise ValueError(f"volumes: negative values in row {int(np.argmax((volume < 0).any(axis=1)))}")
    mp = np.broadcast_to(np.asarray(min_period), (b,))
    if not np.issubdtype(mp.dtype, np.integer) and not np.all(mp == np.round(mp)):
        raise ValueError(f"min_period must be whole bars, got {min_period!r}")
    if (mp < 1).any() or (mp > n).any():
        raise ValueError(f"min_period must be in 1..{n} bars, got values in [{mp.min()}, {mp.max()}]")
    return np.clip(alloc, 0.0, None), volume, price, mp.astype(np.int64)


def _prices(alloc, volume, price, min_period, is_vwap, is_notional, tol=COMPLETION_TOL):
    """Vectorised core. alloc [..., N]; volume/price broadcastable to it; min_period, is_vwap, is_notional
    broadcastable to alloc.shape[:-1]. Returns (achieved, benchmark, window_bars), float64."""
    w = window_mask(alloc, min_period, tol).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sum_w = w.sum(-1)
        twap = (w * price).sum(-1) / sum_w
        wv = w * volume
        sum_wv = wv.sum(-1)
        vwap = np.where(sum_wv > 0, (wv * price).sum(-1) / np.where(sum_wv > 0, sum_wv, 1.0), twap)
        bench = np.where(is_vwap, vwap, twap)
        sum_a = alloc.sum(-1)
        ach_volume = (alloc * price).sum(-1) / sum_a
        traded = alloc > 0
        shares = np.where(traded, alloc / np.where(price > 0, price, np.nan), 0.0)
        ach_notional = sum_a / shares.sum(-1)
        achieved = np.where(is_notional, ach_notional, ach_volume)
    return achieved, bench, sum_w


def _bps(achieved, bench):
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.isfinite(achieved) & np.isfinite(bench) & (bench > 0) & (achieved > 0)
        return np.where(ok, 1e4 * (achieved / np.where(ok, bench, 1.0) - 1.0), np.nan)


def slippage(alloc, volume, price, min_period, side: str, benchmark: str, target: str,
             tol: float = COMPLETION_TOL) -> SlippageResult:
    """Slippage of B orders against their benchmark.

    alloc: [B, N] fractions of the order per execution bar (shares for target="volume", notional for
    target="notional"), >= 0, summing to 1. volume: [B, N] market volume of each execution bar (any unit).
    price: [B, N] bar VWAP (any positive unit). min_period: bars (1..N), scalar or [B]; min_period = N is
    the fixed-horizon / match-benchmark window. side: "buy"|"sell"; benchmark: "vwap"|"twap";
    target: "volume"|"notional".
    """
    layout.path_index(side, benchmark)
    layout.target_index(target)
    alloc, volume, price, mp = _check_inputs(alloc, volume, price, min_period)
    achieved, bench, window = _prices(alloc, volume, price, mp, benchmark == "vwap", target == "notional", tol)
    bps = _bps(achieved, bench)
    return SlippageResult(achieved=achieved, benchmark=bench, bps=bps,
                          improvement_bps=-bps if side == "buy" else bps,
                          window_bars=window.astype(np.int64))


def evaluate_allocations(allocations, labels, tol: float = COMPLETION_TOL) -> np.ndarray:
    """Slippage (bps) of every head of a LEM output.

    allocations: [B, N, N+1, 4, 2] (model output, see `lem_model.layout`); labels: [B, N, 2] (execution-bar
    volume, VWAP) from the feature builder. Returns bps [B, N+1, 4, 2] (NaN where undefined).
    """
    a = np.asarray(allocations, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if a.ndim != 5 or a.shape[2] != a.shape[1] + 1 or a.shape[3:] != (layout.NUM_PATHS, layout.NUM_TARGETS):
        raise ValueError(f"allocations must have shape [B, N, N+1, 4, 2], got {a.shape}")
    b, n = a.shape[:2]
    if labels.shape != (b, n, 2):
        raise ValueError(f"labels must have shape [B, N, 2] = {(b, n, 2)}, got {labels.shape}")
    if not np.isfinite(a).all() or not np.isfinite(labels).all():
        raise ValueError("allocations and labels must be finite")
    a = np.clip(np.moveaxis(a, 1, -1), 0.0, None)  # [B, M, 4, 2, N]
    vol = labels[:, None, None, None, :, layout.LABEL_VOLUME]
    price = labels[:, None, None, None, :, layout.LABEL_VWAP]
    mp = np.array([layout.min_period_of_index(m, n) for m in range(n + 1)])[None, :, None, None]
    is_vwap = np.array([bm == "vwap" for bm in layout.PATH_BENCHMARK])[None, None, :, None]
    is_notional = np.array([t == "notional" for t in layout.TARGETS])[None, None, None, :]
    achieved, bench, _ = _prices(a, vol, price, mp, is_vwap, is_notional, tol)
    return _bps(achieved, bench)


def table_statistics(values) -> dict:
    """The paper's table statistics (bps) of a 1-D sample: mean, std (ddof=1), median, P5, P95, Q25, Q75,
    plus `n` (finite values used) and `n_invalid` (NaN values, reported rather than silently dropped)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    out = {"n": int(finite.size), "n_invalid": int(v.size - finite.size)}
    if finite.size == 0:
        out.update({k: float("nan") for k in STAT_COLUMNS})
        return out
    p5, q25, median, q75, p95 = np.percentile(finite, [5, 25, 50, 75, 95])
    out.update(mean=float(finite.mean()), std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
               median=float(median), p5=float(p5), p95=float(p95), q25=float(q25), q75=float(q75))
    return out


def table_rows(lem_bps, *, benchmark: str = "vwap", target: str = "volume",
               baselines: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """Rows of the paper's Table 1 layout for one (benchmark, target) slice of `evaluate_allocations`.

    lem_bps: [B, N+1, 4, 2]. baselines: label -> bps [B] rows printed first with min period "All"
    (e.g. {"TWAP Notional": ..., "TWAP Volume": ...}). Each row: order_type, min_period, and the statistics.
    """
    lem_bps = np.asarray(lem_bps)
    n = lem_bps.shape[1] - 1
    t = layout.target_index(target)
    rows = []
    for label, values in (baselines or {}).items():
        rows.append({"order_type": label, "min_period": "All", **table_statistics(values)})
    for side in layout.SIDES:
        p = layout.path_index(side, benchmark)
        for m in range(n + 1):
            label = str(m + 1) if m < n else f"Match {benchmark.upper()}"
            rows.append({"order_type": side.upper(), "min_period": label,
                         **table_statistics(lem_bps[:, m, p, t])})
    return rows


def format_table(rows: Sequence[Mapping], title: str | None = None) -> str:
    """Plain-text table in the paper's layout (order type shown once per block)."""
    head = ("Order Type", "Min Period") + STAT_HEADERS
    body, last = [], None
    for r in rows:
        order = r["order_type"] if r["order_type"] != last else ""
        last = r["order_type"]
        body.append((order, str(r["min_period"])) + tuple(f"{r[k]:.2f}" for k in STAT_COLUMNS))
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    lines = ([title] if title else []) + [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body]
    invalid = sum(int(r.get("n_invalid", 0)) for r in rows)
    if invalid:
        lines.append(f"({invalid} undefined slippage value(s) excluded: non-positive prices)")
    return "\n".join(lines)


def format_slippage_table(lem_bps, *, benchmark: str = "vwap", target: str = "volume",
                          baselines: Mapping[str, np.ndarray] | None = None, title: str | None = None) -> str:
    """`table_rows` + `format_table`: the paper's Table 1 as text."""
    return format_table(table_rows(lem_bps, benchmark=benchmark, target=target, baselines=baselines), title)
