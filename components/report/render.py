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
from lem_model import bootstrap, layout, slippage

#: Strategy rows of Tables 2-5, per side: (label, benchmark of the path, target). The model's rows say "LEM".
DETAILED_STRATEGIES = (("LEM (volume) vs TWAP", "twap", "volume"), ("LEM (notional) vs TWAP", "twap", "notional"),
                       ("LEM (volume) vs VWAP", "vwap", "volume"), ("LEM (notional) vs VWAP", "vwap", "notional"))
#: Baseline rows of the Table 1 layout (vs VWAP), in print order: series of `osl.BASELINES`.
TABLE1_BASELINES = ("twap_notional_vs_vwap", "twap_volume_vs_vwap", "vwap_curve_volume_vs_vwap")
_COLORS = {"buy": "#1f77b4", "sell": "#d62728", "twap_volume_vs_vwap": "#2ca02c",
           "twap_notional_vs_vwap": "#7f7f7f", "vwap_curve_volume_vs_vwap": "#9467bd"}
#: Line styles tell the baselines apart (also in greyscale print).
_STYLES = {"twap_volume_vs_vwap": "--", "twap_notional_vs_vwap": ":", "vwap_curve_volume_vs_vwap": "-."}


def featured_heads(n_ahead: int) -> list:
    """Head indices shown in detail: the paper's min 7/10/12 of N = 12 (about N/2+1, N-2, N) and the match head."""
    mins = sorted({n_ahead // 2 + 1, max(1, n_ahead - 2), n_ahead})
    return [m - 1 for m in mins] + [n_ahead]


def head_title(m: int, n_ahead: int, benchmark: str = "vwap") -> str:
    return f"Match {benchmark.upper()}" if m == n_ahead else f"Min {m + 1} periods"


def _ci_stats(values, blocks, n_boot: int = 1000) -> dict:
    """The table statistics plus block-bootstrap 95 % intervals of mean and std (`lem_model.bootstrap`)."""
    out = slippage.table_statistics(values)
    if blocks is not None:
        ci = bootstrap.sample_statistics(values, blocks, n_boot=n_boot)
        out.update({k: ci[k] for k in ("mean_lo", "mean_hi", "std_lo", "std_hi")})
    return out


def table1_rows(result: osl.OrderSlippage, mask=None, blocks=None) -> list:
    """Table 1: the baselines vs VWAP (TWAP (notional), TWAP (volume), VWAP curve (volume)), then the LEM's BUY
    and SELL VWAP-volume rows per minimum period (row label "LEM (volume) BUY|SELL")."""
    sel = slice(None) if mask is None else mask
    blk = None if blocks is None else np.asarray(blocks)[sel]
    rows = []
    for name in TABLE1_BASELINES:
        if name in result.baseline_bps:
            rows.append({"order_type": osl.BASELINE_LABELS[name], "min_period": "All",
                         **_ci_stats(result.baseline_bps[name][sel], blk)})
    n = result.lem_bps.shape[1] - 1
    t = layout.target_index("volume")
    for side in layout.SIDES:
        p = layout.path_index(side, "vwap")
        for m in range(n + 1):
            rows.append({"order_type": f"LEM (volume) {side.upper()}",
                         "min_period": str(m + 1) if m < n else "Match VWAP",
                         **_ci_stats(result.lem_bps[sel][:, m, p, t], blk)})
    return rows


def detailed_rows(result: osl.OrderSlippage, m: int, blocks=None) -> list:
    """Tables 2-5: per side, the model's four (benchmark, target) paths of head `m`."""
    rows = []
    for side in layout.SIDES:
        for label, bench, target in DETAILED_STRATEGIES:
            values = result.lem_bps[:, m, layout.path_index(side, bench), layout.target_index(target)]
            rows.append({"order_type": side.upper(), "min_period": label, **_ci_stats(values, blocks)})
    return rows


def comparison_rows(result: osl.OrderSlippage, blocks, masks: Mapping[str, np.ndarray]) -> list:
    """Per slice, side and baseline: the match-VWAP head (volume) vs the baseline on the same orders: std ratio
    with its interval, paired difference of |slippage| (LEM - baseline) with its interval and p-value."""
    n = result.lem_bps.shape[1] - 1
    t = layout.target_index("volume")
    rows = []
    for where, mask in masks.items():
        for side in layout.SIDES:
            lem = result.lem_bps[mask][:, n, layout.path_index(side, "vwap"), t]
            for name in TABLE1_BASELINES:
                if name not in result.baseline_bps:
                    continue
                c = bootstrap.compare(lem, result.baseline_bps[name][mask], np.asarray(blocks)[mask])
                rows.append({"slice": where, "side": side.upper(), "baseline": osl.BASELINE_LABELS[name], **c})
    return rows


def _fmt(v, digits=2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _html_table(rows: Sequence[Mapping], second_header: str, title: str) -> str:
    ci = bool(rows) and "mean_lo" in rows[0]
    head = "".join(f"<th>{h}</th>" for h in ("Order Type", second_header) + slippage.STAT_HEADERS[:2]
                   + (("Mean 95% CI", "Std 95% CI") if ci else ()) + slippage.STAT_HEADERS[2:])
    body, last = [], None
    for r in rows:
        order = r["order_type"] if r["order_type"] != last else ""
        last = r["order_type"]
        cells = [f"<td>{_fmt(r[k])}</td>" for k in slippage.STAT_COLUMNS]
        if ci:
            cells[2:2] = [f"<td class='ci'>[{_fmt(r['mean_lo'])}, {_fmt(r['mean_hi'])}]</td>",
                          f"<td class='ci'>[{_fmt(r['std_lo'])}, {_fmt(r['std_hi'])}]</td>"]
        base = " class='base'" if not str(r["order_type"]).startswith(("LEM", "BUY", "SELL")) else ""
        body.append(f"<tr{base}><td>{html.escape(order)}</td><td>{html.escape(str(r['min_period']))}</td>"
                    f"{''.join(cells)}<td class='n'>{r['n']}</td></tr>")
    invalid = sum(int(r.get("n_invalid", 0)) for r in rows)
    note = f"<p class='note'>{invalid} undefined slippage value(s) excluded.</p>" if invalid else ""
    return (f"<h3>{html.escape(title)}</h3><table><thead><tr>{head}<th>n</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}")


def _p(p) -> str:
    """p-value as printed: the bootstrap's smallest p, 1 / (replicates + 1), reads "< 0.001"."""
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p <= 1.0 / (bootstrap.N_BOOT + 1) + 1e-12 else f"{p:.3f}"


def _comparison_table(rows: Sequence[Mapping]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("Slice", "Side", "Baseline", "Std ratio LEM / baseline", "95% CI",
                                             "Mean |LEM| - |baseline| (bps)", "95% CI", "p-value", "n"))
    body = []
    for r in rows:
        win = r["diff_hi"] < 0 if np.isfinite(r["diff_hi"]) else False
        body.append(f"<tr><td>{html.escape(r['slice'])}</td><td>{r['side']}</td><td>{html.escape(r['baseline'])}</td>"
                    f"<td>{_fmt(r['std_ratio'], 3)}</td><td class='ci'>[{_fmt(r['std_ratio_lo'], 3)}, "
                    f"{_fmt(r['std_ratio_hi'], 3)}]</td><td class='{'ok' if win else ''}'>{_fmt(r['diff_mean'])}</td>"
                    f"<td class='ci'>[{_fmt(r['diff_lo'])}, {_fmt(r['diff_hi'])}]</td><td>{_p(r['p_value'])}</td>"
                    f"<td class='n'>{r['n']}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _density(ax, values, label, color, lo, hi, bins=60, ls="-"):
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
    ax.plot(centres, smooth, label=f"{label} (mean {stats['mean']:+.1f}, std {stats['std']:.1f})", color=color,
            lw=1.6, ls=ls)


def slippage_figure(result: osl.OrderSlippage, m: int, path: str, title: str) -> str:
    """Figures 5-12 kind: slippage densities (bps) of the BUY and SELL VWAP-volume heads `m` and the baselines
    (TWAP (volume) dashed, TWAP (notional) dotted, VWAP curve (volume) dash-dot); legend below the axes."""
    plt = _plt()
    n = result.lem_bps.shape[1] - 1
    t = layout.target_index("volume")
    series = [(f"LEM (volume) {side.upper()}", result.lem_bps[:, m, layout.path_index(side, "vwap"), t],
               _COLORS[side], "-") for side in layout.SIDES]
    series += [(osl.BASELINE_LABELS[k], result.baseline_bps[k], _COLORS[k], _STYLES[k])
               for k in TABLE1_BASELINES if k in result.baseline_bps]
    allv = np.concatenate([np.asarray(v)[np.isfinite(v)] for _, v, _, _ in series])
    lo, hi = (np.percentile(allv, [1, 99]) if allv.size else (-1.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110, constrained_layout=True)
    for label, values, color, ls in series:
        _density(ax, values, label, color, lo, hi, ls=ls)
    ax.axvline(0.0, color="black", lw=0.8, ls=":")
    ax.set_xlabel("slippage vs VWAP (bps; buys: lower is better, sells: higher). P1-P99 shown")
    ax.set_ylabel("density")
    ax.set_title(f"{title} - Slippage Distribution - {head_title(m, n)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.grid(alpha=0.25)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def training_figure(history: Mapping, path: str, title: str) -> str:
    """Training curves of the run's history (`history.json` of the Trainer's model_run): every metric with a
    `val_` twin in one panel, learning rate in another."""
    plt = _plt()
    hist = dict(history.get("history", history))
    pairs = [k for k in hist if not k.startswith("val_") and k not in ("learning_rate", "lr")]
    lr = hist.get("learning_rate") or hist.get("lr")
    panels = len(pairs) + (1 if lr else 0)
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(4.2 * max(panels, 1), 3.4), dpi=110,
                             constrained_layout=True, squeeze=False)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, k in zip(axes[0], pairs):
        epochs = np.arange(1, len(hist[k]) + 1)
        ax.plot(epochs, hist[k], marker="o", label=f"train {k}")
        if f"val_{k}" in hist:
            ax.plot(epochs, hist[f"val_{k}"], marker="s", ls="--", label=f"validation {k}")
        ax.set_xlabel("epoch")
        ax.set_title(k, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.25)
    if lr:
        ax = axes[0][len(pairs)]
        ax.plot(np.arange(1, len(lr) + 1), lr, marker="o", color="#555")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title("learning rate", fontsize=10)
        ax.grid(alpha=0.25)
    fig.suptitle(f"{title} - Training curves", fontsize=11)
    fig.savefig(path, bbox_inches="tight")
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
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{title} - Execution Curves - {head_title(m, n)}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


_CSS = """body{font-family:system-ui,Arial,sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:right}td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}th{background:#f3f3f3}
td.n{color:#888}.ok{color:#1a7f37;font-weight:bold}.bad{color:#cf222e;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:6px 0}.note{color:#666;font-size:12px}
td.ci{color:#555;white-space:nowrap}tr.base td{background:#fafaf0}tr.fail td{color:#cf222e;font-weight:bold}
td.vpass{background:#e6f4ea;color:#1a7f37}td.vfail{background:#fde7e9;color:#cf222e;font-weight:bold}
td.vnot{color:#888}"""


def _simple_table(headers: Sequence[str], rows: Sequence[Sequence], classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr" + (f" class='{classes[i]}'" if i < len(classes) and classes[i] else "") + ">"
                   + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for i, r in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cells_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A table whose cells are text or (text, css class)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)

    def cell(c):
        text, cls = c if isinstance(c, tuple) else (c, "")
        return f"<td class='{cls}'>{html.escape(str(text))}</td>" if cls else f"<td>{html.escape(str(text))}</td>"
    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_HEAD_TEXT = {"match": "match VWAP", "min_n": "min period N (no flexibility)", "min_1": "min period 1",
              "all": "all series", "champion": "match VWAP vs champion"}
_FIGURE_TEXT = {"std_ratio": "std LEM / std TWAP (volume)", "mean_diff_bps": "mean LEM - mean TWAP (volume), bps",
                "nonfinite_count": "non-finite values", "std_ratio_vs_champion": "std challenger / std champion"}


def _verdict_class(check: Mapping, gated: bool) -> str:
    """CSS class of a figure's cells: by the gate's verdict (not by the point estimate); grey when not gated."""
    if not gated:
        return "vnot"
    return "vfail" if check.get("verdict") == "FAIL" else "vpass"


def gate_table_rows(gates: Sequence[Mapping]) -> list:
    """Rows of the report's gate table: per slice and head, each side's figure and interval, coloured by the
    verdict of the gate (components.evaluator.gate) for gated slices."""
    rows = []
    for g in gates:
        gated = bool(g["gated"])
        checks = list(g.get("checks", [])) + [dict(c, head="champion") for c in g.get("champion_checks", [])]
        by_head = {}
        for c in checks:
            if c["head"] == "all" and c.get("verdict") != "FAIL":
                continue  # the non-finite check is shown in its own column unless it fails
            by_head.setdefault(c["head"], []).append(c)
        first = True
        lead = lambda: ((g["slice"], g["orders"], "yes" if gated else "no (too few orders)")  # noqa: E731
                        if first else ("", "", ""))
        if not by_head:
            rows.append(lead() + ("", "", "", "", "", "", g.get("nonfinite", ""), g["result"]))
            continue
        for head, cs in by_head.items():
            sides = {c["side"]: c for c in cs}
            cells = []
            digits = 2 if cs[0]["figure"] == "mean_diff_bps" else 3
            for side in ("buy", "sell"):
                c = sides.get(side) or sides.get("both")
                if c is None:
                    cells += ["", ""]
                    continue
                cls = _verdict_class(c, gated)
                tag = c["verdict"] if gated else f"{c['verdict']}, not gated"
                cells += [(f"{_fmt(c['value'], digits)} {tag}", cls),
                          (f"[{_fmt(c['lo'], digits)}, {_fmt(c['hi'], digits)}]", cls + " ci")]
            rows.append(lead() + (_HEAD_TEXT.get(head, head), _FIGURE_TEXT.get(cs[0]["figure"], cs[0]["figure"]))
                        + tuple(cells) + ((g.get("nonfinite", ""), (g["result"], "vfail" if g["result"].startswith(
                            "FAILED") else "")) if first else ("", "")))
            first = False
    return rows


def render_report(out_dir: str, allocations, result: osl.OrderSlippage, frequency_minutes, asset, *,
                  title: str = "LEM", header: Mapping | None = None, validation: Sequence[str] = (),
                  max_curves: int = 400, blocks=None, history: Mapping | None = None,
                  gates: Sequence[Mapping] = (), champion: Sequence[Mapping] = ()) -> dict:
    """Write `index.html`, `figures/*.png`, `tables.txt` and `summary.json` into `out_dir`; returns the summary.

    blocks: [B] bootstrap block (start date) of each order, for the 95 % intervals and the paired comparisons
    (`lem_model.bootstrap`; None: each order its own block); history: the Trainer's history.json; gates: the
    Evaluator's per-slice gate results (slice, orders, gated, ratio, interval, result); champion: rows
    (slice, metric, challenger, champion) when a blessed champion was compared."""
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    n = result.lem_bps.shape[1] - 1
    b = result.lem_bps.shape[0]
    freq = np.asarray(frequency_minutes).reshape(-1)
    assets = np.asarray([a.decode() if isinstance(a, bytes) else str(a) for a in np.asarray(asset).reshape(-1)])
    blocks = np.arange(b) if blocks is None else np.asarray(blocks).reshape(-1)
    header = dict(header or {})
    parts, text = [], []
    freqs = sorted(set(int(f) for f in freq))
    asset_names = sorted(set(assets))

    rows1 = table1_rows(result, blocks=blocks)
    parts.append(_html_table(rows1, "Min Period", "Table 1: Baselines and LEM (volume) performance vs VWAP by "
                                                  "minimum period (volume orders, all assets and frequencies)"))
    text.append(slippage.format_table(rows1, "Table 1: baselines and LEM (volume) vs VWAP by minimum period "
                                             "(bps; volume orders)"))
    tables = {"table1": rows1}
    for i, m in enumerate(featured_heads(n)):
        label = "Match Benchmark" if m == n else f"Minimum Period {m + 1}"
        rows = detailed_rows(result, m, blocks)
        tables[f"table{2 + i}"] = rows
        parts.append(_html_table(rows, "Strategy", f"Table {2 + i}: Detailed Model Comparison ({label})"))
    number = 6
    per_freq, per_asset = [], []
    for f in freqs:
        rows = table1_rows(result, freq == f, blocks)
        tables[f"table1_freq{f}"] = rows
        per_freq.append(_html_table(rows, "Min Period", f"Table {number}: Table 1 for frequency {f} minutes"))
        number += 1
    for a in asset_names:
        rows = table1_rows(result, assets == a, blocks)
        tables[f"table1_asset_{a}"] = rows
        per_asset.append(_html_table(rows, "Min Period", f"Table {number}: Table 1 for asset {a}"))
        number += 1

    masks = {"overall": np.ones(b, bool)}
    masks.update({a: assets == a for a in asset_names})
    masks.update({f"{f} min": freq == f for f in freqs})
    masks.update({f"{a} / {f} min": (assets == a) & (freq == f) for a in asset_names for f in freqs
                  if ((assets == a) & (freq == f)).any()})
    comparison = comparison_rows(result, blocks, masks)
    tables["comparison"] = comparison

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
    training_html = "<p class='note'>No training history available.</p>"
    if history:
        training_figure(history, os.path.join(out_dir, "figures", "training.png"), title)
        figures.append(("Training curves (the Trainer's history.json)", "training.png"))
        training_html = f"<img src='figures/training.png' alt='training curves'>"

    counts = {f"{a} / {f} min": int(((assets == a) & (freq == f)).sum())
              for a in asset_names for f in freqs if ((assets == a) & (freq == f)).any()}
    head_html = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                        for k, v in header.items())
    count_html = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in counts.items())
    valid_html = "".join(f"<li>{html.escape(v)}</li>" for v in validation)
    blessed = header.get("blessed")
    status = ("<p class='ok'>BLESSED: pushed to serving</p>" if blessed
              else "<p class='bad'>NOT BLESSED: not pushed</p>" if blessed is not None else "")
    overall = next((g for g in gates if g["slice"] == "overall"), None)
    level = overall.get("level", float("nan")) if overall else float("nan")
    level_text = f"{100 * level:.0f}%" if np.isfinite(level) else "95%"
    margin = overall.get("margin", float("nan")) if overall else float("nan")
    better_html = ""
    if overall is not None and "better" in overall:
        his = ", ".join(f"{c['side']} {_fmt(c['hi'], 3)}" for c in overall.get("checks", []) if c["head"] == "match")
        better_html = (f"<p class='{'ok' if overall['better'] else 'bad'}'>Overall: "
                       + ("significantly better" if overall["better"] else "NOT significantly better")
                       + f" than TWAP (volume): match-VWAP std ratio interval below 1 on both sides required "
                         f"(upper bounds {html.escape(his)})</p>")
    gate_html = (better_html + "<p class='note'>LEM vs TWAP (volume) vs VWAP on the same orders, "
                 f"{level_text} block-bootstrap intervals. A gated slice FAILS when a figure is significantly worse "
                 "than TWAP (std ratio interval entirely above 1; min-period-1 mean interval entirely on the wrong "
                 "side of 0: above for buys, below for sells) or a std ratio is above 1 + "
                 f"{_fmt(margin, 2) if np.isfinite(margin) else 'margin'}. Cells are coloured by that verdict, "
                 "not by the point estimate.</p>"
                 + _cells_table(("Slice", "Orders", "Gated", "Head", "Figure", "Buy", f"Buy {level_text} CI", "Sell",
                                 f"Sell {level_text} CI", "Non-finite", "Result"), gate_table_rows(gates))
                 if gates else "<p class='note'>No Evaluator output: no gate results.</p>")
    champion_html = (_cells_table(("Slice", "Side", "Challenger std (bps)", "Champion std (bps)",
                                   "Std ratio challenger / champion", f"{level_text} CI", "Verdict"),
                                  [(c["slice"], c.get("side", ""), _fmt(c["challenger"], 3), _fmt(c["champion"], 3),
                                    (_fmt(c.get("ratio"), 3), _verdict_class(c, c.get("gated", True))),
                                    (f"[{_fmt(c.get('lo'), 3)}, {_fmt(c.get('hi'), 3)}]",
                                     _verdict_class(c, c.get("gated", True)) + " ci"),
                                    (c.get("verdict", ""), _verdict_class(c, c.get("gated", True))))
                                   for c in champion])
                     if champion else "<p class='note'>No champion (no blessed model before this run).</p>")
    fig_html = "".join(f"<h3>{html.escape(cap)}</h3><img src='figures/{fn}' alt='{html.escape(cap)}'>"
                       for cap, fn in figures if fn != "training.png")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} execution report</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}: execution report</h1>{status}"
            f"<table id='header'>{head_html}</table>"
            + (f"<h2 id='blessing'>Blessing checks</h2><ul>{valid_html}</ul>" if valid_html else "")
            + f"<h2 id='gates'>Slice gate results</h2>{gate_html}"
            + f"<h2 id='champion'>Champion vs challenger</h2>{champion_html}"
            + f"<h2 id='orders'>Orders evaluated</h2><table><tr><th>asset / frequency</th><th>orders</th></tr>"
              f"{count_html}</table>"
            "<p class='note'>Slippage = 1e4 x (achieved price / benchmark - 1) in bps, the paper's sign for both "
            "sides (lower is better for buys, higher for sells). Min period m: the benchmark window lasts at least "
            "m bars and until the order completes; Match: window = all N bars, objective |slippage|. Baselines: "
            "TWAP (volume) = equal shares per bar, TWAP (notional) = equal notional per bar, VWAP curve (volume) = "
            "shares in proportion to the bar's historical share of the day's volume (profile per asset x frequency "
            "x time-of-bar from the training split only). 95% CI: block bootstrap over order start dates "
            "(1000 replicates; orders of one day overlap).</p>"
            + "<h2 id='comparison'>LEM (volume, match VWAP) vs each baseline</h2>"
              "<p class='note'>Same orders. Std ratio below 1: the LEM's slippage varies less. Paired difference of "
              "|slippage| per order: negative = the LEM ends closer to VWAP; green where the whole interval is "
              "below 0. p-value: two-sided, H0 mean difference = 0.</p>" + _comparison_table(comparison)
            + "<h2 id='tables'>Tables</h2>" + "".join(parts)
            + "<h2 id='per-frequency'>Per frequency</h2>" + "".join(per_freq)
            + "<h2 id='per-asset'>Per asset</h2>" + "".join(per_asset)
            + f"<h2 id='training'>Training curves</h2>{training_html}"
            + "<h2 id='figures'>Figures</h2>" + fig_html + "</body></html>")
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)
    with open(os.path.join(out_dir, "tables.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(text) + "\n")
    summary = {"orders": int(b), "counts": counts, "header": header, "validation": list(validation),
               "gates": list(gates), "champion": list(champion), "tables": tables,
               "figures": [fn for _, fn in figures]}
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary
