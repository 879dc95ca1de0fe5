"""Run a walk-forward backtest: one local pipeline run per period, resumable, then the figures and outputs.

    from walkforward import config as wf_config, runner
    pipeline, backtest = wf_config.load("benchmarks/backtest/crypto.yaml")
    result = runner.run(pipeline, backtest, kinds=("folds",))

Each period runs `pipeline.local_runner.run` on its own configuration (`walkforward.config.period_config`) in
its own root. When it has finished, its orders are scored through the period's trained model (the ONE slippage
evaluator, as the ExecutionReport does: `components.report.component.split_slippage`) and two files are written
next to the pipeline root, atomically: `orders.npz` (per-order slippage, `walkforward.scoring.Orders`) and
`period-result.json` (what ran, how long, the Evaluator's verdict, the configuration's hash). A rerun reads a
finished period back when its configuration hash matches, so a killed backtest resumes at the first unfinished
period; inside that period TFX's cache reuses every component whose inputs match. The test and final periods
are therefore scored once: a rerun reads the stored result, and the output JSON counts how often each was
scored (`reads`).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

from walkforward import config as wf_config
from walkforward.scoring import Orders, gate_verdict, period_slices

RESULT_FILE = "period-result.json"
ORDERS_FILE = "orders.npz"


def _say(line: str) -> None:
    print(f"[backtest] {line}", flush=True)


def _finite(value):
    """NaN and infinities -> None (strict JSON), recursively."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_json(path: str, value) -> None:
    value = _finite(value)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, default=str, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def period_orders(summary, config) -> Orders:
    """Every order of the period's (test) split through the period's trained model."""
    from components.report.component import split_slippage
    node = summary.nodes.get("VwapCurveBaseline")
    if node is None or not node.outputs.get("baseline_examples") or not summary.model_dir:
        raise RuntimeError(f"{config.root}: the pipeline run has no annotated examples or no trained model "
                           f"(component states: {summary.states()})")
    split_uri = os.path.join(node.outputs["baseline_examples"][0], f"Split-{config.evaluation.split}")
    raw, _, sizes, _, result = split_slippage(summary.model_dir, split_uri)
    o = sizes["norm_window"] + sizes["lookback"]
    return Orders.from_order_slippage(raw["asset"], raw["frequency_minutes"], raw["timestamp"][:, o], result)


def run_period(pipeline, backtest, period: wf_config.Period, *, position: str = "",
               runner: Optional[Callable] = None) -> tuple:
    """(result dict, Orders) of one period: read back when finished earlier with the same configuration,
    else run (or resume) its pipeline and score it. `runner`: the pipeline runner (default: the local one)."""
    config = period_config = wf_config.period_config(pipeline, backtest, period)
    root = config.resolved().root
    result_path, orders_path = os.path.join(root, RESULT_FILE), os.path.join(root, ORDERS_FILE)
    digest = wf_config.config_hash(period_config)
    if os.path.exists(result_path) and os.path.exists(orders_path):
        with open(result_path, encoding="utf-8") as f:
            stored = json.load(f)
        if stored.get("config_hash") == digest:
            _say(f"{position}{period.label}: finished earlier ({stored.get('seconds', 0):.0f} s), read back from {root}")
            stored["read_back"] = True
            return stored, Orders.load(orders_path)
        _say(f"{position}{period.label}: the stored result is of another configuration "
             f"({stored.get('config_hash')} != {digest}); running again (unchanged components come from the cache)")
    _say(f"{position}{period.label}: training on bars before {config.data.eval_start}, validating on "
         f"[{config.data.eval_start}, {period.start}), scoring [{period.start}, {period.end or 'end of data'}) "
         f"in {root}")
    if runner is None:
        from pipeline import local_runner
        runner = local_runner.run
    t0 = time.time()
    summary = runner(config)
    t_run = time.time() - t0
    orders = period_orders(summary, config.resolved())
    seconds = time.time() - t0
    result = {
        "name": period.name, "kind": period.kind,
        "train_period": [config.data.start, config.data.eval_start],
        "validation_period": [config.data.eval_start, period.start],
        "eval_period": [period.start, period.end],
        "config_hash": digest,
        "seconds": round(seconds, 1), "pipeline_seconds": round(t_run, 1),
        "component_seconds": {k: round(v.seconds, 1) for k, v in summary.nodes.items() if v.seconds is not None},
        "component_states": summary.states(),
        "evaluator_blessed": summary.blessed,
        "model_dir": summary.model_dir, "run_id": summary.run_id,
        "scored_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    orders.save(orders_path)
    _write_json(result_path, result)
    _say(f"{position}{period.label}: done in {seconds:.0f} s, {len(orders)} orders scored, Evaluator: "
         f"{'BLESSED' if summary.blessed else 'NOT BLESSED' if summary.blessed is False else 'no verdict'}")
    return result, orders


def _figures(orders: Orders, pipeline) -> dict:
    e = pipeline.evaluation
    out = period_slices(orders, level=e.interval_level, margin=e.max_std_ratio_margin)
    out["gate"] = gate_verdict(out["slices"], out["asset_slices"], min_slice_orders=e.min_slice_orders)
    return out


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def output_paths(backtest) -> dict:
    base = os.path.join(backtest.output_dir, f"backtest-{backtest.name}")
    return {"json": f"{base}.json", "md": f"{base}.md", "png": f"{base}.png"}


def run(pipeline, backtest, kinds: Sequence[str] = ("folds",), *, config_file: str = "", command: str = "",
        runner: Optional[Callable] = None, write: bool = True) -> dict:
    """Run (or resume) the periods of `kinds` and write the backtest's JSON, Markdown and plot (module
    docstring). The output JSON keeps the figures of periods scored by earlier invocations of the same
    configuration (e.g. the folds, when `--periods test` runs later)."""
    periods = wf_config.periods(backtest, kinds)
    paths = output_paths(backtest)
    base_hash = wf_config.config_hash(pipeline)
    previous = {}
    if os.path.exists(paths["json"]):
        with open(paths["json"], encoding="utf-8") as f:
            previous = json.load(f)
        if previous.get("config_hash") != base_hash:
            _say(f"{paths['json']} holds another configuration's results ({previous.get('config_hash')}); "
                 "they are replaced")
            previous = {}
    reads = dict(previous.get("reads", {}))
    t0 = time.time()
    done = {}
    for i, period in enumerate(periods):
        result, orders = run_period(pipeline, backtest, period, position=f"{i + 1}/{len(periods)} ", runner=runner)
        if period.kind in ("test", "final") and not result.get("read_back"):
            reads[period.kind] = reads.get(period.kind, 0) + 1
        done[period.name] = (result, orders)
    e = pipeline.evaluation
    out = {
        "name": backtest.name, "config_file": config_file, "config_hash": base_hash,
        "date": dt.date.today().isoformat(), "commit": git_commit(), "machine": machine(),
        "command": command or " ".join(sys.argv),
        "gate_rules": {"interval_level": e.interval_level, "max_std_ratio_margin": e.max_std_ratio_margin,
                       "min_slice_orders": e.min_slice_orders},
        "sizes": {"n_ahead": pipeline.sizes.n_ahead, "lookback": pipeline.sizes.lookback,
                  "norm_window": pipeline.sizes.norm_window},
        "model": dict(pipeline.model.__dict__), "data": {k: v for k, v in pipeline.data.__dict__.items()},
        "reads": reads,
        "folds": list(previous.get("folds", [])), "pooled": previous.get("pooled"),
        "test": previous.get("test"), "final": previous.get("final"),
    }
    fold_results = {f["name"]: f for f in out["folds"]}
    for name, (result, orders) in done.items():
        entry = {k: v for k, v in result.items() if k not in ("read_back",)}
        entry.update(assets=sorted(set(orders.asset.tolist())), orders=len(orders), **_figures(orders, pipeline))
        if result["kind"] == "folds":
            fold_results[name] = entry
        else:
            out[result["kind"]] = entry
    out["folds"] = [fold_results[k] for k in sorted(fold_results, key=lambda k: int(k.split("-")[1]))]
    fold_orders = [o for name, (r, o) in done.items() if r["kind"] == "folds"]
    if fold_orders and len(fold_orders) == len(out["folds"]):
        pooled = Orders.concat(fold_orders)
        out["pooled"] = {"eval_period": [out["folds"][0]["eval_period"][0], out["folds"][-1]["eval_period"][1]],
                         "folds": len(out["folds"]), "orders": len(pooled),
                         "assets": sorted(set(pooled.asset.tolist())), **_figures(pooled, pipeline)}
    out["wall_seconds_this_invocation"] = round(time.time() - t0, 1)
    out = _finite(out)  # what is written is what is returned (NaN -> None)
    if write:
        from walkforward import report
        _write_json(paths["json"], out)
        report.write_markdown(out, paths["md"], plot_name=os.path.basename(paths["png"]))
        report.plot_folds(out, paths["png"])
        _say(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return out


def compile_kubeflow(pipeline, backtest, kinds: Sequence[str], output_dir: str, *, image: Optional[str] = None
                     ) -> list:
    """One Kubeflow Pipelines spec (IR YAML) per period, `<output_dir>/<pipeline name>-<period>.yaml`: submitted
    together, the periods run in parallel on the cluster (kubeflow/README.md, "Walk-forward backtest")."""
    from kubeflow.runner import compile_pipeline
    paths = []
    for period in wf_config.periods(backtest, kinds):
        config = wf_config.period_config(pipeline, backtest, period)
        path = os.path.join(output_dir, f"{config.pipeline_name}.yaml")
        compile_pipeline(config, path, image=image)
        paths.append(path)
        _say(f"{period.label}: {path}")
    return paths
