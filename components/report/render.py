"""Render the execution report: the paper's Tables 1-5 (and per-frequency Table 1, as Tables 6-8) and the
kinds of Figures 5-19 (slippage distributions per minimum period, cumulative execution curves per path).

Pure NumPy + matplotlib (Agg) on per-order arrays; statistics and the Table 1 layout come from
`lem_model.slippage`, so the report, the Evaluator and the command line print the same numbers.
Inputs: allocations [B, N, N+1, 4, 2], `OrderSlippage` (`components.evaluator.order_slippage`), and per-order
`frequency_minutes` [B] and `asset` [B] for the per-frequency tables and figures.
"""
from __future__ import annotations

import html
import json
import os
from typing import Mapping, Sequence

import numpy as np

from components.evaluator import order_slippage as osl
from lem_model import layout, slippage

#: Paper's strategy rows of Tables 2-5, per side: (label, benchmark of the path, target).
DETAILED_STRATEGIES = (("TWAP Volume vs TWAP", "twap", "volume"), ("TWAP Notional vs TWAP", "twap", "notional"),
                       ("VWAP Volume vs VWAP", "vwap", "volume"), ("VWAP Notional vs VWAP", "vwap", "notional"))
_COLORS = {"buy": "#1f77b4", "sell": "#d62728", "TWAP Volume": "#2ca02c", "TWAP Notional": "#7f7f7f"}


def featured_heads(n_ahead: int) -> list:
    """Head indices shown in detail: the paper's min 7/10/12 of N = 12 (about N/2+1, N-2, N) and the match head."""
    mins = sorted({n_ahead // 2 + 1, max(1, n_ahead - 2), n_ahead})
    return [m - 1 for m in mins] + [n_ahead]


def head_title(m: int, n_ahead: int, benchmark: str = "vwap") -> str:
    return f"Match {benchmark.upper()}" if m == n_ahead else f"Min {m + 1} periods"


def table1_rows(result: osl.OrderSlippage, mask=None) -> list:
    """Table 1: TWAP Notional / TWAP Volume vs VWAP, then BUY and SELL VWAP-volume rows per minimum period."""
    sel = slice(None) if mask is None else mask
    base = {"TWAP Notional": result.baseline_bps["twap_notional_vs_vwap"][sel],
            "TWAP Volume": result.baseline_bps["twap_volume_vs_vwap"][sel]}
    return slippage.table_rows(result.lem_bps[sel], benchmark="vwap", target="volume", baselines=base)


def detailed_rows(result: osl.OrderSlippage, m: int) -> list:
    """Tables 2-5: per side, the model's four (benchmark, target) paths of head `m`."""
    rows = []
    for side in layout.SIDES:
        for label, bench, target in DETAILED_STRATEGIES:
            values = result.lem_bps[:, m, layout.path_index(side, bench), layout.target_index(target)]
            rows.append({"order_type": side.upper(), "min_period": label, **slippage.table_statistics(values)})
    return rows


def _html_table(rows: Sequence[Mapping], second_header: str, title: str) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("Order Type", second_header) + slippage.STAT_HEADERS)
    body, last = [], None
    for r in rows:
        order = r["order_type"] if r["order_type"] != last else ""
        last = r["order_type"]
        cells = "".join(f"<td>{r[k]:.2f}</td>" for k in slippage.STAT_COLUMNS)
        body.append(f"<tr><td>{html.escape(order)}</td><td>{html.escape(str(r['min_period']))}</td>{cells}"
                    f"<td class='n'>{r['n']}</td></tr>")
    invalid = sum(int(r.get("n_invalid", 0)) for r in rows)
    note = f"<p class='note'>{invalid} undefined slippage value(s) excluded.</p>" if invalid else ""
    return (f"<h3>{html.escape(title)}</h3><table><thead><tr>{head}<th>n</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}")


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _density(ax, values, label, color, lo, hi, bins=60):
    """Smoothed histogram density on [lo, hi]; the legend gives the table statistics of all values."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return
    inside = v[(v >= lo) & (v <= hi)]
    hist, edges = np.histogram(inside, bins=bins, range=(lo, hi))
    hist = hist / (v.size * (edges[1] - edges[0]))  # density of all values: mass outside the range is shown as lost
    centres = 0.5 * (edges[1:] + edges[:-1])
    kernel = np.array([1, 2, 3, 2, 1], np.float64)
    smooth = np.convolve(hist, kernel / kernel.sum(), mode="same")
    stats = slippage.table_statistics(v)
    ax.plot(centres, smooth, label=f"{label} (mean {stats['mean']:+.1f}, std {stats['std']:.1f})", color=color, lw=1.6)


def slippage_figure(result: osl.OrderSlippage, m: int, path: str, title: str) -> str:
    """Figures 5-12 kind: slippage densities (bps) of BUY and SELL VWAP-volume heads `m` and the TWAP baselines."""
    plt = _plt()
    n = result.lem_bps.shape[1] - 1
    t = layout.target_index("volume")
    series = {f"{side.upper()} LEM": result.lem_bps[:, m, layout.path_index(side, "vwap"), t]
              for side in layout.SIDES}
    series["TWAP Volume"] = result.baseline_bps["twap_volume_vs_vwap"]
    series["TWAP Notional"] = result.baseline_bps["twap_notional_vs_vwap"]
    allv = np.concatenate([np.asarray(v)[np.isfinite(v)] for v in series.values()])
    lo, hi = (np.percentile(allv, [1, 99]) if allv.size else (-1.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    colors = {"BUY LEM": _COLORS["buy"], "SELL LEM": _COLORS["sell"], **_COLORS}
    for label, values in series.items():
        _density(ax, values, label, colors[label], lo, hi)
    ax.axvline(0.0, color="black", lw=0.8, ls=":")
    ax.set_xlabel("slippage vs VWAP (bps): lower is better for buys, higher for sells "
                  "(P1-P99 range shown; statistics over all orders)")
    ax.set_ylabel("density")
    ax.set_title(f"{title} - Slippage Distribution - {head_title(m, n)}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def execution_curves_figure(allocations, m: int, path: str, title: str, max_curves: int = 400,
                            target: str = "volume", seed: int = 0) -> str:
    """Figures 13-19 kind: cumulative fraction of the order traded after each step, per path (head `m`)."""
    plt = _plt()
    from matplotlib.collections import LineCollection
    a = np.asarray(allocations, np.float64)
    b, n = a.shape[:2]
    t = layout.target_index(target)
    rng = np.random.default_rng(seed)
    pick = rng.choice(b, size=min(b, max_curves), replace=False) if b else np.zeros(0, int)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), dpi=110, sharey=True)
    steps = np.arange(0, n + 1)
    for p, (ax, name) in enumerate(zip(axes, layout.PATHS)):
        cum = np.concatenate([np.zeros((b, 1)), np.cumsum(a[:, :, m, p, t], axis=1)], axis=1)
        color = _COLORS[layout.PATH_SIDE[p]]
        if len(pick):  # one LineCollection: hundreds of curves in milliseconds
            segments = np.stack([np.broadcast_to(steps, (len(pick), n + 1)), cum[pick]], axis=-1)
            ax.add_collection(LineCollection(segments, colors=color, alpha=0.08, linewidths=0.8))
        if b:
            ax.plot(steps, cum.mean(axis=0), color="black", lw=2.0, label="mean")
        ax.plot(steps, steps / n, color="#2ca02c", lw=1.2, ls="--", label="TWAP")
        ax.set_title(name.replace("_", " ").upper().replace("BUY ", "BUY-").replace("SELL ", "SELL-"), fontsize=10)
        ax.set_xlabel("execution bar")
        ax.set_xlim(0, n)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.25)
    axes[0].set_ylabel(f"cumulative fraction ({target})")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{title} - Execution Curves - {head_title(m, n)}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


_CSS = """body{font-family:system-ui,Arial,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:right}td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}th{background:#f3f3f3}
td.n{color:#888}.ok{color:#1a7f37;font-weight:bold}.bad{color:#cf222e;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:6px 0}.note{color:#666;font-size:12px}"""


def render_report(out_dir: str, allocations, result: osl.OrderSlippage, frequency_minutes, asset, *,
                  title: str = "LEM", header: Mapping | None = None, validation: Sequence[str] = (),
                  max_curves: int = 400) -> dict:
    """Write `index.html`, `figures/*.png`, `tables.txt` and `summary.json` into `out_dir`; returns the summary."""
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    n = result.lem_bps.shape[1] - 1
    freq = np.asarray(frequency_minutes).reshape(-1)
    assets = np.asarray([a.decode() if isinstance(a, bytes) else str(a) for a in np.asarray(asset).reshape(-1)])
    header = dict(header or {})
    parts, text = [], []

    rows1 = table1_rows(result)
    parts.append(_html_table(rows1, "Min Period", "Table 1: TWAP Benchmarks and VWAP Model Performance by Minimum "
                                                  "Period (volume orders, all frequencies)"))
    text.append(slippage.format_table(rows1, "Table 1: TWAP benchmarks and VWAP model performance by minimum "
                                             "period (bps; volume orders)"))
    tables = {"table1": rows1}
    for i, m in enumerate(featured_heads(n)):
        label = "Match Benchmark" if m == n else f"Minimum Period {m + 1}"
        rows = detailed_rows(result, m)
        tables[f"table{2 + i}"] = rows
        parts.append(_html_table(rows, "Strategy", f"Table {2 + i}: Detailed Model Comparison ({label})"))
    freqs = sorted(set(int(f) for f in freq))
    for j, f in enumerate(freqs):
        rows = table1_rows(result, freq == f)
        tables[f"table1_freq{f}"] = rows
        parts.append(_html_table(rows, "Min Period", f"Table {6 + j}: TWAP Benchmarks and VWAP Model Performance "
                                                     f"by Minimum Period with frequency: {f} minutes"))

    figures = []
    fig_no = 5
    groups = [("all", "All frequencies", np.ones(freq.shape, bool))] + \
             ([(f"freq{f}", f"Frequency of {f} minutes", freq == f) for f in freqs] if len(freqs) > 1 else [])
    for key, label, mask in groups:
        sub = osl.OrderSlippage(lem_bps=result.lem_bps[mask],
                                baseline_bps={k: v[mask] for k, v in result.baseline_bps.items()},
                                labels=result.labels[mask])
        for m in featured_heads(n):
            name = f"slippage_{key}_{osl.head_name(m, n)}.png"
            slippage_figure(sub, m, os.path.join(out_dir, "figures", name), f"{title} ({label})")
            figures.append((f"Figure {fig_no}: Slippage Distribution - {head_title(m, n)} - {label}", name))
            fig_no += 1
    for key, label, mask in groups:
        for m in featured_heads(n):
            name = f"curves_{key}_{osl.head_name(m, n)}.png"
            execution_curves_figure(np.asarray(allocations)[mask], m, os.path.join(out_dir, "figures", name),
                                    f"{title} ({label})", max_curves=max_curves)
            figures.append((f"Figure {fig_no}: Execution Curves - {head_title(m, n)} - {label}", name))
            fig_no += 1

    counts = {f"{a} / {f} min": int(((assets == a) & (freq == f)).sum())
              for a in sorted(set(assets)) for f in freqs if ((assets == a) & (freq == f)).any()}
    head_html = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{v}</td></tr>" for k, v in header.items())
    count_html = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in counts.items())
    valid_html = "".join(f"<li>{html.escape(v)}</li>" for v in validation)
    blessed = header.get("blessed")
    status = ("<p class='ok'>BLESSED: pushed to serving</p>" if blessed
              else "<p class='bad'>NOT BLESSED: not pushed</p>" if blessed is not None else "")
    fig_html = "".join(f"<h3>{html.escape(cap)}</h3><img src='figures/{fn}' alt='{html.escape(cap)}'>"
                       for cap, fn in figures)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} execution report</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}: execution report</h1>{status}"
            f"<table>{head_html}</table>"
            + (f"<h2>Blessing checks</h2><ul>{valid_html}</ul>" if valid_html else "")
            + f"<h2>Orders evaluated</h2><table><tr><th>asset / frequency</th><th>orders</th></tr>{count_html}</table>"
            "<p class='note'>Slippage = 1e4 x (achieved price / benchmark - 1) in bps, the paper's sign for both "
            "sides (lower is better for buys, higher for sells). Min period m: the benchmark window lasts at least "
            "m bars and until the order completes; Match: window = all N bars, objective |slippage|.</p>"
            "<h2>Tables</h2>" + "".join(parts) + "<h2>Figures</h2>" + fig_html + "</body></html>")
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)
    with open(os.path.join(out_dir, "tables.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(text) + "\n")
    summary = {"orders": int(result.lem_bps.shape[0]), "counts": counts, "header": header,
               "validation": list(validation), "tables": tables, "figures": [fn for _, fn in figures]}
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary
