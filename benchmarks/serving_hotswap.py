"""`lems serve` through hot swaps under load, and the first Predict after a fresh load.

Exports a LEM (random weights; `--config tiny`: the serving tests' sizes, `small`: `SMALL_CONFIG` at W = 336)
twice with the Trainer's exporter (which writes the warm-up file), starts `lems serve` on version 1 in a
subprocess, and measures from this process:
  * first Predict after a fresh load: the latency of the very first `serve_scenario` and `serving_default`
    call (one order) once the server says it serves, with the export's warm-up file and (`--cold`) on a copy
    without it;
  * a hot swap under `--clients` (8) concurrent clients (one channel each, `LemClient.plan` through
    `serve_scenario`, back to back): version 2, then version 3 (version 1's files again) are moved into the
    model directory while they run; every request's latency and status are recorded: failed requests, p50,
    p99 and max overall and within the swap windows (from the move until 2 s after the new version answered);
  * the server's resident memory (VmRSS) with one version loaded, at its peak during the swaps, and after
    each swap once the old version is released.
Writes JSON to `--out` (default benchmarks/results/serving_hotswap.json).

    python -m benchmarks.serving_hotswap [--config tiny] [--clients 8] [--seconds 4] [--cold]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from benchmarks._common import (RESULTS_DIR, machine_info, other_load, percentile, start_lems_serve,  # noqa: E402
                                serving_testutils, target, write_result)


def export(config: str, path: str, seed: int) -> dict:
    import keras
    from components.trainer.export import export_serving_model
    from lem_model.features import NUM_BAR_FEATURES
    from lem_model.model import SMALL_CONFIG, build_lem

    keras.utils.set_random_seed(seed)
    if config == "tiny":
        sizes, hp = dict(serving_testutils().SIZES), dict(serving_testutils().HYPER)
    else:
        hp = dict(SMALL_CONFIG)
        sizes = dict(norm_window=336, lookback=hp.pop("lookback"), n_ahead=hp.pop("n_ahead"))
    model = build_lem(num_features=NUM_BAR_FEATURES, lookback=sizes["lookback"], n_ahead=sizes["n_ahead"], **hp)
    export_serving_model(model, serving_testutils().FeatureTransformStandIn(**sizes), path, **sizes)
    return sizes


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def order_and_bars(window_bars: int):
    from serving.scheduling import Order
    bars = serving_testutils().make_bars(window_bars + 200)
    hist = {k: v[: window_bars + 100] for k, v in bars.items()}
    order = Order(side="buy", target="volume", size=1e4, benchmark="vwap", min_duration=2, frequency_minutes=15)
    return order, hist


def first_predicts(address: str, window_bars: int) -> dict:
    """ms of the first serve_scenario call, then the first serving_default call, of a fresh server."""
    import numpy as np
    from serving.client import LemClient
    from serving.warmup import signature_inputs
    out = {}
    with LemClient(address, "lem", timeout=600) as client:
        n_ahead = client.metadata().n_ahead
        for sig in ("serve_scenario", "serving_default"):
            inputs = signature_inputs(sig, window_bars, n_ahead, 15, 1)
            inputs["volume"] = inputs["volume"] * np.float32(3.0)    # not the warm-up request itself
            t0 = time.perf_counter()
            client.predict_raw(inputs, signature=sig)
            out[sig] = (time.perf_counter() - t0) * 1e3
    return out


def stats(lat_ms):
    return {"requests": len(lat_ms), "p50_ms": percentile(lat_ms, 50), "p99_ms": percentile(lat_ms, 99),
            "max_ms": max(lat_ms) if lat_ms else float("nan")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=("tiny", "small"), default="tiny")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="load before the first swap, between and after swaps")
    p.add_argument("--cold", action="store_true", help="also time the first Predict of a copy without warm-up")
    p.add_argument("--out", default=os.path.join(RESULTS_DIR, "serving_hotswap.json"))
    a = p.parse_args()

    from serving.client import LemClient
    from serving.warmup import WARMUP_FILE

    work = tempfile.mkdtemp(prefix="lems-hotswap-")
    result = {"config": a.config, "clients": a.clients, "machine": machine_info()}
    try:
        aside = os.path.join(work, "aside")
        sizes = export(a.config, os.path.join(aside, "v1"), seed=0)
        export(a.config, os.path.join(aside, "v2"), seed=1)
        window_bars = sum(sizes.values())
        result["sizes"] = sizes
        base = os.path.join(work, "serving", "lem")
        shutil.copytree(os.path.join(aside, "v1"), os.path.join(base, "1"))

        if a.cold:
            cold = os.path.join(work, "cold", "lem")
            shutil.copytree(os.path.join(aside, "v1"), os.path.join(cold, "1"))
            os.remove(os.path.join(cold, "1", WARMUP_FILE))
            proc, address, startup = start_lems_serve(cold, 60)
            try:
                result["cold_first_predict_ms"] = first_predicts(address, window_bars)
                result["cold_startup_s"] = startup
            finally:
                stop_server(proc)

        proc, address, startup = start_lems_serve(base, 0.5)
        try:
            result["startup_s"] = startup                    # load + warm-up replay of version 1
            result["first_predict_ms"] = first_predicts(address, window_bars)
            order, hist = order_and_bars(window_bars)
            lat, failures, versions, events = [], [], [], []
            stop = threading.Event()
            lock = threading.Lock()

            def worker():
                with LemClient(address, "lem", timeout=10) as client:
                    while not stop.is_set():
                        t0 = time.perf_counter()
                        try:
                            plan = client.plan(order, hist)
                            ms = (time.perf_counter() - t0) * 1e3
                            with lock:
                                lat.append((time.monotonic(), ms))
                                versions.append(plan.model_version)
                        except Exception as exc:  # noqa: BLE001 -- counted
                            with lock:
                                failures.append(f"{type(exc).__name__}: {exc}"[:300])

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.clients)]
            for t in threads:
                t.start()
            time.sleep(a.seconds)
            rss_one = rss_mb(proc.pid)
            rss_peak, rss_after = rss_one, []
            for new, src in ((2, "v2"), (3, "v1")):
                staged = os.path.join(work, "serving", f"staging-{new}")
                shutil.copytree(os.path.join(aside, src), staged)
                moved = time.monotonic()
                os.rename(staged, os.path.join(base, str(new)))
                while time.monotonic() < moved + 600:
                    rss_peak = max(rss_peak, rss_mb(proc.pid))
                    with lock:
                        if versions and versions[-1] == new:
                            break
                    time.sleep(0.05)
                swapped = time.monotonic()
                while time.monotonic() < swapped + a.seconds:
                    rss_peak = max(rss_peak, rss_mb(proc.pid))
                    time.sleep(0.1)
                rss_after.append(rss_mb(proc.pid))
                events.append({"version": new, "moved": moved, "serving_after_s": swapped - moved})
            stop.set()
            for t in threads:
                t.join(timeout=30)
            in_swap = [ms for t, ms in lat if any(e["moved"] <= t <= e["moved"] + e["serving_after_s"] + 2
                                                  for e in events)]
            result.update({
                "startup_s": startup, "failed_requests": len(failures), "failures": failures[:10],
                "overall": stats([ms for _, ms in lat]), "during_swaps": stats(in_swap),
                "swaps": [{"version": e["version"], "new_version_answering_after_s": round(e["serving_after_s"], 2)}
                          for e in events],
                "versions_answered": sorted(set(versions)),
                "rss_mb": {"one_version": round(rss_one, 1), "peak_during_swaps": round(rss_peak, 1),
                           "after_each_swap": [round(x, 1) for x in rss_after],
                           "after_last_swap_vs_one_version": round(rss_after[-1] / rss_one, 3)},
                "other_load": other_load(),
            })
        finally:
            stop_server(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = result.get("failed_requests")
    targets = [target("hot swaps under load: failed requests (issue 20: 0)", failed, "0",
                      None if failed is None else failed == 0)]
    write_result("serving_hotswap", targets, {k: v for k, v in result.items() if k != "machine"}, path=a.out)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
