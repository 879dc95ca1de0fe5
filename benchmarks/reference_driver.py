"""Worker that drives the REFERENCE implementation `lems==0.1.1` (CC BY-NC-SA 4.0) for timing only.

Runs ONLY under benchmarks/.venv-ref/bin/python (built by setup_reference_venv.sh); nothing in lems-tfx imports
it. It calls the reference's public API as documented in its README: `lems.models.LargeExecutionModel(lookback,
n_ahead, hidden_size, num_embedding, num_heads, fused_mlp_hidden_dim)` compiled with `lems.loss.lem_loss`, on
inputs of the reference's layout:
  X `[B, lookback + n_ahead - 1, 7]` (the 7 columns `full_generate` produces for one asset: volume, freq_min,
  month, day-of-week, return, price, volume; the model reads the last two as price and volume), min and max
  trading rate `[B, 1]`; y `[B, n_ahead, n_ahead + 1, 4, 2]` (`add_config_to_y` layout).
Inputs are random values in realistic ranges (throughput does not depend on them).

Usage (from the repository root): benchmarks/.venv-ref/bin/python -m benchmarks.reference_driver --lookback 120 \
        --n-ahead 12 --hidden 200 --embedding 20 --heads 8 --fused 100 \
        --batch 256 --warmup 2 --steps 3 --windows 3 --threads 2 --latency-reps 30
"""
import argparse
import time

from benchmarks._common import emit, pin_tf_threads
from benchmarks._measure import measure_latency, measure_training


def reference_inputs(rng, batch, lookback, n_ahead):
    import numpy as np
    t = lookback + n_ahead - 1
    vol = rng.lognormal(0.0, 1.0, size=(batch, t)).astype("float32") / 400.0
    price = (1.0 + np.cumsum(rng.normal(0, 1e-3, size=(batch, t)), axis=1)).astype("float32")
    ret = np.diff(price, axis=1, prepend=price[:, :1]) / price
    x = np.stack([vol, np.full_like(vol, 15.0), rng.integers(1, 13, (batch, t)).astype("float32"),
                  rng.integers(0, 7, (batch, t)).astype("float32"), ret, price, vol], axis=-1).astype("float32")
    min_rate = np.zeros((batch, 1), "float32")
    max_rate = np.ones((batch, 1), "float32")
    yv = rng.lognormal(0.0, 1.0, size=(batch, n_ahead)).astype("float32") / lookback
    yp = (1.0 + np.cumsum(rng.normal(0, 1e-3, size=(batch, n_ahead)), axis=1)).astype("float32")
    y = np.stack([yv, yp], axis=-1)
    y = np.tile(y[:, :, None, None, :], (1, 1, n_ahead + 1, 4, 1))
    y[:, :, :, [1, 3], 0] = 1.0
    return [x, min_rate, max_rate], y.astype("float32")


def main():
    p = argparse.ArgumentParser()
    for name, default in [("lookback", 120), ("n-ahead", 12), ("hidden", 200), ("embedding", 20), ("heads", 8),
                          ("fused", 100), ("batch", 256), ("warmup", 2), ("steps", 3), ("windows", 3),
                          ("threads", 2), ("inter-threads", 0), ("latency-reps", 30), ("seed", 0)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--jit", choices=["off", "on"], default="off")
    p.add_argument("--min-window-s", type=float, default=0.0, help="each timed window lasts at least this long")
    a = p.parse_args()
    a.inter_threads = a.inter_threads or a.threads  # 0: as train_throughput.py's default

    import numpy as np
    import tensorflow as tf
    pin_tf_threads(tf, a.threads, a.inter_threads)
    import keras
    from lems.loss import lem_loss
    from lems.models import LargeExecutionModel

    keras.utils.set_random_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    x, y = reference_inputs(rng, a.batch, a.lookback, a.n_ahead)
    t0 = time.perf_counter()
    model = LargeExecutionModel(lookback=a.lookback, n_ahead=a.n_ahead, hidden_size=a.hidden,
                                num_embedding=a.embedding, num_heads=a.heads, fused_mlp_hidden_dim=a.fused)
    model(x)  # build
    model.compile(optimizer="adam", loss=lem_loss, jit_compile=(a.jit == "on"))
    build_s = time.perf_counter() - t0
    x_t = [tf.constant(v) for v in x]
    y_t = tf.constant(y)
    train = measure_training(model, x_t, y_t, warmup=a.warmup, steps=a.steps, windows=a.windows,
                                   min_window_s=a.min_window_s)
    x1 = [tf.constant(v[:1]) for v in x]
    lat = measure_latency(model, x1, reps=a.latency_reps)
    emit({"impl": "reference lems 0.1.1", "params": int(model.count_params()), "build_s": build_s,
          "jit": a.jit, **train, **lat})


if __name__ == "__main__":
    main()
