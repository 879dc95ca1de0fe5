"""Baseline schedules (NumPy): TWAP and the historical volume-curve VWAP schedule (one profile per asset x
frequency x time-of-bar, estimated on the training split: `components.evaluator.vwap_curve`).

All schedules are fractions of the order per execution bar, shape [B, N], >= 0, summing to 1, in the
order's own target units (shares for a volume order, notional for a notional order); evaluate them with
`lem_model.slippage.slippage(..., target=...)`.
"""
from __future__ import annotations

import numpy as np


def twap_schedule(batch_size: int, n_ahead: int) -> np.ndarray:
    """Equal fractions 1/N per bar: [B, N]. With target="volume" these are shares (TWAP Volume), with
    target="notional" notional amounts (TWAP Notional)."""
    if batch_size < 0 or n_ahead < 1:
        raise ValueError(f"need batch_size >= 0 and n_ahead >= 1, got {batch_size}, {n_ahead}")
    return np.full((batch_size, n_ahead), 1.0 / n_ahead)


# ---- Historical volume-curve VWAP schedule (per asset x frequency x time-of-bar) -------------------------------
SECONDS_PER_DAY = 86_400


def bars_per_day(frequency_minutes: int) -> int:
    """Number of time-of-bar buckets of a UTC day at this bar length (ceil(1440 / minutes))."""
    f = int(frequency_minutes)
    if f < 1:
        raise ValueError(f"frequency_minutes must be >= 1, got {frequency_minutes}")
    return -(-1440 // f)


def time_of_bar(timestamp, frequency_minutes: int) -> np.ndarray:
    """Bucket 0..bars_per_day-1 of each bar's open time (seconds since the epoch) within its UTC day."""
    ts = np.asarray(timestamp, np.int64)
    return (np.mod(ts, SECONDS_PER_DAY) // (60 * int(frequency_minutes))).astype(np.int64)


def volume_curve_profile(timestamp, volume, frequency_minutes: int) -> np.ndarray:
    """Intraday volume profile [bars_per_day] of ONE asset at ONE frequency from historical bars.

    timestamp, volume: [M] bars (each bar once; order irrelevant). Each bar's volume is divided by the mean
    volume of its UTC day (days without volume are skipped), and the profile is the mean of these relative
    volumes per time-of-bar bucket (1.0 where a bucket has no bars). Pass only bars of the estimation period
    (the training split): nothing else enters the profile.
    """
    ts = np.asarray(timestamp, np.int64).reshape(-1)
    v = np.asarray(volume, np.float64).reshape(-1)
    if ts.shape != v.shape:
        raise ValueError(f"timestamp and volume must have the same length, got {ts.shape[0]} and {v.shape[0]}")
    if not np.isfinite(v).all() or (v < 0).any():
        raise ValueError("volume: negative or non-finite values")
    t = bars_per_day(frequency_minutes)
    profile = np.ones(t)
    if ts.size == 0:
        return profile
    day = np.floor_divide(ts, SECONDS_PER_DAY)
    days, inv = np.unique(day, return_inverse=True)
    day_mean = np.bincount(inv, weights=v) / np.bincount(inv)
    ok = day_mean[inv] > 0
    rel = v[ok] / day_mean[inv][ok]
    tob = time_of_bar(ts[ok], frequency_minutes)
    count = np.bincount(tob, minlength=t)
    total = np.bincount(tob, weights=rel, minlength=t)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0)


def volume_curve_schedule(profile, first_time_of_bar, n_ahead: int) -> np.ndarray:
    """The volume-curve VWAP schedule [B, N]: the profile over the order's N execution bars (time-of-bar
    first_time_of_bar + 0..N-1, wrapping over midnight), normalised to sum to 1 (TWAP where it is all 0)."""
    p = np.asarray(profile, np.float64).reshape(-1)
    first = np.asarray(first_time_of_bar, np.int64).reshape(-1)
    idx = np.mod(first[:, None] + np.arange(int(n_ahead))[None, :], p.size)
    w = np.clip(p[idx], 0.0, None)
    tot = w.sum(axis=1, keepdims=True)
    return np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 1.0 / n_ahead)
