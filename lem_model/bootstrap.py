"""Block bootstrap over order start dates (pure NumPy): 95 % intervals and a paired-difference p-value.

Orders that start on the same day overlap (their execution bars are shared, and so is the day's volatility), so
they are not independent draws: resampling single orders understates the uncertainty. Here the resampled unit
is the BLOCK (by default the UTC date of an order's first execution bar): each bootstrap replicate draws as many
blocks as there are, with replacement, and keeps every order of a drawn block (a cluster / moving-block
bootstrap with one block per day). Intervals are percentile intervals of the replicates.

Replicates are computed from per-block sums (count, sum x, sum x^2, ...), so a replicate costs O(blocks), not
O(orders): `n_boot` = 1000 on thousands of orders takes milliseconds.

The p-value of a paired difference d = LEM - baseline (per order) tests H0: mean(d) = 0 two-sided, with the
bootstrap distribution of mean(d) recentred on 0: p = (1 + #{|mean*_b - mean| >= |mean|}) / (n_boot + 1).

Why not TFMA's own confidence intervals (`Options.compute_confidence_intervals`, POISSON_BOOTSTRAP or
JACKKNIFE): TFMA resamples single examples (Poisson weights per example, or jackknife over example buckets),
which treats overlapping orders of one day as independent, and it does not produce a paired p-value. The
Evaluator therefore computes its intervals with this module (one implementation, shared with the report).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

SECONDS_PER_DAY = 86_400
#: Default replicates and level.
N_BOOT = 1000
LEVEL = 0.95


def day_blocks(start_seconds) -> np.ndarray:
    """Block id of each order: the UTC day number of its first execution bar (seconds since the epoch)."""
    return np.floor_divide(np.asarray(start_seconds, np.int64).reshape(-1), SECONDS_PER_DAY)


def _block_index(blocks) -> tuple:
    blocks = np.asarray(blocks).reshape(-1)
    uniq, inverse = np.unique(blocks, return_inverse=True)
    return len(uniq), inverse


def _replicate_counts(n_blocks: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_blocks]: how often each block is drawn in each replicate (multinomial, n_blocks draws)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n_boot).astype(np.float64)


def _sums(inverse, n_blocks, *columns) -> np.ndarray:
    """[n_blocks, k] per-block sums of the given per-order columns."""
    return np.stack([np.bincount(inverse, weights=c, minlength=n_blocks) for c in columns], axis=1)


def _interval(replicates, level):
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo, hi = np.percentile(r, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def _mean_std(counts, sums):
    """Replicate mean and std (ddof=1) from per-block [n, sum x, sum x^2] and replicate counts."""
    tot = counts @ sums  # [n_boot, 3]
    n, s1, s2 = tot[:, 0], tot[:, 1], tot[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n
        var = (s2 - n * mean ** 2) / (n - 1)
    return mean, np.sqrt(np.clip(var, 0.0, None))


def _finite_pairs(x, y=None, blocks=None):
    x = np.asarray(x, np.float64).reshape(-1)
    ok = np.isfinite(x)
    if y is not None:
        y = np.asarray(y, np.float64).reshape(-1)
        if y.shape != x.shape:
            raise ValueError(f"paired samples must have the same length, got {x.shape[0]} and {y.shape[0]}")
        ok &= np.isfinite(y)
    blocks = np.asarray(blocks).reshape(-1)
    if blocks.shape[0] != x.shape[0]:
        raise ValueError(f"blocks must have one entry per order ({x.shape[0]}), got {blocks.shape[0]}")
    return x[ok], (None if y is None else y[ok]), blocks[ok], int((~ok).sum())


def sample_statistics(x, blocks, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Dict[str, float]:
    """Mean and std (ddof=1) of the finite values of `x` with block-bootstrap intervals.

    Returns {mean, mean_lo, mean_hi, std, std_lo, std_hi, n, n_blocks, n_invalid}."""
    x, _, blocks, n_invalid = _finite_pairs(x, None, blocks)
    out = {"n": int(x.size), "n_invalid": n_invalid}
    if x.size < 2:
        nan = float("nan")
        out.update(mean=float(x.mean()) if x.size else nan, mean_lo=nan, mean_hi=nan, std=nan if x.size == 0 else 0.0,
                   std_lo=nan, std_hi=nan, n_blocks=int(len(np.unique(blocks))))
        return out
    k, inv = _block_index(blocks)
    counts = _replicate_counts(k, n_boot, seed)
    mean, std = _mean_std(counts, _sums(inv, k, np.ones_like(x), x, x * x))
    out.update(mean=float(x.mean()), std=float(x.std(ddof=1)), n_blocks=k)
    out["mean_lo"], out["mean_hi"] = _interval(mean, level)
    out["std_lo"], out["std_hi"] = _interval(std, level)
    return out


def std_ratio(x, y, blocks, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Dict[str, float]:
    """std(x) / std(y) over the orders where both are finite, with a block-bootstrap interval (x and y are
    resampled together, order by order, so their correlation is kept). Returns {ratio, lo, hi, n}."""
    x, y, blocks, _ = _finite_pairs(x, y, blocks)
    nan = float("nan")
    if x.size < 2 or y.std() == 0:
        return {"ratio": nan, "lo": nan, "hi": nan, "n": int(x.size)}
    k, inv = _block_index(blocks)
    counts = _replicate_counts(k, n_boot, seed)
    sums = _sums(inv, k, np.ones_like(x), x, x * x, y, y * y)
    _, sx = _mean_std(counts, sums[:, [0, 1, 2]])
    _, sy = _mean_std(counts, sums[:, [0, 3, 4]])
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = sx / sy
    lo, hi = _interval(reps, level)
    return {"ratio": float(x.std(ddof=1) / y.std(ddof=1)), "lo": lo, "hi": hi, "n": int(x.size)}


def paired_difference(x, y, blocks, *, n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = 0) -> Dict[str, float]:
    """Mean of the per-order difference d = x - y (orders where both are finite), its block-bootstrap interval
    and the two-sided bootstrap p-value of H0: mean(d) = 0 (module docstring). Returns
    {mean, lo, hi, p_value, n, n_blocks}."""
    x, y, blocks, _ = _finite_pairs(x, y, blocks)
    d = x - y
    nan = float("nan")
    if d.size < 2:
        return {"mean": float(d.mean()) if d.size else nan, "lo": nan, "hi": nan, "p_value": nan, "n": int(d.size),
                "n_blocks": int(len(np.unique(blocks)))}
    k, inv = _block_index(blocks)
    counts = _replicate_counts(k, n_boot, seed)
    tot = counts @ _sums(inv, k, np.ones_like(d), d)
    reps = tot[:, 1] / tot[:, 0]
    est = float(d.mean())
    lo, hi = _interval(reps, level)
    p = (1.0 + np.sum(np.abs(reps - est) >= abs(est))) / (n_boot + 1.0)
    return {"mean": est, "lo": lo, "hi": hi, "p_value": float(min(1.0, p)), "n": int(d.size), "n_blocks": k}


def compare(lem, baseline, blocks, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0,
            absolute: bool = True) -> Dict[str, Optional[float]]:
    """LEM vs one baseline on the same orders: the std ratio std(LEM)/std(baseline) with its interval and the
    paired difference of |slippage| (absolute=True: |LEM| - |baseline| per order, negative = the LEM ends closer
    to the benchmark) with its interval and p-value."""
    lem = np.asarray(lem, np.float64)
    baseline = np.asarray(baseline, np.float64)
    ratio = std_ratio(lem, baseline, blocks, n_boot=n_boot, level=level, seed=seed)
    f = np.abs if absolute else (lambda v: v)
    diff = paired_difference(f(lem), f(baseline), blocks, n_boot=n_boot, level=level, seed=seed)
    return {"std_ratio": ratio["ratio"], "std_ratio_lo": ratio["lo"], "std_ratio_hi": ratio["hi"],
            "diff_mean": diff["mean"], "diff_lo": diff["lo"], "diff_hi": diff["hi"], "p_value": diff["p_value"],
            "n": diff["n"]}
