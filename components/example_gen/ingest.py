"""Market-data files -> order-window tf.Examples, as pure functions and one Beam `ptransform_fn`.

Beam graph (`MarketDataToExamples`), per the TFX custom-ExampleGen pattern:

    file paths ─Reshuffle─> ListAssets (`readers.list_assets`: the file name, or only the `asset` column of
      a tidy file) -> (asset, path) ─GroupByKey(asset)─> AssetExamples: per asset: read only that asset's
      rows of its files (`readers.read_file(..., asset=)`, chunks of `chunk_rows` rows), merge files, sort,
      align to the source grid, resample to each configured frequency, missing-bar rule, window starts
      (`windows.window_starts`, the one cutting rule), time split with embargo (`assign_splits`: a window
      belongs to the split of its execution bars), then serialize per block of windows
      (`serialize.iter_serialized_blocks`, vectorised tf.Example wire format)
      -> tagged by split: train / eval / test PCollections of runs (lists) of serialized tf.Examples
         (`MarketDataToExampleBatches`; `MarketDataToExamples` flattens them to one tf.Example per element
         for TFX's ExampleGen writer; `run_ingestion` writes the runs directly)
    counters (files and rows read, drops by reason, examples per split and frequency) -> Beam metrics
      counters (namespace `lems_ingestion`) and the `report` PCollection (one dict, written as
      ingestion_report.json: "counts", "examples_per_split", "assets" (per asset: source bar length, source
      bars, those with estimated quote volume, estimated bars replaced by true-quote ones, rows of other bar
      lengths, examples per split and those with an estimated execution bar), "series" (per asset and
      frequency: the source bar length used, bars, estimated bars, first/last bar, segments, examples per
      split), "outliers" (the flagged bars, up to `MAX_LISTED_OUTLIERS` per series), "config", "files",
      "file_sha256" (each input file's content hash; `run_ingestion` into a folder holding an earlier report
      adds "files_changed_since_previous_run"); per asset also "rows_quote_volume_filled" and "rows_dropped"
      (the readers' drops by reason); a failed run adds "status": "failed" and "error").

Per asset: ONE source bar length (`select_source_bars`: the declared one, or the only one; two without a
declaration is an error naming files, asset and lengths), its files merged with true quote volume preferred
per bar over estimated (`_merge_chunks`; e.g. Binance Data Vision klines + freqtrade caches: list both in
`input_patterns`), then per frequency the causal outlier scores (`components.market_data.outliers`; flag /
drop / off) and the whole-series screen (`outliers.screen`: isolated spikes and VWAPs, same modes). The
backfill (`backfill.beam_pipeline`) runs this same graph, so its bars are validated, refused
and counted (`ingestion.*` counters) the same way.

Memory: the grouping step carries only (asset, file path) pairs, so a worker holds one asset's bars at a
time (the source bars, ~32 bytes each, plus the resampled series) plus one block of serialized examples;
examples stream to the writers. Peak memory follows the longest asset series, not the number of assets.
Cost: a tidy file holding several assets is scanned once per asset it holds (only the matching rows are
converted); Binance and Yahoo files hold one asset each.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Iterator, MutableMapping, Sequence, Tuple

import apache_beam as beam
from apache_beam.io import filebasedsink
import google_crc32c
import numpy as np

from components.example_gen import serialize
from components.example_gen.config import SPLIT_NAMES, IngestionConfig
from components.market_data import outliers, readers, resample, windows

METRICS_NAMESPACE = "lems_ingestion"
REPORT_FILE = "ingestion_report.json"


def _count(counts: MutableMapping[str, int], key: str, n: int = 1) -> None:
    if n:
        counts[key] = counts.get(key, 0) + int(n)


# ------------------------------------------------------------------------------------------ pure functions
def assign_splits(first_open_s: np.ndarray, last_close_s: np.ndarray, config: IngestionConfig,
                  frequency_minutes: int, counts: MutableMapping[str, int] | None = None, *,
                  execution_open_s: np.ndarray | None = None) -> np.ndarray:
    """Split index (0 train, 1 eval, 2 test) of each example, or -1 (dropped, counted).

    A window belongs to the split whose range [lo, hi) holds its EXECUTION bars: the first execution bar opens
    at or after lo and the last one closes at or before hi. Its earlier (lookback and normalisation) bars may
    lie in earlier splits: they are known when the order starts. Dropped and counted: windows with a bar before
    `start` or closing after `end` (`examples_outside_range`), windows whose execution bars straddle a boundary
    (`examples_straddling_split`), and, in every split after the first, windows whose first execution bar
    opens less than `embargo_bars` bars (of `frequency_minutes`) after lo (`examples_in_embargo`). So no
    training window's execution bars reach into the eval period or its embargo, and likewise eval -> test.

    `first_open_s`: open of bar 0; `last_close_s`: close of the last bar (open + bar length);
    `execution_open_s`: open of the first execution bar (bar W+L); all Unix seconds. Without
    `execution_open_s` the whole window counts as execution bars (every bar inside one split, embargo from
    bar 0: the stricter rule of ingestions before issue 32)."""
    counts = {} if counts is None else counts
    first = np.asarray(first_open_s, np.int64)
    last = np.asarray(last_close_s, np.int64)
    execution = first if execution_open_s is None else np.asarray(execution_open_s, np.int64)
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
        start_ok = np.ones(len(first), bool) if lo is None else execution >= lo
        end_ok = np.ones(len(first), bool) if hi is None else execution < hi
        in_range = start_ok & end_ok & ~outside          # first execution bar opens inside split i
        inside = in_range & ((last <= hi) if hi is not None else True)
        emb_ok = (execution >= lo + embargo) if (lo is not None and i > 0) else np.ones(len(first), bool)
        out[inside & emb_ok] = i
        _count(counts, "examples_straddling_split", np.sum(in_range & ~inside))
        _count(counts, "examples_in_embargo", np.sum(inside & ~emb_ok))
    _count(counts, "examples_outside_range", np.sum(outside))
    return out


to_tf_example = serialize.to_tf_example  # the protobuf path (fallback of the vectorised serializer)


def select_source_bars(asset: str, chunks: Sequence[readers.BarChunk], config: IngestionConfig,
                       counts: MutableMapping[str, int]) -> list[readers.BarChunk]:
    """The chunks of `asset` at its ONE source bar length: the declared one (`config.source_minutes_for`;
    other lengths' rows counted `rows_other_bar_length`, an asset without it counted
    `assets_without_declared_bar_length`), or the only one found; two or more found and none declared is a
    `MarketDataError` naming the files, the asset and each bar length with its rows."""
    lengths: dict[int, dict] = {}
    for c in chunks:
        info = lengths.setdefault(c.source_minutes, {"rows": 0, "files": {}})
        info["rows"] += len(c)
        info["files"][c.file] = None
    declared = config.source_minutes_for(asset)
    if declared is not None:
        kept = [c for c in chunks if c.source_minutes == int(declared)]
        _count(counts, "rows_other_bar_length", sum(len(c) for c in chunks if c.source_minutes != int(declared)))
        if not kept and chunks:
            _count(counts, "assets_without_declared_bar_length")
        return kept
    if len(lengths) > 1:
        files = sorted({f for info in lengths.values() for f in info["files"]})
        listed = "; ".join(f"{m} min: {info['rows']} rows" + (f" in {', '.join(info['files'])}" if len(files) > 1
                                                               else "") for m, info in sorted(lengths.items()))
        raise readers.MarketDataError(
            f"{', '.join(files)}: asset {asset} has bars of {len(lengths)} source bar lengths ({listed}). Ingestion "
            f"takes ONE source bar length per asset and never picks or merges them: declare it with "
            f"source_bar_minutes (every asset, e.g. {max(lengths)}) or source_bar_minutes_by_asset "
            f"({{{asset!r}: {max(lengths)}}}), or select other files (input_patterns)")
    return list(chunks)


def _merge_chunks(asset: str, chunks: Sequence[readers.BarChunk], config: IngestionConfig,
                  counts: MutableMapping[str, int]
                  ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Chunks of one asset -> {source_minutes: (timestamp_us, volume, quote_volume, quote_volume_is_estimate)},
    sorted, with at most one file's bar per bar:

    1. True quote volume first, per bar: where bars of both kinds (`BarChunk.quote_volume_is_estimate`) fall
       in the same grid bar of the source bar length (epoch-anchored, as `resample.align_to_grid` will place
       them; e.g. Binance Data Vision klines and the freqtrade caches' estimated rows of the same 15 minutes),
       the estimated rows are dropped and counted `bars_duplicate_replaced_by_true_quote`. This is the default
       and needs no setting: a config lists both files in `input_patterns`; each file fills the other's gaps.
    2. Then, for bars of the same kind (true and true, or estimated and estimated), today's rule: a repeated
       open time across files is a `MarketDataError` naming both files and rows (`bad_rows="error"`) or a
       counted drop keeping the first file in path order (`bad_rows="drop"`, `rows_duplicate_across_files`).
       Same-kind rows of different files in the same grid bar at different open times (off-grid bars) are
       summed by `resample.align_to_grid` as before (`bars_merged_after_alignment`)."""
    by_source: dict[int, list[readers.BarChunk]] = {}
    for c in chunks:
        by_source.setdefault(c.source_minutes, []).append(c)
    out = {}
    for minutes, parts in by_source.items():
        parts = sorted(parts, key=lambda c: (c.file, int(c.row[0]) if len(c) else 0))
        ts = np.concatenate([c.timestamp_us for c in parts])
        vol = np.concatenate([c.volume for c in parts])
        qv = np.concatenate([c.quote_volume for c in parts])
        est = np.concatenate([c.quote_volume_is_estimate for c in parts])
        files = np.concatenate([np.full(len(c), i) for i, c in enumerate(parts)])
        rows = np.concatenate([c.row for c in parts])
        if est.any() and not est.all():
            step_us = int(minutes) * 60 * 1_000_000
            grid = ts // step_us
            replaced = est & np.isin(grid, grid[~est])
            if replaced.any():
                _count(counts, "bars_duplicate_replaced_by_true_quote", replaced.sum())
                keep = ~replaced
                ts, vol, qv, est, files, rows = ts[keep], vol[keep], qv[keep], est[keep], files[keep], rows[keep]
        order = np.argsort(ts, kind="stable")
        ts, vol, qv, est, files, rows = ts[order], vol[order], qv[order], est[order], files[order], rows[order]
        dup = np.concatenate([[False], ts[1:] == ts[:-1]])
        if dup.any():
            if config.bad_rows == "error":
                j = int(np.argmax(dup))
                a, b = parts[files[j - 1]], parts[files[j]]
                raise readers.MarketDataError(
                    f"{b.file}: row {rows[j]}: duplicate timestamp for {asset} ({minutes}-minute bars), also in "
                    f"{a.file} row {rows[j - 1]}: remove overlapping files or use bad_rows='drop' (bars whose "
                    f"quote volume is true in one file and estimated in the other are not duplicates: the true "
                    f"one is kept)")
            _count(counts, "rows_duplicate_across_files", dup.sum())
            ts, vol, qv, est = ts[~dup], vol[~dup], qv[~dup], est[~dup]
        out[minutes] = (ts, vol, qv, est)
    return out


MAX_LISTED_OUTLIERS = 10  # per (asset, frequency) in the report's "outliers" (the counts are exact)


def _iso(seconds) -> str:
    return np.datetime_as_string(np.datetime64(int(seconds), "s")) + "Z"


def _outliers(asset: str, freq: int, ts: np.ndarray, vol: np.ndarray, qv: np.ndarray, est: np.ndarray,
              config: IngestionConfig, counts: MutableMapping[str, int], notes: list | None):
    """Score one (asset, frequency) series' bars (`outliers.detect`, causal), count and list the flagged ones
    inside [start, end) and, with `outliers="drop"`, remove them (they become missing bars). `est`: the
    bars' estimated-quote-volume flags, filtered alike."""
    if config.outliers == "off" or not len(ts):
        return ts, vol, qv, est
    # No VWAP return across a series break (a gap the missing-bar rule does not bridge: no window crosses it).
    breaks = np.concatenate([[False], np.diff(ts) // (int(freq) * 60) - 1 > config.max_gap_bars])
    flags = outliers.detect(vol, qv, window=config.outlier_window, volume_z=config.outlier_volume_z,
                            return_z=config.outlier_return_z, breaks=breaks)
    # the whole-series screen (non-causal): what the causal scores miss (isolated spikes, altered VWAPs)
    scr = outliers.screen(vol, qv, window=config.outlier_window, volume_z=config.screen_volume_z,
                          vwap_z=config.screen_vwap_z, breaks=breaks)
    # Bars outside [start, end) are in no example; inside, any bar may be (an execution bar of one window, the
    # lookback or normalisation bar of a later window, possibly of a later split).
    lo, hi = config.split_ranges()[0][0], config.split_ranges()[-1][1]
    used = np.ones(len(ts), bool) if lo is None else ts >= lo
    if hi is not None:
        used &= ts < hi
    flags.volume &= used
    flags.vwap_return &= used
    scr.spike &= used & ~flags.any  # a bar the causal scores flag is counted there
    scr.vwap &= used & ~flags.any
    bad = flags.any | scr.any
    for key, mask in (("bars_outlier_volume", flags.volume), ("bars_outlier_vwap_return", flags.vwap_return),
                      ("bars_outlier_screen_spike", scr.spike), ("bars_outlier_screen_vwap", scr.vwap),
                      ("bars_outlier", bad)):
        _count(counts, key, int(mask.sum()))
        _count(counts, f"{key}_{freq}m", int(mask.sum()))
    if not bad.any():
        return ts, vol, qv, est
    if notes is not None:
        for i in np.flatnonzero(bad)[:MAX_LISTED_OUTLIERS]:
            kind = "+".join(k for k, m in (("volume", flags.volume), ("vwap_return", flags.vwap_return),
                                           ("isolated_spike", scr.spike), ("isolated_vwap", scr.vwap)) if m[i])
            z = (flags.volume_z[i] if flags.volume[i] else flags.return_z[i] if flags.vwap_return[i] else
                 scr.spike_z[i] if scr.spike[i] else scr.vwap_z[i])
            notes.append({"kind": "outlier", "asset": asset, "frequency_minutes": int(freq), "time": _iso(ts[i]),
                          "score": kind, "z": round(float(z), 1), "volume": float(vol[i]),
                          "quote_volume": float(qv[i])})
    if config.outliers == "drop":
        _count(counts, "bars_outlier_dropped", int(bad.sum()))
        return ts[~bad], vol[~bad], qv[~bad], est[~bad]
    return ts, vol, qv, est


ESTIMATED_EXAMPLES = "examples_with_estimated_execution_bar"  # + _<split>: counted per split


def asset_series(asset: str, chunks: Iterable[readers.BarChunk], config: IngestionConfig,
                 counts: MutableMapping[str, int], notes: list | None = None
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per gap-free (asset, frequency) segment, lazily: (frequency, timestamp_s, volume, quote_volume, window
    starts, split index of each start) of the windows that survive the cut (`windows.window_starts`) and the
    time split (`assign_splits`: the split of the window's execution bars); drops and examples per split are
    counted in `counts`. The asset's ONE source bar length is `select_source_bars`', its files merged by
    `_merge_chunks` (true quote volume preferred per bar); outlier bars are scored per frequency
    (`_outliers`). Estimated quote volume (`readers.BarChunk.quote_volume_is_estimate`) is carried through
    alignment and resampling (a bar is estimated when any of its source bars is) and counted: source bars
    `bars_quote_volume_estimated`, bars per frequency `bars_quote_volume_estimated_<f>m`, kept windows with
    an estimated bar among their execution bars `examples_with_estimated_execution_bar_<split>`.
    With a `notes` list, one dict per asset ("kind": "asset": source bar length, source bars, estimated ones,
    bars replaced by true quote volume, examples per split and those with an estimated execution bar), one
    per (asset, frequency) series ("kind": "series": source bar length, bars, estimated bars, date range,
    examples per split) and the flagged outliers ("kind": "outlier") are appended to it."""
    before = dict(counts)
    chunks = list(chunks)
    merged = _merge_chunks(asset, select_source_bars(asset, chunks, config, counts), config, counts)
    sources = sorted(merged)
    asset_note = {"kind": "asset", "asset": asset, "source_minutes": sources[0] if sources else None,
                  "source_bars": 0, "source_bars_quote_volume_estimated": 0,
                  readers.MISSING_QUOTE_FILLED: int(sum(c.n_quote_filled for c in chunks)),
                  "bars_duplicate_replaced_by_true_quote": (counts.get("bars_duplicate_replaced_by_true_quote", 0)
                                                            - before.get("bars_duplicate_replaced_by_true_quote", 0)),
                  "rows_other_bar_length": counts.get("rows_other_bar_length", 0)
                  - before.get("rows_other_bar_length", 0),
                  "examples": {name: 0 for name in SPLIT_NAMES},
                  ESTIMATED_EXAMPLES: {name: 0 for name in SPLIT_NAMES}}
    if notes is not None:
        notes.append(asset_note)
    if not sources:  # no bars (e.g. none at the declared source bar length: counted there)
        return
    for m in sources:
        asset_note["source_bars"] += int(len(merged[m][0]))
        asset_note["source_bars_quote_volume_estimated"] += int(merged[m][3].sum())
        _count(counts, "bars_quote_volume_estimated", int(merged[m][3].sum()))
    w, o, n = config.norm_window, config.norm_window + config.lookback, config.n_ahead
    for freq in sorted(int(f) for f in config.frequencies):
        usable = [s for s in sources if freq % s == 0]
        if not usable:
            _count(counts, "frequency_not_derivable")
            if notes is not None:
                notes.append({"kind": "series", "asset": asset, "frequency_minutes": freq,
                              "source_minutes": sources[0], "bars": 0,
                              "problem": f"{freq} min is not a multiple of the {sources[0]}-minute source bars"})
            continue
        src = usable[0]  # the asset's one source bar length (select_source_bars)
        ts_us, vol, qv, est = merged[src]
        g_ts, g_v, g_q, g_e = resample.align_to_grid(ts_us, vol, qv, src, counts, estimate=est)
        if freq != src:
            g_ts, g_v, g_q, g_e = resample.resample(g_ts, g_v, g_q, src, freq, counts, estimate=g_e)
        g_ts, g_v, g_q, g_e = _outliers(asset, freq, g_ts, g_v, g_q, g_e, config, counts, notes)
        _count(counts, f"bars_quote_volume_estimated_{freq}m", int(g_e.sum()))
        segments = resample.apply_missing_rule(g_ts, g_v, g_q, freq, rule=config.missing_rule_for(freq),
                                               max_gap_bars=config.max_gap_bars, drops=counts, estimate=g_e)
        n_before = counts.get("examples_emitted", 0)
        step = freq * 60
        stride = config.stride_for(freq)
        note = {"kind": "series", "asset": asset, "frequency_minutes": freq, "source_minutes": int(src),
                "bars": int(len(g_ts)), "bars_quote_volume_estimated": int(g_e.sum()),
                "first": _iso(g_ts[0]) if len(g_ts) else None,
                "last": _iso(g_ts[-1]) if len(g_ts) else None, "segments": len(segments),
                "longest_segment_bars": max((len(x[0]) for x in segments), default=0),
                "examples": {name: 0 for name in SPLIT_NAMES},
                ESTIMATED_EXAMPLES: {name: 0 for name in SPLIT_NAMES}}
        if notes is not None:
            notes.append(note)
        for seg_ts, seg_v, seg_q, seg_e in segments:
            if len(seg_ts) < config.window_length:
                _count(counts, "segments_too_short")
                continue
            # Splits of every origin (uninformative windows included, as counted), then the cut's survivors.
            all_starts = windows.origin_positions(len(seg_ts), norm_window=w, lookback=config.lookback,
                                                  n_ahead=n, stride=stride) - o
            split_all = assign_splits(seg_ts[all_starts], seg_ts[all_starts + o + n - 1] + step, config, freq, counts,
                                      execution_open_s=seg_ts[all_starts + o])
            starts = windows.window_starts(seg_v, seg_q, norm_window=w, lookback=config.lookback, n_ahead=n,
                                           stride=stride, drops=counts)
            splits = split_all[(starts - all_starts[0]) // stride] if len(starts) else starts
            keep = splits >= 0
            starts, splits = starts[keep], splits[keep]
            _count(counts, "examples_emitted", len(starts))
            c_est = np.concatenate([[0], np.cumsum(seg_e)])
            estimated = (c_est[starts + o + n] - c_est[starts + o]) > 0  # an execution bar is estimated
            for i, name in enumerate(SPLIT_NAMES):
                k = int(np.sum(splits == i))
                k_est = int(np.sum(estimated & (splits == i)))
                _count(counts, f"examples_{name}", k)
                _count(counts, f"examples_{name}_{freq}m", k)
                _count(counts, f"{ESTIMATED_EXAMPLES}_{name}", k_est)
                for d in (note, asset_note):
                    d["examples"][name] += k
                    d[ESTIMATED_EXAMPLES][name] += k_est
            if len(starts):
                yield freq, seg_ts, seg_v, seg_q, starts, splits
        if counts.get("examples_emitted", 0) == n_before:
            _count(counts, "asset_frequency_without_examples")


def asset_examples(asset: str, chunks: Iterable[readers.BarChunk], config: IngestionConfig,
                   counts: MutableMapping[str, int], notes: list | None = None) -> Iterator[tuple[int, dict]]:
    """All (split index, raw-field example dict) of one asset, lazily, counting drops in `counts`."""
    o = config.norm_window + config.lookback
    for freq, ts, v, q, starts, splits in asset_series(asset, chunks, config, counts, notes):
        exs = windows.windows_at(v, q, ts, starts, asset=asset, frequency_minutes=freq, origin_offset=o,
                                 window_length=config.window_length)
        yield from zip(splits.tolist(), exs)


def asset_serialized_blocks(asset: str, chunks: Iterable[readers.BarChunk], config: IngestionConfig,
                            counts: MutableMapping[str, int], notes: list | None = None
                            ) -> Iterator[tuple[int, list[bytes]]]:
    """(split index, [serialized tf.Example, ...]) runs of one asset, lazily: the same examples, in the same
    order, as `asset_examples` + `to_tf_example`, built per block of windows by
    `serialize.iter_serialized_blocks` (a run is the part of a block in one split)."""
    o = config.norm_window + config.lookback
    block = serialize.DEFAULT_BLOCK
    for freq, ts, v, q, starts, splits in asset_series(asset, chunks, config, counts, notes):
        blocks = serialize.iter_serialized_blocks(v, q, ts, starts, asset=asset, frequency_minutes=freq,
                                                  window_length=config.window_length, origin_offset=o, block=block)
        for a, records in zip(range(0, len(starts), block), blocks):
            sp = splits[a:a + block]
            cuts = [0, *(np.flatnonzero(np.diff(sp)) + 1).tolist(), len(sp)]
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                yield int(sp[lo]), records[lo:hi]


def asset_serialized_examples(asset: str, chunks: Iterable[readers.BarChunk], config: IngestionConfig,
                              counts: MutableMapping[str, int]) -> Iterator[tuple[int, bytes]]:
    """All (split index, serialized tf.Example) of one asset, lazily (`asset_serialized_blocks`, one by one)."""
    for split, records in asset_serialized_blocks(asset, chunks, config, counts):
        for r in records:
            yield split, r


def read_asset(asset: str, paths: Sequence[str], config: IngestionConfig, counts: MutableMapping[str, int]
               ) -> list[readers.BarChunk]:
    """One asset's validated bars from its files (`readers.read_file(..., asset=asset)`), counting
    `rows_read` and the readers' drops."""
    chunks = []
    for path in sorted(paths):
        for chunk in readers.read_file(path, bad_rows=config.bad_rows, drops=counts, chunk_rows=config.chunk_rows,
                                       asset=asset, quote_volume=config.quote_volume,
                                       missing_quote_volume=config.missing_quote_volume, timezone=config.timezone):
            _count(counts, "rows_read", chunk.n_read)
            if len(chunk):
                chunks.append(chunk)
    return chunks


# ------------------------------------------------------------------------------------------ Beam
class _AssetExamplesFn(beam.DoFn):
    """(asset, [file path]) -> lists of serialized tf.Examples, tagged with their split name ("train", ...):
    reads only that asset's rows of its files; counts to metrics and the "counts" output."""

    def __init__(self, config: IngestionConfig):
        self._config = config

    def process(self, element):
        asset, paths = element
        counts: dict[str, int] = {}
        notes: list = []
        chunks = read_asset(asset, list(paths), self._config, counts)
        for split, records in asset_serialized_blocks(asset, chunks, self._config, counts, notes):
            yield beam.pvalue.TaggedOutput(SPLIT_NAMES[split], records)
        for key, n in counts.items():
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, key).inc(n)
            yield beam.pvalue.TaggedOutput("counts", (key, n))
        for note in notes:
            if note["kind"] == "asset":  # `counts` is this asset's: its rows dropped by the readers, by reason
                note["rows_dropped"] = {k: int(counts[k]) for k in sorted(counts) if k in READER_DROPS}
            yield beam.pvalue.TaggedOutput("notes", note)


@beam.typehints.with_output_types(Tuple[str, str])
class _ListAssetsFn(beam.DoFn):
    """File path -> (asset, path) per asset in the file (`readers.list_assets`: file name or asset column)."""

    def __init__(self, config: IngestionConfig):
        self._config = config

    def process(self, path):
        for asset in readers.list_assets(path, chunk_rows=self._config.chunk_rows):
            yield asset, path
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "files_read").inc()
        yield beam.pvalue.TaggedOutput("counts", ("files_read", 1))
        yield beam.pvalue.TaggedOutput("hashes", (path, file_sha256(path)))


#: Reader drop counters (`components.market_data.readers`), listed per asset in the report.
READER_DROPS = (readers.DROP_NON_FINITE, readers.DROP_NEGATIVE_VOLUME, readers.DROP_NON_POSITIVE_PRICE,
                readers.DROP_DUPLICATE_TIMESTAMP, readers.DROP_INCONSISTENT_VOLUME, readers.DROP_VWAP_OUTSIDE_RANGE,
                readers.DROP_MISSING_QUOTE)


def file_sha256(path: str) -> str:
    """sha256 (hex) of a local or remote (Beam filesystems) file's bytes."""
    import hashlib
    from apache_beam.io.filesystems import FileSystems
    h = hashlib.sha256()
    with FileSystems.open(path, compression_type=beam.io.filesystem.CompressionTypes.UNCOMPRESSED) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def changed_files(report: dict, previous: dict | None) -> dict:
    """Input files whose sha256 differs between `previous` and `report` (their "file_sha256"):
    {"changed": [...], "added": [...], "removed": [...]}, each sorted; empty lists without a previous report."""
    old, new = dict((previous or {}).get("file_sha256") or {}), dict(report.get("file_sha256") or {})
    if not old:
        return {"changed": [], "added": [], "removed": []}
    return {"changed": sorted(f for f in new if f in old and new[f] != old[f]),
            "added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new))}


def _report(counts: Iterable[tuple[str, int]], config_json: str, files: Sequence[str],
            notes: Iterable[dict] = (), hashes: dict | None = None) -> dict:
    totals: dict[str, int] = {}
    for k, n in counts:
        totals[k] = totals.get(k, 0) + int(n)
    notes = list(notes)
    key = lambda d: (d["asset"], d["frequency_minutes"], d.get("time") or "")  # noqa: E731
    assets = {d["asset"]: {k: v for k, v in d.items() if k not in ("kind", "asset")}
              for d in sorted((d for d in notes if d["kind"] == "asset"), key=lambda d: d["asset"])}
    return {"counts": dict(sorted(totals.items())), "config": json.loads(config_json), "files": list(files),
            "file_sha256": {f: (hashes or {}).get(f) for f in files},
            "examples_per_split": {s: totals.get(f"examples_{s}", 0) for s in SPLIT_NAMES},
            "assets": assets,
            "series": sorted((d for d in notes if d["kind"] == "series"), key=key),
            "outliers": sorted((d for d in notes if d["kind"] == "outlier"), key=key)}


def failed_report(error: BaseException, config: IngestionConfig, files: Sequence[str],
                  report: dict | None = None) -> dict:
    """The report of a failed ingestion: what the run had (`report`, else the config and files) plus
    `"status": "failed"` and the error message."""
    out = dict(report) if report else {"counts": {}, "config": json.loads(config.to_json()), "files": list(files),
                                        "examples_per_split": {}, "assets": {}, "series": [], "outliers": []}
    if not out.get("file_sha256"):
        hashes = {}
        for f in files:
            try:
                hashes[f] = file_sha256(f)
            except Exception:  # pylint: disable=broad-except  (a file gone or unreadable: no hash)
                hashes[f] = None
        out["file_sha256"] = hashes
    out.update(status="failed", error=f"{type(error).__name__}: {error}")
    return out


def write_report_file(report: dict, path: str) -> None:
    """Write `report` as JSON to the local or remote `path` (Beam filesystems), creating its folder."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    folder = os.path.dirname(path)
    if folder and not FileSystems.exists(folder):
        FileSystems.mkdirs(folder)
    with FileSystems.create(path, mime_type="application/json",
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(json.dumps(report, indent=2, sort_keys=True).encode())


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def MarketDataToExampleBatches(pipeline: beam.Pipeline, files: Sequence[str], config: IngestionConfig):  # pylint: disable=invalid-name
    """Files -> {"train", "eval", "test": PCollection[list[bytes]] (runs of serialized tf.Examples, in order),
    "report": PCollection[dict]}: Beam's per-element cost is paid per run of up to
    `serialize.DEFAULT_BLOCK` examples (see `run_ingestion` for a writer of such runs)."""
    if not files:
        raise readers.MarketDataError("no market-data files (.csv, .zip, .parquet) found in the input")
    listed = (pipeline
              | "Files" >> beam.Create(list(files))
              | "ReshuffleFiles" >> beam.Reshuffle()
              | "ListAssets" >> beam.ParDo(_ListAssetsFn(config)).with_outputs("counts", "hashes", main="pairs"))
    made = (listed.pairs
            | "GroupByAsset" >> beam.GroupByKey()
            | "AssetExamples" >> beam.ParDo(_AssetExamplesFn(config)).with_outputs("counts", "notes", *SPLIT_NAMES))
    out = {name: made[name] for name in SPLIT_NAMES}
    config_json = config.to_json()
    notes = made.notes | "CollectNotes" >> beam.combiners.ToList()
    out["report"] = ((listed.counts, made.counts)
                     | "AllCounts" >> beam.Flatten()
                     | "CollectCounts" >> beam.combiners.ToList()
                     | "Report" >> beam.Map(_report, config_json, list(files), beam.pvalue.AsSingleton(notes),
                                            beam.pvalue.AsDict(listed.hashes)))
    return out


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def MarketDataToExamples(pipeline: beam.Pipeline, files: Sequence[str], config: IngestionConfig):  # pylint: disable=invalid-name
    """Files -> {"train", "eval", "test": PCollection[bytes] (serialized tf.Example), "report": PCollection[dict]}."""
    batches = pipeline | "Batches" >> MarketDataToExampleBatches(files, config)
    out = {name: batches[name] | f"Unbatch[{name}]" >> beam.FlatMap(lambda records: records)
           for name in SPLIT_NAMES}
    out["report"] = batches["report"]
    return out


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C: rotate right by 15 bits, add 0xa282ead8 (mod 2**32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _TFRecordRunsSink(filebasedsink.FileBasedSink):
    """Gzip TFRecord files (the layout of `beam.io.WriteToTFRecord`) from elements that are LISTS of records:
    each list is framed (TFRecord: uint64 length, masked crc32c of it, data, masked crc32c of the data) into one
    buffer and written with one call."""

    def __init__(self, file_path_prefix: str):
        super().__init__(file_path_prefix, coder=beam.coders.BytesCoder(), file_name_suffix=".gz",
                         mime_type="application/octet-stream",
                         compression_type=beam.io.filesystem.CompressionTypes.GZIP)

    def write_record(self, file_handle, value):
        crc = _masked_crc32c
        heads: dict[int, bytes] = {}  # record length -> length field + its masked crc
        parts = []
        for record in value:
            head = heads.get(len(record))
            if head is None:
                n = struct.pack("<Q", len(record))
                head = heads[len(record)] = n + struct.pack("<I", crc(n))
            parts += (head, record, struct.pack("<I", crc(record)))
        file_handle.write(b"".join(parts))


def write_report(report_pcoll, path: str):
    """Write the report dict as JSON to `path` (one file)."""
    return report_pcoll | "WriteReport" >> beam.Map(write_report_file, path)


class IngestionCheckError(ValueError):
    """The ingestion ran but its report fails a check (outlier bars flagged, too few examples)."""


def _describe_series(report: dict, limit: int = 24) -> str:
    """One line per (asset, frequency) series of the report: source bar length, bars, range, examples."""
    lines = []
    for d in report.get("series", [])[:limit]:
        if d.get("problem"):
            lines.append(f"{d['asset']} {d['frequency_minutes']} min: {d['problem']}")
            continue
        ex = ", ".join(f"{k} {v}" for k, v in d["examples"].items())
        lines.append(f"{d['asset']} {d['frequency_minutes']} min from {d['source_minutes']}-min source bars: "
                     f"{d['bars']} bars {d['first']} .. {d['last']}, {d['segments']} gap-free segment(s), longest "
                     f"{d['longest_segment_bars']} bars; examples {ex}")
    more = len(report.get("series", [])) - limit
    return "\n  ".join(lines) + (f"\n  ... and {more} more series (ingestion_report.json)" if more > 0 else "")


def check_report(report: dict, config: IngestionConfig) -> None:
    """Raise `IngestionCheckError` with an actionable message when outlier bars were flagged
    (`outliers="flag"`) or a split has fewer than `min_examples_per_split` examples."""
    c = report["counts"]
    if config.outliers == "flag" and c.get("bars_outlier", 0):
        listed = "\n  ".join(
            f"{d['asset']} {d['frequency_minutes']} min bar {d['time']}: {d['score']} z {d['z']} (volume "
            f"{d['volume']:.6g}, quote volume {d['quote_volume']:.6g})" for d in report.get("outliers", [])[:30])
        raise IngestionCheckError(
            f"market-data ingestion flagged {c['bars_outlier']} outlier bar(s) ({c.get('bars_outlier_volume', 0)} "
            f"by volume, {c.get('bars_outlier_vwap_return', 0)} by bar-VWAP return; robust scores against the "
            f"previous {config.outlier_window} bars, thresholds outlier_volume_z={config.outlier_volume_z}, "
            f"outlier_return_z={config.outlier_return_z}; {c.get('bars_outlier_screen_spike', 0)} isolated "
            f"volume spike(s) and {c.get('bars_outlier_screen_vwap', 0)} isolated VWAP(s) by the whole-series "
            f"screen against the bars on both sides, screen_volume_z={config.screen_volume_z}, "
            f"screen_vwap_z={config.screen_vwap_z}):\n  {listed}\nCorrupt values? Fix those bars in the input "
            f"files, or set outliers: drop (remove and count them) or off, or raise the thresholds if the bars "
            f"are real.")
    low = {s: n for s, n in report["examples_per_split"].items() if n < config.min_examples_per_split}
    if low:
        bounds = [config.start, config.eval_start, config.test_start, config.end]
        split_text = ", ".join(f"{name} [{bounds[i] or 'open'}, {bounds[i + 1] or 'open'})"
                               for i, name in enumerate(SPLIT_NAMES))
        series = _describe_series(report)
        raise IngestionCheckError(
            f"market-data ingestion produced too few examples in split(s) {low} (need "
            f">= {config.min_examples_per_split}). Each example needs {config.window_length} consecutive bars "
            f"(W+L+N = {config.norm_window}+{config.lookback}+{config.n_ahead}) between start and end and belongs "
            f"to the split holding its last N = {config.n_ahead} (execution) bars; its first W+L = "
            f"{config.norm_window + config.lookback} bars may lie in earlier splits (split dates: {split_text}). "
            f"In eval and test the first execution bar must open at least embargo_bars = {config.embargo_bars} "
            f"bars after the split's start: a split needs at least embargo_bars + N bars of gap-free data, "
            f"preceded by W+L gap-free bars after start. What the data gave, per asset and "
            f"frequency:\n  {series or '(no series: no bars were read)'}\nCompare these date ranges, segment "
            f"lengths and source bar lengths with the splits and sizes. Counts: {c}")


def run_ingestion(input_base: str, output_dir: str, config: IngestionConfig,
                  beam_pipeline_args: Sequence[str] | None = None, check: bool = True) -> dict:
    """Benchmark/CLI entry point: files under `input_base` -> `output_dir/Split-<name>/data_tfrecord-*.gz`
    (serialized tf.Examples, gzip TFRecord: the ExampleGen layout, written per run of examples) and `output_dir/ingestion_report.json`. Returns the
    report (counts, examples per split). Runs on the DirectRunner unless `beam_pipeline_args` say otherwise."""
    report_path = os.path.join(output_dir, REPORT_FILE)
    files: list = []
    report = None
    previous = None
    if os.path.exists(report_path):  # a rerun into the same folder: say which input files changed
        try:
            with open(report_path) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = None
    try:
        files = readers.list_input_files(input_base, config.input_patterns)
        options = beam.options.pipeline_options.PipelineOptions(list(beam_pipeline_args or []))
        with beam.Pipeline(options=options) as p:
            outs = p | "Ingest" >> MarketDataToExampleBatches(files, config)
            for name in SPLIT_NAMES:
                _ = outs[name] | f"Write[{name}]" >> beam.io.Write(
                    _TFRecordRunsSink(os.path.join(output_dir, f"Split-{name}", "data_tfrecord")))
            write_report(outs["report"], report_path)
        with open(report_path) as f:
            report = json.load(f)
        if previous is not None:
            report["files_changed_since_previous_run"] = changed_files(report, previous)
            write_report_file(report, report_path)
            if any(report["files_changed_since_previous_run"].values()):
                import logging
                logging.getLogger(__name__).warning("input files changed since the previous ingestion into %s: %s",
                                                    output_dir, report["files_changed_since_previous_run"])
        if check:
            check_report(report, config)
    except Exception as e:  # the failed run keeps its report (status "failed", the error), then re-raises
        write_report_file(failed_report(e, config, files, report), report_path)
        raise
    return report
