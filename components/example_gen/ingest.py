"""Market-data files -> order-window tf.Examples, as pure functions and one Beam `ptransform_fn`.

Beam graph (`MarketDataToExamples`), per the TFX custom-ExampleGen pattern:

    file paths ─Reshuffle─> ReadChunks (readers.read_file, streamed in chunks of `chunk_rows` rows)
      -> (asset, BarChunk) ─GroupByKey(asset)─> AssetExamples: per asset: sort, align to the source grid,
         resample to each configured frequency, missing-bar rule, window cutting (`windows.cut_windows`,
         lazily), time split with embargo
      -> Partition by split -> train / eval / test PCollections of serialized tf.Examples
    counters (rows read, drops by reason, examples per split and frequency) -> Beam metrics counters
      (namespace `lems_ingestion`) and the `report` PCollection (one dict, written as ingestion_report.json).

Memory: a worker holds one asset's bars at a time (32 bytes per source bar) plus one window; examples
stream to the writers. The grouping step buffers the compact per-chunk arrays of every asset on a single
machine DirectRunner (as any GroupByKey there does); on a distributed runner per-worker memory is one
asset's series.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator, MutableMapping, Sequence, Tuple

import apache_beam as beam
import numpy as np

from components.example_gen.config import SPLIT_NAMES, IngestionConfig
from components.market_data import readers, resample, windows

METRICS_NAMESPACE = "lems_ingestion"
REPORT_FILE = "ingestion_report.json"


def _count(counts: MutableMapping[str, int], key: str, n: int = 1) -> None:
    if n:
        counts[key] = counts.get(key, 0) + int(n)


# ------------------------------------------------------------------------------------------ pure functions
def assign_splits(first_open_s: np.ndarray, last_close_s: np.ndarray, config: IngestionConfig,
                  frequency_minutes: int, counts: MutableMapping[str, int] | None = None) -> np.ndarray:
    """Split index (0 train, 1 eval, 2 test) of each example, or -1 when it straddles a boundary, falls in
    an embargo or lies outside [start, end). `first_open_s`: open of bar 0; `last_close_s`: close of the
    last bar (open + bar length), Unix seconds."""
    counts = {} if counts is None else counts
    first = np.asarray(first_open_s, np.int64)
    last = np.asarray(last_close_s, np.int64)
    out = np.full(len(first), -1, np.int64)
    embargo = int(config.embargo_bars) * int(frequency_minutes) * 60
    ranges = config.split_ranges()
    lo_all, hi_all = ranges[0][0], ranges[-1][1]
    outside = np.zeros(len(first), bool)
    if lo_all is not None:
        outside |= first < lo_all
    if hi_all is not None:
        outside |= last > hi_all
    for i, (lo, hi) in enumerate(ranges):
        start_ok = np.ones(len(first), bool) if lo is None else first >= lo
        end_ok = np.ones(len(first), bool) if hi is None else first < hi
        in_range = start_ok & end_ok & ~outside          # first bar opens inside split i
        inside = in_range & ((last <= hi) if hi is not None else True)
        emb_ok = (first >= lo + embargo) if (lo is not None and i > 0) else np.ones(len(first), bool)
        out[inside & emb_ok] = i
        _count(counts, "examples_straddling_split", np.sum(in_range & ~inside))
        _count(counts, "examples_in_embargo", np.sum(inside & ~emb_ok))
    _count(counts, "examples_outside_range", np.sum(outside))
    return out


def to_tf_example(example: dict) -> bytes:
    """Raw-field dict (windows.cut_windows) -> serialized tf.train.Example (docs/example-contract.md)."""
    import tensorflow as tf
    f = tf.train.Feature
    feats = {
        "volume": f(float_list=tf.train.FloatList(value=example["volume"])),
        "quote_volume": f(float_list=tf.train.FloatList(value=example["quote_volume"])),
        "timestamp": f(int64_list=tf.train.Int64List(value=example["timestamp"])),
        "asset": f(bytes_list=tf.train.BytesList(value=[example["asset"]])),
        "frequency_minutes": f(int64_list=tf.train.Int64List(value=[int(example["frequency_minutes"])])),
        "origin_time": f(int64_list=tf.train.Int64List(value=[int(example["origin_time"])])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _merge_chunks(asset: str, chunks: Sequence[readers.BarChunk], config: IngestionConfig,
                  counts: MutableMapping[str, int]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Chunks of one asset -> {source_minutes: (timestamp_us, volume, quote_volume)} sorted, de-duplicated
    across files (error, or counted drop keeping the first file in path order, per `config.bad_rows`)."""
    by_source: dict[int, list[readers.BarChunk]] = {}
    for c in chunks:
        by_source.setdefault(c.source_minutes, []).append(c)
    out = {}
    for minutes, parts in by_source.items():
        parts = sorted(parts, key=lambda c: (c.file, int(c.row[0]) if len(c) else 0))
        ts = np.concatenate([c.timestamp_us for c in parts])
        vol = np.concatenate([c.volume for c in parts])
        qv = np.concatenate([c.quote_volume for c in parts])
        order = np.argsort(ts, kind="stable")
        ts, vol, qv = ts[order], vol[order], qv[order]
        dup = np.concatenate([[False], ts[1:] == ts[:-1]])
        if dup.any():
            if config.bad_rows == "error":
                j = int(np.argmax(dup))
                files = np.concatenate([np.full(len(c), i) for i, c in enumerate(parts)])[order]
                rows = np.concatenate([c.row for c in parts])[order]
                a, b = parts[files[j - 1]], parts[files[j]]
                raise readers.MarketDataError(
                    f"{b.file}: row {rows[j]}: duplicate timestamp for {asset} ({minutes}-minute bars), also in "
                    f"{a.file} row {rows[j - 1]}: remove overlapping files or use bad_rows='drop'")
            _count(counts, "rows_duplicate_across_files", dup.sum())
            ts, vol, qv = ts[~dup], vol[~dup], qv[~dup]
        out[minutes] = (ts, vol, qv)
    return out


def asset_examples(asset: str, chunks: Iterable[readers.BarChunk], config: IngestionConfig,
                   counts: MutableMapping[str, int]) -> Iterator[tuple[int, dict]]:
    """All (split index, raw-field example) of one asset, lazily, counting drops in `counts`."""
    merged = _merge_chunks(asset, list(chunks), config, counts)
    sources = sorted(merged)
    for freq in sorted(int(f) for f in config.frequencies):
        usable = [s for s in sources if freq % s == 0]
        if not usable:
            _count(counts, "frequency_not_derivable")
            continue
        src = usable[0]  # the finest source bar length that divides the target
        ts_us, vol, qv = merged[src]
        g_ts, g_v, g_q = resample.align_to_grid(ts_us, vol, qv, src, counts)
        if freq != src:
            g_ts, g_v, g_q = resample.resample(g_ts, g_v, g_q, src, freq, counts)
        segments = resample.apply_missing_rule(g_ts, g_v, g_q, freq, rule=config.missing_rule_for(freq),
                                               max_gap_bars=config.max_gap_bars, drops=counts)
        n_before = counts.get("examples_emitted", 0)
        step = freq * 60
        o = config.norm_window + config.lookback
        for seg_ts, seg_v, seg_q in segments:
            if len(seg_ts) < config.window_length:
                _count(counts, "segments_too_short")
                continue
            # Splits of all origins of the segment at once (vectorised), looked up per emitted window.
            origins = windows.origin_positions(len(seg_ts), norm_window=config.norm_window,
                                               lookback=config.lookback, n_ahead=config.n_ahead,
                                               stride=config.stride_for(freq))
            splits = assign_splits(seg_ts[origins - o], seg_ts[origins + config.n_ahead - 1] + step, config,
                                   freq, counts)
            split_of = dict(zip(seg_ts[origins].tolist(), splits.tolist()))
            for ex in windows.cut_windows(seg_v, seg_q, seg_ts, asset=asset, frequency_minutes=freq,
                                          norm_window=config.norm_window, lookback=config.lookback,
                                          n_ahead=config.n_ahead, stride=config.stride_for(freq), drops=counts):
                split = split_of[ex["origin_time"]]
                if split < 0:
                    continue
                _count(counts, "examples_emitted")
                _count(counts, f"examples_{SPLIT_NAMES[split]}")
                _count(counts, f"examples_{SPLIT_NAMES[split]}_{freq}m")
                yield split, ex
        if counts.get("examples_emitted", 0) == n_before:
            _count(counts, "asset_frequency_without_examples")


# ------------------------------------------------------------------------------------------ Beam
@beam.typehints.with_output_types(Tuple[int, bytes])
class _AssetExamplesFn(beam.DoFn):
    """(asset, [BarChunk]) -> (split index, serialized tf.Example); counts to metrics and a side output."""

    def __init__(self, config: IngestionConfig):
        self._config = config

    def process(self, element):
        asset, chunks = element
        counts: dict[str, int] = {}
        for split, ex in asset_examples(asset, chunks, self._config, counts):
            yield split, to_tf_example(ex)
        for key, n in counts.items():
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, key).inc(n)
            yield beam.pvalue.TaggedOutput("counts", (key, n))


@beam.typehints.with_output_types(Tuple[str, Any])
class _ReadChunksFn(beam.DoFn):
    """File path -> (asset, BarChunk), streamed chunk by chunk; counts rows read and dropped."""

    def __init__(self, config: IngestionConfig):
        self._config = config

    def process(self, path):
        counts: dict[str, int] = {"files_read": 1}
        for chunk in readers.read_file(path, bad_rows=self._config.bad_rows, drops=counts,
                                       chunk_rows=self._config.chunk_rows):
            _count(counts, "rows_read", int(chunk.row[-1] - chunk.row[0] + 1) if len(chunk) else 0)
            if len(chunk):
                yield chunk.asset, chunk
        for key, n in counts.items():
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, key).inc(n)
            yield beam.pvalue.TaggedOutput("counts", (key, n))


def _report(counts: Iterable[tuple[str, int]], config_json: str, files: Sequence[str]) -> dict:
    totals: dict[str, int] = {}
    for k, n in counts:
        totals[k] = totals.get(k, 0) + int(n)
    return {"counts": dict(sorted(totals.items())), "config": json.loads(config_json), "files": list(files),
            "examples_per_split": {s: totals.get(f"examples_{s}", 0) for s in SPLIT_NAMES}}


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def MarketDataToExamples(pipeline: beam.Pipeline, files: Sequence[str], config: IngestionConfig):  # pylint: disable=invalid-name
    """Files -> {"train", "eval", "test": PCollection[bytes] (serialized tf.Example), "report": PCollection[dict]}."""
    if not files:
        raise readers.MarketDataError("no market-data files (.csv, .zip, .parquet) found in the input")
    read = (pipeline
            | "Files" >> beam.Create(list(files))
            | "ReshuffleFiles" >> beam.Reshuffle()
            | "ReadChunks" >> beam.ParDo(_ReadChunksFn(config)).with_outputs("counts", main="chunks"))
    made = (read.chunks
            | "GroupByAsset" >> beam.GroupByKey()
            | "AssetExamples" >> beam.ParDo(_AssetExamplesFn(config)).with_outputs("counts", main="examples"))
    parts = made.examples | "PartitionBySplit" >> beam.Partition(lambda kv, n: kv[0], len(SPLIT_NAMES))
    out = {name: parts[i] | f"Values[{name}]" >> beam.Values() for i, name in enumerate(SPLIT_NAMES)}
    config_json = config.to_json()
    out["report"] = ((read.counts, made.counts)
                     | "AllCounts" >> beam.Flatten()
                     | "CollectCounts" >> beam.combiners.ToList()
                     | "Report" >> beam.Map(_report, config_json, list(files)))
    return out


def write_report(report_pcoll, path: str):
    """Write the report dict as JSON to `path` (one file)."""
    def _write(report):
        import tensorflow as tf
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps(report, indent=2, sort_keys=True))
    return report_pcoll | "WriteReport" >> beam.Map(_write)


def check_report(report: dict, config: IngestionConfig) -> None:
    """Raise with an actionable message when a split has fewer than `min_examples_per_split` examples."""
    low = {s: n for s, n in report["examples_per_split"].items() if n < config.min_examples_per_split}
    if low:
        c = report["counts"]
        raise ValueError(
            f"market-data ingestion produced too few examples in split(s) {low} (need "
            f">= {config.min_examples_per_split}). Each example needs {config.window_length} consecutive bars "
            f"(W+L+N = {config.norm_window}+{config.lookback}+{config.n_ahead}) inside one split range "
            f"{config.split_ranges()} (Unix s). Check the split dates (eval_start={config.eval_start}, "
            f"test_start={config.test_start}) against the data's dates, or reduce the sizes. Counts: {c}")


def run_ingestion(input_base: str, output_dir: str, config: IngestionConfig,
                  beam_pipeline_args: Sequence[str] | None = None, check: bool = True) -> dict:
    """Benchmark/CLI entry point: files under `input_base` -> `output_dir/Split-<name>/data_tfrecord-*.gz`
    (serialized tf.Examples, the ExampleGen layout) and `output_dir/ingestion_report.json`. Returns the
    report (counts, examples per split). Runs on the DirectRunner unless `beam_pipeline_args` say otherwise."""
    files = readers.list_input_files(input_base, config.input_patterns)
    report_path = os.path.join(output_dir, REPORT_FILE)
    options = beam.options.pipeline_options.PipelineOptions(list(beam_pipeline_args or []))
    with beam.Pipeline(options=options) as p:
        outs = p | "Ingest" >> MarketDataToExamples(files, config)
        for name in SPLIT_NAMES:
            _ = outs[name] | f"Write[{name}]" >> beam.io.WriteToTFRecord(
                os.path.join(output_dir, f"Split-{name}", "data_tfrecord"), file_name_suffix=".gz",
                compression_type=beam.io.filesystem.CompressionTypes.GZIP)
        write_report(outs["report"], report_path)
    with open(report_path) as f:
        report = json.load(f)
    if check:
        check_report(report, config)
    return report
