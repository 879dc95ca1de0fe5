"""The TFMA slippage metric: its combiner equals the ONE evaluator, counts non-finite values, and the
EvalConfig carries the blessing thresholds of the config."""
import json

import numpy as np
import pytest

from components.evaluator import metrics as lem_metrics
from components.evaluator import order_slippage as osl
from components.evaluator.config import EvaluationConfig
from lem_model import layout, slippage

W, L, N = 16, 8, 4
T = W + L + N


def _orders(b, seed=0):
    rng = np.random.default_rng(seed)
    volume = rng.lognormal(0.0, 0.5, (b, T)).astype(np.float32) * 100
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (b, T)), axis=1))
    quote = (volume * price).astype(np.float32)
    timestamp = (1_700_000_000 + 900 * np.arange(T)[None, :] + 900 * T * np.arange(b)[:, None]).astype(np.int64)
    freq = np.full(b, 15, np.int64)
    alloc = rng.random((b, N, N + 1, 4, 2))
    alloc /= alloc.sum(axis=1, keepdims=True)
    curve = rng.random((b, N)) + 0.5
    return alloc, {"volume": volume, "quote_volume": quote, "timestamp": timestamp, "frequency_minutes": freq,
                   osl.VWAP_CURVE_FEATURE: (curve / curve.sum(axis=1, keepdims=True)).astype(np.float32)}


def _bars(raw):
    return {k: v for k, v in raw.items() if k != osl.VWAP_CURVE_FEATURE}


class _Element(dict):
    """The two accessors of tfma StandardMetricInputs the combiner uses."""

    def get_predictions(self, model_name=None, output_name=None):
        return self["predictions"]

    def get_features(self):
        return self["features"]


def _combine(alloc, raw, parts=2):
    keys = {n: n for n in lem_metrics.metric_names(N)}
    comb = lem_metrics._SlippageCombiner(keys, "", "", "allocations", dict(n_ahead=N, lookback=L, norm_window=W))
    accs = []
    for chunk in np.array_split(np.arange(len(alloc)), parts):
        acc = comb.create_accumulator()
        for i in chunk:  # TFMA feeds one order per element
            acc = comb.add_input(acc, _Element(predictions={"allocations": alloc[i]},
                                               features={k: v[i] for k, v in raw.items()}))
        accs.append(acc)
    return comb.extract_output(comb.merge_accumulators(accs))


def test_combiner_equals_direct_evaluation():
    alloc, raw = _orders(300)
    out = _combine(alloc, raw, parts=3)
    labels = osl.labels_from_raw(**_bars(raw), norm_window=W, lookback=L, n_ahead=N)
    bps = slippage.evaluate_allocations(alloc, labels)
    assert out["order_count"] == 300
    curve = slippage.slippage(raw[osl.VWAP_CURVE_FEATURE], labels[..., 0], labels[..., 1], N, "buy", "vwap", "volume")
    assert out["baseline/vwap_curve_volume_vs_vwap/std"] == pytest.approx(np.std(curve.bps, ddof=1), rel=1e-6)
    assert out["match_vwap_std_ratio/lo"] <= out["match_vwap_std_ratio"] <= out["match_vwap_std_ratio/hi"]
    diff = out["compare/vwap_curve_volume_vs_vwap/buy/diff_mean"]
    assert diff == pytest.approx(np.mean(np.abs(bps[:, N, 0, 0]) - np.abs(curve.bps)), rel=1e-6)
    assert 0 < out["compare/vwap_curve_volume_vs_vwap/buy/p_value"] <= 1
    for m in (0, N - 1, N):
        for p, path in enumerate(layout.PATHS):
            stats = slippage.table_statistics(bps[:, m, p, 1])
            for s in slippage.STAT_COLUMNS:
                assert out[f"slippage/{path}/notional/{osl.head_name(m, N)}/{s}"] == pytest.approx(stats[s], rel=1e-9)
    twap = slippage.slippage(np.full((300, N), 1 / N), labels[..., 0], labels[..., 1], N, "buy", "vwap", "volume")
    assert out["baseline/twap_volume_vs_vwap/std"] == pytest.approx(np.std(twap.bps, ddof=1), rel=1e-9)
    match_std = max(np.std(bps[:, N, layout.path_index(s, "vwap"), 0], ddof=1) for s in layout.SIDES)
    assert out["match_vwap_std_bps"] == pytest.approx(match_std, rel=1e-9)
    assert out["match_vwap_std_ratio"] == pytest.approx(match_std / np.std(twap.bps, ddof=1), rel=1e-9)
    assert out["nonfinite_count"] == 0


def test_twap_allocations_match_the_twap_baseline():
    """A model that trades TWAP on the volume target has the TWAP-volume baseline's slippage: ratio 1."""
    alloc, raw = _orders(64, seed=1)
    alloc[:] = 1.0 / N
    out = _combine(alloc, raw)
    assert out["match_vwap_std_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert out["slippage/buy_vwap/volume/match/mean"] == pytest.approx(out["baseline/twap_volume_vs_vwap/mean"])


def test_nonfinite_allocations_are_counted_not_dropped():
    alloc, raw = _orders(40, seed=2)
    alloc[3] = np.nan
    out = _combine(alloc, raw)
    assert out["order_count"] == 40
    # the order itself, plus its NaN slippage in each of the (N+1)*4*2 series
    assert out["nonfinite_count"] == 1 + (N + 1) * 4 * 2
    alloc[3] = 1.0 / N
    assert _combine(alloc, raw)["nonfinite_count"] == 0


def test_eval_config_thresholds_follow_the_config():
    from components.evaluator.eval_config import build_eval_config
    cfg = build_eval_config(EvaluationConfig(max_nonfinite=0, max_match_std_ratio=0.8, champion_max_std_increase_bps=2.5,
                                             min_slice_orders=50, slice_features=["asset", "frequency_minutes"]),
                            n_ahead=N, lookback=L, norm_window=W)
    spec = cfg.metrics_specs[0]
    assert json.loads(spec.metrics[0].config) == {"n_ahead": N, "lookback": L, "norm_window": W,
                                                  "min_slice_orders": 50}
    every = [[], ["asset"], ["frequency_minutes"], ["asset", "frequency_minutes"]]
    assert [list(s.feature_keys) for s in cfg.slicing_specs] == every
    nonfinite = spec.per_slice_thresholds["gate/nonfinite_count"].thresholds[0]
    assert nonfinite.threshold.value_threshold.upper_bound.value == 0
    ratio = spec.per_slice_thresholds["gate/match_vwap_std_ratio"].thresholds[0]
    assert ratio.threshold.value_threshold.upper_bound.value == pytest.approx(0.8)
    assert [list(s.feature_keys) for s in ratio.slicing_specs] == every  # every reported slice is gated
    champion = spec.per_slice_thresholds["gate/match_vwap_std_bps"].thresholds[0].threshold.change_threshold
    assert champion.absolute.value == pytest.approx(2.5)
    assert [m.is_baseline for m in cfg.model_specs] == [False, True]
    no_champion = build_eval_config(EvaluationConfig(champion_max_std_increase_bps=None), n_ahead=N, lookback=L,
                                    norm_window=W)
    assert len(no_champion.model_specs) == 1


def _validate_slices(per_slice_bps, min_slice_orders):
    """Run TFMA's own validator (the one the Evaluator runs) on the metrics of every slice."""
    from tensorflow_model_analysis.evaluators import metrics_validator
    from components.evaluator.eval_config import build_eval_config
    cfg = build_eval_config(EvaluationConfig(max_nonfinite=0, max_match_std_ratio=1.0,
                                             champion_max_std_increase_bps=None, min_slice_orders=min_slice_orders,
                                             slice_features=["asset"]), n_ahead=N, lookback=L, norm_window=W)
    # one model spec: TFMA keys its metrics and thresholds with model_name ""
    comps = lem_metrics.slippage_computations(N, L, W, "allocations", min_slice_orders=min_slice_orders,
                                               model_names=[""])
    keys = {k.name: k for k in comps[0].keys}
    failures = {}
    for slice_key, (lem, base, blocks) in per_slice_bps.items():
        values = lem_metrics.metric_values(lem, base, blocks=blocks, min_slice_orders=min_slice_orders, n_boot=50)
        result = metrics_validator.validate_metrics((slice_key, {keys[n]: v for n, v in values.items()}), cfg)
        failures[slice_key] = sorted(f.metric_key.name for s in result.metric_validations_per_slice
                                     for f in s.failures)
    return failures


def _slice_case(n_bad):
    """Asset AAA (600 orders): the LEM's match-VWAP std is 1/5 of TWAP-volume's; asset BBB (n_bad orders): 1.5x.
    Overall the LEM beats TWAP (AAA's large TWAP errors dominate)."""
    rng = np.random.default_rng(5)
    parts = {}
    for asset, b, twap_sd, lem_sd in (("AAA", 600, 10.0, 2.0), ("BBB", n_bad, 1.0, 1.5)):
        lem = np.zeros((b, N + 1, 4, 2))
        lem[:] = rng.normal(0, lem_sd, (b, 1, 1, 1))
        base = {k: rng.normal(0, twap_sd, b) for k in osl.BASELINES}
        parts[asset] = (lem, base, np.arange(b) // 20)
    cat = lambda i: np.concatenate([parts[a][i] for a in parts])  # noqa: E731
    overall = (cat(0), {k: np.concatenate([parts[a][1][k] for a in parts]) for k in osl.BASELINES}, cat(2))
    slices = {(): overall, (("asset", "AAA"),): parts["AAA"], (("asset", "BBB"),): parts["BBB"]}
    ratios = {k: osl.match_std_ratio(v[0], v[1]) for k, v in slices.items()}
    assert ratios[()] < 1 and ratios[(("asset", "AAA"),)] < 1 and ratios[(("asset", "BBB"),)] > 1.3
    return slices


def test_blessing_refuses_a_model_that_loses_to_twap_on_one_gated_slice():
    failures = _validate_slices(_slice_case(n_bad=250), min_slice_orders=200)
    assert failures[()] == [] and failures[(("asset", "AAA"),)] == []
    assert failures[(("asset", "BBB"),)] == ["gate/match_vwap_std_ratio"]


def test_blessing_passes_it_when_that_slice_is_below_the_count():
    failures = _validate_slices(_slice_case(n_bad=150), min_slice_orders=200)
    assert all(f == [] for f in failures.values()), failures
    # ...but non-finite outputs fail a slice of any size
    slices = _slice_case(n_bad=150)
    slices[(("asset", "BBB"),)][0][3] = np.nan
    assert _validate_slices(slices, min_slice_orders=200)[(("asset", "BBB"),)] == ["gate/nonfinite_count"]
