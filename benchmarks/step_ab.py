"""In-process A/B of OUR training step: two models in one process, each traced under its own module settings,
`train_on_batch` alternating between them (order flipped every round), so both see the same machine state.

On this VM, processes started minutes apart differ by up to ~18 % in speed for the same code (HISTORY.md,
session 7), which drowns a few-percent change in cross-process comparisons; alternating steps in one process
does not suffer from that drift.

A setting is `module.ATTRIBUTE=VALUE` (VALUE a Python literal), applied while that variant's model is built
and its train step traced (the first steps), then restored. Example, session 6's context chunks:

    .venv/bin/python benchmarks/step_ab.py \\
        --a lem_model.model.TRAIN_CONTEXT_CHUNKS=1 --b lem_model.model.TRAIN_CONTEXT_CHUNKS=2
"""
import argparse
import ast
import contextlib
import importlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_table, machine_info, pin_tf_threads  # noqa: E402
from train_throughput import CONFIGS  # noqa: E402


def parse_setting(text: str):
    """'pkg.module.NAME=literal' -> (module, NAME, value)."""
    target, sep, value = text.partition("=")
    module_name, _, attr = target.rpartition(".")
    if not sep or not module_name or not attr:
        raise argparse.ArgumentTypeError(f"expected module.ATTRIBUTE=VALUE, got {text!r}")
    module = importlib.import_module(module_name)
    if not hasattr(module, attr):
        raise argparse.ArgumentTypeError(f"{module_name} has no attribute {attr!r}")
    try:
        return module, attr, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"VALUE must be a Python literal (1, 2.5, True, 'text'), got {value!r}")


@contextlib.contextmanager
def applied(settings):
    saved = [(m, a, getattr(m, a)) for m, a, _ in settings]
    try:
        for m, a, v in settings:
            setattr(m, a, v)
        yield
    finally:
        for m, a, v in saved:
            setattr(m, a, v)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", action="append", default=[], metavar="module.NAME=VALUE", help="setting of variant A")
    p.add_argument("--b", action="append", default=[], metavar="module.NAME=VALUE", help="setting of variant B")
    p.add_argument("--config", choices=sorted(CONFIGS), default="paper")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--inter-threads", type=int, default=None, help="default: = --threads (as train_throughput.py)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant (tracing included)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant, alternating")
    a = p.parse_args()
    a.inter_threads = a.inter_threads or a.threads

    import numpy as np
    import tensorflow as tf
    pin_tf_threads(tf, a.threads, a.inter_threads)
    import keras
    import lem_model
    from lem_model.features import NUM_BAR_FEATURES
    from ours_driver import training_batch

    try:
        settings = {"A": [parse_setting(s) for s in a.a], "B": [parse_setting(s) for s in a.b]}
    except (argparse.ArgumentTypeError, ImportError) as e:
        p.error(str(e))
    cfg = CONFIGS[a.config]
    x, y = training_batch(np.random.default_rng(0), a.batch, cfg["lookback"], cfg["n_ahead"])
    hp = dict(lookback=cfg["lookback"], n_ahead=cfg["n_ahead"], hidden_size=cfg["hidden"],
              num_embedding=cfg["embedding"], num_heads=cfg["heads"], fused_mlp_hidden_dim=cfg["fused"])
    info = machine_info()
    print(f"# step_ab  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {info['cpu']}, {info['cores']} "
          f"cores; {a.config} config, batch {a.batch}; TF intra-op {a.threads}, inter-op {a.inter_threads}", flush=True)

    models = {}
    for name, sets in settings.items():
        with applied(sets):
            keras.utils.set_random_seed(0)
            model = lem_model.build_lem(num_features=NUM_BAR_FEATURES, **hp)
            lem_model.compile_lem(model, metrics=False, jit_compile=False)
            for _ in range(a.warmup):
                model.train_on_batch(x, y)
        models[name] = model
    for model in models.values():  # one more untimed step each: the first step after the other model's
        model.train_on_batch(x, y)     # warm-up was measured up to ~1 s slow (cause not investigated)
    times = {name: [] for name in models}
    for i in range(a.steps):
        for name in (("A", "B") if i % 2 == 0 else ("B", "A")):
            t0 = time.perf_counter()
            models[name].train_on_batch(x, y)
            times[name].append(time.perf_counter() - t0)
        print(f"#   round {i + 1}/{a.steps}: A {times['A'][-1]:.3f} s, B {times['B'][-1]:.3f} s", flush=True)

    rows = [[name, " ".join(a.a if name == "A" else a.b) or "(defaults)", f"{statistics.median(t):.3f}",
             f"{min(t):.3f}", f"{statistics.mean(t):.3f}", f"{a.batch / statistics.median(t):.1f}"]
            for name, t in times.items()]
    print(format_table(["variant", "settings", "median step s", "min s", "mean s", "samples/s (median)"], rows))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"B vs A: median step {100 * (med['B'] / med['A'] - 1):+.1f} %")


if __name__ == "__main__":
    main()
