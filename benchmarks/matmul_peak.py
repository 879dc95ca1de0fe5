"""Worker: fp32 matmul peak of this machine with TensorFlow (large square tf.matmul), in GFLOP/s.

Run by train_throughput.py in a subprocess with pinned threads; prints one BENCH_RESULT line.
Usage: matmul_peak.py THREADS [N] [SECONDS]
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, pin_tf_threads  # noqa: E402


def main():
    threads = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    import tensorflow as tf
    pin_tf_threads(tf, threads)
    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()  # warm-up
    rates = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 3:
        t0 = time.perf_counter()
        mm(a, b).numpy()
        rates.append(2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    emit({"threads": threads, "n": n, "reps": len(rates), "gflops_max": rates[-1],
          "gflops_median": rates[len(rates) // 2]})


if __name__ == "__main__":
    main()
