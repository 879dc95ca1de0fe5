"""The ONE window cutter: one (asset, frequency) series on its bar grid -> order-window examples.

An example is `W + L + N` consecutive bars (docs/example-contract.md) with the raw fields
`volume`, `quote_volume` (float32 `[W+L+N]`), `timestamp` (int64 `[W+L+N]`, bar open, Unix seconds UTC),
`asset` (bytes), `frequency_minutes` (int) and `origin_time` (`timestamp[o]`, `o = W + L`).

Used by the ExampleGen (`components/example_gen/`, per (asset, frequency) series after grid alignment and
resampling) and by the quickstart demo (synthetic bars -> `cut_windows_batch` -> `build_features`).

Origins: bar positions `p` with `W + L <= p <= n - N` and `(p - W - L) % stride == 0` (positions in the
given arrays; the caller passes one gap-free segment, consecutive positions = consecutive bars).

Windows without information are dropped and counted (`drops`): `no_volume_in_norm_window` (bars `0..W-1`
traded nothing: no volume normaliser) and `no_priced_bar_before_origin` (no bar of `0..o-1` has a VWAP).
"""
from __future__ import annotations

import collections
from typing import Iterator, MutableMapping

import numpy as np

RAW_FEATURES = ("volume", "quote_volume", "timestamp", "asset", "frequency_minutes", "origin_time")
DROP_NO_NORM_VOLUME = "no_volume_in_norm_window"
DROP_NO_PRICE = "no_priced_bar_before_origin"


def origin_positions(n_bars: int, *, norm_window: int, lookback: int, n_ahead: int, stride: int = 1
                     ) -> np.ndarray:
    """Positions `o` of the first execution bar of every window that fits in `n_bars` bars."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    first = norm_window + lookback
    last = n_bars - n_ahead
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, last + 1, stride, dtype=np.int64)


def _informative(volume: np.ndarray, quote_volume: np.ndarray, starts: np.ndarray, w: int, o: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per window start: (norm window has volume, some bar before origin is priced). Vectorised prefix sums."""
    traded = np.where(np.isfinite(volume) & (volume > 0), volume, 0.0)
    priced = (traded > 0) & np.isfinite(quote_volume) & (quote_volume > 0)
    c_vol = np.concatenate([[0.0], np.cumsum(traded > 0)])
    c_pr = np.concatenate([[0], np.cumsum(priced)])
    return (c_vol[starts + w] - c_vol[starts]) > 0, (c_pr[starts + o] - c_pr[starts]) > 0


def cut_windows(volume: np.ndarray, quote_volume: np.ndarray, timestamp: np.ndarray, *, asset: str | bytes,
                frequency_minutes: int, norm_window: int, lookback: int, n_ahead: int, stride: int = 1,
                drops: MutableMapping[str, int] | None = None) -> Iterator[dict]:
    """Yield one raw-field dict per window (lazily: memory is one window at a time plus the series).

    Args:
      volume, quote_volume, timestamp: `[n]` arrays of one gap-free (asset, frequency) series, sorted.
      asset, frequency_minutes: scalars copied into every example.
      norm_window, lookback, n_ahead: `W`, `L`, `N`; stride: bars between consecutive origins.
      drops: optional counter, incremented per dropped window reason.
    """
    volume = np.asarray(volume, np.float32)
    quote_volume = np.asarray(quote_volume, np.float32)
    timestamp = np.asarray(timestamp, np.int64)
    if not volume.shape == quote_volume.shape == timestamp.shape or volume.ndim != 1:
        raise ValueError(f"volume, quote_volume, timestamp must be equal-length 1-D arrays, got "
                         f"{volume.shape}, {quote_volume.shape}, {timestamp.shape}")
    w, o = norm_window, norm_window + lookback
    total = o + n_ahead
    origins = origin_positions(len(volume), norm_window=norm_window, lookback=lookback, n_ahead=n_ahead,
                               stride=stride)
    starts = origins - o
    has_norm, has_price = _informative(volume, quote_volume, starts, w, o)
    asset_b = asset.encode() if isinstance(asset, str) else bytes(asset)
    freq = int(frequency_minutes)
    for s, ok_norm, ok_price in zip(starts, has_norm, has_price):
        if not ok_norm or not ok_price:
            if drops is not None:
                reason = DROP_NO_NORM_VOLUME if not ok_norm else DROP_NO_PRICE
                drops[reason] = drops.get(reason, 0) + 1
            continue
        sl = slice(int(s), int(s) + total)
        yield {"volume": volume[sl], "quote_volume": quote_volume[sl], "timestamp": timestamp[sl],
               "asset": asset_b, "frequency_minutes": freq, "origin_time": int(timestamp[s + o])}


def cut_windows_batch(volume: np.ndarray, quote_volume: np.ndarray, timestamp: np.ndarray, *,
                      asset: str | bytes, frequency_minutes: int, norm_window: int, lookback: int,
                      n_ahead: int, stride: int = 1, drops: MutableMapping[str, int] | None = None) -> dict:
    """All windows of one series stacked: `volume`, `quote_volume` float32 `[B, W+L+N]`, `timestamp` int64
    `[B, W+L+N]`, `frequency_minutes`, `origin_time` int64 `[B]`, `asset` object `[B]` (same drops as
    `cut_windows`; B may be 0)."""
    total = norm_window + lookback + n_ahead
    rows = collections.defaultdict(list)
    for ex in cut_windows(volume, quote_volume, timestamp, asset=asset, frequency_minutes=frequency_minutes,
                          norm_window=norm_window, lookback=lookback, n_ahead=n_ahead, stride=stride,
                          drops=drops):
        for k in RAW_FEATURES:
            rows[k].append(ex[k])
    if not rows:
        return {"volume": np.zeros((0, total), np.float32), "quote_volume": np.zeros((0, total), np.float32),
                "timestamp": np.zeros((0, total), np.int64), "asset": np.zeros(0, object),
                "frequency_minutes": np.zeros(0, np.int64), "origin_time": np.zeros(0, np.int64)}
    return {"volume": np.stack(rows["volume"]), "quote_volume": np.stack(rows["quote_volume"]),
            "timestamp": np.stack(rows["timestamp"]), "asset": np.array(rows["asset"], dtype=object),
            "frequency_minutes": np.array(rows["frequency_minutes"], np.int64),
            "origin_time": np.array(rows["origin_time"], np.int64)}
