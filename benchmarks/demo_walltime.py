"""Wall time of `lems demo` (the whole TFX pipeline on the embedded default data) and of each stage.

    .venv/bin/python benchmarks/demo_walltime.py [--root DIR] [--repeats 1]

Each repeat runs `lems demo --fresh` in its own process (data generation, imports and the pipeline: what a
user waits for), then reads each component's execution time from ML Metadata (create -> last update) and the
Evaluator's per-slice gate. Prints one table: stage seconds per repeat and the total wall time; writes
benchmarks/results/demo.json (targets: BLESSED on every gated slice, issue 17; the wall time of the last repeat).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import target, write_result  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="run directory (default: a fresh temporary one)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    from pipeline import local_runner
    from pipeline.configs import demo_config

    columns = []
    for r in range(args.repeats):
        root = args.root or tempfile.mkdtemp(prefix="lems-demo-bench-")
        start = time.time()
        subprocess.run([sys.executable, "-m", "lems_cli.main", "demo", "--fresh", "--root", root], check=True,
                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.time() - start
        summary = local_runner.latest_run(demo_config(root))
        columns.append((wall, summary))
        print(f"repeat {r + 1}: {wall:.1f} s wall, blessed={summary.blessed}", flush=True)
    nodes = sorted(columns[0][1].nodes.values(), key=lambda n: n.execution_id or 0)
    print(f"\n{'stage':34s}" + "".join(f"{'run ' + str(i + 1):>10s}" for i in range(len(columns))))
    for node in nodes:
        cells = "".join(f"{c[1].nodes[node.node_id].seconds:10.1f}" for c in columns)
        print(f"{node.node_id:34s}{cells}")
    print(f"{'lems demo wall time (s)':34s}" + "".join(f"{c[0]:10.1f}" for c in columns))
    from components.evaluator.eval_config import gate_rows
    runs = []
    for wall, summary in columns:
        evaluation = summary.nodes["Evaluator"].outputs.get("evaluation", [None])[0]
        gates = gate_rows(evaluation)[0] if evaluation else []
        runs.append({"wall_s": round(wall, 1), "blessed": summary.blessed, "gates": gates,
                     "stages_s": {n.node_id: n.seconds for n in summary.nodes.values()}})
    last = runs[-1]
    gated = [g for g in last["gates"] if g["gated"]]
    worst = max(gated, key=lambda g: g["ratio"]) if gated else None
    passed = sum(g["result"] == "pass" for g in gated)
    value = (f"{'BLESSED' if last['blessed'] else 'NOT BLESSED'}: {passed} of {len(gated)} gated slices pass"
             + (f"; highest {worst['slice']} {worst['ratio']:.3f} [{worst['lo']:.2f}, {worst['hi']:.2f}]" if worst else ""))
    targets = [target("`make demo` BLESSED on every gated slice, match-VWAP std / TWAP (volume) <= 1 (issue 17)", value,
                      "every gated slice <= 1", bool(last["blessed"])),
               target("`lems demo` wall time, venv present (issue 17: `make demo` < 10 min with the first-time venv)",
                      f"{last['wall_s']:.0f} s", "< 600 s less the venv (about 4 min)", last["wall_s"] < 360)]
    print(f"wrote {write_result('demo', targets, {'repeats': runs})}")


if __name__ == "__main__":
    main()
