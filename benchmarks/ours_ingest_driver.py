"""Worker: run OUR ingestion (`components.example_gen.ingest.run_ingestion`, the ExampleGen's Beam graph on
the DirectRunner) from market-data files to serialized tf.Examples (TFRecord, gzip) and print one BENCH_RESULT
line with the wall time of the pipeline and the report counts. Run by ingest_throughput.py (project venv).

Usage: ours_ingest_driver.py INPUT_DIR OUTPUT_DIR [--stride 1] [--frequencies 15] [--eval-start ...]
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
from _common import emit  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input_dir")
    p.add_argument("output_dir")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--frequencies", default="15")
    p.add_argument("--lookback", type=int, default=120)
    p.add_argument("--n-ahead", type=int, default=12)
    p.add_argument("--norm-window", type=int, default=336)
    p.add_argument("--eval-start", default="2021-07-01")
    p.add_argument("--test-start", default="2022-01-01")
    p.add_argument("--bad-rows", default="drop")
    p.add_argument("--beam-arg", action="append", default=[])
    a = p.parse_args()
    t_import = time.perf_counter()
    from components.example_gen.config import IngestionConfig
    from components.example_gen.ingest import run_ingestion
    import_s = time.perf_counter() - t_import

    config = IngestionConfig(frequencies=tuple(int(f) for f in a.frequencies.split(",")),
                             norm_window=a.norm_window, lookback=a.lookback, n_ahead=a.n_ahead, stride=a.stride,
                             eval_start=a.eval_start, test_start=a.test_start, bad_rows=a.bad_rows)
    t0 = time.perf_counter()
    report = run_ingestion(a.input_dir, a.output_dir, config, beam_pipeline_args=a.beam_arg, check=False)
    wall = time.perf_counter() - t0
    counts = report["counts"]
    n = int(counts.get("examples_emitted", sum(report["examples_per_split"].values())))
    out_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(a.output_dir) for f in fs)
    emit({"impl": "ours run_ingestion (Beam DirectRunner)", "examples": n, "wall_s": wall,
          "examples_per_s": n / wall, "import_s": import_s, "rows_read": counts.get("rows_read"),
          "examples_per_split": report["examples_per_split"], "counts": counts, "output_mib": out_bytes / 2**20,
          "self_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


if __name__ == "__main__":
    main()
