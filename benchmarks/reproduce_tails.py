"""Per-order tails of a finished reproduce run (issue 21): how much of each method's match-VWAP variance a few
orders carry, on which dates and assets they fall, and what the LEM's schedule does in them.

    .venv/bin/python benchmarks/reproduce_tails.py --config runs/crypto-diag.yaml --split test --split eval \
        --output runs/crypto-diag/tails.json

Per order of the split it recomputes, with the project's own code (the ExecutionReport's path:
`components.report.component.split_slippage`, `components.evaluator.order_slippage`,
i.e. `lem_model.features` and `lem_model.slippage`), the slippage vs VWAP (bps) of the LEM's match-VWAP head
(volume target, BUY and SELL paths) and of TWAP (volume), from the run's newest Trainer model and the
VwapCurveBaseline's examples, and checks that its match-VWAP std ratio equals the report's definition
(`order_slippage.match_std_ratio`). The per-order arrays are cached next to the output (`.npz`).

"Variance" below is the sum of squared slippage (bps^2) over the orders of a slice (the mean is small beside
the std: TWAP (volume) 0.68 vs 21 bps on the 15-minute test orders); a method's "top 1 %" are the ceil(1 %)
orders with its own largest squared slippage. `ratio_without_top` drops the orders that are in TWAP's top 1 %
(the same orders for both methods) and recomputes the match-VWAP std ratio (worse side, as the report does).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH_DIR)
from _common import add_set_argument, load_config  # noqa: E402

SECONDS_PER_DAY = 86_400
TOP_FRACTION = 0.01
TOP_N = 10


# ------------------------------------------------------------------------------------------- statistics
def _finite(*arrays):
    ok = np.ones(np.asarray(arrays[0]).shape[0], bool)
    for a in arrays:
        ok &= np.isfinite(np.asarray(a, np.float64))
    return ok


def top_count(n: int, fraction: float = TOP_FRACTION) -> int:
    """Orders in the top `fraction` of n (at least 1 when n > 0)."""
    return 0 if n <= 0 else max(1, int(math.ceil(fraction * n)))


def top_share(values, k: int) -> float:
    """Share of sum(values^2) carried by the k orders with the largest values^2 (NaN if the sum is 0)."""
    sq = np.square(np.asarray(values, np.float64))
    total = sq.sum()
    if k <= 0 or total <= 0:
        return float("nan")
    return float(np.sort(sq)[::-1][:k].sum() / total)


def std_ratio(lem_by_side: dict, twap, mask=None) -> float:
    """max over sides of std(LEM side) / std(TWAP) (ddof=1) on the orders of `mask` (the report's ratio)."""
    twap = np.asarray(twap, np.float64)
    sel = np.ones(twap.shape[0], bool) if mask is None else np.asarray(mask, bool)
    t = twap[sel]
    if t.size < 2 or t.std(ddof=1) == 0:
        return float("nan")
    return float(max(np.asarray(v, np.float64)[sel].std(ddof=1) for v in lem_by_side.values()) / t.std(ddof=1))


def concentration(lem_by_side: dict, twap, blocks=None, *, fraction: float = TOP_FRACTION, top_n: int = TOP_N,
                  n_boot: int = 1000) -> dict:
    """How concentrated the match-VWAP variance (sum of squared slippage) of TWAP (volume) and of the LEM's
    match head (each side) is in a few orders, and the std ratio with TWAP's top `fraction` of orders removed.

    lem_by_side: {"buy": [B], "sell": [B]} bps; twap: [B] bps; blocks: [B] bootstrap blocks (order start days)
    for the interval of the ratio without the top orders (None: no interval). Orders where any series is not
    finite are left out (counted in `n_invalid`)."""
    from lem_model import bootstrap
    twap = np.asarray(twap, np.float64)
    lem = {s: np.asarray(v, np.float64) for s, v in lem_by_side.items()}
    ok = _finite(twap, *lem.values())
    twap, lem = twap[ok], {s: v[ok] for s, v in lem.items()}
    blk = None if blocks is None else np.asarray(blocks)[ok]
    n = int(twap.size)
    k = top_count(n, fraction)
    out = {"orders": n, "n_invalid": int((~ok).sum()), "top_fraction": fraction, "top_k": k, "top_n": top_n}
    if n < 2:
        return out
    out["twap_top_share"] = top_share(twap, k)
    out["twap_top_n_share"] = top_share(twap, min(top_n, n))
    for s, v in lem.items():
        out[f"lem_{s}_top_share"] = top_share(v, k)
        out[f"lem_{s}_top_n_share"] = top_share(v, min(top_n, n))
    drop = np.zeros(n, bool)
    drop[np.argsort(np.square(twap))[::-1][:k]] = True
    for s, v in lem.items():  # the LEM's share of its own variance carried by TWAP's top orders
        out[f"lem_{s}_share_in_twap_top"] = float(np.square(v[drop]).sum() / np.square(v).sum())
    out["ratio"] = std_ratio(lem, twap)
    out["rms_ratio_in_top"] = float(max(np.sqrt(np.mean(np.square(v[drop]))) for v in lem.values())
                                         / np.sqrt(np.mean(np.square(twap[drop]))))
    keep = ~drop
    out["ratio_without_top"] = std_ratio(lem, twap, keep)
    if blk is not None and keep.sum() > 2:
        worst = max(lem, key=lambda s: lem[s][keep].std(ddof=1))
        r = bootstrap.std_ratio(lem[worst][keep], twap[keep], blk[keep], n_boot=n_boot)
        out["ratio_without_top_lo"], out["ratio_without_top_hi"] = r["lo"], r["hi"]
    return out


def day_shares(start_seconds, values, top: int = 10) -> list:
    """[(UTC date, orders, share of sum(values^2))] of the `top` days carrying the most of it."""
    v = np.square(np.asarray(values, np.float64))
    ok = np.isfinite(v)
    day = np.floor_divide(np.asarray(start_seconds, np.int64), SECONDS_PER_DAY)[ok]
    v = v[ok]
    days, inv = np.unique(day, return_inverse=True)
    sums, counts = np.bincount(inv, weights=v), np.bincount(inv)
    order = np.argsort(sums)[::-1][:top]
    return [(str(np.datetime64(int(days[i]), "D")), int(counts[i]), float(sums[i] / v.sum())) for i in order]


def episodes(start_seconds, gap_days: int = 1) -> list:
    """Group order start times into episodes: runs of UTC days at most `gap_days` apart.
    Returns [(first date, last date, orders)], largest first."""
    day = np.sort(np.floor_divide(np.asarray(start_seconds, np.int64), SECONDS_PER_DAY))
    if day.size == 0:
        return []
    groups, first, count = [], day[0], 1
    for prev, cur in zip(day[:-1], day[1:]):
        if cur - prev > gap_days:
            groups.append((first, prev, count))
            first, count = cur, 0
        count += 1
    groups.append((first, day[-1], count))
    groups.sort(key=lambda g: -g[2])
    return [(str(np.datetime64(int(a), "D")), str(np.datetime64(int(b), "D")), int(c)) for a, b, c in groups]


def schedule_profile(alloc, volume, price, mask) -> dict:
    """What the schedules do in the orders of `mask`: mean allocation per bar, mean volume share per bar, the
    burst bar (largest volume share) and the LEM's fraction on it, the fraction done in the first half."""
    a = np.asarray(alloc, np.float64)[mask]
    v = np.asarray(volume, np.float64)[mask]
    p = np.asarray(price, np.float64)[mask]
    if a.shape[0] == 0:
        return {"orders": 0}
    n = a.shape[1]
    share = v / np.where(v.sum(1, keepdims=True) > 0, v.sum(1, keepdims=True), 1.0)
    burst = share.argmax(1)
    rows = np.arange(a.shape[0])
    move = 1e4 * (p.max(1) / p.min(1) - 1.0)
    return {"orders": int(a.shape[0]), "mean_alloc": a.mean(0).round(4).tolist(),
            "mean_volume_share": share.mean(0).round(4).tolist(),
            "burst_bar_share_mean": float(share[rows, burst].mean()),
            "burst_bar_index_counts": np.bincount(burst, minlength=n).tolist(),
            "lem_alloc_on_burst_bar_mean": float(a[rows, burst].mean()), "twap_alloc": 1.0 / n,
            "lem_done_before_burst_mean": float(np.where(burst > 0, np.cumsum(a, 1)[rows, np.maximum(burst - 1, 0)],
                                                         0.0).mean()),
            "twap_done_before_burst_mean": float((burst / n).mean()),
            "lem_first_half_mean": float(a[:, : n // 2].sum(1).mean()),
            "abs_alloc_minus_volume_share_mean": float(np.abs(a - share).sum(1).mean()),
            "abs_twap_minus_volume_share_mean": float(np.abs(1.0 / n - share).sum(1).mean()),
            "price_range_bps_median": float(np.median(move))}


# ------------------------------------------------------------------------------------------- per order
def per_order(pipeline_root: str, split: str, cache: str | None = None) -> dict:
    """Per order of `split` of a finished run: start (s, first execution bar), asset, frequency, slippage vs VWAP
    (bps) of TWAP (volume), the VWAP curve (volume) and the LEM match-VWAP head (volume; buy and sell), the
    match head's schedules [B, N] and the execution bars' volume and VWAP [B, N] (labels). Uses the newest
    Trainer model and VwapCurveBaseline examples under `pipeline_root`; cached in `cache` (.npz) if given."""
    if cache and os.path.exists(cache):
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from _common import latest_artifact
    from components.evaluator import order_slippage as osl
    from components.report.component import split_slippage
    from lem_model import layout
    model_dir = os.path.join(latest_artifact(pipeline_root, "Trainer", "model"), "Format-Serving")
    examples = os.path.join(latest_artifact(pipeline_root, "VwapCurveBaseline", "baseline_examples"), f"Split-{split}")
    raw, _, sizes, allocations, result = split_slippage(model_dir, examples)
    n, t = sizes["n_ahead"], layout.target_index("volume")
    out = {"start": raw["timestamp"][:, sizes["norm_window"] + sizes["lookback"]].astype(np.int64),
           "asset": raw["asset"].astype(str), "frequency": raw["frequency_minutes"].astype(np.int64),
           "twap": result.baseline_bps["twap_volume_vs_vwap"],
           "curve": result.baseline_bps.get("vwap_curve_volume_vs_vwap", np.full(len(result.labels), np.nan)),
           "model_dir": np.asarray(model_dir), "examples": np.asarray(examples),
           "report_ratio": np.asarray(osl.match_std_ratio(result.lem_bps, result.baseline_bps))}
    for side in layout.SIDES:
        p = layout.path_index(side, "vwap")
        out[f"lem_{side}"] = result.lem_bps[:, n, p, t]
        out[f"alloc_{side}"] = np.asarray(allocations, np.float64)[:, :, n, p, t]
    out["volume"] = result.labels[..., layout.LABEL_VOLUME]
    out["price"] = result.labels[..., layout.LABEL_VWAP]
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        np.savez_compressed(cache, **out)
    return out


def concentration_by_frequency(lem_bps, twap, blocks, frequency_minutes) -> dict:
    """`concentration` of the match head (volume target, BUY and SELL vs VWAP) of per-order slippage `lem_bps`
    [B, N+1, 4, 2] against TWAP (volume) `twap` [B], overall and per frequency ("<f> min")."""
    from lem_model import layout
    lem_bps, freq = np.asarray(lem_bps), np.asarray(frequency_minutes)
    n, t = lem_bps.shape[1] - 1, layout.target_index("volume")
    masks = [("overall", np.ones(len(freq), bool))] + [(f"{f} min", freq == f) for f in sorted(set(freq.tolist()))]
    return {name: concentration({side: lem_bps[m][:, n, layout.path_index(side, "vwap"), t] for side in layout.SIDES},
                                np.asarray(twap)[m], np.asarray(blocks)[m]) for name, m in masks}


def slice_concentration(orders: dict, mask=None, **kwargs) -> dict:
    """`concentration` of the orders of `mask` of a `per_order` result (blocks: order start days)."""
    from lem_model import bootstrap
    sel = np.ones(orders["twap"].shape[0], bool) if mask is None else np.asarray(mask, bool)
    return concentration({"buy": orders["lem_buy"][sel], "sell": orders["lem_sell"][sel]}, orders["twap"][sel],
                         bootstrap.day_blocks(orders["start"][sel]), **kwargs)


def analyse(orders: dict, mask, top_list: int = 15) -> dict:
    """Concentration, the worst orders, the days and episodes they fall on, per asset ratios and the schedule
    profile in TWAP's top orders vs the rest, for the orders of `mask`."""
    sel = np.asarray(mask, bool)
    idx = np.flatnonzero(sel)
    conc = slice_concentration(orders, sel)
    twap = orders["twap"][idx]
    k = conc["top_k"]
    top = idx[np.argsort(np.square(twap))[::-1][:k]]
    worse = "buy" if orders["lem_buy"][idx].std(ddof=1) >= orders["lem_sell"][idx].std(ddof=1) else "sell"
    lem_top = idx[np.argsort(np.square(orders[f"lem_{worse}"][idx]))[::-1][:k]]
    when = lambda i: str(np.datetime64(int(orders["start"][i]), "s").astype("datetime64[m]"))  # noqa: E731
    worst = [{"start": when(i), "asset": str(orders["asset"][i]), "twap": round(float(orders["twap"][i]), 1),
              "lem_buy": round(float(orders["lem_buy"][i]), 1), "lem_sell": round(float(orders["lem_sell"][i]), 1)}
             for i in top[:top_list]]
    worst_lem = [{"start": when(i), "asset": str(orders["asset"][i]), "twap": round(float(orders["twap"][i]), 1),
                  f"lem_{worse}": round(float(orders[f"lem_{worse}"][i]), 1)} for i in lem_top[:top_list]]
    in_top = np.zeros(orders["twap"].shape[0], bool)
    in_top[top] = True
    assets = {}
    for a in sorted(set(orders["asset"][idx])):
        m = sel & (orders["asset"] == a)
        c = slice_concentration(orders, m)
        assets[a] = {"orders": c["orders"], "ratio": c.get("ratio"), "ratio_without_top": c.get("ratio_without_top"),
                     "twap_top_share": c.get("twap_top_share"), "twap_std": float(orders["twap"][m].std(ddof=1))}
    top_assets = {a: int((orders["asset"][top] == a).sum()) for a in sorted(set(orders["asset"][top]))}
    return {"concentration": conc, "worse_side": worse, "worst_twap_orders": worst, "worst_lem_orders": worst_lem,
            "twap_top_days": day_shares(orders["start"][idx], orders["twap"][idx]),
            "lem_top_days": day_shares(orders["start"][idx], orders[f"lem_{worse}"][idx]),
            "twap_top_episodes": episodes(orders["start"][top]),
            "lem_top_episodes": episodes(orders["start"][lem_top]),
            "twap_top_assets": top_assets, "per_asset": assets,
            "profile_twap_top": {s: schedule_profile(orders[f"alloc_{s}"], orders["volume"], orders["price"], in_top)
                                 for s in ("buy", "sell")},
            "profile_rest": {s: schedule_profile(orders[f"alloc_{s}"], orders["volume"], orders["price"],
                                                 sel & ~in_top) for s in ("buy", "sell")}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the finished run's pipeline config")
    p.add_argument("--split", action="append", choices=("test", "eval"), help="split(s) to analyse (default test)")
    p.add_argument("--output", required=True, help="JSON output (per-order caches: <output>-<split>.npz)")
    add_set_argument(p)
    a = p.parse_args(argv)
    config = load_config(a.config, a.set, "reproduce_tails")
    result = {"config": a.config, "overrides": a.set, "pipeline_root": config.pipeline_root, "splits": {}}
    stem = os.path.splitext(a.output)[0]
    for split in a.split or ["test"]:
        orders = per_order(config.pipeline_root, split, cache=f"{stem}-{split}.npz")
        block = {"orders": int(orders["twap"].size), "report_ratio_all": float(orders["report_ratio"]),
                 "model_dir": str(orders["model_dir"]), "frequencies": {}}
        for f in sorted(set(orders["frequency"].tolist())):
            block["frequencies"][f"{f} min"] = analyse(orders, orders["frequency"] == f)
        block["overall"] = analyse(orders, np.ones(orders["twap"].size, bool))
        result["splits"][split] = block
        for name, s in list(block["frequencies"].items()) + [("overall", block["overall"])]:
            c = s["concentration"]
            print(f"[tails] {split} {name}: {c['orders']} orders; ratio {c['ratio']:.3f}; top 1 % ({c['top_k']}) "
                  f"carry TWAP {c['twap_top_share']:.1%}, LEM buy {c['lem_buy_top_share']:.1%} / sell "
                  f"{c['lem_sell_top_share']:.1%}; top {c['top_n']}: TWAP {c['twap_top_n_share']:.1%}; ratio "
                  f"without TWAP's top 1 %: {c['ratio_without_top']:.3f} [{c.get('ratio_without_top_lo', float('nan')):.3f}, "
                  f"{c.get('ratio_without_top_hi', float('nan')):.3f}]; in those orders {c['rms_ratio_in_top']:.3f}",
                  flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    with open(a.output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"[tails] wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
