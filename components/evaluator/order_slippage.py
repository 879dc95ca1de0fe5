"""Raw order windows + model allocations -> slippage (bps) of every head and of the baseline schedules.

Glue only: labels come from the ONE feature builder (`lem_model.features`), slippage from the ONE evaluator
(`lem_model.slippage`), baseline schedules from `lem_model.baselines`. Shared by the TFMA metric
(`components.evaluator.metrics`) and the report (`components.report`), so both show the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lem_model import baselines, layout, slippage

#: Baseline series: name -> (schedule, benchmark, target). Schedules: "twap" (1/N per bar) and "vwap_curve" (the
#: historical volume-curve VWAP schedule of `lem_model.baselines.volume_curve_schedule`, profile estimated on the
#: training split: `components.evaluator.vwap_curve`). Both complete at bar N, so their window is all N bars.
BASELINES = {
    "twap_volume_vs_vwap": ("twap", "vwap", "volume"),
    "twap_notional_vs_vwap": ("twap", "vwap", "notional"),
    "twap_volume_vs_twap": ("twap", "twap", "volume"),
    "twap_notional_vs_twap": ("twap", "twap", "notional"),
    "vwap_curve_volume_vs_vwap": ("vwap_curve", "vwap", "volume"),
    "vwap_curve_notional_vs_vwap": ("vwap_curve", "vwap", "notional"),
    "vwap_curve_volume_vs_twap": ("vwap_curve", "twap", "volume"),
    "vwap_curve_notional_vs_twap": ("vwap_curve", "twap", "notional"),
}
#: Row labels of the baselines (the report's tables and legends).
BASELINE_LABELS = {name: ("TWAP" if sched == "twap" else "VWAP curve") + f" ({target})"
                   for name, (sched, _, target) in BASELINES.items()}
#: The feature of an evaluation example that carries its volume-curve schedule [N] (written by the
#: `VwapCurveBaseline` component from the training split's profile).
VWAP_CURVE_FEATURE = "vwap_curve_schedule"


@dataclass
class OrderSlippage:
    """lem_bps: [B, N+1, 4, 2] slippage of every head/path/target (NaN where undefined);
    baseline_bps: name -> [B] (see `BASELINES`); labels: [B, N, 2] (volume, VWAP of the execution bars)."""
    lem_bps: np.ndarray
    baseline_bps: dict
    labels: np.ndarray


def labels_from_raw(volume, quote_volume, timestamp, frequency_minutes, *, norm_window: int, lookback: int,
                    n_ahead: int) -> np.ndarray:
    """[B, W+L+N] raw bars -> labels [B, N, 2] through `lem_model.features.build_features_numpy`."""
    from lem_model.features import build_features_numpy  # Keras import only when used
    volume = np.asarray(volume, np.float32)
    expected = norm_window + lookback + n_ahead
    if volume.ndim != 2 or volume.shape[1] != expected:
        raise ValueError(f"volume must have shape [B, W+L+N = {expected}], got {volume.shape}")
    out = build_features_numpy(volume, quote_volume, timestamp, np.reshape(frequency_minutes, (-1,)),
                               norm_window=norm_window, lookback=lookback, n_ahead=n_ahead)
    return out["labels"]


def baseline_slippage(labels, vwap_curve=None) -> dict:
    """Slippage (bps, [B]) of every baseline of `BASELINES` against VWAP and TWAP, by the ONE evaluator.

    vwap_curve: [B, N] volume-curve schedules of the same orders; None leaves the "vwap_curve_*" series out."""
    labels = np.asarray(labels, np.float64)
    b, n = labels.shape[:2]
    schedules = {"twap": baselines.twap_schedule(b, n)}
    if vwap_curve is not None:
        curve = np.asarray(vwap_curve, np.float64).reshape(b, -1)
        if curve.shape != (b, n):
            raise ValueError(f"{VWAP_CURVE_FEATURE} must have shape [B, N] = {(b, n)}, got {curve.shape}")
        schedules["vwap_curve"] = curve
    vol, price = labels[..., layout.LABEL_VOLUME], labels[..., layout.LABEL_VWAP]
    return {name: slippage.slippage(schedules[sched], vol, price, n, "buy", bench, target).bps
            for name, (sched, bench, target) in BASELINES.items() if sched in schedules}


def twap_baselines(labels) -> dict:
    """Slippage (bps, [B]) of the TWAP-volume and TWAP-notional schedules against VWAP and TWAP."""
    return baseline_slippage(labels)


def order_slippage(allocations, labels, vwap_curve=None) -> OrderSlippage:
    """Allocations [B, N, N+1, 4, 2], labels [B, N, 2] and (optional) volume-curve schedules [B, N] ->
    `OrderSlippage`."""
    labels = np.asarray(labels, np.float64)
    return OrderSlippage(lem_bps=slippage.evaluate_allocations(allocations, labels),
                         baseline_bps=baseline_slippage(labels, vwap_curve), labels=labels)


def head_name(m: int, n_ahead: int) -> str:
    """Metric-name part of head `m`: "min01".."minNN" (minimum period m+1 bars) or "match"."""
    return "match" if m == n_ahead else f"min{layout.min_period_of_index(m, n_ahead):02d}"


def match_std_ratio(lem_bps, baseline_bps: dict) -> float:
    """max over sides of std(match-VWAP head, volume target) / std(TWAP volume vs VWAP) (NaN if undefined).

    The blessing rule "the match-VWAP head's slippage std is not above TWAP-volume's" is ratio <= 1."""
    lem_bps = np.asarray(lem_bps)
    n = lem_bps.shape[1] - 1
    t = layout.target_index("volume")
    twap_std = slippage.table_statistics(baseline_bps["twap_volume_vs_vwap"])["std"]
    stds = [slippage.table_statistics(lem_bps[:, n, layout.path_index(side, "vwap"), t])["std"]
            for side in layout.SIDES]
    if not np.isfinite(twap_std) or twap_std <= 0 or not np.all(np.isfinite(stds)):
        return float("nan")
    return float(max(stds) / twap_std)
