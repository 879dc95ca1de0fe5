"""The TFMA EvalConfig of the pipeline: slippage statistics, slices and the blessing thresholds.

Blessing rules (from `components.evaluator.config.EvaluationConfig`), checked by TFMA's own per-slice thresholds
(`MetricsSpec.per_slice_thresholds`) on EVERY reported slice: overall, each asset, each frequency and each
asset x frequency (`slicing_specs`), but only where the slice has at least `min_slice_orders` orders (a smaller
slice is reported, not gated; see `components.evaluator.metrics` for how the count enters the `gate/*` metrics):
  - `gate/nonfinite_count <= max_nonfinite` (default 0: every slippage statistic finite, every allocation finite);
  - `gate/match_vwap_std_ratio <= max_match_std_ratio` (default 1: the match-VWAP head's slippage std is not
    above TWAP-volume's);
  - champion/challenger (only when a blessed model exists; TFX drops change thresholds otherwise), per slice:
    `gate/match_vwap_std_bps` may not exceed the champion's by more than `champion_max_std_increase_bps`.
A NaN metric fails any bound (TFMA checks lower <= value <= upper), so a bound also enforces "finite".
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import tensorflow_model_analysis as tfma

from components.evaluator.config import EvaluationConfig
from components.evaluator.metrics import LemSlippage

CANDIDATE, BASELINE = "candidate", "baseline"
SIGNATURE = "serve_tf_examples"
PREDICTION_KEY = "allocations"


def slicing_specs(slice_features: Sequence[str]) -> list:
    """Overall, each feature alone and (for two or more features) all of them crossed."""
    features = list(slice_features)
    specs = [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[f]) for f in features]
    if len(features) > 1:
        specs.append(tfma.SlicingSpec(feature_keys=features))
    return specs


def build_eval_config(evaluation: EvaluationConfig, *, n_ahead: int, lookback: int, norm_window: int
                      ) -> tfma.EvalConfig:
    """EvalConfig for the candidate (and, when TFX resolves one, the latest blessed baseline) model: the rules of
    `evaluation` on every slice of its `slice_features`, for examples of N / L / W bars."""
    max_nonfinite, max_match_std_ratio = evaluation.max_nonfinite, evaluation.max_match_std_ratio
    champion_max_std_increase_bps, min_slice_orders = (evaluation.champion_max_std_increase_bps,
                                                       evaluation.min_slice_orders)
    slice_features = evaluation.slice_features
    model_specs = [tfma.ModelSpec(name=CANDIDATE, signature_name=SIGNATURE, prediction_key=PREDICTION_KEY)]
    specs = slicing_specs(slice_features)
    thresholds = {
        "gate/nonfinite_count": tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
            upper_bound={"value": float(max_nonfinite)})),
        "gate/match_vwap_std_ratio": tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
            upper_bound={"value": float(max_match_std_ratio)})),
    }
    if champion_max_std_increase_bps is not None:
        model_specs.append(tfma.ModelSpec(name=BASELINE, signature_name=SIGNATURE, prediction_key=PREDICTION_KEY,
                                          is_baseline=True))
        thresholds["gate/match_vwap_std_bps"] = tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.0}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.LOWER_IS_BETTER,
                absolute={"value": float(champion_max_std_increase_bps)}))
    per_slice = {name: tfma.PerSliceMetricThresholds(thresholds=[tfma.PerSliceMetricThreshold(
        slicing_specs=specs, threshold=threshold)]) for name, threshold in thresholds.items()}
    metric = tfma.MetricConfig(
        class_name=LemSlippage.__name__, module=LemSlippage.__module__,
        config=json.dumps({"n_ahead": int(n_ahead), "lookback": int(lookback), "norm_window": int(norm_window),
                           "min_slice_orders": int(min_slice_orders)}))
    return tfma.EvalConfig(
        model_specs=model_specs,
        slicing_specs=specs,
        metrics_specs=[tfma.MetricsSpec(metrics=[metric], per_slice_thresholds=per_slice)],
    )


def slice_name(slice_key) -> str:
    """'overall' or 'asset=BTCUSDT, frequency_minutes=15' of a serialized (proto) or TFMA (tuple) slice key."""
    if hasattr(slice_key, "single_slice_keys"):
        items = [(k.column, k.bytes_value.decode() if k.HasField("bytes_value") else
                  k.int64_value if k.HasField("int64_value") else k.float_value) for k in slice_key.single_slice_keys]
    else:
        items = [(c, v.decode() if isinstance(v, bytes) else v) for c, v in slice_key]
    return ", ".join(f"{c}={v}" for c, v in items) or "overall"


def slice_metrics(evaluation_uri: str, model_name: str = CANDIDATE) -> dict:
    """slice name -> {metric name: value} of one model's metrics in an Evaluator output (the candidate's keys
    have model_name "" when it is the only model)."""
    names = (model_name, "") if model_name == CANDIDATE else (model_name,)
    out = {}
    for sliced in tfma.load_metrics(evaluation_uri):
        values = {}
        for kv in sliced.metric_keys_and_values:
            if kv.key.model_name not in names or kv.key.is_diff:
                continue
            if kv.value.HasField("double_value"):
                values[kv.key.name] = kv.value.double_value.value
        out[slice_name(sliced.slice_key)] = values
    return out


def gate_rows(evaluation_uri: str) -> tuple:
    """(gate rows, champion rows) of an Evaluator output: per slice its order count, whether it is gated, the
    match-VWAP std ratio vs TWAP (volume) with its interval, non-finite values and the result (the TFMA
    validation's failures of that slice); champion rows where a baseline (champion) model was evaluated."""
    cand = slice_metrics(evaluation_uri, CANDIDATE)
    base = slice_metrics(evaluation_uri, BASELINE)
    fails = {}
    try:
        result = tfma.load_validation_result(evaluation_uri)
        for per_slice in result.metric_validations_per_slice:
            fails[slice_name(per_slice.slice_key)] = [
                f"{f.metric_key.name.replace('gate/', '')}{' (change vs champion)' if f.metric_key.is_diff else ''}"
                f" = {f.metric_value.double_value.value:.4g}" for f in per_slice.failures]
    except Exception:  # noqa: BLE001 - no validation result: results unknown
        pass
    order = sorted(cand, key=lambda k: (k != "overall", k.count("="), k))
    gates, champion = [], []
    for where in order:
        m = cand[where]
        if "order_count" not in m:
            continue
        gated = bool(m.get("gated", 1.0))
        failed = fails.get(where, [])
        result = ("FAILED: " + "; ".join(failed)) if failed else ("pass" if gated else "reported, not gated")
        gates.append({"slice": where, "orders": int(m["order_count"]), "gated": gated,
                      "ratio": m.get("match_vwap_std_ratio", float("nan")),
                      "lo": m.get("match_vwap_std_ratio/lo", float("nan")),
                      "hi": m.get("match_vwap_std_ratio/hi", float("nan")),
                      "nonfinite": int(m.get("gate/nonfinite_count", m.get("nonfinite_count", 0))),
                      "result": result})
        if where in base and "match_vwap_std_bps" in base[where]:
            for metric in ("match_vwap_std_bps", "match_vwap_std_ratio"):
                champion.append({"slice": where, "metric": metric, "challenger": m[metric],
                                 "champion": base[where][metric]})
    return gates, champion


def gate_summary_lines(evaluation_uri: str) -> list:
    """One line per reported slice: orders, gated or not, the match-VWAP std ratio vs TWAP (volume) with its
    95 % interval, and pass / FAILED (what failed) / reported, not gated."""
    try:
        gates, _ = gate_rows(evaluation_uri)
    except Exception as e:  # noqa: BLE001 - a report line, not a crash
        return [f"slice results unreadable: {e}"]
    gated = [g for g in gates if g["gated"]]
    lines = [f"{len(gated)} of {len(gates)} slices gated; match-VWAP std / TWAP (volume) std per slice:"]
    for g in gates:
        lines.append(f"  {g['slice']:40s} {g['orders']:6d} orders  ratio {g['ratio']:.3f} "
                     f"[{g['lo']:.3f}, {g['hi']:.3f}]  {g['result']}")
    return lines


def validation_lines(evaluation_uri: str) -> list:
    """Human-readable blessing checks of an Evaluator output: "validation_ok = ..." and one line per failure,
    e.g. "FAILED [frequency_minutes=15] match_vwap_std_ratio = 1.87, required <= 1 (1078 orders; gated at >= 200)".
    """
    try:
        result = tfma.load_validation_result(evaluation_uri)
    except Exception as e:  # noqa: BLE001 - a report line, not a crash
        return [f"validation result unreadable: {e}"]
    try:
        metrics = slice_metrics(evaluation_uri)
    except Exception:  # noqa: BLE001 - counts are extra detail
        metrics = {}
    lines = [f"validation_ok = {result.validation_ok}"]
    for per_slice in result.metric_validations_per_slice:
        where = slice_name(per_slice.slice_key)
        count = metrics.get(where, {}).get("order_count")
        for failure in per_slice.failures:
            threshold = failure.metric_threshold
            bound = (f"<= {threshold.value_threshold.upper_bound.value:g}"
                     if threshold.value_threshold.HasField("upper_bound") else
                     f">= {threshold.value_threshold.lower_bound.value:g}"
                     if threshold.value_threshold.HasField("lower_bound") else
                     f"change <= {threshold.change_threshold.absolute.value:g} vs the champion")
            value = failure.metric_value.double_value.value if failure.HasField("metric_value") else float("nan")
            name = failure.metric_key.name.replace("gate/", "")
            name += " (change vs champion)" if failure.metric_key.is_diff else ""
            detail = f" ({int(count)} orders)" if count is not None else ""
            lines.append(f"FAILED [{where}] {name} = {value:.4g}, required {bound}{detail}"
                         + (f" ({failure.message.strip()})" if failure.message.strip() else ""))
    return lines
