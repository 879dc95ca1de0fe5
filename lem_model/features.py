"""The ONE feature builder: raw order-window bars -> model `bars` and loss `labels` (docs/example-contract.md).

Written in `keras.ops` only, so the same code runs on NumPy arrays (demo, benchmarks, tests; TensorFlow
backend, outputs are backend tensors: use `build_features_numpy` for NumPy outputs) and inside the TensorFlow
Transform graph (`components/transform/preprocessing.py` calls `build_features`), which the Trainer embeds in
the SavedModel that serving and backfill load.

Window layout (sizes in bars of the example's own frequency): `T = W + L + N` bars,

    index:  0 ........ W-1 | W ........ W+L-1 | o=W+L ........ o+N-1
            normalisation  |  lookback        |  execution bars

Outputs: `bars` float32 `[B, L+N, F]` (rows = bars `W .. T-1`, columns `BAR_FEATURE_NAMES`) and `labels`
float32 `[B, N, 2]` (execution bars: volume / volume normaliser, VWAP / VWAP of bar `o-1`).

What is computed, precisely
---------------------------
* Clean inputs: a non-finite or negative volume / quote volume counts as 0. A bar is *priced* when its volume
  and quote volume are both > 0; its VWAP is `quote_volume / volume`.
* Forward fill (no look-ahead): an unpriced bar carries the VWAP of the last priced bar before it. Bars before
  the example's first priced bar take that bar's VWAP when it lies in bars `0..o-1`; when no bar of `0..o-1`
  is priced the price before the first priced bar is the placeholder 1.0 (outputs stay finite but carry no
  information: the ExampleGen drops such examples and counts them). Implemented without `cummax` (which
  `keras.ops` lacks): `cumsum` of the priced flags gives, for each bar, the rank of the last priced bar; a
  stable `argsort` compacts the priced bars' VWAPs in time order; `take_along_axis` reads them back.
* Volume normaliser: mean volume of bars `0..W-1` (falls back to the mean of bars `0..o-1`, then to 1.0,
  when that is 0). The paper (§3.3) divides by "a rolling window of 336 data points shifted by the sum of
  lookback and prediction horizon lengths", i.e. the mean of the 336 bars that end where the lookback
  starts: with W = 336 our normaliser is exactly that mean, computed from the example's own first W bars
  (one normaliser per example, shared by its lookback and execution bars, instead of one per bar; no
  full-pass statistic and nothing from other examples).
* Price reference: the (filled) VWAP of bar `o-1`, the last bar before the first execution bar.
* Return scale `sigma`: standard deviation of the one-bar log VWAP returns inside bars `0..W-1`
  (`sqrt(var + 1e-12)`, so a constant price gives finite features).
* Calendar: bar open time (Unix seconds UTC) -> time of day, day of week (Monday = 0; 1970-01-01 was a
  Thursday) and month of year (proleptic Gregorian calendar, integer arithmetic), each as a sin/cos pair.
  All three pairs exist for every frequency (daily bars have time of day 00:00), so one model spans
  frequencies; the paper uses hour/day-of-week intraday and day-of-week/month for daily bars.
* Frequency: `log(frequency_minutes) / log(1440)` (0 for 1-minute bars, 1 for daily bars).

Causality: every feature of bar `t` depends only on bars `<= t` and on bars `< o` (normaliser, price
reference, `sigma`), so a model that reads rows `< L + k` for step `k` sees only bars `< o + k`.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

#: The `log_frequency` feature is log(frequency_minutes) / log(FREQUENCY_SCALE_MINUTES): 1 for daily bars.
FREQUENCY_SCALE_MINUTES = 1440
#: Columns of `bars[..., j]`.
BAR_FEATURE_NAMES = (
    "volume",            # bar volume / volume normaliser
    "log_volume",        # log1p(volume / volume normaliser)
    "unpriced",          # 1.0 when the bar had no trade (zero volume or quote volume): price forward-filled
    "vwap_return",       # log(VWAP_t / VWAP_{t-1}) / sigma
    "log_vwap_rel",      # log(VWAP_t / VWAP_{o-1}) / sigma
    "time_of_day_sin",
    "time_of_day_cos",
    "day_of_week_sin",
    "day_of_week_cos",
    "month_sin",
    "month_cos",
    "log_frequency",     # log(frequency_minutes) / log(1440)
)
NUM_BAR_FEATURES = len(BAR_FEATURE_NAMES)
#: Column of the linear `volume` feature (bounded by `LargeExecutionModel(volume_clip=)`).
VOLUME_COLUMN = BAR_FEATURE_NAMES.index("volume")
#: Label columns (same as `lem_model.layout.LABEL_VOLUME`, `LABEL_VWAP`).
LABEL_NAMES = ("volume", "vwap")

_SECONDS_PER_DAY = 86400
_RETURN_VAR_EPS = 1e-12


def window_length(norm_window: int, lookback: int, n_ahead: int) -> int:
    """Bars per example, `W + L + N`."""
    return norm_window + lookback + n_ahead


def _check_sizes(norm_window: int, lookback: int, n_ahead: int) -> None:
    if norm_window < 2:
        raise ValueError(f"norm_window must be >= 2 (return scale needs a return), got {norm_window}")
    if lookback < 1:
        raise ValueError(f"lookback must be >= 1, got {lookback}")
    if n_ahead < 1:
        raise ValueError(f"n_ahead must be >= 1, got {n_ahead}")


def _month_of_year(days):
    """Month 1..12 of integer days since 1970-01-01 (civil-from-days, proleptic Gregorian; int64)."""
    z = days + 719468
    era = ops.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = ops.floor_divide(
        doe - ops.floor_divide(doe, 1460) + ops.floor_divide(doe, 36524) - ops.floor_divide(doe, 146096), 365)
    doy = doe - (365 * yoe + ops.floor_divide(yoe, 4) - ops.floor_divide(yoe, 100))
    mp = ops.floor_divide(5 * doy + 2, 153)
    return ops.where(mp < 10, mp + 3, mp - 9)


def calendar_features(timestamp):
    """Sin/cos encodings of time of day, day of week and month: `[B, T]` int64 seconds -> 6 x `[B, T]`."""
    ts = ops.cast(timestamp, "int64")
    days = ops.floor_divide(ts, _SECONDS_PER_DAY)
    tod = ops.cast(ts - days * _SECONDS_PER_DAY, "float32") / float(_SECONDS_PER_DAY)
    dow = ops.cast(ops.mod(days + 3, 7), "float32") / 7.0
    month = ops.cast(_month_of_year(days) - 1, "float32") / 12.0
    two_pi = 2.0 * math.pi
    return [f(two_pi * x) for x in (tod, dow, month) for f in (ops.sin, ops.cos)]


def forward_filled_vwap(volume, quote_volume, first_ref_bar: int):
    """VWAP per bar with forward fill over unpriced bars: `[B, T]` -> (`vwap` `[B, T]`, `priced` `[B, T]` bool).

    Bars before the first priced bar take its VWAP if it lies before `first_ref_bar`, else 1.0.
    """
    volume = ops.cast(volume, "float32")
    quote_volume = ops.cast(quote_volume, "float32")
    v = ops.where(ops.isfinite(volume) & (volume > 0), volume, 0.0)
    q = ops.where(ops.isfinite(quote_volume) & (quote_volume > 0), quote_volume, 0.0)
    priced = (v > 0) & (q > 0)
    raw = ops.where(priced, q / ops.where(priced, v, 1.0), 1.0)
    priced = priced & ops.isfinite(raw)  # q / v can overflow float32
    raw = ops.where(priced, raw, 1.0)
    t = ops.shape(volume)[-1]
    idx = ops.expand_dims(ops.arange(t, dtype="int32"), 0)
    # Priced bars first, in time order: sort keys idx (priced) or idx + T (unpriced), all distinct.
    order = ops.argsort(ops.where(priced, idx, idx + t), axis=-1)
    compact = ops.take_along_axis(raw, order, axis=-1)
    rank = ops.cumsum(ops.cast(priced, "int32"), axis=-1)          # priced bars up to and including t
    filled = ops.take_along_axis(compact, ops.maximum(rank - 1, 0), axis=-1)
    # Before the first priced bar: compact[:, 0] is the first priced bar's VWAP; allowed if it is < first_ref_bar.
    any_early = ops.any(priced[:, :first_ref_bar], axis=-1, keepdims=True)
    before_first = rank == 0
    filled = ops.where(before_first & ~any_early, 1.0, filled)
    return filled, priced


def build_features(volume, quote_volume, timestamp, frequency_minutes, *, norm_window: int, lookback: int,
                   n_ahead: int):
    """Raw bars -> `{"bars": [B, L+N, F] float32, "labels": [B, N, 2] float32}` (see module docstring).

    Args:
      volume, quote_volume: `[B, W+L+N]` base volume and notional per bar.
      timestamp: `[B, W+L+N]` int64 bar open times, Unix seconds UTC.
      frequency_minutes: `[B]` (or `[B, 1]`) bar length in minutes.
      norm_window, lookback, n_ahead: `W`, `L`, `N`.
    """
    _check_sizes(norm_window, lookback, n_ahead)
    w, o = norm_window, norm_window + lookback
    total = o + n_ahead
    if volume.shape[-1] is not None and volume.shape[-1] != total:
        raise ValueError(f"expected {total} = W+L+N bars, got volume with shape {tuple(volume.shape)}")

    vol = ops.cast(volume, "float32")
    vol = ops.where(ops.isfinite(vol) & (vol > 0), vol, 0.0)
    price, priced = forward_filled_vwap(vol, quote_volume, first_ref_bar=o)

    # Volume normaliser: mean of bars 0..W-1, else of bars 0..o-1, else 1.
    norm = ops.mean(vol[:, :w], axis=-1, keepdims=True)
    norm_hist = ops.mean(vol[:, :o], axis=-1, keepdims=True)
    norm = ops.where(norm > 0, norm, ops.where(norm_hist > 0, norm_hist, 1.0))
    vol_rel = vol / norm

    # Logs of price ratios (not differences of log prices): float32-accurate for small moves.
    ret = ops.log(price[:, 1:] / price[:, :-1])                       # [B, T-1], ret[:, j] = bar j+1
    ret_w = ret[:, : w - 1]
    mu = ops.mean(ret_w, axis=-1, keepdims=True)
    sigma = ops.sqrt(ops.mean(ops.square(ret_w - mu), axis=-1, keepdims=True) + _RETURN_VAR_EPS)
    ref = price[:, o - 1: o]

    rows = slice(w, total)
    freq = ops.reshape(ops.cast(frequency_minutes, "float32"), (-1, 1))
    log_freq = ops.log(ops.maximum(freq, 1.0)) / math.log(float(FREQUENCY_SCALE_MINUTES))
    cal = calendar_features(timestamp)
    columns = [
        vol_rel[:, rows],
        ops.log1p(vol_rel[:, rows]),
        1.0 - ops.cast(priced[:, rows], "float32"),
        ret[:, w - 1: total - 1] / sigma,
        ops.log(price[:, rows] / ref) / sigma,
        *[c[:, rows] for c in cal],
        ops.zeros_like(vol_rel[:, rows]) + log_freq,
    ]
    bars = ops.stack(columns, axis=-1)
    labels = ops.stack([vol_rel[:, o:total], price[:, o:total] / ref], axis=-1)
    return {"bars": ops.cast(bars, "float32"), "labels": ops.cast(labels, "float32")}


def frequency_loss_weights(bars, weighting: str, min_frequency: float):
    """Per-example loss weights [B] by bar frequency, read from `bars`' `log_frequency` column (constant over a
    window; `lem_model.presets.FREQUENCY_WEIGHTINGS`): "inverse_sqrt" = sqrt(min_frequency / f), f the example's
    bar length in minutes; "none" = None. The Trainer's and any other training loop's one definition."""
    if weighting == "none":
        return None
    if weighting != "inverse_sqrt":
        raise ValueError(f"training.frequency_weighting must be one of none, inverse_sqrt, got {weighting!r}")
    log_f = bars[:, 0, BAR_FEATURE_NAMES.index("log_frequency")]
    minutes = ops.exp(log_f * math.log(float(FREQUENCY_SCALE_MINUTES)))
    return ops.sqrt(float(min_frequency) / minutes)


def build_features_numpy(volume, quote_volume, timestamp, frequency_minutes, *, norm_window: int,
                         lookback: int, n_ahead: int) -> dict:
    """`build_features` on NumPy inputs with NumPy outputs (convenience for demos, benchmarks, tests)."""
    out = build_features(np.asarray(volume, np.float32), np.asarray(quote_volume, np.float32),
                         np.asarray(timestamp, np.int64), np.asarray(frequency_minutes, np.int64),
                         norm_window=norm_window, lookback=lookback, n_ahead=n_ahead)
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
