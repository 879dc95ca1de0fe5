"""Ingestion benchmark: raw bars -> serialized tf.Examples through OUR ExampleGen logic, against the reference
`lems==0.1.1` `full_generate` (in benchmarks/.venv-ref), and our peak memory on all the Binance 15-minute bars
of /work/shared/data.

1. Throughput: BTCUSDT 15m bars of binance_vision_klines_paper_pairs.parquet, W=336, L=120, N=12, every
   origin (stride 1) for all rows. Reference: wall time of the `full_generate` call (in-memory float64 NumPy
   arrays, nothing serialized or written; its Parquet read is timed separately and not included).
   Ours, two rows, each its own process (`benchmarks.ours_ingest_driver`):
   (a) core path, what issue 3 names ("examples/s from raw bars to serialized examples"): the functions the
       Beam DoFns call (list assets, read the Parquet, merge, align, resample, missing-bar rule, window
       starts, time split, vectorised serialization) -> every tf.Example as `bytes` in memory; no Beam, no
       disk. Median of `--core-repeats` end-to-end passes.
   (b) `run_ingestion`: the same plus the Beam DirectRunner graph and gzip TFRecord writing, timed around
       the call (imports excluded), one run.
   Each row states whether it meets the >= 10x target on its own.
2. Memory: peak summed PSS/RSS of our `run_ingestion` process tree (psutil, polled every 0.1 s) on (a)
   BTCUSDT 15m (Data Vision only), (b) `longest15`: the longest (asset, 15m) series of (c) taken alone (its
   rows from both files), and (c) ALL 15m rows of binance_vision_klines_paper_pairs.parquet and
   binance_freqtrade_15m_1h.parquet (20 assets; overlapping timestamps of the same asset across the two files
   are dropped and counted), same stride: the peak should follow the longest series (b ~ c), not the number
   of assets.
Inputs are extracted once into a scratch folder as tidy Parquet (not timed).

Usage: python -m benchmarks.ingest_throughput [--data /work/shared/data] [--memory-stride 12]
       [--skip-throughput] [--skip-memory] [--core-repeats 3] [--scratch /tmp/lems_bench_ingest]
"""
import argparse
import json
import os
import shutil
import sys
import time

from benchmarks._common import (OURS_PYTHON, REF_PYTHON, RESULT_PREFIX, ROOT, format_table, machine_info, other_load,
                                pinned_env)
from benchmarks._memwatch import run_with_peak_rss

VISION = "binance_vision_klines_paper_pairs.parquet"
FREQTRADE = "binance_freqtrade_15m_1h.parquet"
TARGET_SPEEDUP = 10.0


def prepare_inputs(data_dir, scratch):
    """Write the benchmark inputs as tidy Parquet: btc15/ (BTCUSDT 15m, Data Vision) and all15/ (every 15m row
    of both Binance files). Returns {name: (dir, rows, assets, longest series rows)}."""
    import pandas as pd
    cols = ["timestamp", "asset", "frequency", "open", "high", "low", "close", "volume", "quote_volume"]
    out = {}
    os.makedirs(scratch, exist_ok=True)
    frames = {}
    for f in (VISION, FREQTRADE):
        df = pd.read_parquet(os.path.join(data_dir, f), columns=cols, filters=[("frequency", "==", "15m")])
        df["asset"] = df["asset"].astype(str)
        df["frequency"] = df["frequency"].astype(str)
        frames[f] = df.sort_values(["asset", "timestamp"]).reset_index(drop=True)
    btc = frames[VISION][frames[VISION].asset == "BTCUSDT"]
    both = pd.concat(list(frames.values()))
    longest = both.groupby("asset").size().idxmax()  # the longest (asset, 15m) series of all15
    specs = {"btc15": {"BTCUSDT_15m_vision.parquet": btc},
             "longest15": {f"{longest}_15m_vision.parquet": frames[VISION][frames[VISION].asset == longest],
                           f"{longest}_15m_freqtrade.parquet": frames[FREQTRADE][frames[FREQTRADE].asset == longest]},
             "all15": {"vision_15m.parquet": frames[VISION], "freqtrade_15m.parquet": frames[FREQTRADE]}}
    for name, files in specs.items():
        d = os.path.join(scratch, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for fname, df in files.items():
            df.to_parquet(os.path.join(d, fname), index=False)
        allrows = pd.concat(list(files.values()))
        per_asset = allrows.groupby("asset").size()
        out[name] = {"dir": d, "rows": int(len(allrows)), "assets": int(per_asset.size),
                     "longest_asset": str(per_asset.idxmax()), "longest_rows": int(per_asset.max())}
    return out


def parse_result(run, what):
    lines = [l for l in run["stdout"].splitlines() if l.startswith(RESULT_PREFIX)]
    if run["rc"] != 0 or not lines:
        raise RuntimeError(f"{what} failed (rc={run['rc']}):\n{run['stdout'][-3000:]}\n{run['stderr'][-5000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def run_ours(inp, scratch, tag, stride, env, mode="beam", repeats=1):
    out_dir = os.path.join(scratch, f"out_{tag}")
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [OURS_PYTHON, "-m", "benchmarks.ours_ingest_driver", inp["dir"], out_dir,
           f"--stride={stride}", f"--mode={mode}", f"--repeats={repeats}"]
    run = run_with_peak_rss(cmd, env=env, cwd=ROOT, timeout=1800)
    res = parse_result(run, f"ours ingestion ({tag})")
    res.setdefault("output_mib", 0.0)
    res.update({"peak_tree_rss_mib": run["peak_tree_rss_mib"], "peak_tree_pss_mib": run["peak_tree_pss_mib"],
                "children_max_rss_mib": run["children_max_rss_mib"], "procs_at_peak": run["procs_at_peak"],
                "process_wall_s": run["wall_s"]})
    shutil.rmtree(out_dir, ignore_errors=True)  # outputs can be GBs
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/work/shared/data")
    p.add_argument("--scratch", default="/tmp/lems_bench_ingest")
    p.add_argument("--memory-stride", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--core-repeats", type=int, default=3)
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    t_start = time.time()
    env = pinned_env(a.threads)
    info = machine_info()
    print(f"# ingest_throughput  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"# machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']:.1f} GiB RAM, no GPU; "
          f"loadavg at start {info['loadavg']}")
    print(f"# busiest processes at start: {other_load()}", flush=True)
    inputs = prepare_inputs(a.data, a.scratch)
    for k, v in inputs.items():
        print(f"# input {k}: {v['rows']:,} 15m bars, {v['assets']} assets, longest {v['longest_asset']} "
              f"{v['longest_rows']:,} bars", flush=True)
    results = {}

    if not a.skip_throughput:
        if not os.path.exists(REF_PYTHON):
            sys.exit(f"missing {REF_PYTHON}: run benchmarks/setup_reference_venv.sh first")
        ref_cmd = [REF_PYTHON, "-m", "benchmarks.reference_ingest_driver",
                   os.path.join(a.data, VISION), "BTCUSDT", "15m", "--lookback=120", "--n-ahead=12"]
        ref_run = run_with_peak_rss(ref_cmd, env=env, cwd=ROOT, timeout=1800)
        ref = parse_result(ref_run, "reference full_generate")
        ref["peak_tree_rss_mib"] = ref_run["peak_tree_rss_mib"]
        print(f"#   reference: {ref['examples']:,} examples in {ref['generate_s']:.1f} s, peak RSS "
              f"{ref['peak_tree_rss_mib']:.0f} MiB", flush=True)
        core = run_ours(inputs["btc15"], a.scratch, "btc15_core", 1, env, mode="core", repeats=a.core_repeats)
        print(f"#   ours (a) core: {core['examples']:,} examples, median {core['wall_s']:.2f} s of "
              f"{', '.join(f'{w:.2f}' for w in core['walls_s'])} s", flush=True)
        ours = run_ours(inputs["btc15"], a.scratch, "btc15_stride1", 1, env)
        print(f"#   ours (b) run_ingestion: {ours['examples']:,} examples in {ours['wall_s']:.1f} s, peak RSS "
              f"{ours['peak_tree_rss_mib']:.0f} MiB", flush=True)
        results["throughput"] = {"reference": ref, "ours_core": core, "ours": ours}
        rows = [["reference lems 0.1.1 full_generate", f"{ref['examples']:,}", "full_generate call",
                 f"{ref['generate_s']:.2f}", f"{ref['examples_per_s']:,.0f}", "1.00x", "-",
                 f"{ref['peak_tree_rss_mib']:.0f}", f"in-memory float64 X{tuple(ref['x_shape'])} (train part)"]]
        verdicts = []
        for label, r, timed, output in (
                ("(a) ours core path (no Beam, no disk)", core,
                 f"list+read+cut+split+serialize, median of {len(core['walls_s'])}",
                 f"{core['serialized_mib']:.0f} MiB tf.Example bytes in memory (not kept)"),
                ("(b) ours run_ingestion (Beam DirectRunner)", ours, "(a) + Beam + gzip TFRecord write, 1 run",
                 f"{ours['output_mib']:.0f} MiB gzip TFRecord")):
            speedup = r["examples_per_s"] / ref["examples_per_s"]
            met = "MET" if speedup >= TARGET_SPEEDUP else "NOT MET"
            verdicts.append(f"{label}: {speedup:.2f}x -> {met}")
            rows.append([label, f"{r['examples']:,}", timed, f"{r['wall_s']:.2f}", f"{r['examples_per_s']:,.0f}",
                         f"{speedup:.2f}x", met, f"{r['peak_tree_rss_mib']:.0f}", output])
        print()
        print("Throughput, BTCUSDT 15m (Data Vision), W=336 L=120 N=12, stride 1:")
        print(format_table(["impl", "examples", "timed part", "seconds", "examples/s", "speedup",
                            f">= {TARGET_SPEEDUP:.0f}x target", "peak RSS MiB", "output"], rows))
        print(f"(reference Parquet read, not in its time: {ref['read_s']:.2f} s; our processes also spent "
              f"{core['import_s']:.1f} / {ours['import_s']:.1f} s importing, not in their times)")
        print(f"Target (>= {TARGET_SPEEDUP:.0f}x reference examples/s), per row: " + "; ".join(verdicts), flush=True)

    if not a.skip_memory:
        rows = []
        mem = {}
        for tag in ("btc15", "longest15", "all15"):
            inp = inputs[tag]
            res = run_ours(inp, a.scratch, f"{tag}_mem", a.memory_stride, env)
            mem[tag] = res
            rows.append([tag, f"{inp['rows']:,}", inp["assets"], f"{inp['longest_asset']} {inp['longest_rows']:,}",
                         a.memory_stride, f"{res['examples']:,}", f"{res['wall_s']:.1f}",
                         f"{res['peak_tree_pss_mib']:.0f}", f"{res['peak_tree_rss_mib']:.0f}",
                         res["procs_at_peak"]])
            print(f"#   memory {tag}: peak PSS {res['peak_tree_pss_mib']:.0f} MiB, {res['examples']:,} examples, "
                  f"{res['wall_s']:.1f} s", flush=True)
        results["memory"] = mem
        print()
        print("Peak memory of our ingestion, 15m bars, frequencies (15,): process tree incl. children, polled 0.1 s")
        print(format_table(["input", "bars", "assets", "longest series (bars)", "stride", "examples", "seconds",
                            "peak PSS MiB (tree)", "peak RSS MiB (tree sum)", "processes at peak"], rows))
        r = mem["all15"]["peak_tree_pss_mib"] / mem["longest15"]["peak_tree_pss_mib"]
        print(f"all assets / their longest series alone (longest15): bars "
              f"x{inputs['all15']['rows'] / inputs['longest15']['rows']:.1f}, assets x{inputs['all15']['assets']}, "
              f"peak PSS x{r:.2f}")
        print("('longest15' = every 15m row of the asset with the most rows in all15, from both files, i.e. "
              "the same longest series; overlapping timestamps across the two files are dropped and counted: "
              + ", ".join(f"{t}: {mem[t]['counts'].get('rows_duplicate_across_files', 0):,} dropped"
                          for t in ("longest15", "all15")) + ")")
    print(f"\n(total wall {time.time() - t_start:.0f} s)")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"machine": info, "inputs": inputs, "results": results, "args": vars(a)}, f, indent=1,
                      default=str)


if __name__ == "__main__":
    main()
