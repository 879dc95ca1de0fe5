"""One-order Predict latency (p50, p99) and orders/s of the served LEM over loopback gRPC.

For each configuration (paper: lookback 120, n_ahead 12, hidden 200, embedding 20, heads 8, fused hidden 100;
small: `lem_model.model.SMALL_CONFIG`; both W = 336): build the LEM (random weights: latency does not depend
on training), export it with the Trainer's exporter (`components.trainer.export.export_serving_model`; the
transform graph is the Transform module's `preprocessing_fn`, via the test stand-in of `tft.TFTransformOutput`),
start `lems serve` on it in a subprocess, and time from this process:
  * `predict`: one Predict RPC with one order's W+L+N bars (request built once), through `serve_scenario`
    (the order's scenario only: what `LemClient.plan` calls) and through `serving_default` (all (N+1) x 8
    scenarios);
  * `plan`: `LemClient.plan` end to end (request window from the bars, Predict on `serve_scenario`,
    remaining schedule);
  * orders/s with 1 and 4 concurrent clients (`plan`);
  * server CPU ms / Predict (`serve_scenario`): CPU time (all threads) the server process spent per
    Predict, a cost that does not depend on what else runs on the machine;
  * `in-process`: `serve_scenario` called directly in this process (`tf.saved_model.load`), i.e. the
    model's own compute without gRPC, to separate the two.
Machine load matters on small machines: the busy share of all cores during the runs is printed.

    python -m benchmarks.serving_latency [--configs paper,small] [--requests 500] [--recurrent tkan]
"""
import argparse
import os
import statistics
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from benchmarks._common import (cpu_times, format_table, machine_info, other_load, percentile,  # noqa: E402
                                serving_testutils, start_lems_serve, target, write_result)
from lem_model.presets import PAPER_SIZES  # noqa: E402

#: Issue 5: one order per gRPC Predict, paper config.
TARGET_P99_MS = 20.0

NORM_WINDOW = PAPER_SIZES["norm_window"]


def configs(recurrent: str) -> dict:
    from lem_model.model import PAPER_CONFIG, SMALL_CONFIG
    return {"paper": dict(PAPER_CONFIG, recurrent=recurrent), "small": dict(SMALL_CONFIG, recurrent=recurrent)}


def export(cfg: dict, base: str) -> None:
    import keras
    from components.trainer.export import export_serving_model
    from lem_model.features import NUM_BAR_FEATURES
    from lem_model.model import build_lem

    keras.utils.set_random_seed(0)
    hp = dict(cfg)
    lookback, n_ahead = hp.pop("lookback"), hp.pop("n_ahead")
    model = build_lem(num_features=NUM_BAR_FEATURES, lookback=lookback, n_ahead=n_ahead, **hp)
    sizes = dict(norm_window=NORM_WINDOW, lookback=lookback, n_ahead=n_ahead)
    export_serving_model(model, serving_testutils().FeatureTransformStandIn(**sizes), os.path.join(base, "1"), **sizes)


def bars_for(window_bars: int, n: int = 2000):
    return serving_testutils().make_bars(max(n, window_bars + 50), freq_minutes=15)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc), all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(address: str, requests: int, server_pid: int) -> dict:
    import numpy as np
    from serving.client import LemClient
    from lem_model import layout
    from serving.scheduling import Order, build_request_window, scenario_indices

    client = LemClient(address, "lem", timeout=60)
    info = client.metadata()
    bars = bars_for(info.window_bars)
    order = Order(side="buy", target="volume", size=1e4, benchmark="vwap", min_duration=6, frequency_minutes=15)
    hist = {k: v[: info.window_bars + 20] for k, v in bars.items()}
    checked = order.validate(info.n_ahead)
    w = build_request_window(hist, checked, window_bars=info.window_bars, n_ahead=info.n_ahead)
    inputs = {"volume": w.volume[None], "quote_volume": w.quote_volume[None], "timestamp": w.timestamp[None],
              "frequency_minutes": np.array([15], np.int64), "min_rate": np.array([checked.min_rate], np.float32),
              "max_rate": np.array([1.0], np.float32)}
    from serving.tensors import to_tensor_proto
    inputs["scenario"] = np.array([layout.scenario_index(*scenario_indices(checked, info.n_ahead), info.n_ahead)],
                                  np.int64)
    protos = {k: to_tensor_proto(v) for k, v in inputs.items()}
    full = {k: v for k, v in protos.items() if k != "scenario"}
    for _ in range(20):                      # warm-up (XLA compiles the scenario path on its first call)
        client.predict_raw(protos, signature="serve_scenario")
        client.predict_raw(full)
        client.plan(order, hist)
    pred, pred_full, plan = [], [], []
    cpu0 = process_cpu_s(server_pid)
    for _ in range(requests):
        t0 = time.perf_counter()
        client.predict_raw(protos, signature="serve_scenario")
        pred.append((time.perf_counter() - t0) * 1e3)
    server_cpu_ms = (process_cpu_s(server_pid) - cpu0) * 1e3 / requests
    for _ in range(requests):
        t0 = time.perf_counter()
        client.predict_raw(full)
        pred_full.append((time.perf_counter() - t0) * 1e3)
    for _ in range(requests):
        t0 = time.perf_counter()
        client.plan(order, hist)
        plan.append((time.perf_counter() - t0) * 1e3)
    out = {"predict_p50": percentile(pred, 50), "predict_p99": percentile(pred, 99),
           "full_p50": percentile(pred_full, 50), "full_p99": percentile(pred_full, 99),
           "plan_p50": percentile(plan, 50), "plan_p99": percentile(plan, 99),
           "orders_s_1": 1e3 / statistics.mean(plan), "server_cpu_ms": server_cpu_ms}
    # 4 concurrent clients (one channel each), fixed number of plans each
    per = max(requests // 4, 25)
    clients = [LemClient(address, "lem", timeout=60) for _ in range(4)]
    for c in clients:
        c.plan(order, hist)

    def work(c):
        for _ in range(per):
            c.plan(order, hist)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["orders_s_4"] = 4 * per / (time.perf_counter() - t0)
    out["window_bars"], out["n_ahead"] = info.window_bars, info.n_ahead
    out["inputs"] = inputs
    return out


def measure_in_process(path: str, inputs: dict, requests: int) -> tuple:
    import tensorflow as tf
    fn = tf.saved_model.load(path).signatures["serve_scenario"]
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    for _ in range(10):
        fn(**tensors)["allocations"].numpy()
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        fn(**tensors)["allocations"].numpy()
        times.append((time.perf_counter() - t0) * 1e3)
    return percentile(times, 50), percentile(times, 99)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="paper,small")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--recurrent", default="tkan", choices=["tkan", "lstm", "gru"])
    args = parser.parse_args()
    rows, measured = [], {}
    for name in args.configs.split(","):
        cfg = configs(args.recurrent)[name]
        with tempfile.TemporaryDirectory() as tmp:
            base = os.path.join(tmp, "lem")
            t0 = time.perf_counter()
            export(cfg, base)
            export_s = time.perf_counter() - t0
            proc, address, _ = start_lems_serve(base)
            busy0, total0 = cpu_times()
            try:
                r = measure(address, args.requests, proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            busy1, total1 = cpu_times()
            p50, p99 = measure_in_process(os.path.join(base, "1"), r.pop("inputs"), args.requests)
        busy = (busy1 - busy0) / max(total1 - total0, 1)
        rows.append([name, f"{r['window_bars']} / {r['n_ahead']}", f"{r['predict_p50']:.2f}", f"{r['predict_p99']:.2f}",
                     f"{r['full_p50']:.2f} / {r['full_p99']:.2f}",
                     f"{r['plan_p50']:.2f}", f"{r['plan_p99']:.2f}", f"{r['orders_s_1']:.0f}",
                     f"{r['orders_s_4']:.0f}", f"{r['server_cpu_ms']:.1f}", f"{p50:.2f} / {p99:.2f}", f"{100 * busy:.0f}%", f"{export_s:.0f}"])
        print(f"[{name}] {r} in-process p50/p99 {p50:.2f}/{p99:.2f} ms; cores busy {100 * busy:.0f}%", flush=True)
        measured[name] = {**r, "in_process_p50": p50, "in_process_p99": p99, "cores_busy": busy, "export_s": export_s}
    info = machine_info()
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']:.1f} GiB; loadavg {info['loadavg']}; "
          f"recurrent {args.recurrent}; {args.requests} requests per measure; other load: {other_load()}")
    print(format_table(["config", "W+L+N / N", "Predict p50 ms", "Predict p99 ms",
                        "all scenarios (serving_default) p50 / p99 ms", "plan p50 ms", "plan p99 ms",
                        "orders/s (1 client)", "orders/s (4 clients)", "server CPU ms / Predict",
                        "in-process p50 / p99 ms",
                        "cores busy", "export s"], rows))
    targets = []
    if "paper" in measured:
        p99 = measured["paper"]["predict_p99"]
        targets.append(target(f"serving p99, one order per gRPC Predict, paper config (issue 5: < {TARGET_P99_MS:g} ms)",
                              f"{p99:.1f} ms (p50 {measured['paper']['predict_p50']:.1f})", f"< {TARGET_P99_MS:g} ms",
                              p99 < TARGET_P99_MS))
    print(f"wrote {write_result('serving_latency', targets, {'configs': measured, 'requests': args.requests, 'recurrent': args.recurrent, 'other_load': other_load()})}")


if __name__ == "__main__":
    main()
