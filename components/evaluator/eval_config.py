"""The TFMA EvalConfig of the pipeline: slippage statistics, slices and the blessing thresholds.

Blessing rules (from `components.evaluator.config.EvaluationConfig`; the gate itself is
`components.evaluator.gate`, ONE definition, run inside the metric `components.evaluator.metrics.LemSlippage`),
checked by TFMA's own per-slice thresholds (`MetricsSpec.per_slice_thresholds`) on EVERY reported slice: overall,
each asset, each frequency and each asset x frequency (`slicing_specs`); a slice with fewer than
`min_slice_orders` orders is reported, not gated (its `gate/*` metrics are 0 there; see
`components.evaluator.metrics`):
  - `gate/failures <= 0`: no check of the gate fails (the model is not significantly worse than TWAP (volume):
    std ratios of the match-VWAP and minimum-period-N heads, minimum-period-1 mean, non-finite values);
  - `gate/nonfinite_count <= max_nonfinite` (default 0: every slippage statistic finite, every allocation finite);
  - overall slice only: `gate/overall_match_std_ratio_hi < 1` (upper bound: the largest double below 1), the
    match-VWAP std ratio's interval lies entirely below 1 on both sides: significantly better than TWAP (0, so
    not applied, when the whole split has fewer than `min_slice_orders` orders: too few to show anything);
  - champion/challenger (`compare_with_champion`; when TFX resolves a blessed baseline model):
    `gate/champion_failures <= 0`: the challenger's match-VWAP std / the champion's, paired on the same orders
    (the candidate's combiner reads the baseline model's predictions of the same example), is neither
    significantly above 1 nor above 1 + margin. Without a champion the metric is 0.
A NaN metric fails any bound (TFMA checks lower <= value <= upper), so a bound also enforces "finite".
"""
from __future__ import annotations

import json
import math
from typing import Optional, Sequence

import tensorflow_model_analysis as tfma

from components.evaluator import gate
from components.evaluator.config import EvaluationConfig
from components.evaluator.metrics import CHECKS, LemSlippage
from lem_model import layout

CANDIDATE, BASELINE = "candidate", "baseline"
SIGNATURE = "serve_tf_examples"
PREDICTION_KEY = "allocations"
#: "hi < 1" as TFMA's "value <= upper_bound": the largest double below 1.
BELOW_ONE = math.nextafter(1.0, 0.0)


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
    model_specs = [tfma.ModelSpec(name=CANDIDATE, signature_name=SIGNATURE, prediction_key=PREDICTION_KEY)]
    specs = slicing_specs(evaluation.slice_features)
    upper = lambda v: tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(  # noqa: E731
        upper_bound={"value": float(v)}))
    every = {"gate/nonfinite_count": upper(evaluation.max_nonfinite), "gate/failures": upper(0)}
    if evaluation.compare_with_champion:
        model_specs.append(tfma.ModelSpec(name=BASELINE, signature_name=SIGNATURE, prediction_key=PREDICTION_KEY,
                                          is_baseline=True))
        every["gate/champion_failures"] = upper(0)
    per_slice = {name: tfma.PerSliceMetricThresholds(thresholds=[tfma.PerSliceMetricThreshold(
        slicing_specs=specs, threshold=threshold)]) for name, threshold in every.items()}
    per_slice["gate/overall_match_std_ratio_hi"] = tfma.PerSliceMetricThresholds(thresholds=[
        tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=upper(BELOW_ONE))])
    metric = tfma.MetricConfig(
        class_name=LemSlippage.__name__, module=LemSlippage.__module__,
        config=json.dumps({"n_ahead": int(n_ahead), "lookback": int(lookback), "norm_window": int(norm_window),
                           "min_slice_orders": int(evaluation.min_slice_orders),
                           "level": float(evaluation.interval_level),
                           "margin": float(evaluation.max_std_ratio_margin),
                           "max_nonfinite": int(evaluation.max_nonfinite)}))
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


def _tfma_failures(evaluation_uri: str) -> Optional[dict]:
    """slice name -> [(metric name, is_diff, value)] of the TFMA validation result; None when unreadable."""
    try:
        result = tfma.load_validation_result(evaluation_uri)
    except Exception:  # noqa: BLE001 - no validation result: derived from the metrics instead
        return None
    return {slice_name(per_slice.slice_key): [(f.metric_key.name, f.metric_key.is_diff,
                                               f.metric_value.double_value.value) for f in per_slice.failures]
            for per_slice in result.metric_validations_per_slice}


def _checks(m: dict, names) -> list:
    """The gate's checks of one slice from its metrics (verdicts as the gate decided them in the metric)."""
    out = []
    margin = m.get("gate_config/max_std_ratio_margin", float("nan"))
    for head, side, figure, name in names:
        if name not in m:
            continue
        value, lo, hi = m[name], m.get(f"{name}/lo", float("nan")), m.get(f"{name}/hi", float("nan"))
        verdict = gate.FAIL if m.get(f"{name}/fail", 0.0) else gate.PASS
        reason = (gate.mean_verdict(side, value, lo, hi)[1] if figure == "mean_diff_bps" else
                  gate.std_ratio_verdict(value, lo, hi, margin)[1] if figure.startswith("std_ratio") else
                  "more than the allowed number")
        out.append({"head": head, "side": side, "figure": figure, "value": value, "lo": lo, "hi": hi,
                    "verdict": verdict, "reason": reason if verdict == gate.FAIL else ""})
    return out


def gate_rows(evaluation_uri: str) -> tuple:
    """(gate rows, champion rows) of an Evaluator output.

    Gate rows, one per reported slice: slice, orders, gated, the match-VWAP std ratio vs TWAP (volume) of the
    worse side with its interval (ratio, lo, hi), nonfinite, better (the overall criterion on this slice),
    level, margin, checks (the gate's checks: head, side, figure, value, lo, hi, verdict "pass"|"FAIL", as
    `components.evaluator.gate` decided them inside the metric), champion_checks (same, vs the champion; empty
    without one) and result: "pass", "reported, not gated" or "FAILED: ..." (the TFMA validation's failures of
    that slice, explained). Champion rows, per slice and side where a champion was compared: slice, side,
    metric, challenger and champion (match-VWAP std, bps), ratio, lo, hi, verdict."""
    return rows_from_metrics(slice_metrics(evaluation_uri, CANDIDATE), slice_metrics(evaluation_uri, BASELINE),
                             _tfma_failures(evaluation_uri))


def rows_from_metrics(cand: dict, base: dict, tfma_fails: Optional[dict] = None) -> tuple:
    """`gate_rows` from slice name -> {metric: value} of the candidate and the baseline (champion) model and the
    TFMA validation failures (slice name -> [(metric name, is_diff, value)]; None = unknown: derived from the
    gate's verdicts in the metrics)."""
    order = sorted(cand, key=lambda k: (k != "overall", k.count("="), k))
    check_names = [(h, side, fig, f"check/{h}/{side}/{fig}") for h, side, fig in CHECKS]
    champion_names = [("match", side, "std_ratio_vs_champion", f"champion/{side}/std_ratio") for side in layout.SIDES]
    gates, champion = [], []
    for where in order:
        m = cand[where]
        if "order_count" not in m:
            continue
        gated = bool(m.get("gated", 1.0))
        checks = _checks(m, check_names)
        champion_checks = [c for c in _checks(m, champion_names) if math.isfinite(c["value"])]
        hi = m.get("gate/overall_match_std_ratio_hi", float("nan"))
        failed = []
        failures = (tfma_fails.get(where, []) if tfma_fails is not None else
                    ([("gate/failures", False, 1.0)] if gated and any(c["verdict"] == gate.FAIL for c in checks)
                     else []) + ([("gate/overall_match_std_ratio_hi", False, hi)]
                                 if where == "overall" and gated and not m.get("gate/better", 0.0) else []))
        for name, is_diff, value in failures:
            if name == "gate/failures":
                failed += [gate.check_label(c) for c in checks if c["verdict"] == gate.FAIL]
            elif name == "gate/champion_failures":
                failed += ["vs champion: " + gate.check_label(c) for c in champion_checks if c["verdict"] == gate.FAIL]
            elif name == "gate/overall_match_std_ratio_hi":
                failed.append(f"not significantly better than TWAP (volume): match std ratio interval reaches "
                              f"{value:.3f} (needs < 1 on both sides)")
            else:
                failed.append(f"{name.replace('gate/', '')}{' (change vs champion)' if is_diff else ''} = {value:.4g}")
        result = ("FAILED: " + "; ".join(failed)) if failed else ("pass" if gated else "reported, not gated")
        gates.append({"slice": where, "orders": int(m["order_count"]), "gated": gated,
                      "ratio": m.get("match_vwap_std_ratio", float("nan")),
                      "lo": m.get("match_vwap_std_ratio/lo", float("nan")),
                      "hi": m.get("match_vwap_std_ratio/hi", float("nan")),
                      "nonfinite": int(m.get("gate/nonfinite_count", m.get("nonfinite_count", 0))),
                      "better": bool(m.get("gate/better", 0.0)),
                      "level": m.get("gate_config/interval_level", float("nan")),
                      "margin": m.get("gate_config/max_std_ratio_margin", float("nan")),
                      "checks": checks, "champion_checks": champion_checks, "result": result})
        for c in champion_checks:
            key = f"slippage/{c['side']}_vwap/volume/match/std"
            champion.append({"slice": where, "side": c["side"], "metric": f"match_vwap_std_bps ({c['side']})",
                             "challenger": m.get(key, float("nan")),
                             "champion": base.get(where, {}).get(key, float("nan")),
                             "ratio": c["value"], "lo": c["lo"], "hi": c["hi"], "verdict": c["verdict"],
                             "gated": gated})
    return gates, champion


_FIGURE_TEXT = {"std_ratio": "std ratio vs TWAP", "mean_diff_bps": "mean - TWAP (bps)",
                "std_ratio_vs_champion": "std ratio vs champion"}


def _sides(checks) -> str:
    fmt = lambda c, v: f"{v:+.2f}" if c["figure"] == "mean_diff_bps" else f"{v:.3f}"  # noqa: E731
    return "   ".join(f"{c['side']} {fmt(c, c['value'])} [{fmt(c, c['lo'])}, {fmt(c, c['hi'])}] {c['verdict']}"
                       for c in checks)


def gate_lines(gates: Sequence[dict]) -> list:
    """The printed gate (`gate_summary_lines`) from `gate_rows`' gate rows: per gated slice one line per head
    (match, min_n, min_1, and the champion where compared) with the figure of each side, its interval and the
    verdict; the overall criterion; one line per slice that is reported, not gated."""
    gated = [g for g in gates if g["gated"]]
    level = next((g["level"] for g in gates if math.isfinite(g.get("level", float("nan")))), float("nan"))
    margin = next((g["margin"] for g in gates if math.isfinite(g.get("margin", float("nan")))), float("nan"))
    lines = [f"{len(gated)} of {len(gates)} slices gated. LEM vs TWAP (volume) on the same orders, {level:.0%} "
             f"block-bootstrap intervals; FAIL = significantly worse (interval beyond 1, or 0 for the mean) or a std "
             f"ratio above {1 + margin:g}:"]
    for g in gates:
        where = f"{g['slice']} ({g['orders']} orders)"
        if not g["gated"]:
            lines.append(f"  {where:44s} reported, not gated: match std ratio {g['ratio']:.3f} "
                         f"[{g['lo']:.3f}, {g['hi']:.3f}]" + (f"  {g['result']}" if g["result"].startswith("FAILED")
                                                              else ""))
            continue
        by_head = {}
        for c in g["checks"] + [dict(c, head="champion") for c in g.get("champion_checks", [])]:
            by_head.setdefault(c["head"], []).append(c)
        for head, checks in by_head.items():
            if head == "all":
                if any(c["verdict"] == gate.FAIL for c in checks):
                    lines.append(f"  {where:44s} {gate.check_label(checks[0])}")
                continue
            lines.append(f"  {where:44s} {head:8s} {_FIGURE_TEXT[checks[0]['figure']]:21s} {_sides(checks)}")
    overall = next((g for g in gates if g["slice"] == "overall"), None)
    if overall is not None and not overall["gated"]:
        lines.append("  overall not gated (fewer orders than evaluation.min_slice_orders): the criterion "
                     "'significantly better than TWAP (volume)' is not applied")
    elif overall is not None:
        match = [c for c in overall["checks"] if c["head"] == "match"]
        his = ", ".join(f"{c['side']} {c['hi']:.3f}" for c in match)
        lines.append(f"  overall significantly better than TWAP (volume) (match std ratio interval below 1 on both "
                     f"sides; upper bounds {his}): {'yes' if overall['better'] else 'NO'}")
    failed = [g for g in gates if g["result"].startswith("FAILED")]
    for g in failed:
        lines.append(f"  {g['slice']}: {g['result']}")
    return lines


def gate_summary_lines(evaluation_uri: str) -> list:
    """The gate of an Evaluator output as printed lines (`gate_lines`)."""
    try:
        gates, _ = gate_rows(evaluation_uri)
    except Exception as e:  # noqa: BLE001 - a report line, not a crash
        return [f"slice results unreadable: {e}"]
    return gate_lines(gates)


def validation_lines(evaluation_uri: str) -> list:
    """Human-readable blessing checks of an Evaluator output: "validation_ok = ..." and one line per failure,
    e.g. "FAILED [frequency_minutes=15] failures = 1, required <= 0 (1078 orders)".
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
            upper = threshold.value_threshold.upper_bound.value
            bound = (("< 1" if upper == BELOW_ONE else f"<= {upper:g}")
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
