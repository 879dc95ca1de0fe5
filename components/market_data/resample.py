"""Bar grids: align source bars to their grid, resample to coarser bars, apply the missing-bar rule.

The grid of a bar length `f` minutes is anchored at the Unix epoch: bar opens are the multiples of `60 f`
seconds since 1970-01-01 00:00 UTC (15 -> :00, :15, ...; 90 -> 00:00, 01:30, ...; 250 -> 00:00, 04:10,
08:20, ... on 1970-01-01 and continuing across midnights; 1440 -> 00:00 UTC each day, the date label of
daily files).

* `align_to_grid`: a source bar whose open time is off its grid (Binance has some, e.g. 1-minute open times
  at :58:14.789 on 2018-02-09 after an outage) is moved to the grid bar containing it (floor) and counted
  (`bars_aligned_off_grid`); two source bars landing in the same grid bar are summed and counted
  (`bars_merged_after_alignment`).
* `resample`: bars of `f_src` minutes -> bars of `f` minutes (`f` a multiple of `f_src`): each target bar sums
  the volume and quote volume of the source bars inside it (so VWAP = sum quote / sum volume is the exact
  VWAP of the period, and totals are conserved). Target bars with only some source bars are kept and
  counted (`target_bars_partial`); target bars with none are missing bars.
* `apply_missing_rule`: missing grid bars of one series, by rule:
    - `"zero_fill"` (default intraday): a gap of at most `max_gap_bars` missing bars is filled with bars of
      zero volume and zero quote volume (no trade: the feature builder carries the last VWAP forward);
      counted `bars_zero_filled`;
    - `"skip"` (default daily: equities trade on weekdays only): the bars before and after a gap of at most
      `max_gap_bars` become consecutive bars (session time, as trading days are); counted `bars_skipped`;
  and under both rules a longer gap splits the series into segments that no window crosses
  (`series_breaks`, with the missing bars in `bars_in_breaks`).

Estimated quote volume: each function optionally takes `estimate` (bool per bar: its quote volume is an
estimate, `components.market_data.readers.BarChunk.quote_volume_is_estimate`) and then also returns it per
output bar: a grid or resampled bar is estimated when ANY of the bars summed into it is; a zero-filled bar
(no source bar) is not.
"""
from __future__ import annotations

from typing import MutableMapping

import numpy as np

MISSING_RULES = ("zero_fill", "skip")


def _count(drops, key, n):
    if drops is not None and n:
        drops[key] = drops.get(key, 0) + int(n)


def _sum_by_key(keys: np.ndarray, *values: np.ndarray):
    """Sorted unique keys and per-key sums of each value array, plus the number of rows per key."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]])) if len(k) else np.zeros(0, np.int64)
    sums = [np.add.reduceat(v[order], starts) if len(k) else v[:0] for v in values]
    counts = np.diff(np.concatenate([starts, [len(k)]]))
    return k[starts] if len(k) else k, sums, counts


def _flag_values(estimate, n: int):
    return () if estimate is None else (np.asarray(estimate, bool).astype(np.float64).reshape(n),)


def align_to_grid(timestamp_us: np.ndarray, volume: np.ndarray, quote_volume: np.ndarray, source_minutes: int,
                  drops: MutableMapping[str, int] | None = None, estimate: np.ndarray | None = None):
    """Source bars (any order, Unix microseconds) -> sorted grid bars `(timestamp_s int64, volume, quote_volume)`,
    plus `estimate` per grid bar (any of its bars estimated) when `estimate` is given."""
    step_us = int(source_minutes) * 60 * 1_000_000
    ts = np.asarray(timestamp_us, np.int64)
    grid = ts // step_us * step_us
    _count(drops, "bars_aligned_off_grid", np.sum(grid != ts))
    keys, sums, counts = _sum_by_key(grid, np.asarray(volume, np.float64), np.asarray(quote_volume, np.float64),
                                     *_flag_values(estimate, len(ts)))
    _count(drops, "bars_merged_after_alignment", np.sum(counts - 1))
    out = (keys // 1_000_000, sums[0], sums[1])
    return out if estimate is None else (*out, sums[2] > 0)


def resample(timestamp_s: np.ndarray, volume: np.ndarray, quote_volume: np.ndarray, source_minutes: int,
             target_minutes: int, drops: MutableMapping[str, int] | None = None, estimate: np.ndarray | None = None):
    """Grid bars of `source_minutes` -> bars of `target_minutes` on the epoch-anchored grid (sums), plus
    `estimate` per target bar (any of its source bars estimated) when `estimate` is given."""
    if target_minutes % source_minutes:
        raise ValueError(f"cannot build {target_minutes}-minute bars from {source_minutes}-minute bars: the "
                         f"target must be a multiple of the source bar length")
    step = int(target_minutes) * 60
    ts = np.asarray(timestamp_s, np.int64)
    keys, sums, counts = _sum_by_key(ts // step * step, np.asarray(volume, np.float64),
                                     np.asarray(quote_volume, np.float64), *_flag_values(estimate, len(ts)))
    _count(drops, "target_bars_partial", np.sum(counts < target_minutes // source_minutes))
    return (keys, sums[0], sums[1]) if estimate is None else (keys, sums[0], sums[1], sums[2] > 0)


def apply_missing_rule(timestamp_s: np.ndarray, volume: np.ndarray, quote_volume: np.ndarray,
                       frequency_minutes: int, *, rule: str = "zero_fill", max_gap_bars: int = 8,
                       drops: MutableMapping[str, int] | None = None, estimate: np.ndarray | None = None
                       ) -> list[tuple[np.ndarray, ...]]:
    """Sorted grid bars -> gap-free segments `[(timestamp_s, volume, quote_volume), ...]` (see module doc);
    with `estimate`, segments `(timestamp_s, volume, quote_volume, estimate)` (zero-filled bars: False)."""
    if rule not in MISSING_RULES:
        raise ValueError(f"missing-bar rule must be one of {MISSING_RULES}, got {rule!r}")
    ts = np.asarray(timestamp_s, np.int64)
    if len(ts) == 0:
        return []
    step = int(frequency_minutes) * 60
    idx = ts // step
    missing = np.diff(idx) - 1
    if (missing < 0).any():
        raise ValueError("bars must be sorted and unique on the grid")
    breaks = np.flatnonzero(missing > max_gap_bars)
    _count(drops, "series_breaks", len(breaks))
    _count(drops, "bars_in_breaks", missing[breaks].sum())
    segments = []
    bounds = np.concatenate([[0], breaks + 1, [len(ts)]])
    est = None if estimate is None else np.asarray(estimate, bool)
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg_idx, seg_v, seg_q = idx[a:b], np.asarray(volume[a:b], np.float64), np.asarray(quote_volume[a:b], np.float64)
        n_missing = int(seg_idx[-1] - seg_idx[0] + 1 - len(seg_idx))
        if rule == "zero_fill" and n_missing:
            full = np.arange(seg_idx[0], seg_idx[-1] + 1)
            v = np.zeros(len(full))
            q = np.zeros(len(full))
            pos = seg_idx - seg_idx[0]
            v[pos], q[pos] = seg_v, seg_q
            _count(drops, "bars_zero_filled", n_missing)
            seg = (full * step, v, q)
            if est is not None:
                e = np.zeros(len(full), bool)
                e[pos] = est[a:b]
                seg = (*seg, e)
        else:
            if n_missing:
                _count(drops, "bars_skipped", n_missing)
            seg = (seg_idx * step, seg_v, seg_q)
            if est is not None:
                seg = (*seg, est[a:b].copy())
        segments.append(seg)
    return segments
