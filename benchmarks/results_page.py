"""The one-page results table of benchmarks/RESULTS.md, generated from the JSON the benchmarks write.

    python -m benchmarks.results_page           # rewrite the table in RESULTS.md
    python -m benchmarks.results_page --check   # exit 1 if RESULTS.md does not show the JSON's table

Every `benchmarks/results/*.json` carries `date`, `commit`, `machine`, `command` and a list of `targets`
(`_common.target`: target, value, goal, met, page). Each target with `page` true is one row; the targets a file
keeps off the page are counted in one more row ("k of n met"). The table replaces what stands between the two
marker lines of RESULTS.md; the text around it is written by hand.
"""
import argparse
import glob
import json
import os
import sys

from benchmarks._common import BENCH_DIR, RESULTS_DIR

PAGE = os.path.join(BENCH_DIR, "RESULTS.md")
BEGIN = "<!-- results_page.py: generated from benchmarks/results/*.json; do not edit by hand -->"
END = "<!-- end of the generated table -->"
#: Files in this order first, any others after them by name.
ORDER = ("train_throughput", "serving_latency", "serving_hotswap", "client_import", "demo", "backtest-crypto",
         "backtest-dow", "reproduce-crypto", "reproduce-crypto-gpu-fhr", "reproduce-crypto-gpu-fhr-seed42",
         "reproduce-crypto-gpu", "reproduce-crypto-gpu-seed42", "reproduce-dow", "reference-compare")
HEADER = ("| target | value | goal | met | date, commit | machine | command |\n"
          "|---|---|---|---|---|---|---|")


def _number(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"


def format_value(value) -> str:
    """A number, [value, lo, hi] (shown as `value [lo, hi]`), None (not measured) or a text."""
    if value is None:
        return "not measured"
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return f"{_number(value[0])} [{_number(value[1])}, {_number(value[2])}]"
    return _number(value)


def format_machine(machine) -> str:
    if isinstance(machine, dict):
        return f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
    return str(machine or "?")


def _met(met) -> str:
    return {True: "yes", False: "**no**", None: "-"}[met]


def load_results(directory: str = RESULTS_DIR) -> list:
    """[(name, content)] of every results JSON in `directory`, in the page's order."""
    files = {os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(directory, "*.json"))}
    names = [n for n in ORDER if n in files] + sorted(n for n in files if n not in ORDER)
    out = []
    for name in names:
        with open(files[name], encoding="utf-8") as f:
            out.append((name, json.load(f)))
    return out


#: Issue 34's targets for the backtests' match-VWAP std / TWAP (volume) std, per slice: (at most, interval's
#: upper bound below 1 required).
BACKTEST_GOALS = {"crypto": {"15 min": (0.78, True), "90 min": (0.72, False), "240 min": (0.72, False)},
                  "dow": {"1440 min": (0.83, False)}}


def backtest_targets(content: dict) -> list:
    """Rows of a walk-forward backtest JSON (`lems backtest`, walkforward/runner.py): the match-VWAP std ratio
    per frequency, pooled over the folds, on test and on final; how many (fold, frequency) ratios are below 1;
    the gate's verdict per period."""
    name = content.get("name", "?")
    goals = BACKTEST_GOALS.get(name, {})
    out = []
    periods = [("pooled", content.get("pooled"))] + [(k, content.get(k)) for k in ("test", "final")]
    for label, period in periods:
        if not period:
            continue
        where = f"{len(content.get('folds', []))} folds pooled" if label == "pooled" else label
        for key, fig in period.get("slices", {}).items():
            r = fig.get("match_vwap_std_ratio") or {}
            if key == "overall" or r.get("value") is None:
                continue
            most, need_hi = goals.get(key, (1.0, False))
            met = r["value"] <= most and (not need_hi or (r.get("hi") is not None and r["hi"] < 1))
            out.append({"target": f"backtest {name} ({where}) {key}: match-VWAP std / TWAP (volume) std",
                        "value": [r["value"], r.get("lo"), r.get("hi")],
                        "goal": f"<= {most}" + (", interval below 1" if need_hi else ""), "met": met})
        gate = period.get("gate", {})
        out.append({"target": f"backtest {name} ({where}): blessing gate (intervals)",
                    "value": "BLESSED" if gate.get("blessed") else "NOT BLESSED: " + ", ".join(
                        (gate.get("failed_slices") or [])[:3] or ["overall not significantly below TWAP"]),
                    "goal": "BLESSED", "met": bool(gate.get("blessed")), "page": label != "pooled"})
    ratios = [(f["name"], k, (v.get("match_vwap_std_ratio") or {}).get("value"))
              for f in content.get("folds", []) for k, v in f.get("slices", {}).items() if k != "overall"]
    ratios = [x for x in ratios if x[2] is not None]
    if ratios:
        below = sum(r < 1 for _, _, r in ratios)
        worst = max(ratios, key=lambda x: x[2])
        out.append({"target": f"backtest {name}: folds x frequencies with the match-VWAP std ratio below 1",
                    "value": f"{below} of {len(ratios)} (highest {worst[0]} {worst[1]}: {worst[2]:.3f})",
                    "goal": "all", "met": below == len(ratios)})
    return out


def render_table(results: list) -> str:
    """The markdown table of `load_results`' output: one row per page target, one count row per file."""
    rows = [HEADER]
    for name, content in results:
        targets = content.get("targets") or (backtest_targets(content) if "folds" in content else None)
        if not targets:
            continue
        when = f"{str(content.get('date', '?'))[:10]}, {content.get('commit', '?')}"
        tail = f"{when} | {format_machine(content.get('machine'))} | `{content.get('command', '?')}` |"
        off = [t for t in targets if not t.get("page", True)]
        for t in targets:
            if t.get("page", True):
                rows.append(f"| {t['target']} | {format_value(t['value'])} | {t['goal']} | {_met(t['met'])} | {tail}")
        judged = [t for t in off if t["met"] is not None]
        if off:
            rows.append(f"| {name}: the {len(off)} other targets (`results/{name}.json`) | "
                        f"{sum(bool(t['met']) for t in judged)} of {len(judged)} met | each its own | - | {tail}")
    return "\n".join(rows)


def replace_table(page: str, table: str) -> str:
    if BEGIN not in page or END not in page:
        raise ValueError(f"RESULTS.md needs the marker lines {BEGIN!r} and {END!r}")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that RESULTS.md is current")
    a = p.parse_args(argv)
    with open(PAGE, encoding="utf-8") as f:
        page = f.read()
    new = replace_table(page, render_table(load_results()))
    if a.check:
        if new != page:
            print("benchmarks/RESULTS.md is not current: run python -m benchmarks.results_page", file=sys.stderr)
            return 1
        return 0
    with open(PAGE, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"wrote the table of {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
