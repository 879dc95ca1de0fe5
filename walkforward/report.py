"""The backtest's Markdown page and its plot of the per-period ratios with their intervals (from the JSON that
`walkforward.runner.run` writes; `lems backtest --render JSON` rewrites both without a run)."""
from __future__ import annotations

import json
import os

HEADS = (("match_vwap_std_ratio", "match-VWAP std / TWAP (volume) std"),)


def _fmt(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(fig) -> str:
    if not fig or fig.get("value") is None:
        return "–"
    return f"{fig['value']:.3f} [{_fmt(fig.get('lo'))}, {_fmt(fig.get('hi'))}]"


def _verdict(fig, min_orders: int = 0) -> str:
    gate = fig.get("gate")
    if not gate:
        return "–"
    if fig.get("orders", 0) < min_orders:
        return "not gated (fewer orders)"
    failed = [c for c in gate.get("checks", []) if c.get("verdict") == "FAIL"]
    if failed:
        return "FAIL: " + "; ".join(f"{c.get('head')} {c.get('side', '')} {c.get('figure', '')}".strip()
                                     for c in failed[:3])
    return "better than TWAP" if gate.get("better") else "pass"


def _slice_rows(name: str, slices: dict, min_orders: int = 0) -> list:
    rows = []
    for key, fig in slices.items():
        if fig.get("orders", 0) < 2:
            rows.append(f"| {name} | {key} | {fig.get('orders', 0)} | – | – | – | – | – | – |")
            continue
        units = fig.get("min1_mean_twap_std_units", {})
        rows.append(
            f"| {name} | {key} | {fig['orders']} | {_ci(fig.get('match_vwap_std_ratio'))} "
            f"| {_ci(fig.get('min_n_std_ratio', {}).get('buy'))} | {_ci(fig.get('min_n_std_ratio', {}).get('sell'))} "
            f"| {_fmt(units.get('buy'))} / {_fmt(units.get('sell'))} "
            f"| {_fmt(fig.get('baselines', {}).get('twap_volume', {}).get('std_bps'), 2)} "
            f"| {_verdict(fig, min_orders)} |")
    return rows


HEADER = ("| period | slice | orders | match-VWAP std / TWAP std [95 %] | min-N std ratio BUY | min-N std ratio SELL "
          "| min-1 mean / TWAP std (BUY / SELL) | TWAP (volume) std, bps | gate |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _period_line(p: dict) -> str:
    gate = p.get("gate", {})
    verdict = "BLESSED" if gate.get("blessed") else "NOT BLESSED"
    failed = gate.get("failed_slices") or []
    return (f"- **{p['name']}**: trained on [{p['train_period'][0] or 'start of data'}, {p['train_period'][1]}), "
            f"validated on [{p['validation_period'][0]}, {p['validation_period'][1]}), scored "
            f"[{p['eval_period'][0]}, {p['eval_period'][1] or 'end of data'}): {p['orders']} orders on "
            f"{len(p.get('assets', []))} assets; {p.get('seconds', 0) / 60:.1f} min wall; gate: {verdict}"
            + (f" (failed: {', '.join(failed[:6])}{' ...' if len(failed) > 6 else ''})" if failed else ""))


def write_markdown(result: dict, path: str, *, plot_name: str = "") -> str:
    lines = [f"# Walk-forward backtest: {result['name']}", "",
             f"Date {result.get('date')}, commit {result.get('commit')}, machine {result.get('machine', {}).get('cpu')} "
             f"({result.get('machine', {}).get('cores')} cores). Command: `{result.get('command')}`.", "",
             f"Config `{result.get('config_file')}` (hash {result.get('config_hash')}). Gate: intervals at "
             f"{result.get('gate_rules', {}).get('interval_level')}, margin {result.get('gate_rules', {}).get('max_std_ratio_margin')}, "
             f"slices gated from {result.get('gate_rules', {}).get('min_slice_orders')} orders. "
             f"Test period scored {result.get('reads', {}).get('test', 0)} time(s), final period "
             f"{result.get('reads', {}).get('final', 0)} time(s).", ""]
    if plot_name:
        lines += [f"![per-period ratios]({plot_name})", ""]
    lines += ["## Periods", ""]
    for p in result.get("folds", []):
        lines.append(_period_line(p))
    for kind in ("test", "final"):
        if result.get(kind):
            lines.append(_period_line(result[kind]))
    gated_from = int(result.get("gate_rules", {}).get("min_slice_orders") or 0)
    lines += ["", "## Figures per period and slice", "",
              "Ratios against TWAP (volume) vs VWAP on the same orders, with block-bootstrap 95 % intervals "
              "(blocks: order start days); the min-1 means are in units of TWAP (volume)'s std on the same orders.",
              "", HEADER]
    for p in result.get("folds", []):
        lines += _slice_rows(p["name"], p.get("slices", {}), gated_from)
    if result.get("pooled"):
        lines += _slice_rows(f"pooled ({result['pooled']['folds']} folds)", result["pooled"].get("slices", {}),
                             gated_from)
    for kind in ("test", "final"):
        if result.get(kind):
            lines += _slice_rows(kind, result[kind].get("slices", {}), gated_from)
    source = result.get("pooled") or (result.get("folds") or [None])[-1]
    if source and source.get("asset_slices"):
        title = "pooled folds" if result.get("pooled") else source["name"]
        lines += ["", f"## Per asset ({title})", "", HEADER]
        for asset, slices in source["asset_slices"].items():
            lines += _slice_rows(asset, slices, gated_from)
    lines.append("")
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def plot_folds(result: dict, path: str) -> str:
    """One small panel per slice (frequencies and overall): each period's match-VWAP std ratio with its 95 %
    interval, the pooled folds, test and final after a gap; the line at 1 is TWAP (volume)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    periods = list(result.get("folds", []))
    extra = [(k, result[k]) for k in ("pooled", "test", "final") if result.get(k)]
    keys = []
    for p in periods + [v for _, v in extra]:
        for k in p.get("slices", {}):
            if k not in keys:
                keys.append(k)
    keys.sort(key=lambda k: (k == "overall", float(k.split()[0]) if k != "overall" else 0))
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 3.0), sharey=True, squeeze=False)
    labels = [p["name"].replace("fold-", "f") for p in periods] + [k for k, _ in extra]
    for ax, key in zip(axes[0], keys):
        for i, p in enumerate(periods + [v for _, v in extra]):
            fig_ = p.get("slices", {}).get(key, {}).get("match_vwap_std_ratio")
            if not fig_ or fig_.get("value") is None:
                continue
            x = i + (0.6 if i >= len(periods) else 0)
            lo, hi = fig_.get("lo"), fig_.get("hi")
            color = "tab:green" if hi is not None and hi < 1 else "tab:red" if lo is not None and lo > 1 else "tab:gray"
            yerr = None if lo is None or hi is None else [[fig_["value"] - lo], [hi - fig_["value"]]]
            ax.errorbar([x], [fig_["value"]], yerr=yerr, fmt="o", color=color, capsize=3)
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_title(key, fontsize=10)
        ticks = [i + (0.6 if i >= len(periods) else 0) for i in range(len(labels))]
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, rotation=45, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("match-VWAP std / TWAP std")
    fig.suptitle(f"Backtest {result.get('name')}: ratio per period, 95 % interval (green: below 1, red: above 1)",
                 fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(json_path: str) -> tuple:
    """Rewrite the Markdown and the plot of a written backtest JSON (no run)."""
    with open(json_path, encoding="utf-8") as f:
        result = json.load(f)
    base = json_path[:-len(".json")] if json_path.endswith(".json") else json_path
    write_markdown(result, f"{base}.md", plot_name=os.path.basename(f"{base}.png"))
    plot_folds(result, f"{base}.png")
    return f"{base}.md", f"{base}.png"
