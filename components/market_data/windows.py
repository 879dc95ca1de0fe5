"""The ONE window cutter: one (asset, frequency) series on its bar grid -> order-window examples.

An example is `W + L + N` consecutive bars (docs/example-contract.md) with the raw fields
`volume`, `quote_volume` (float32 `[W+L+N]`), `timestamp` (int64 `[W+L+N]`, bar open, Unix seconds UTC),
`asset` (bytes), `frequency_minutes` (int) and `origin_time` (`timestamp[o]`, `o = W + L`).

Used by the ExampleGen (`components/example_gen/`, per (asset, frequency) series after grid alignment and
resampling) and by the quickstart demo (synthetic bars -> `cut_windows_batch` -> `build_features`).

Origins: bar positions `p` with `W + L <= p <= n - N` and `(p - W - L) % stride == 0` (positions in the
given arrays; the caller passes one gap-free segment, consecutive positions = consecutive bars).

`window_starts` is the cutting rule (vectorised start positions of the kept windows); `cut_windows` and the
ExampleGen's vectorised serializer (`components/example_gen/serialize.py`) both cut with it.

Windows without information are dropped and counted (`drops`): `no_volume_in_norm_window` (bars `0..W-1`
traded nothing: no volume normaliser) and `no_priced_bar_before_origin` (no bar of `0..o-1` has a VWAP).
"""
from __future__ import annotations

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


def window_starts(volume: np.ndarray, quote_volume: np.ndarray, *, norm_window: int, lookback: int,
                  n_ahead: int, stride: int = 1, drops: MutableMapping[str, int] | None = None) -> np.ndarray:
    """Start positions `s` (window = bars `s .. s+W+L+N-1`, origin `s+W+L`) of the informative windows of one
    series, vectorised: every origin of `origin_positions` minus the dropped ones (counted in `drops`)."""
    volume = np.asarray(volume, np.float32)
    quote_volume = np.asarray(quote_volume, np.float32)
    w, o = norm_window, norm_window + lookback
    starts = origin_positions(len(volume), norm_window=norm_window, lookback=lookback, n_ahead=n_ahead,
                              stride=stride) - o
    has_norm, has_price = _informative(volume, quote_volume, starts, w, o)
    if drops is not None:
        for reason, n in ((DROP_NO_NORM_VOLUME, np.sum(~has_norm)), (DROP_NO_PRICE, np.sum(has_norm & ~has_price))):
            if n:
                drops[reason] = drops.get(reason, 0) + int(n)
    return starts[has_norm & has_price]


def _series(volume, quote_volume, timestamp) -> tuple:
    """One series as (float32, float32, int64) `[n]` arrays; ValueError unless equal-length and 1-D."""
    volume = np.asarray(volume, np.float32)
    quote_volume = np.asarray(quote_volume, np.float32)
    timestamp = np.asarray(timestamp, np.int64)
    if not volume.shape == quote_volume.shape == timestamp.shape or volume.ndim != 1:
        raise ValueError(f"volume, quote_volume, timestamp must be equal-length 1-D arrays, got "
                         f"{volume.shape}, {quote_volume.shape}, {timestamp.shape}")
    return volume, quote_volume, timestamp


def cut_windows(volume: np.ndarray, quote_volume: np.ndarray, timestamp: np.ndarray, *, asset: str | bytes,
                frequency_minutes: int, norm_window: int, lookback: int, n_ahead: int, stride: int = 1,
                drops: MutableMapping[str, int] | None = None) -> Iterator[dict]:
    """Yield one raw-field dict per window (lazily: memory is one window at a time plus the series).

    Args:
      volume, quote_volume, timestamp: `[n]` arrays of one gap-free (asset, frequency) series, sorted.
      asset, frequency_minutes: scalars copied into every example.
      norm_window, lookback, n_ahead: `W`, `L`, `N`; stride: bars between consecutive origins.
      drops: optional counter, incremented per dropped window reason (all at the first `next`).
    """
    volume, quote_volume, timestamp = _series(volume, quote_volume, timestamp)
    o = norm_window + lookback
    total = o + n_ahead
    starts = window_starts(volume, quote_volume, norm_window=norm_window, lookback=lookback, n_ahead=n_ahead,
                           stride=stride, drops=drops)
    yield from windows_at(volume, quote_volume, timestamp, starts, asset=asset,
                          frequency_minutes=frequency_minutes, origin_offset=o, window_length=total)


def windows_at(volume: np.ndarray, quote_volume: np.ndarray, timestamp: np.ndarray, starts: np.ndarray, *,
               asset: str | bytes, frequency_minutes: int, origin_offset: int, window_length: int
               ) -> Iterator[dict]:
    """Raw-field dicts of the windows starting at `starts` (from `window_starts`), lazily."""
    volume = np.asarray(volume, np.float32)
    quote_volume = np.asarray(quote_volume, np.float32)
    timestamp = np.asarray(timestamp, np.int64)
    asset_b = asset.encode() if isinstance(asset, str) else bytes(asset)
    freq, o, total = int(frequency_minutes), int(origin_offset), int(window_length)
    for s in np.asarray(starts, np.int64).tolist():
        sl = slice(s, s + total)
        yield {"volume": volume[sl], "quote_volume": quote_volume[sl], "timestamp": timestamp[sl],
               "asset": asset_b, "frequency_minutes": freq, "origin_time": int(timestamp[s + o])}


def cut_windows_batch(volume: np.ndarray, quote_volume: np.ndarray, timestamp: np.ndarray, *,
                      asset: str | bytes, frequency_minutes: int, norm_window: int, lookback: int,
                      n_ahead: int, stride: int = 1, drops: MutableMapping[str, int] | None = None) -> dict:
    """All windows of one series stacked: `volume`, `quote_volume` float32 `[B, W+L+N]`, `timestamp` int64
    `[B, W+L+N]`, `frequency_minutes`, `origin_time` int64 `[B]`, `asset` object `[B]` (same windows and
    drops as `cut_windows`; B may be 0)."""
    volume, quote_volume, timestamp = _series(volume, quote_volume, timestamp)
    o = norm_window + lookback
    total = o + n_ahead
    starts = window_starts(volume, quote_volume, norm_window=norm_window, lookback=lookback, n_ahead=n_ahead,
                           stride=stride, drops=drops)
    idx = starts[:, None] + np.arange(total)
    asset_b = asset.encode() if isinstance(asset, str) else bytes(asset)
    asset_col = np.empty(len(starts), object)
    asset_col[:] = [asset_b] * len(starts)
    return {"volume": volume[idx], "quote_volume": quote_volume[idx], "timestamp": timestamp[idx],
            "asset": asset_col, "frequency_minutes": np.full(len(starts), int(frequency_minutes), np.int64),
            "origin_time": timestamp[starts + o]}
