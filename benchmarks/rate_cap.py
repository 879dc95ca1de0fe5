"""A per-bar cap on the trading rate of a finished run's LEM (issue 21: "constraint sampling"): the same trained
model, its `max_rate` input set to each cap, on one split's orders, scored by the report's tables.

    .venv/bin/python benchmarks/rate_cap.py --config benchmarks/reproduce/crypto.yaml --split eval \
        --max-rates 1,0.5,0.3,0.2,0.15 --output runs/rate-cap/eval.json

`max_rate` is a request input of every exported signature (fraction of the order per execution bar; the
allocator, `lem_model.layers.constrain_step`, never trades more in a bar and still completes the order when
`max_rate * N >= 1`). Desks cap participation this way; the question here is what a cap does to the tails that
decide the 15-minute test ratio (a surge order the match head finished in its first bars: HISTORY.md, session 13).

Per cap: `serving_default` of the newest Trainer model under the config's pipeline root on the orders of the
split (the VwapCurveBaseline's examples, so the volume-curve baseline is scored too), the report's tables
(`reproduce.report_tables`) and issue #21's targets (`reproduce.summarise_tables`), and the concentration of the
match head's variance (`reproduce_tails.concentration`). Choose a cap on the eval split; read test once.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
for p in (ROOT, BENCH_DIR):
    if p not in sys.path:
        sys.path.insert(0, p)
from _common import add_set_argument, git_commit, latest_artifact, load_config, machine_info  # noqa: E402


def capped_allocations(model_dir: str, raw: dict, max_rate: float, batch: int = 512) -> np.ndarray:
    """allocations [B, N, N+1, 4, 2] of the `serving_default` signature with `max_rate` on every order (min rate:
    the paper's 1/N^2, as in training)."""
    import tensorflow as tf
    from components.trainer.export import read_metadata
    from lem_model.presets import paper_min_rate
    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    n = int(read_metadata(model_dir)["n_ahead"])
    parts = []
    for i in range(0, len(raw["volume"]), batch):
        sl = slice(i, i + batch)
        b = len(raw["volume"][sl])
        parts.append(fn(volume=tf.constant(raw["volume"][sl]), quote_volume=tf.constant(raw["quote_volume"][sl]),
                        timestamp=tf.constant(raw["timestamp"][sl]),
                        frequency_minutes=tf.constant(raw["frequency_minutes"][sl]),
                        min_rate=tf.fill([b], np.float32(paper_min_rate(n))),
                        max_rate=tf.fill([b], np.float32(max_rate)))["allocations"].numpy())
    return np.concatenate(parts)


def score(raw: dict, sizes: dict, allocations, experiment: str = "crypto") -> dict:
    """The reproduce results block (`summarise_tables`) and per-slice concentration of one set of allocations."""
    import reproduce
    import reproduce_tails
    from components.evaluator import order_slippage as osl
    from lem_model import bootstrap, layout
    labels = osl.labels_from_raw(raw["volume"], raw["quote_volume"], raw["timestamp"], raw["frequency_minutes"],
                                 **sizes)
    result = osl.order_slippage(allocations, labels, raw.get(osl.VWAP_CURVE_FEATURE))
    o, n = sizes["norm_window"] + sizes["lookback"], sizes["n_ahead"]
    first = raw["timestamp"][:, o]
    blocks = bootstrap.day_blocks(first)
    freq, asset = raw["frequency_minutes"], raw["asset"]
    day = lambda t: str(np.datetime64(int(t), "s"))[:16]  # noqa: E731
    res = reproduce.summarise_tables(
        experiment, reproduce.report_tables(result, freq, asset, blocks), n_ahead=n, split=None,
        period=f"{day(first.min())} .. {day(first.max())}", orders=int(len(first)),
        counts={f"{f} min": int((freq == f).sum()) for f in sorted(set(freq.tolist()))})
    t = layout.target_index("volume")
    res["concentration"] = reproduce_tails.concentration_by_frequency(
        result.lem_bps, result.baseline_bps["twap_volume_vs_vwap"], blocks, freq)
    # how fast the match head trades: the share of the order done in the first half of the bars (mean over orders)
    half = n // 2
    res["match_head_first_half_share"] = {
        side: float(np.clip(allocations[:, :half, n, layout.path_index(side, "vwap"), t], 0, None).sum(1).mean())
        for side in layout.SIDES}
    return res


def row(cap: float, res: dict) -> dict:
    """The figures compared across caps."""
    out = {"max_rate": cap}
    for f in res["frequencies"]:
        s = res["slices"][f"{f} min"]
        lem = s["lem_volume_vs_vwap"]
        n = res["n_ahead"]
        out[f"{f} min"] = {
            "match_ratio": [s["match_vwap_std_ratio"]["value"], s["match_vwap_std_ratio"]["lo"],
                            s["match_vwap_std_ratio"]["hi"]],
            "ratio_without_twap_top_1pct": res["concentration"][f"{f} min"].get("ratio_without_top"),
            "buy_min1": lem["buy"]["1"]["mean"], "sell_min1": lem["sell"]["1"]["mean"],
            "min_n_std": [lem["buy"][str(n)]["std"], lem["sell"][str(n)]["std"]],
            "twap_std": s["baselines"]["twap_volume"]["std"]}
    met = [t["met"] for t in res["targets"] if t["met"] is not None]
    out["targets_met"] = f"{sum(met)} of {len(met)}"
    out["match_head_first_half_share"] = res["match_head_first_half_share"]
    return out


def markdown(result: dict) -> str:
    freqs = result["frequencies"]
    lines = [f"# Rate cap on the {result['split']} split ({result['orders']} orders)", "",
             f"Command: `{result['command']}`; model `{result['model_dir']}`; commit {result['commit']}; "
             f"{result['date']}.", "",
             "| max rate | " + " | ".join(f"{f} min match ratio [95 % CI] (w/o TWAP top 1 %)" for f in freqs)
             + " | 15 min BUY / SELL min 1 | 15 min min-N std buy / sell (TWAP) | first-half share | targets met |",
             "|---" * (len(freqs) + 5) + "|"]
    for r in result["rows"]:
        f0 = r[f"{freqs[0]} min"]
        cells = [f"{r[f'{f} min']['match_ratio'][0]:.3f} [{r[f'{f} min']['match_ratio'][1]:.3f}, "
                 f"{r[f'{f} min']['match_ratio'][2]:.3f}] ({r[f'{f} min']['ratio_without_twap_top_1pct']:.3f})"
                 for f in freqs]
        lines.append(f"| {r['max_rate']:g} | " + " | ".join(cells)
                     + f" | {f0['buy_min1']:.2f} / {f0['sell_min1']:.2f} | {f0['min_n_std'][0]:.1f} / "
                       f"{f0['min_n_std'][1]:.1f} ({f0['twap_std']:.2f}) | "
                       f"{r['match_head_first_half_share']['buy']:.2f} / {r['match_head_first_half_share']['sell']:.2f}"
                       f" | {r['targets_met']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=os.path.join(BENCH_DIR, "reproduce", "crypto.yaml"))
    p.add_argument("--split", choices=("eval", "test"), required=True)
    p.add_argument("--max-rates", default="1,0.5,0.3,0.2,0.15",
                   help="comma-separated caps (fractions of the order per bar; each * N must be >= 1)")
    p.add_argument("--experiment", default="crypto", choices=("crypto", "dow"))
    p.add_argument("--output", required=True, help=".json (a .md beside it)")
    add_set_argument(p)
    a = p.parse_args(argv)
    config = load_config(a.config, a.set, "rate_cap")   # a bad file or override fails before TensorFlow loads
    from components.report.component import read_raw_examples
    from components.trainer.export import read_metadata
    model_dir = os.path.join(latest_artifact(config.pipeline_root, "Trainer", "model"), "Format-Serving")
    examples = os.path.join(latest_artifact(config.pipeline_root, "VwapCurveBaseline", "baseline_examples"),
                            f"Split-{a.split}")
    meta = read_metadata(model_dir)
    sizes = {k: int(meta[k]) for k in ("norm_window", "lookback", "n_ahead")}
    caps = [float(x) for x in a.max_rates.split(",")]
    bad = [c for c in caps if not 0 < c <= 1 or c * sizes["n_ahead"] < 1]
    if bad:
        raise SystemExit(f"--max-rates {bad}: each cap must be in (0, 1] and at least 1/N = {1 / sizes['n_ahead']:.4f}")
    raw = read_raw_examples(examples)
    rows, full = [], {}
    for cap in caps:
        res = score(raw, sizes, capped_allocations(model_dir, raw, cap), a.experiment)
        full[f"{cap:g}"] = res
        rows.append(row(cap, res))
        print(f"[rate-cap] max_rate {cap:g}: " + json.dumps({k: v for k, v in rows[-1].items() if k.endswith("min")}),
              flush=True)
    result = {"split": a.split, "orders": int(len(raw["volume"])), "frequencies": full[f"{caps[0]:g}"]["frequencies"],
              "model_dir": os.path.relpath(model_dir, ROOT), "config": os.path.relpath(a.config, ROOT),
              "overrides": a.set, "rows": rows, "results": full, "commit": git_commit(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
              "command": "benchmarks/rate_cap.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    with open(a.output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=float)
    with open(os.path.splitext(a.output)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
