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


def run_worker(python: str, module: str, args: list, env: dict, timeout: float) -> dict:
    """Run `python -m benchmarks.<module> args` from the repository root and return its BENCH_RESULT dict (raises
    with the tail of stderr on failure)."""
    cmd = [python, "-m", f"benchmarks.{module}", *map(str, args)]
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


def start_lems_serve(base: str, poll_seconds: float = 60, timeout: float = 900):
    """`lems serve` on the models under `base` (a free port) in a subprocess; (process, address, seconds until it
    said it serves)."""
    proc = subprocess.Popen([sys.executable, "-m", "lems_cli.main", "serve", "--model-base-path", base, "--port", "0",
                             "--poll-seconds", str(poll_seconds)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    t0, line = time.monotonic(), ""
    while " on 127.0.0.1:" not in line and time.monotonic() < t0 + timeout and proc.poll() is None:
        line = proc.stdout.readline()
    if " on 127.0.0.1:" not in line:
        proc.kill()
        raise RuntimeError("lems serve did not start")
    return proc, line.split(" on ")[1].split()[0], time.monotonic() - t0


def serving_testutils():
    """The serving tests' helpers (`tests/serving_testutils.py`: generated bars, a stand-in for the Transform's
    output), loaded from their file: `tests` is no package (and other installed ones take that name)."""
    import importlib.util
    if "serving_testutils" not in sys.modules:
        spec = importlib.util.spec_from_file_location("serving_testutils",
                                                      os.path.join(ROOT, "tests", "serving_testutils.py"))
        sys.modules["serving_testutils"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["serving_testutils"])
    return sys.modules["serving_testutils"]


def percentile(xs, q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


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
    """The command that ran this benchmark, as typed from the repository root: `python -m benchmarks.NAME ...`."""
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    return " ".join([f"python -m benchmarks.{name}"] + sys.argv[1:])


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
