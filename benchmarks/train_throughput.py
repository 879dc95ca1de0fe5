"""Training throughput of OUR LEM against the reference `lems==0.1.1`, same machine, same backend, interleaved.

For each configuration it alternates subprocess runs ours / reference (order flipped every repeat), each
process pinned to the same TensorFlow threads (`_common.pinned_env`; by default TensorFlow's own default on this
2-core machine, which is what the Trainer runs: intra-op = inter-op = 2; `--inter-threads 1` runs one op at a
time, the protocol of the sessions before 8), measures steady-state `train_on_batch`
samples/s after warm-up (median over timed windows; the table shows the median over processes) and the batch-1
forward latency; counts our model's FLOPs per training sample on the traced train step (`_flops.py`); and
measures the machine's fp32 matmul peak (large `tf.matmul`, same threads; also with 1 thread, to detect the
VM's one-core mode or contention) before and after, so achieved GFLOP/s can be compared with the limit.

Prereq: benchmarks/setup_reference_venv.sh (builds benchmarks/.venv-ref with lems 0.1.1).
Usage:  python -m benchmarks.train_throughput [--configs paper,small] [--repeats 2] [--threads 2]
        [--inter-threads N] (default: = --threads)
"""
import argparse
import os
import resource
import sys
import time

from benchmarks._common import (OURS_PYTHON, REF_PYTHON, cpu_times, format_table, machine_info, median, other_load,
                                pinned_env, run_worker, target, write_result)
from lem_model.presets import PAPER_CONFIG, SMALL_CONFIG

#: `lem_model.presets` names -> the workers' option names (ours_driver.py and reference_driver.py)
_WORKER_OPTION = {"lookback": "lookback", "n_ahead": "n_ahead", "hidden_size": "hidden",
                  "num_embedding": "embedding", "num_heads": "heads", "fused_mlp_hidden_dim": "fused"}
CONFIGS = {  # the paper README config and the small config; batch 256 for both
    name: {_WORKER_OPTION[k]: v for k, v in preset.items()}
    for name, preset in (("paper", PAPER_CONFIG), ("small", SMALL_CONFIG))
}
TARGET_SPEEDUP = 2.5      # x the reference's training samples/s at the paper config
TARGET_PEAK_SHARE = 0.50  # of the measured fp32 matmul peak


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_worker(python, script, args, env, timeout):
    """Run a worker; also report how much of the machine's CPU others used meanwhile (contention)."""
    busy0, tot0 = cpu_times()
    own0 = children_cpu_s()
    res = run_worker(python, script, args, env, timeout)
    busy1, tot1 = cpu_times()
    own = children_cpu_s() - own0
    hz = os.sysconf("SC_CLK_TCK")
    others = max(0.0, (busy1 - busy0) / hz - own)
    res["others_cpu_share"] = others / max(1e-9, (tot1 - tot0) / hz)  # fraction of all cores' time
    return res


def matmul_peak(env_for, threads_list=(1, 2), n=2048):
    return {t: run_worker(OURS_PYTHON, "ours_driver", [f"--threads={t}", f"--matmul-peak={n}"], env_for(t), 300)
            for t in threads_list}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="paper,small")
    p.add_argument("--repeats", type=int, default=2, help="processes per implementation and config")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--inter-threads", type=int, default=None,
                   help="TF inter-op threads for both implementations (default: = --threads, i.e. TensorFlow's own "
                        "default of one per core here, which the Trainer runs with; 1 = one op at a time)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per process (tracing + first steps)")
    p.add_argument("--windows", type=int, default=2, help="timed windows per process")
    p.add_argument("--min-window-s", type=float, default=6.0, help="each timed window lasts at least this")
    p.add_argument("--latency-reps", type=int, default=30)
    p.add_argument("--jit", choices=["off", "on"], default="off",
                   help="XLA for both (off = the Keras default on CPU-only machines)")
    p.add_argument("--json-out", default=None, help="default benchmarks/results/train_throughput.json")
    a = p.parse_args()
    if not os.path.exists(REF_PYTHON):
        sys.exit(f"missing {REF_PYTHON}: run benchmarks/setup_reference_venv.sh first")

    a.inter_threads = a.inter_threads or a.threads
    t_start = time.time()
    env_for = lambda t: pinned_env(t, a.inter_threads)
    env = env_for(a.threads)
    info = machine_info()
    print(f"# train_throughput  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"# machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']:.1f} GiB RAM, no GPU; "
          f"loadavg at start {info['loadavg']}")
    tf_default = a.threads == a.inter_threads == len(os.sched_getaffinity(0))
    print(f"# threads: TF intra-op {a.threads}, inter-op {a.inter_threads} (+OMP/MKL={a.threads}) for every "
          f"process{' (TensorFlow default here, as the Trainer runs)' if tf_default else ''}; batch {a.batch}; "
          f"jit {a.jit}; {a.repeats} processes per impl per config, interleaved")
    print(f"# busiest processes at start: {other_load()}", flush=True)
    peak_before = matmul_peak(env_for)
    print(f"# matmul peak before (2048^2 fp32): 1 thread {peak_before[1]['gflops_median']:.1f}, "
          f"{a.threads} threads {peak_before[2]['gflops_median']:.1f} GFLOP/s (median)", flush=True)

    results = {}
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    for cname in configs:
        cfg = CONFIGS[cname]
        common = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()] + [
            f"--batch={a.batch}", f"--threads={a.threads}", f"--inter-threads={a.inter_threads}",
            f"--warmup={a.warmup}", "--steps=1", f"--windows={a.windows}", f"--min-window-s={a.min_window_s}",
            f"--latency-reps={a.latency_reps}", f"--jit={a.jit}"]
        runs = {"ours": [], "reference": []}
        for r in range(a.repeats):
            order = ["ours", "reference"] if r % 2 == 0 else ["reference", "ours"]
            for impl in order:
                if impl == "ours":
                    extra = ["--flops"] if r == 0 else []
                    res = timed_worker(OURS_PYTHON, "ours_driver", common + extra, env, 1800)
                else:
                    res = timed_worker(REF_PYTHON, "reference_driver", common, env, 1800)
                runs[impl].append(res)
                print(f"#   {cname:5s} run {r + 1}/{a.repeats} {impl:9s}: {res['samples_per_s_median']:8.1f} "
                      f"samples/s (windows {', '.join(f'{v:.1f}' for v in res['samples_per_s'])}), batch-1 "
                      f"latency {res['latency_ms_median']:.1f} ms, first step {res['first_step_s']:.1f} s, "
                      f"others' CPU share {100 * res['others_cpu_share']:.0f}%", flush=True)
        results[cname] = runs

    peak_after = matmul_peak(env_for)
    print(f"# matmul peak after: 1 thread {peak_after[1]['gflops_median']:.1f}, {a.threads} threads "
          f"{peak_after[2]['gflops_median']:.1f} GFLOP/s (median)", flush=True)
    peak = max(peak_before[2]["gflops_median"], peak_after[2]["gflops_median"])
    scaling = [pk[2]["gflops_median"] / pk[1]["gflops_median"] for pk in (peak_before, peak_after)]
    one_core = [s < 1.4 for s in scaling]

    print()
    headers = ["config", "impl", "train samples/s (median)", "runs", "ms/step", "batch-1 fwd ms", "params",
               "speedup", "train MFLOP/sample", "achieved GFLOP/s", "% of matmul peak"]
    rows = []
    for cname in configs:
        runs = results[cname]
        med = {k: median([r["samples_per_s_median"] for r in v]) for k, v in runs.items()}
        for impl in ("ours", "reference"):
            rs = runs[impl]
            vals = [r["samples_per_s_median"] for r in rs]
            row = [cname, "ours (lem_model)" if impl == "ours" else "reference lems 0.1.1",
                   f"{med[impl]:.1f}", "/".join(f"{v:.1f}" for v in vals), f"{1000 * a.batch / med[impl]:.0f}",
                   f"{median([r['latency_ms_median'] for r in rs]):.1f}", f"{rs[0]['params']:,}"]
            if impl == "ours":
                fl = rs[0]["train_flops_per_sample"]
                gf = fl * med[impl] / 1e9
                row += [f"{med['ours'] / med['reference']:.2f}x", f"{fl / 1e6:.1f}", f"{gf:.2f}",
                        f"{100 * gf / peak:.1f}%"]
            else:
                row += ["1.00x", "", "", ""]
            rows.append(row)
    print(format_table(headers, rows))
    print()
    print(f"fp32 matmul peak ({a.threads} threads, 2048^2 tf.matmul, median): before "
          f"{peak_before[2]['gflops_median']:.1f}, after {peak_after[2]['gflops_median']:.1f} GFLOP/s "
          f"(1 thread: {peak_before[1]['gflops_median']:.1f} / {peak_after[1]['gflops_median']:.1f}); "
          f"2-thread/1-thread scaling {scaling[0]:.2f} / {scaling[1]:.2f}"
          + ("  ** ONE-CORE MODE OR CONTENTION DETECTED (scaling < 1.4) **" if any(one_core) else ""))
    ours0 = results[configs[0]]["ours"][0]
    print(f"FLOPs (benchmarks/_flops.py): matmul part of train {ours0['train_matmul_flops_per_sample'] / 1e6:.1f} "
          f"MFLOP/sample; loops of unknown trip count {ours0['unknown_trip_loops']}")
    shares = [r["others_cpu_share"] for c in configs for v in results[c].values() for r in v]
    print(f"Contention: other processes used {100 * min(shares):.0f}-{100 * max(shares):.0f}% of the machine's "
          f"CPU during the runs (median {100 * median(shares):.0f}%).")
    targets = []
    if "paper" in results:
        med = {k: median([r["samples_per_s_median"] for r in v]) for k, v in results["paper"].items()}
        sp = med["ours"] / med["reference"]
        gf = results["paper"]["ours"][0]["train_flops_per_sample"] * med["ours"] / 1e9
        print(f"Target 1 (>= {TARGET_SPEEDUP}x reference training samples/s, paper config): {sp:.2f}x -> "
              f"{'MET' if sp >= TARGET_SPEEDUP else 'NOT MET'}")
        print(f"Target 2 (>= {100 * TARGET_PEAK_SHARE:.0f}% of matmul peak, paper config): "
              f"{100 * gf / peak:.1f}% -> {'MET' if gf / peak >= TARGET_PEAK_SHARE else 'NOT MET'}")
        targets = [target(f"training samples/s vs reference lems 0.1.1, paper config (issue 2: >= {TARGET_SPEEDUP}x)",
                          f"{sp:.2f}x ({med['ours']:.1f} vs {med['reference']:.1f} samples/s)",
                          f">= {TARGET_SPEEDUP}x", sp >= TARGET_SPEEDUP),
                   target(f"share of the fp32 matmul peak, paper config (issue 2: >= {100 * TARGET_PEAK_SHARE:.0f} %)",
                          f"{100 * gf / peak:.1f} % of {peak:.1f} GFLOP/s", f">= {100 * TARGET_PEAK_SHARE:.0f} %",
                          gf / peak >= TARGET_PEAK_SHARE)]
    print(f"\n(total wall {time.time() - t_start:.0f} s)")
    path = write_result("train_throughput", targets, {"peak_before": peak_before, "peak_after": peak_after,
                                                      "results": results, "args": vars(a)}, path=a.json_out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
