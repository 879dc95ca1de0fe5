"""Worker that times OUR model (`lem_model.build_lem` + `lem_model.compile_lem`), run by train_throughput.py in
the project venv with pinned threads; prints one BENCH_RESULT line. `--matmul-peak N` measures the machine's fp32
matmul peak instead (an N x N `tf.matmul`, same threads).

Inputs come from the ONE feature builder (`lem_model.features.build_features_numpy`) applied to synthetic raw
order windows (random-walk VWAP, log-normal volume, 15-minute bars), so `bars` and `labels` have the exact
layout and value ranges the Trainer sees.

Usage: python -m benchmarks.ours_driver --lookback 120 --n-ahead 12 --hidden 200 --embedding 20 --heads 8 \
        --fused 100 --batch 256 --warmup 2 --steps 5 --windows 3 --threads 2 --latency-reps 50 [--flops]
       python -m benchmarks.ours_driver --threads 2 --matmul-peak 2048
"""
import argparse
import time

from benchmarks._common import emit, pin_tf_threads
from benchmarks._measure import matmul_peak, measure_latency, measure_training
from lem_model.presets import PAPER_SIZES

NORM_WINDOW = PAPER_SIZES["norm_window"]


def synthetic_windows(rng, batch, lookback, n_ahead, norm_window=NORM_WINDOW, freq_minutes=15):
    """Raw windows `[B, W+L+N]` (volume, quote_volume, timestamp) and `[B]` frequency_minutes."""
    import numpy as np
    t = norm_window + lookback + n_ahead
    volume = rng.lognormal(3.0, 1.0, size=(batch, t)).astype("float32")
    volume[rng.random((batch, t)) < 0.01] = 0.0  # a few unpriced bars
    vwap = 100.0 * np.exp(np.cumsum(rng.normal(0, 2e-3, size=(batch, t)), axis=1))
    start = 1_600_000_000 + 900 * rng.integers(0, 100_000, size=(batch, 1))
    timestamp = (start + 900 * np.arange(t)[None, :]).astype("int64")
    return volume, (volume * vwap).astype("float32"), timestamp, np.full((batch,), freq_minutes, "int64")


def training_batch(rng, batch, lookback, n_ahead):
    """One training batch for OUR model from `synthetic_windows` through the feature builder: inputs dict
    (`bars` [B, L+N, F], `min_rate` 0, `max_rate` 1) and `labels`, as TensorFlow tensors."""
    import tensorflow as tf
    from lem_model.features import build_features_numpy

    feats = build_features_numpy(*synthetic_windows(rng, batch, lookback, n_ahead), norm_window=NORM_WINDOW,
                                 lookback=lookback, n_ahead=n_ahead)
    x = {"bars": tf.constant(feats["bars"]), "min_rate": tf.zeros((batch, 1)), "max_rate": tf.ones((batch, 1))}
    return x, tf.constant(feats["labels"])


def main():
    p = argparse.ArgumentParser()
    for name, default in [("lookback", 120), ("n-ahead", 12), ("hidden", 200), ("embedding", 20), ("heads", 8),
                          ("fused", 100), ("batch", 256), ("warmup", 2), ("steps", 5), ("windows", 3),
                          ("threads", 2), ("inter-threads", 0), ("latency-reps", 50), ("seed", 0)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--jit", choices=["off", "on"], default="off")
    p.add_argument("--min-window-s", type=float, default=0.0, help="each timed window lasts at least this long")
    p.add_argument("--recurrent", default=None, help="override the model's recurrent block (default: its own)")
    p.add_argument("--flops", action="store_true", help="also count FLOPs of one traced training step")
    p.add_argument("--matmul-peak", type=int, default=0, metavar="N", help="only the fp32 peak of an N x N matmul")
    a = p.parse_args()
    a.inter_threads = a.inter_threads or a.threads  # 0: as train_throughput.py's default

    import numpy as np
    import tensorflow as tf
    pin_tf_threads(tf, a.threads, a.inter_threads)
    if a.matmul_peak:
        emit({"threads": a.threads, **matmul_peak(a.matmul_peak)})
        return
    import keras
    import lem_model
    from lem_model.features import NUM_BAR_FEATURES

    keras.utils.set_random_seed(a.seed)
    x, y = training_batch(np.random.default_rng(a.seed), a.batch, a.lookback, a.n_ahead)

    hp = dict(lookback=a.lookback, n_ahead=a.n_ahead, hidden_size=a.hidden, num_embedding=a.embedding,
              num_heads=a.heads, fused_mlp_hidden_dim=a.fused)
    if a.recurrent:
        hp["recurrent"] = a.recurrent
    t0 = time.perf_counter()
    model = lem_model.build_lem(num_features=NUM_BAR_FEATURES, **hp)
    lem_model.compile_lem(model, metrics=False, jit_compile=(a.jit == "on"))
    build_s = time.perf_counter() - t0
    out = {"impl": "ours lem_model", "params": int(model.count_params()), "build_s": build_s, "jit": a.jit,
           "recurrent": getattr(model, "recurrent", None)}
    if a.flops:
        from benchmarks._flops import train_step_flops
        out.update(train_step_flops(model, x, y))
    out.update(measure_training(model, x, y, warmup=a.warmup, steps=a.steps, windows=a.windows,
                               min_window_s=a.min_window_s))
    out.update(measure_latency(model, {k: v[:1] for k, v in x.items()}, reps=a.latency_reps))
    emit(out)


if __name__ == "__main__":
    main()
