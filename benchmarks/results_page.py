"""The one-page results table of benchmarks/RESULTS.md, generated from the JSON the benchmarks write.

    .venv/bin/python benchmarks/results_page.py           # rewrite the table in RESULTS.md
    .venv/bin/python benchmarks/results_page.py --check   # exit 1 if RESULTS.md does not show the JSON's table

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BENCH_DIR, RESULTS_DIR  # noqa: E402

PAGE = os.path.join(BENCH_DIR, "RESULTS.md")
BEGIN = "<!-- results_page.py: generated from benchmarks/results/*.json; do not edit by hand -->"
END = "<!-- end of the generated table -->"
#: Files in this order first, any others after them by name.
ORDER = ("train_throughput", "serving_latency", "serving_hotswap", "demo", "reproduce-crypto", "reproduce-crypto-gpu-fhr",
         "reproduce-crypto-gpu-fhr-seed42", "reproduce-crypto-gpu", "reproduce-crypto-gpu-seed42", "reproduce-dow",
         "reference-compare")
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


def render_table(results: list) -> str:
    """The markdown table of `load_results`' output: one row per page target, one count row per file."""
    rows = [HEADER]
    for name, content in results:
        targets = content.get("targets")
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
            print("benchmarks/RESULTS.md is not current: run benchmarks/results_page.py", file=sys.stderr)
            return 1
        return 0
    with open(PAGE, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"wrote the table of {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
