"""The blessing gate (pure NumPy, no TFMA / TensorFlow): per slice, is the LEM significantly worse than TWAP
(volume) on the same orders, and is it significantly better overall? One definition, used by the TFMA metric
(`components.evaluator.metrics`, whose `gate/*` values TFMA's per-slice thresholds read) and by any caller that
has per-order slippage (e.g. a walk-forward backtest on pooled orders).

Intervals: block bootstrap over order start days (`lem_model.bootstrap`, seeded, `n_boot` replicates, percentile
intervals at `level`); every figure pairs the LEM and TWAP order by order (same orders, same replicates).
Reference: TWAP (volume) vs VWAP, `baseline_bps["twap_volume_vs_vwap"]` (its slippage series is the same for both
sides: the paper's sign, 1e4 x (achieved / benchmark - 1), lower is better for buys, higher for sells).

Checks of one slice (`evaluate_slice`), each with its verdict "pass" or "FAIL":
  - head "match" (the match-VWAP head, m = N, VWAP path, volume target), per side: std ratio
    std(LEM) / std(TWAP). FAIL when its interval lies entirely above 1 (lo > 1: significantly worse) or the
    point estimate exceeds 1 + margin (materially worse whatever the interval), or it is undefined;
  - head "min_n" (minimum period N, m = N - 1: no time flexibility), per side: the same std ratio and rule;
  - head "min_1" (minimum period 1, m = 0), per side: the paired mean difference LEM - TWAP (bps). FAIL when
    the mean is significantly on the wrong side of TWAP's: buy lo > 0, sell hi < 0 (or undefined);
  - head "all": the number of non-finite per-order slippage values (LEM and baselines); FAIL above max_nonfinite.
A slice is gated when it has at least `min_orders` orders; a gated slice FAILS when any check fails. A smaller
slice is reported with its verdicts, not gated: only non-finite values fail it (bad outputs fail every slice,
statistics of too few orders do not). "better" (the overall criterion): the match head's std ratio interval lies
entirely below 1 (hi < 1) on both sides. `blessed`: no slice failed and the overall slice, when gated, is
better. The overall slice is gated like any other: with fewer than `min_orders` orders the split is too small
to show anything either way and the criterion does not apply (so keep `min_orders`, i.e.
`evaluation.min_slice_orders`, well below the split's size: e.g. the default 200).
Champion vs challenger (`compare_with_champion`): the challenger's match-VWAP std / the champion's on the same
orders, per side, with the std ratio rule (lo > 1 or point > 1 + margin fails).

Defaults of level and margin: `components.evaluator.config.EvaluationConfig` (one definition each).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from components.evaluator.config import EvaluationConfig
from lem_model import bootstrap, layout

#: The baseline every check compares with (TWAP schedule, volume target, vs VWAP).
REFERENCE = "twap_volume_vs_vwap"
#: Heads of the checks (index m on the min-period axis: `head_index`).
HEADS = ("match", "min_n", "min_1")
HEAD_LABELS = {"match": "match-VWAP head", "min_n": "min-period-N head (no flexibility)",
               "min_1": "min-period-1 head", "all": "all series"}
FIGURES = {"std_ratio": "std ratio LEM / TWAP (volume)", "mean_diff_bps": "mean LEM - TWAP (volume), bps",
           "nonfinite_count": "non-finite slippage values",
           "std_ratio_vs_champion": "std ratio challenger / champion"}
PASS, FAIL = "pass", "FAIL"
DEFAULT_LEVEL = EvaluationConfig.interval_level
DEFAULT_MARGIN = EvaluationConfig.max_std_ratio_margin
DEFAULT_MAX_NONFINITE = EvaluationConfig.max_nonfinite


def head_index(head: str, n_ahead: int) -> int:
    """Index m on the min-period axis of lem_bps [B, N+1, 4, 2]: match N, min_n N - 1, min_1 0."""
    return {"match": n_ahead, "min_n": n_ahead - 1, "min_1": 0}[head]


def _f(v) -> float:
    return float(v) if v is not None else float("nan")


def std_ratio_verdict(value: float, lo: float, hi: float, margin: float) -> tuple:
    """("pass" | "FAIL", reason) of a std ratio (LEM / TWAP, or challenger / champion) with its interval."""
    if not math.isfinite(value):
        return FAIL, "undefined"
    if math.isfinite(lo) and lo > 1.0:
        return FAIL, "significantly above 1: interval above 1"
    if value > 1.0 + margin:
        return FAIL, f"point estimate above 1 + margin = {1.0 + margin:g}"
    return PASS, ""


def mean_verdict(side: str, value: float, lo: float, hi: float) -> tuple:
    """("pass" | "FAIL", reason) of the paired mean difference LEM - TWAP (bps) of one side with its interval:
    worse is higher for a buy, lower for a sell (the paper's sign on both sides)."""
    if not math.isfinite(value):
        return FAIL, "undefined"
    if side == "buy" and lo > 0.0:
        return FAIL, "mean significantly above TWAP's (worse for a buy)"
    if side == "sell" and hi < 0.0:
        return FAIL, "mean significantly below TWAP's (worse for a sell)"
    return PASS, ""


def _std_ratio_check(head, side, x, y, blocks, *, level, margin, n_boot, seed, figure="std_ratio") -> dict:
    r = bootstrap.std_ratio(x, y, blocks, n_boot=n_boot, level=level, seed=seed)
    value, lo, hi = _f(r["ratio"]), _f(r["lo"]), _f(r["hi"])
    verdict, reason = std_ratio_verdict(value, lo, hi, margin)
    return {"head": head, "side": side, "figure": figure, "value": value, "lo": lo, "hi": hi,
            "verdict": verdict, "reason": reason}


def _mean_check(side, x, y, blocks, *, level, n_boot, seed) -> dict:
    d = bootstrap.paired_difference(x, y, blocks, n_boot=n_boot, level=level, seed=seed)
    value, lo, hi = _f(d["mean"]), _f(d["lo"]), _f(d["hi"])
    verdict, reason = mean_verdict(side, value, lo, hi)
    return {"head": "min_1", "side": side, "figure": "mean_diff_bps", "value": value, "lo": lo, "hi": hi,
            "verdict": verdict, "reason": reason}


def _blocks(blocks, b: int) -> np.ndarray:
    blocks = np.arange(b) if blocks is None else np.asarray(blocks).reshape(-1)
    if blocks.shape[0] != b:
        raise ValueError(f"blocks must have one entry per order ({b}), got {blocks.shape[0]}")
    return blocks


def _lem(lem_bps) -> np.ndarray:
    lem = np.asarray(lem_bps, np.float64)
    if lem.ndim != 4 or lem.shape[2:] != (layout.NUM_PATHS, layout.NUM_TARGETS) or lem.shape[1] < 2:
        raise ValueError(f"lem_bps must have shape [B, N+1, {layout.NUM_PATHS}, {layout.NUM_TARGETS}] with N >= 1, "
                         f"got {lem.shape}")
    return lem


def evaluate_slice(lem_bps, baseline_bps: Mapping[str, np.ndarray], blocks=None, *,
                   level: float = DEFAULT_LEVEL, margin: float = DEFAULT_MARGIN, n_boot: int = bootstrap.N_BOOT,
                   seed: int = 0, min_orders: int = 0, max_nonfinite: int = DEFAULT_MAX_NONFINITE) -> dict:
    """The gate's verdict on one slice of orders (module docstring for the rules).

    lem_bps: [B, N+1, 4, 2] per-order slippage (bps) of every head m, path (`lem_model.layout.PATHS`) and target
    (`components.evaluator.order_slippage.OrderSlippage.lem_bps`; NaN where undefined); baseline_bps: name -> [B]
    of the same orders, must hold "twap_volume_vs_vwap" (other series only enter the non-finite count);
    blocks: [B] bootstrap block of each order (`lem_model.bootstrap.day_blocks` of its first execution bar; None =
    every order its own block); level: interval level in (0, 1); margin: std ratios above 1 + margin fail whatever
    their interval; n_boot, seed: bootstrap replicates and seed; min_orders: the slice is gated only with at least
    this many orders; max_nonfinite: most non-finite slippage values allowed.

    Returns (JSON-serialisable; NaN where a figure is undefined):
      {"orders": B, "blocks": number of distinct blocks, "gated": bool, "level": level, "margin": margin,
       "checks": [{"head": "match"|"min_n"|"min_1"|"all", "side": "buy"|"sell"|"both",
                   "figure": "std_ratio"|"mean_diff_bps"|"nonfinite_count", "value", "lo", "hi",
                   "verdict": "pass"|"FAIL", "reason": why it failed ("" on pass)}, ...],
       "n_failures": number of FAIL checks, "failed": (gated and n_failures > 0) or non-finite values fail,
       "better": the match head's std ratio interval lies below 1 (hi < 1) on both sides}
    Check order: match buy, match sell, min_n buy, min_n sell, min_1 buy, min_1 sell, all both.
    """
    lem = _lem(lem_bps)
    if REFERENCE not in baseline_bps:
        raise ValueError(f"baseline_bps must hold '{REFERENCE}' (have {sorted(baseline_bps)})")
    if not 0.0 < float(level) < 1.0 or not float(margin) >= 0.0:
        raise ValueError(f"level must be in (0, 1) and margin >= 0, got {level} and {margin}")
    b, n = lem.shape[0], lem.shape[1] - 1
    twap = np.asarray(baseline_bps[REFERENCE], np.float64).reshape(-1)
    if twap.shape[0] != b:
        raise ValueError(f"baseline '{REFERENCE}' has {twap.shape[0]} orders, lem_bps {b}")
    blocks = _blocks(blocks, b)
    t = layout.target_index("volume")
    boot = dict(level=float(level), n_boot=int(n_boot), seed=int(seed))
    checks = []
    for head in ("match", "min_n"):
        m = head_index(head, n)
        for side in layout.SIDES:
            checks.append(_std_ratio_check(head, side, lem[:, m, layout.path_index(side, "vwap"), t], twap, blocks,
                                           margin=float(margin), **boot))
    for side in layout.SIDES:
        checks.append(_mean_check(side, lem[:, 0, layout.path_index(side, "vwap"), t], twap, blocks, **boot))
    nonfinite = int((~np.isfinite(lem)).sum()) + sum(int((~np.isfinite(np.asarray(v, np.float64))).sum())
                                                     for v in baseline_bps.values())
    checks.append({"head": "all", "side": "both", "figure": "nonfinite_count", "value": float(nonfinite),
                   "lo": float("nan"), "hi": float("nan"),
                   "verdict": FAIL if nonfinite > max_nonfinite else PASS,
                   "reason": f"more than {max_nonfinite}" if nonfinite > max_nonfinite else ""})
    n_failures = sum(c["verdict"] == FAIL for c in checks)
    gated = b >= int(min_orders)
    match = [c for c in checks if c["head"] == "match"]
    return {"orders": int(b), "blocks": int(len(np.unique(blocks))), "gated": bool(gated), "level": float(level),
            "margin": float(margin), "checks": checks, "n_failures": int(n_failures),
            "failed": bool((gated and n_failures > 0) or checks[-1]["verdict"] == FAIL),
            "better": bool(all(math.isfinite(c["hi"]) and c["hi"] < 1.0 for c in match))}


def blessed(slice_results: Mapping[str, dict], overall_name: str = "overall") -> bool:
    """True when no slice of `slice_results` (name -> `evaluate_slice` result) failed and the overall slice
    (`overall_name`, which must be present) is significantly better than TWAP (volume) ("better"), or is not
    gated (fewer than min_orders orders: module docstring)."""
    overall = slice_results.get(overall_name)
    if overall is None:
        return False
    return bool(overall["better"] or not overall["gated"]) and not any(r["failed"] for r in slice_results.values())


def compare_with_champion(challenger_bps, champion_bps, blocks=None, *, level: float = DEFAULT_LEVEL,
                          margin: float = DEFAULT_MARGIN, n_boot: int = bootstrap.N_BOOT, seed: int = 0,
                          min_orders: int = 0) -> dict:
    """Challenger vs champion (the latest blessed model) on the same orders: per side, std(challenger match-VWAP
    head) / std(champion's), volume target, with the std ratio rule (lo > 1 or point > 1 + margin fails).

    challenger_bps, champion_bps: [B, N+1, 4, 2] of the same orders (N may differ; the match head is the last).
    Returns {"orders", "gated", "checks": [{"head": "match", "side", "figure": "std_ratio_vs_champion", "value",
    "lo", "hi", "verdict", "reason"}, ...] (buy, sell), "n_failures", "failed": gated and n_failures > 0}."""
    new, old = _lem(challenger_bps), _lem(champion_bps)
    if new.shape[0] != old.shape[0]:
        raise ValueError(f"challenger and champion must be evaluated on the same orders, got {new.shape[0]} "
                         f"and {old.shape[0]}")
    b = new.shape[0]
    blocks = _blocks(blocks, b)
    t = layout.target_index("volume")
    checks = [_std_ratio_check("match", side, new[:, -1, layout.path_index(side, "vwap"), t],
                               old[:, -1, layout.path_index(side, "vwap"), t], blocks, level=float(level),
                               margin=float(margin), n_boot=int(n_boot), seed=int(seed),
                               figure="std_ratio_vs_champion")
              for side in layout.SIDES]
    n_failures = sum(c["verdict"] == FAIL for c in checks)
    gated = b >= int(min_orders)
    return {"orders": int(b), "gated": bool(gated), "checks": checks, "n_failures": int(n_failures),
            "failed": bool(gated and n_failures > 0)}


def check_label(check: Mapping) -> str:
    """e.g. "min_n sell std_ratio 2.810 [2.402, 3.198] FAIL (significantly above 1: interval above 1)"."""
    if check["figure"] == "nonfinite_count":
        text = f"non-finite values {int(check['value'])}"
    else:
        text = f"{check['head']} {check['side']} {check['figure']} {check['value']:.3f} [{check['lo']:.3f}, {check['hi']:.3f}]"
    reason = check.get("reason") or ""
    return text + ((f" FAIL ({reason})" if reason else " FAIL") if check["verdict"] == FAIL else " pass")
