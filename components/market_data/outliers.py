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

`screen(...)` is the NON-causal complement (issue 36): each bar against the bars on both sides of it, for
corrupted values the trailing scores miss (a one-bar volume and quote spike at the same VWAP, a VWAP moved by
a volume or quote volume altered alone); see its docstring. The ExampleGen counts its flags
`bars_outlier_screen_spike` / `bars_outlier_screen_vwap` (bars the causal scores flag are counted there only)
under the same `outliers` mode.
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


# ------------------------------------------------------------------------------- whole-series screen
#: Bars on each side whose median is a bar's baseline in the screen (`screen`).
SCREEN_SIDE_BARS = 4
#: A bar whose next bar keeps at least this share of its log excess is the onset of a decaying burst.
SCREEN_BURST_KEEP = 0.5


@dataclasses.dataclass
class ScreenFlags:
    """Per bar of the screened series: isolated volume / quote-volume spikes (`spike`) and isolated bar-VWAP
    deviations (`vwap`), with their robust scores (NaN or 0: unscored)."""
    spike: np.ndarray
    vwap: np.ndarray
    spike_z: np.ndarray
    vwap_z: np.ndarray

    @property
    def any(self) -> np.ndarray:
        return self.spike | self.vwap


def _side_median(x: np.ndarray, k: int, before: bool) -> np.ndarray:
    """Median of the `k` values before (after) each position, NaN ignored (NaN where there are none)."""
    s = pd.Series(x if before else x[::-1]).shift(1).rolling(k, min_periods=1).median().to_numpy()
    return s if before else s[::-1]


def _centred_scale(dev: np.ndarray, window: int, floor: float) -> np.ndarray:
    """Robust local scale of `dev`: 1.4826 x the median absolute deviation over `window` bars centred on each
    bar (NaN ignored), floored at `floor`."""
    centre = np.nanmedian(dev) if np.isfinite(dev).any() else 0.0
    mad = pd.Series(np.abs(dev - centre)).rolling(window, center=True, min_periods=min(20, window)).median()
    return np.maximum(np.nan_to_num(1.4826 * mad.to_numpy(), nan=np.inf), floor)


def _isolated_spike(x: np.ndarray, k: int, window: int) -> np.ndarray:
    """Robust z of `x` (log volume or log quote volume, NaN = empty bar) above BOTH the median of the k bars
    before and of the k bars after it (one side at the ends); 0 where the bar after keeps at least
    `SCREEN_BURST_KEEP` of the excess over the bars before (the onset of a burst that decays)."""
    b, a = _side_median(x, k, True), _side_median(x, k, False)
    with np.errstate(invalid="ignore", divide="ignore"):
        iso = np.fmin(x - b, x - a)              # fmin: the side there is at the ends of the series
        base = np.where(np.isfinite(b), b, a)
        nxt = np.concatenate([x[1:], [np.nan]])
        keeps = np.nan_to_num((nxt - base) / (x - base), nan=0.0)
        dev = x - np.where(np.isfinite(a) & np.isfinite(b), (a + b) / 2, base)
        z = iso / _centred_scale(dev, window, _VOLUME_SCALE_FLOOR)
    return np.where(np.isfinite(z) & (keeps < SCREEN_BURST_KEEP), z, 0.0)


def _isolated_level(x: np.ndarray, k: int, window: int, floor: float) -> np.ndarray:
    """Robust z of `x` (log bar VWAP) away from BOTH side medians in the same direction (a bar between two
    levels, e.g. in a crash, is not isolated): min of the two distances, over the local scale; signed."""
    b, a = _side_median(x, k, True), _side_median(x, k, False)
    with np.errstate(invalid="ignore"):
        db, da = x - b, x - a
        db, da = np.where(np.isfinite(db), db, da), np.where(np.isfinite(da), da, db)
        same = np.sign(db) == np.sign(da)
        iso = np.where(same, np.sign(db) * np.minimum(np.abs(db), np.abs(da)), 0.0)
        mid = np.where(np.isfinite(a) & np.isfinite(b), (a + b) / 2, np.where(np.isfinite(b), b, a))
        z = iso / _centred_scale(x - mid, window, floor)
    return np.nan_to_num(z, nan=0.0)


def screen(volume: np.ndarray, quote_volume: np.ndarray, *, window: int, volume_z: float, vwap_z: float,
           breaks: np.ndarray | None = None, side_bars: int = SCREEN_SIDE_BARS) -> ScreenFlags:
    """Whole-series (non-causal) screen of one series' bars for corrupted values.

    Per segment (`breaks`: True for the first bar after a series break; no baseline crosses a break), on log
    volume, log quote volume and log bar VWAP (quote / volume) of the traded bars (empty bars are skipped):
      * **isolated spike** (`spike`): log volume or log quote volume more than `volume_z` robust sigmas above
        BOTH the median of the `side_bars` bars before and that of the `side_bars` bars after it, unless the
        next bar keeps at least half of the excess (in log) over the bars before: a news burst decays over
        several bars (the bar after its onset keeps most of it), a corrupted value or a one-bar spike does
        not. Sigma: 1.4826 x the median absolute deviation of the log values from their two-sided baseline
        over the `4 * window + 1` bars centred on the bar (floored at 0.05).
      * **isolated VWAP** (`vwap`): log VWAP more than `vwap_z` robust sigmas (same scale, floored at 1e-5)
        from BOTH side medians, on the same side: a value whose volume or quote volume alone was altered (a
        flipped byte) moves the VWAP off the price path; a crash moves it from one level to another and is
        not isolated.
    `volume_z` / `vwap_z` <= 0: that score is off. Returns flags and z per bar."""
    v = np.asarray(volume, np.float64)
    q = np.asarray(quote_volume, np.float64)
    n = len(v)
    spike_z, vwap_z_ = np.zeros(n), np.zeros(n)
    traded = np.isfinite(v) & (v > 0) & np.isfinite(q) & (q > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.where(traded, np.log(np.where(traded, v, 1.0)), np.nan)
        lq = np.where(traded, np.log(np.where(traded, q, 1.0)), np.nan)
    seg = np.cumsum(np.asarray(breaks, bool).reshape(n)) if breaks is not None else np.zeros(n, np.int64)
    span = 4 * int(window) + 1
    for s in np.unique(seg):
        idx = np.flatnonzero((seg == s) & traded)  # consecutive traded bars of the segment
        if len(idx) < 3:
            continue
        if volume_z > 0:
            spike_z[idx] = np.maximum(_isolated_spike(lv[idx], side_bars, span),
                                      _isolated_spike(lq[idx], side_bars, span))
        if vwap_z > 0:
            vwap_z_[idx] = _isolated_level(lq[idx] - lv[idx], side_bars, span, _RETURN_SCALE_FLOOR)
    spike = (spike_z > volume_z) if volume_z > 0 else np.zeros(n, bool)
    vwap = (np.abs(vwap_z_) > vwap_z) if vwap_z > 0 else np.zeros(n, bool)
    return ScreenFlags(spike=spike, vwap=vwap, spike_z=spike_z, vwap_z=vwap_z_)
