"""Causal outlier bars of one (asset, frequency) series: robust scores against the trailing distribution.

For bar `t` of a series on its bar grid (the resampled bars, before the missing-bar rule), two scores use
only bars BEFORE `t` (the `window` previous bars present in the series, at least `window // 2` of them with
a value):

  * **volume**: `x_t = log(volume_t)` (bars with volume > 0) against the median and the interquartile range
    of `x` over the previous `window` bars: `z = (x_t - median) / max(IQR / 1.349, 0.05)`. Only upward spikes
    are outliers (a quiet bar is not an error); a bar is flagged when `z > volume_z`.
  * **VWAP return**: `r_t = log(vwap_t / vwap_p)`, `vwap = quote_volume / volume`, `p` the last priced bar
    before `t`, against the median and IQR of `r` over the previous `window` bars (scale floored at 1e-5, a
    tenth of a basis point); flagged when `|z| > return_z`. A bar right after a flagged VWAP bar is scored
    again against the bar before the flagged one (a single wrong bar makes two large returns; only the
    wrong bar is flagged). The first bar after a series break (`breaks`: the ExampleGen passes the bars
    that follow a gap longer than `max_gap_bars`, where the series splits into segments no window crosses)
    has no VWAP return: its "return" would span the gap (weeks or months in patchy coverage such as the
    freqtrade caches of `/work/shared/data`, where it flagged 14 first bars after a hole at 15 minutes).

`detect(...)` returns the flags (boolean per bar, per score); the ExampleGen counts them
(`bars_outlier_volume`, `bars_outlier_vwap_return`, `bars_outlier`, per frequency `..._<f>m`) and, by the
config's `outliers` mode, stops the run at its report check ("flag"), drops the bars (they become missing
bars of the missing-bar rule, "drop") or skips detection ("off"). Causality: the flag of bar `t` never depends
on any bar after `t` (perturbing a later bar leaves earlier flags unchanged; tested).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

OUTLIER_MODES = ("flag", "drop", "off")
_IQR_TO_SIGMA = 1.349
_VOLUME_SCALE_FLOOR = 0.05   # log units: a trailing series of identical volumes still needs a 5 % scale
_RETURN_SCALE_FLOOR = 1e-5   # log return: 0.1 basis point


@dataclasses.dataclass
class OutlierFlags:
    """Per bar of the scored series: `volume` / `vwap_return` flags and their robust scores (NaN: unscored)."""
    volume: np.ndarray
    vwap_return: np.ndarray
    volume_z: np.ndarray
    return_z: np.ndarray

    @property
    def any(self) -> np.ndarray:
        return self.volume | self.vwap_return


def _trailing(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQR of the previous `window` values (NaN ignored; NaN with fewer than `window // 2`)."""
    prev = pd.Series(x).shift(1).rolling(window, min_periods=max(2, window // 2))
    return (prev.median().to_numpy(), (prev.quantile(0.75) - prev.quantile(0.25)).to_numpy())


def detect(volume: np.ndarray, quote_volume: np.ndarray, *, window: int, volume_z: float, return_z: float,
           breaks: np.ndarray | None = None) -> OutlierFlags:
    """Outlier flags of one series' bars (consecutive entries = consecutive bars present); see module doc.
    `breaks`: optional bool per bar, True for the first bar after a series break (no VWAP return)."""
    if window < 4:
        raise ValueError(f"outlier_window must be >= 4 bars, got {window}")
    if not (volume_z > 0 and return_z > 0):
        raise ValueError(f"outlier thresholds must be > 0, got volume_z={volume_z}, return_z={return_z}")
    v = np.asarray(volume, np.float64)
    q = np.asarray(quote_volume, np.float64)
    n = len(v)
    traded = np.isfinite(v) & (v > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.where(traded, np.log(np.where(traded, v, 1.0)), np.nan)
        priced = traded & np.isfinite(q) & (q > 0)
        lp = np.where(priced, np.log(np.where(priced, q, 1.0)) - np.where(priced, lv, 0.0), np.nan)
    med, iqr = _trailing(lv, window)
    vol_z = (lv - med) / np.maximum(iqr / _IQR_TO_SIGMA, _VOLUME_SCALE_FLOOR)
    vol_flag = np.nan_to_num(vol_z, nan=-np.inf) > volume_z

    # Log VWAP return against the last priced bar before t (forward fill of the previous priced bar).
    pos = np.where(priced, np.arange(n), -1)
    last = np.maximum.accumulate(pos) if n else pos
    prev_idx = np.concatenate([[-1], last[:-1]]) if n else last
    r = np.full(n, np.nan)
    ok = priced & (prev_idx >= 0)
    if breaks is not None:  # no return across a break: from the first bar after it to its last priced bar
        run = np.cumsum(np.asarray(breaks, bool).reshape(n))
        ok &= run == run[np.maximum(prev_idx, 0)]
    r[ok] = lp[ok] - lp[prev_idx[ok]]
    r_med, r_iqr = _trailing(r, window)
    r_scale = np.maximum(r_iqr / _IQR_TO_SIGMA, _RETURN_SCALE_FLOOR)
    ret_z = (r - r_med) / r_scale
    ret_flag = np.abs(np.nan_to_num(ret_z, nan=0.0)) > return_z
    # The bar after a flagged VWAP: scored against the bar before the flagged one (the flagged bar skipped).
    for t in np.flatnonzero(ret_flag):
        nxt = t + 1
        while nxt < n and not priced[nxt]:
            nxt += 1
        if nxt >= n or not ret_flag[nxt] or prev_idx[t] < 0:
            continue
        z2 = (lp[nxt] - lp[prev_idx[t]] - r_med[nxt]) / r_scale[nxt]
        if np.isfinite(z2) and abs(z2) <= return_z:
            ret_flag[nxt] = False
    return OutlierFlags(volume=vol_flag, vwap_return=ret_flag, volume_z=vol_z, return_z=ret_z)
