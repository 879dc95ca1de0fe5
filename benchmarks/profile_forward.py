"""Batch-1 (one order) forward latency of the LEM, per block and whole, on the TensorFlow backend.

Times traced `tf.function`s (inference, `training=False`) of: the whole model, the model exported with
`lem_model.model.export_saved_model` and reloaded (`serving_default`), the context block as the served model
runs it (XLA-compiled at small batch, `lem_model.fast_tf.small_batch_xla`), and each block of the fast form
alone, plain (no XLA), on its captured inputs (embedding+VSN, recurrent, gate/GRN/attention, allocator).
Random weights (latency does not depend on training). Prints p50/p90/p99 in ms over `--calls` calls after
warm-up, and the load average (other jobs on a small machine inflate every number; compare runs made at similar
load).

    .venv/bin/python benchmarks/profile_forward.py [--recurrent tkan] [--batch 1] [--calls 200] [--small]
"""
import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


def timed(fn, *args, calls=200, warmup=5):
    for _ in range(warmup):
        fn(*args)
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        r = fn(*args)
        r = r if not isinstance(r, dict) else next(iter(r.values()))
        np.asarray(r)
        out.append((time.perf_counter() - t) * 1e3)
    return np.percentile(out, [50, 90, 99])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recurrent", default="tkan", choices=["tkan", "lstm", "gru"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--small", action="store_true", help="SMALL_CONFIG instead of the paper config")
    a = p.parse_args()

    import tensorflow as tf
    import lem_model
    from lem_model.features import NUM_BAR_FEATURES
    from lem_model.model import PAPER_CONFIG, SMALL_CONFIG, build_lem, export_saved_model

    cfg = SMALL_CONFIG if a.small else PAPER_CONFIG
    model = build_lem(num_features=NUM_BAR_FEATURES, recurrent=a.recurrent, **cfg)
    L, N, B, F = model.lookback, model.n_ahead, a.batch, NUM_BAR_FEATURES
    rng = np.random.default_rng(0)
    inputs = {"bars": tf.constant(rng.normal(size=(B, L + N, F)).astype("float32")),
              "min_rate": tf.fill([B, 1], 1.0 / N ** 2), "max_rate": tf.ones([B, 1])}
    print(f"# profile_forward {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; lem_model from "
          f"{os.path.dirname(lem_model.__file__)}; {a.recurrent}; batch {B}; {cfg}; loadavg {os.getloadavg()}")
    rows = []
    full = tf.function(lambda d: model(d, training=False))
    rows.append(("model (tf.function)", timed(full, inputs, calls=a.calls)))
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(model, tmp)
        sig = tf.saved_model.load(tmp).signatures["serving_default"]
        rows.append(("exported serving_default", timed(lambda d: sig(**d), inputs, calls=a.calls)))

    # the blocks as the model's fast form (the default) computes them
    from lem_model import fast, fast_tf
    m = model
    x = inputs["bars"][:, : L + N - 1]
    emb = tf.function(lambda x: fast.embed_and_select(m.vsn, m.embedding, x, training=False))
    v = emb(x)
    rec = tf.function(lambda v: fast.recurrent(m, v, training=False))
    r = rec(v)

    def post(r, v):
        s = fast.grn(m.recurrent_grn, fast.gate_add_norm(m.recurrent_gate, r, fast.dense(v, m.skip_projection.kernel)))
        q = s[:, L - 1:]
        return fast.grn(m.context_grn, fast.gate_add_norm(m.attention_gate, fast.attention(m.attention, q, s), q))

    post = tf.function(post)
    c = post(r, v)
    step_inputs = tf.concat([c, inputs["bars"][:, L - 1: L + N - 1], tf.ones([B, N, 2])], -1)
    alloc = tf.function(lambda s, lo, hi: fast.allocate(m.allocator, s, lo, hi))
    # the context block as the served model runs it (XLA up to xla_max_batch)
    ctx = tf.function(lambda x: fast_tf.small_batch_xla(lambda y: fast.context(m, y, False), m.xla_max_batch, x))
    rows.append(("context block as served", timed(ctx, x, calls=a.calls)))
    rows.append(("  embedding + VSN", timed(emb, x, calls=a.calls)))
    rows.append(("  recurrent", timed(rec, v, calls=a.calls)))
    rows.append(("  gate/GRN/attention/GRN", timed(post, r, v, calls=a.calls)))
    rows.append(("  allocator", timed(alloc, step_inputs, inputs["min_rate"], inputs["max_rate"], calls=a.calls)))
    print(f"| {'block':<26} | p50 ms | p90 ms | p99 ms |")
    print(f"|{'-' * 28}|--------|--------|--------|")
    for name, (p50, p90, p99) in rows:
        print(f"| {name:<26} | {p50:6.2f} | {p90:6.2f} | {p99:6.2f} |")
    print(f"# loadavg at end {os.getloadavg()}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
