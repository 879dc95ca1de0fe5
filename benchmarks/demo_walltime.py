"""Wall time of `lems demo` (the whole TFX pipeline on the embedded default data) and of each stage.

    .venv/bin/python benchmarks/demo_walltime.py [--root DIR] [--repeats 1]

Each repeat runs `lems demo --fresh` in its own process (data generation, imports and the pipeline: what a
user waits for), then reads each component's execution time from ML Metadata (create -> last update).
Prints one table: stage seconds per repeat and the total wall time.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


if __name__ == "__main__":
    main()
