"""In-process A/B of OUR training step: two models in one process, each built with its own options,
`train_on_batch` alternating between them (order flipped every round), so both see the same machine state.

On this VM, processes started minutes apart differ by up to ~18 % in speed for the same code (HISTORY.md,
session 7), which drowns a few-percent change in cross-process comparisons; alternating steps in one process
does not suffer from that drift.

A setting is `NAME=VALUE` (VALUE a Python literal): a `lem_model.build_lem` option (e.g. `implementation`,
`recurrent`, `fused_mlp_layers`), or `optimizer` = "lem_adam" (the project's, `compile_lem`'s default) or "adam"
(Keras' own). Example, the reference form against the fast one:

    .venv/bin/python benchmarks/step_ab.py --a implementation=reference --b implementation=fast
"""
import argparse
import ast
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_table, machine_info, pin_tf_threads  # noqa: E402
from train_throughput import CONFIGS  # noqa: E402


OPTIMIZERS = ("lem_adam", "adam")


def parse_setting(text: str):
    """'NAME=literal' -> (NAME, value), NAME a `build_lem` option or "optimizer"."""
    import inspect
    from lem_model.model import LargeExecutionModel
    name, sep, value = text.partition("=")
    options = set(inspect.signature(LargeExecutionModel.__init__).parameters) - {"self", "kwargs"}
    if not sep or name not in options | {"optimizer"}:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {sorted(options | {'optimizer'})}, "
                                         f"got {text!r}")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        value = value  # a bare word: a string option (implementation=fast)
    if name == "optimizer" and value not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"optimizer must be one of {OPTIMIZERS}, got {value!r}")
    return name, value


def build_variant(settings: dict, hp: dict, num_features: int):
    """A compiled LEM of the benchmark's hyperparameters with `settings` (parse_setting pairs) applied."""
    import keras
    import lem_model
    options = dict(settings)
    optimizer = options.pop("optimizer", "lem_adam")
    model = lem_model.build_lem(num_features=num_features, **{**hp, **options})
    lem_model.compile_lem(model, metrics=False, jit_compile=False)
    if optimizer == "adam":
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(model.optimizer.learning_rate)),
                      loss=model.loss, jit_compile=False)
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", action="append", default=[], metavar="NAME=VALUE", help="setting of variant A")
    p.add_argument("--b", action="append", default=[], metavar="NAME=VALUE", help="setting of variant B")
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
    from lem_model.features import NUM_BAR_FEATURES
    from ours_driver import training_batch

    try:
        settings = {"A": dict(parse_setting(s) for s in a.a), "B": dict(parse_setting(s) for s in a.b)}
    except argparse.ArgumentTypeError as e:
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
        keras.utils.set_random_seed(0)
        model = build_variant(sets, hp, NUM_BAR_FEATURES)
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
