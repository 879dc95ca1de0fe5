"""Shared helpers of the benchmark scripts (standard library only: imported by drivers in both venvs).

Thread pinning: every benchmark subprocess gets the same environment from `pinned_env(threads)` and calls
`pin_tf_threads(threads)` right after importing TensorFlow, so ours and the reference run under identical
TensorFlow intra-/inter-op settings.
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
OURS_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
REF_PYTHON = os.path.join(BENCH_DIR, ".venv-ref", "bin", "python")
RESULT_PREFIX = "BENCH_RESULT "
#: Where the benchmarks write their JSON; `results_page.py` turns the `targets` of these files into RESULTS.md.
RESULTS_DIR = os.path.join(BENCH_DIR, "results")


def pinned_env(threads: int, inter_threads: int = 1) -> dict:
    """Environment for a benchmark subprocess: TF backend, `threads` intra-op threads, quiet logs."""
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)  # Keras 3 in both venvs
    env.update({
        "KERAS_BACKEND": "tensorflow",
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(inter_threads),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONHASHSEED": "0",
    })
    return env


def pin_tf_threads(tf, threads: int, inter_threads: int = 1) -> None:
    """Apply the same TF thread settings in-process (must run before the first op)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_threads)


def emit(result: dict) -> None:
    """Print one machine-readable result line for the orchestrator."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(python: str, script: str, args: list, env: dict, timeout: float) -> dict:
    """Run `python script args` and return its BENCH_RESULT dict (raises with the tail of stderr on failure)."""
    cmd = [python, os.path.join(BENCH_DIR, script), *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - t0
    results = [json.loads(l[len(RESULT_PREFIX):]) for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"worker failed (rc={proc.returncode}): {' '.join(cmd)}\n"
                           f"--- stdout tail ---\n{proc.stdout[-3000:]}\n--- stderr tail ---\n{proc.stderr[-5000:]}")
    out = results[-1]
    out["process_wall_s"] = wall
    return out


def latest_artifact(pipeline_root: str, component: str, output: str) -> str:
    """The newest (highest execution id) artifact folder `<pipeline_root>/<component>/<output>/<id>` of a run."""
    base = os.path.join(pipeline_root, component, output)
    ids = sorted((int(d) for d in os.listdir(base) if d.isdigit()), reverse=True) if os.path.isdir(base) else []
    if not ids:
        raise FileNotFoundError(f"no {component} {output} under {pipeline_root}: has the pipeline run?")
    return os.path.join(base, str(ids[0]))


def load_config(path: str, overrides=(), prog: str = "benchmark"):
    """The pipeline config of a finished or new run: `path` with `lems run --set`-style overrides applied
    (`PipelineConfig.with_overrides`); a bad file or override exits with the message naming it."""
    from pipeline.configs import PipelineConfig
    try:
        return PipelineConfig.from_file(path).with_overrides(overrides)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{prog}: {e}") from e


def add_set_argument(parser) -> None:
    """`--set SECTION.FIELD=VALUE` (repeatable), as `lems run --set` takes it."""
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a field of the config, as `lems run --set` (repeatable), e.g. "
                             "--set model.input_clip=5 --set root=./runs/crypto-v6")


def git_commit() -> str:
    """Short commit of the checkout, with "+dirty" when tracked files other than Markdown and the results differ
    from it (the code or configs that ran are then not that commit's); "unknown" outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  ":(exclude)benchmarks/results", ":(exclude,glob)**/*.md"],
                                 cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if changed else "")
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"


def command_line() -> str:
    """The command that ran this script, as a user would type it from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join([script] + sys.argv[1:])


def target(name: str, value, goal: str, met, page: bool = True) -> dict:
    """One target row of a results file: `value` a number, [value, lo, hi] or a short text; `met` True, False or
    None (no goal); `page` False keeps it out of the one-page table (it stays in the JSON)."""
    return {"target": name, "value": value, "goal": goal, "met": met, "page": page}


def write_result(name: str, targets: list, payload: dict, path=None) -> str:
    """Write `RESULTS_DIR/<name>.json` (or `path`): date, commit, machine, command, the targets and the payload."""
    import datetime
    out = {"name": name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": git_commit(), "machine": machine_info(), "command": command_line(), "targets": targets,
           **payload}
    path = path or os.path.join(RESULTS_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)
        f.write("\n")
    return path


def machine_info() -> dict:
    """CPU model, core count, RAM, load average and kernel, for the RESULTS header."""
    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", lscpu)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        mem_gib = kb / 2**20
    except (OSError, AttributeError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "ram_gib": mem_gib, "python": platform.python_version(),
            "kernel": platform.release(), "loadavg": os.getloadavg()}


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def format_table(headers: list, rows: list) -> str:
    """Markdown table (also readable as plain text)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def other_load() -> str:
    """Processes (not ours) using CPU right now, for contention notes: top 5 by %CPU."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
        return "; ".join(" ".join(l.split()) for l in out.splitlines()[1:6])
    except OSError:
        return "?"


def cpu_times() -> tuple:
    """(busy, total) jiffies from /proc/stat, to measure how busy the machine was during a window."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)
