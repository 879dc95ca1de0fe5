"""Measurement loops shared by the ours/reference training drivers (identical code times both models), and the
machine's fp32 matmul peak.

Imports TensorFlow lazily; each driver pins threads before calling these.
"""
import statistics
import time


def measure_training(model, x, y, *, warmup: int, steps: int, windows: int, min_window_s: float = 0.0) -> dict:
    """Steady-state `train_on_batch` throughput.

    `warmup` steps (tracing + first updates) are excluded; then `windows` timed windows, each of at least
    `steps` steps and at least `min_window_s` seconds. Returns per-window samples/s, their median, and the
    warm-up wall time.
    """
    import numpy as np
    batch = int(np.shape(x[0] if isinstance(x, (list, tuple)) else next(iter(x.values())))[0])
    t0 = time.perf_counter()
    first_step_s = None
    for i in range(warmup):
        model.train_on_batch(x, y)
        if i == 0:
            first_step_s = time.perf_counter() - t0
    warmup_s = time.perf_counter() - t0
    rates, losses = [], []
    for _ in range(windows):
        t0 = time.perf_counter()
        n = 0
        while n < steps or time.perf_counter() - t0 < min_window_s:
            loss = model.train_on_batch(x, y)
            n += 1
        dt = time.perf_counter() - t0
        rates.append(n * batch / dt)
        losses.append(float(np.ravel(loss)[0]))
    med = statistics.median(rates)
    return {"samples_per_s": rates, "samples_per_s_median": med, "step_s_median": batch / med,
            "first_step_s": first_step_s,
            "warmup_s": warmup_s, "last_loss": losses[-1], "batch": batch}


def measure_latency(model, x1, *, reps: int, warmup: int = 5) -> dict:
    """Batch-1 forward latency (inference mode) through one traced `tf.function`; median and p90 in ms."""
    import tensorflow as tf
    fwd = tf.function(lambda inp: model(inp, training=False))
    for _ in range(warmup):
        _ = tf.nest.map_structure(lambda t: t.numpy(), fwd(x1))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        _ = tf.nest.map_structure(lambda t: t.numpy(), fwd(x1))
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"latency_ms_median": statistics.median(times), "latency_ms_p90": times[int(0.9 * (len(times) - 1))],
            "latency_reps": reps}


def matmul_peak(n: int = 2048, seconds: float = 3.0) -> dict:
    """This machine's fp32 matmul rate with TensorFlow: a large square `tf.matmul` repeated for `seconds` (at
    least 3 times) after one warm-up; GFLOP/s, median and max."""
    import tensorflow as tf
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()
    rates = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 3:
        t0 = time.perf_counter()
        mm(a, b).numpy()
        rates.append(2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    return {"n": n, "reps": len(rates), "gflops_max": rates[-1], "gflops_median": rates[len(rates) // 2]}
