"""Worker: run OUR ingestion from market-data files to serialized tf.Examples and print one BENCH_RESULT line.
Run by `python -m benchmarks.ingest_throughput` (project venv).

Modes:
  * `beam` (default): `components.example_gen.ingest.run_ingestion`, the ExampleGen's Beam graph on the
    DirectRunner, writing gzip TFRecords; timed around the call.
  * `core`: the same functions the Beam DoFns call, without Beam or disk: list the assets of each file
    (`readers.list_assets`), read each asset's rows (`ingest.read_asset`), then merge, align, resample,
    missing-bar rule, window starts, time split and vectorised serialization (`ingest.asset_serialized_examples`)
    -> every serialized tf.Example as a Python `bytes` in memory (counted and dropped block by block, not
    kept). Timed end to end, `--repeats` times (headline: the median).

Usage: python -m benchmarks.ours_ingest_driver INPUT_DIR OUTPUT_DIR [--mode beam|core] [--stride 1] ...
"""
import argparse
import os
import resource
import statistics
import time

from benchmarks._common import emit


def core_once(files, config, ingest, readers):
    """Files -> serialized examples in memory; returns (examples, bytes, counts)."""
    counts = {}
    by_asset = {}
    for path in files:
        for asset in readers.list_assets(path, chunk_rows=config.chunk_rows):
            by_asset.setdefault(asset, []).append(path)
    n = nbytes = 0
    for asset in sorted(by_asset):
        chunks = ingest.read_asset(asset, by_asset[asset], config, counts)
        for _, record in ingest.asset_serialized_examples(asset, chunks, config, counts):
            n += 1
            nbytes += len(record)
    return n, nbytes, counts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input_dir")
    p.add_argument("output_dir")
    p.add_argument("--mode", choices=("beam", "core"), default="beam")
    p.add_argument("--repeats", type=int, default=3, help="core mode: timed end-to-end passes")
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
    from components.example_gen import ingest
    from components.example_gen.config import IngestionConfig
    from components.market_data import readers
    import_s = time.perf_counter() - t_import

    config = IngestionConfig(frequencies=tuple(int(f) for f in a.frequencies.split(",")),
                             norm_window=a.norm_window, lookback=a.lookback, n_ahead=a.n_ahead, stride=a.stride,
                             eval_start=a.eval_start, test_start=a.test_start, bad_rows=a.bad_rows)
    if a.mode == "core":
        files = readers.list_input_files(a.input_dir, config.input_patterns)
        walls = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            n, nbytes, counts = core_once(files, config, ingest, readers)
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        emit({"impl": "ours core path (no Beam, no disk)", "examples": n, "wall_s": wall, "walls_s": walls,
              "examples_per_s": n / wall, "import_s": import_s, "serialized_mib": nbytes / 2**20,
              "counts": counts, "rows_read": counts.get("rows_read"),
              "self_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
        return

    t0 = time.perf_counter()
    report = ingest.run_ingestion(a.input_dir, a.output_dir, config, beam_pipeline_args=a.beam_arg, check=False)
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
