"""The TFMA EvalConfig of the pipeline: slippage statistics, slices and the blessing thresholds.

Blessing rules (overall slice; from `pipeline.configs.EvaluationConfig`):
  - `nonfinite_count <= max_nonfinite` (default 0: every slippage statistic finite, every allocation finite);
  - `match_vwap_std_ratio <= max_match_std_ratio` (default 1: the match-VWAP head's slippage std is not above
    TWAP-volume's);
  - champion/challenger (only when a blessed model exists; TFX drops change thresholds otherwise):
    `match_vwap_std_bps` may not exceed the champion's by more than `champion_max_std_increase_bps`.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import tensorflow_model_analysis as tfma

from components.evaluator.metrics import LemSlippage

CANDIDATE, BASELINE = "candidate", "baseline"
SIGNATURE = "serve_tf_examples"
PREDICTION_KEY = "allocations"
# A NaN metric fails any bound (TFMA checks lower <= value <= upper), so a bound also enforces "finite".


def build_eval_config(*, n_ahead: int, lookback: int, norm_window: int, max_nonfinite: int,
                      max_match_std_ratio: float, champion_max_std_increase_bps: Optional[float],
                      slice_features: Sequence[str] = ("asset", "frequency_minutes")) -> tfma.EvalConfig:
    """EvalConfig for the candidate (and, when TFX resolves one, the latest blessed baseline) model."""
    model_specs = [tfma.ModelSpec(name=CANDIDATE, signature_name=SIGNATURE, prediction_key=PREDICTION_KEY)]
    # Every slice: all statistics and allocations finite.
    thresholds = {"nonfinite_count": tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
        upper_bound={"value": float(max_nonfinite)}))}
    # Overall slice only: risk of the match-VWAP head vs TWAP-volume, and champion/challenger.
    overall = {"match_vwap_std_ratio": tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
        upper_bound={"value": float(max_match_std_ratio)}))}
    if champion_max_std_increase_bps is not None:
        model_specs.append(tfma.ModelSpec(name=BASELINE, signature_name=SIGNATURE, prediction_key=PREDICTION_KEY,
                                          is_baseline=True))
        overall["match_vwap_std_bps"] = tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.0}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.LOWER_IS_BETTER,
                absolute={"value": float(champion_max_std_increase_bps)}))
    per_slice = {name: tfma.PerSliceMetricThresholds(thresholds=[tfma.PerSliceMetricThreshold(
        slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]) for name, threshold in overall.items()}
    metric = tfma.MetricConfig(
        class_name=LemSlippage.__name__, module=LemSlippage.__module__,
        config=json.dumps({"n_ahead": int(n_ahead), "lookback": int(lookback), "norm_window": int(norm_window)}))
    return tfma.EvalConfig(
        model_specs=model_specs,
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[f]) for f in slice_features],
        metrics_specs=[tfma.MetricsSpec(metrics=[metric], thresholds=thresholds, per_slice_thresholds=per_slice)],
    )


def validation_lines(evaluation_uri: str) -> list:
    """Human-readable blessing checks of an Evaluator output: "validation_ok = ..." and one line per failure."""
    try:
        result = tfma.load_validation_result(evaluation_uri)
    except Exception as e:  # noqa: BLE001 - a report line, not a crash
        return [f"validation result unreadable: {e}"]
    lines = [f"validation_ok = {result.validation_ok}"]
    for per_slice in result.metric_validations_per_slice:
        where = ", ".join(f"{k.column}={k.bytes_value.decode() if k.HasField('bytes_value') else k.int64_value}"
                          for k in per_slice.slice_key.single_slice_keys) or "overall"
        for failure in per_slice.failures:
            threshold = failure.metric_threshold
            bound = (f"<= {threshold.value_threshold.upper_bound.value:g}"
                     if threshold.value_threshold.HasField("upper_bound") else
                     f">= {threshold.value_threshold.lower_bound.value:g}"
                     if threshold.value_threshold.HasField("lower_bound") else
                     f"change {threshold.change_threshold.absolute.value:g} vs the champion")
            value = failure.metric_value.double_value.value if failure.HasField("metric_value") else float("nan")
            name = failure.metric_key.name + (" (change vs champion)" if failure.metric_key.is_diff else "")
            lines.append(f"FAILED [{where}] {name} = {value:.4g}, required {bound}"
                         + (f" ({failure.message})" if failure.message else ""))
    return lines
