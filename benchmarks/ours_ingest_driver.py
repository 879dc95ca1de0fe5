"""Worker: run OUR ingestion from market-data files to serialized tf.Examples and print one BENCH_RESULT line.
Run by ingest_throughput.py (project venv).

Modes:
  * `beam` (default): `components.example_gen.ingest.run_ingestion`, the ExampleGen's Beam graph on the
    DirectRunner, writing gzip TFRecords; timed around the call.
  * `core`: the same functions the Beam DoFns call, without Beam or disk: list the assets of each file
    (`readers.list_assets`), read each asset's rows (`ingest.read_asset`), then merge, align, resample,
    missing-bar rule, window starts, time split and vectorised serialization (`ingest.asset_serialized_examples`)
    -> every serialized tf.Example as a Python `bytes` in memory (counted and dropped block by block, not
    kept). Timed end to end, `--repeats` times (headline: the median); then one extra pass, not in the
    headline, that times the phases separately (read / series+cut+split / serialize) and gzip alone.

Usage: ours_ingest_driver.py INPUT_DIR OUTPUT_DIR [--mode beam|core] [--stride 1] [--frequencies 15] ...
"""
import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
from _common import emit  # noqa: E402


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


def core_phases(files, config, ingest, readers, serialize):
    """One pass with each phase timed on its own (s): read, series (merge..split), serialize; and, for the
    ceiling of any gzip-writing path, zlib alone on the same records with Beam's GZIP settings (default
    level, gzip wrapper), TFRecord framing excluded."""
    import zlib
    t = {"read": 0.0, "series": 0.0, "serialize": 0.0, "gzip_alone": 0.0}
    gz = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 31)
    o = config.norm_window + config.lookback
    for path in files:
        for asset in readers.list_assets(path, chunk_rows=config.chunk_rows):
            t0 = time.perf_counter()
            chunks = ingest.read_asset(asset, [path], config, {})
            t1 = time.perf_counter()
            segs = list(ingest.asset_series(asset, chunks, config, {}))
            t2 = time.perf_counter()
            for freq, ts, v, q, starts, _ in segs:
                for blk in serialize.iter_serialized_blocks(v, q, ts, starts, asset=asset, frequency_minutes=freq,
                                                            window_length=config.window_length, origin_offset=o):
                    del blk
            t3 = time.perf_counter()
            for freq, ts, v, q, starts, _ in segs:  # a separate pass: zlib evicts the serializer's caches
                for blk in serialize.iter_serialized_blocks(v, q, ts, starts, asset=asset, frequency_minutes=freq,
                                                            window_length=config.window_length, origin_offset=o):
                    t_gz = time.perf_counter()
                    gz.compress(b"".join(blk))
                    t["gzip_alone"] += time.perf_counter() - t_gz
            t["read"] += t1 - t0
            t["series"] += t2 - t1
            t["serialize"] += t3 - t2
    return t


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
    from components.example_gen import ingest, serialize
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
        phases = core_phases(files, config, ingest, readers, serialize)
        emit({"impl": "ours core path (no Beam, no disk)", "examples": n, "wall_s": wall, "walls_s": walls,
              "examples_per_s": n / wall, "import_s": import_s, "serialized_mib": nbytes / 2**20,
              "phases_s": phases, "counts": counts, "rows_read": counts.get("rows_read"),
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
