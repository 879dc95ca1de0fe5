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
    from components.evaluator.eval_config import BELOW_ONE, build_eval_config
    cfg = build_eval_config(EvaluationConfig(max_nonfinite=0, interval_level=0.9, max_std_ratio_margin=0.2,
                                             min_slice_orders=50, slice_features=["asset", "frequency_minutes"]),
                            n_ahead=N, lookback=L, norm_window=W)
    spec = cfg.metrics_specs[0]
    assert json.loads(spec.metrics[0].config) == {"n_ahead": N, "lookback": L, "norm_window": W,
                                                  "min_slice_orders": 50, "level": 0.9, "margin": 0.2,
                                                  "max_nonfinite": 0}
    every = [[], ["asset"], ["frequency_minutes"], ["asset", "frequency_minutes"]]
    assert [list(s.feature_keys) for s in cfg.slicing_specs] == every
    for name in ("gate/nonfinite_count", "gate/failures", "gate/champion_failures"):
        threshold = spec.per_slice_thresholds[name].thresholds[0]
        assert threshold.threshold.value_threshold.upper_bound.value == 0, name
        assert [list(s.feature_keys) for s in threshold.slicing_specs] == every, name  # every reported slice
    better = spec.per_slice_thresholds["gate/overall_match_std_ratio_hi"].thresholds[0]
    assert better.threshold.value_threshold.upper_bound.value == BELOW_ONE < 1.0
    assert [list(s.feature_keys) for s in better.slicing_specs] == [[]]  # the overall slice only
    assert [m.is_baseline for m in cfg.model_specs] == [False, True]
    assert "gate/match_vwap_std_ratio" not in spec.per_slice_thresholds
    no_champion = build_eval_config(EvaluationConfig(compare_with_champion=False), n_ahead=N, lookback=L,
                                    norm_window=W)
    assert len(no_champion.model_specs) == 1
    assert "gate/champion_failures" not in no_champion.metrics_specs[0].per_slice_thresholds


def _validate_slices(per_slice_bps, min_slice_orders):
    """Run TFMA's own validator (the one the Evaluator runs) on the metrics of every slice."""
    from tensorflow_model_analysis.evaluators import metrics_validator
    from components.evaluator.eval_config import build_eval_config
    cfg = build_eval_config(EvaluationConfig(max_nonfinite=0, compare_with_champion=False,
                                             min_slice_orders=min_slice_orders, slice_features=["asset"]),
                            n_ahead=N, lookback=L, norm_window=W)
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
    """Asset AAA (600 orders): the LEM's match-VWAP (and min-period-N) std is 1/5 of TWAP-volume's; asset BBB
    (n_bad orders): 1.5x. Overall the LEM beats TWAP (AAA's large TWAP errors dominate). The min-period-1 head
    trades as TWAP does (paired difference 0: neither side's mean check can fail by chance)."""
    rng = np.random.default_rng(5)
    parts = {}
    for asset, b, twap_sd, lem_sd in (("AAA", 600, 10.0, 2.0), ("BBB", n_bad, 1.0, 1.5)):
        lem = np.zeros((b, N + 1, 4, 2))
        lem[:] = rng.normal(0, lem_sd, (b, 1, 1, 1))
        base = {k: rng.normal(0, twap_sd, b) for k in osl.BASELINES}
        lem[:, 0] = base["twap_volume_vs_vwap"][:, None, None]
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
    assert failures[(("asset", "BBB"),)] == ["gate/failures"]


def test_blessing_passes_it_when_that_slice_is_below_the_count():
    failures = _validate_slices(_slice_case(n_bad=150), min_slice_orders=200)
    assert all(f == [] for f in failures.values()), failures
    # ...but non-finite outputs fail a slice of any size
    slices = _slice_case(n_bad=150)
    slices[(("asset", "BBB"),)][0][3] = np.nan
    assert _validate_slices(slices, min_slice_orders=200)[(("asset", "BBB"),)] == ["gate/nonfinite_count"]


def test_blessing_needs_an_overall_slice_significantly_better_than_twap():
    """The LEM's match-VWAP std equal to TWAP-volume's (independent orders): no slice fails, but the overall
    slice is not significantly better, so TFMA's overall threshold refuses it (and only there)."""
    rng = np.random.default_rng(11)
    b = 400
    lem = np.zeros((b, N + 1, 4, 2))
    lem[:] = rng.normal(0, 5.0, (b, 1, 1, 1))
    base = {k: rng.normal(0, 5.0, b) for k in osl.BASELINES}
    blocks = np.arange(b) // 20
    one = {(): (lem, base, blocks), (("asset", "AAA"),): (lem, base, blocks)}
    failures = _validate_slices(one, min_slice_orders=200)
    assert failures == {(): ["gate/overall_match_std_ratio_hi"], (("asset", "AAA"),): []}, failures


def test_the_metric_emits_the_verdicts_of_the_one_gate():
    from components.evaluator import gate
    slices = _slice_case(n_bad=250)
    lem, base, blocks = slices[(("asset", "BBB"),)]
    values = lem_metrics.metric_values(lem, base, blocks=blocks, min_slice_orders=200, n_boot=50, margin=0.3)
    verdict = gate.evaluate_slice(lem, base, blocks, n_boot=50, margin=0.3, min_orders=200)
    assert values["gate/failures"] == verdict["n_failures"] > 0 and values["gate/better"] == 0.0
    for (head, side, figure), check in zip(lem_metrics.CHECKS, verdict["checks"]):
        name = f"check/{head}/{side}/{figure}"
        assert values[f"{name}/fail"] == float(check["verdict"] == gate.FAIL)
        np.testing.assert_equal([values[name], values[f"{name}/lo"], values[f"{name}/hi"]],
                                [check["value"], check["lo"], check["hi"]])
    assert values["gate_config/max_std_ratio_margin"] == 0.3 and values["gate/champion_failures"] == 0
    small = lem_metrics.metric_values(lem, base, blocks=blocks, min_slice_orders=1000, n_boot=50)
    assert small["gate/failures"] == 0 and small["check/match/buy/std_ratio/fail"] == 1  # reported, not gated
    assert set(values) == set(lem_metrics.metric_names(N))


class _TwoModelElement(_Element):
    def get_predictions(self, model_name=None, output_name=None):
        return self["predictions"][model_name]


def test_the_candidate_combiner_compares_with_the_champion_on_the_same_orders():
    import tensorflow_model_analysis as tfma
    from components.evaluator.eval_config import build_eval_config
    cfg = build_eval_config(EvaluationConfig(), n_ahead=N, lookback=L, norm_window=W)
    comps = lem_metrics.slippage_computations(N, L, W, "allocations", eval_config=cfg,
                                               model_names=["candidate", "baseline"])
    combiners = {c.keys[0].model_name: c.combiner for c in comps}
    assert combiners["candidate"]._champion_model == "baseline" and combiners["baseline"]._champion_model is None
    reads = {c.keys[0].model_name: set(c.preprocessors[0].include_filter[tfma.constants.PREDICTIONS_KEY])
             for c in comps}
    assert reads == {"candidate": {"candidate", "baseline"}, "baseline": {"baseline"}}
    alloc, raw = _orders(120, seed=3)
    champion = np.full_like(alloc, 1.0 / N)  # the champion trades TWAP

    def run(challenger):
        keys = {n: n for n in lem_metrics.metric_names(N)}
        comb = lem_metrics._SlippageCombiner(keys, "candidate", "", "allocations",
                                             dict(n_ahead=N, lookback=L, norm_window=W), champion_model="baseline")
        acc = comb.create_accumulator()
        for i in range(len(alloc)):
            acc = comb.add_input(acc, _TwoModelElement(
                predictions={"candidate": {"allocations": challenger[i]}, "baseline": {"allocations": champion[i]}},
                features={k: v[i] for k, v in raw.items()}))
        return comb.extract_output(acc)

    same = run(champion)
    assert same["champion/buy/std_ratio"] == pytest.approx(1.0) and same["gate/champion_failures"] == 0
    out = run(alloc)
    labels = osl.labels_from_raw(**_bars(raw), norm_window=W, lookback=L, n_ahead=N)
    bps = slippage.evaluate_allocations(alloc, labels)
    twap = slippage.evaluate_allocations(champion, labels)
    for side in layout.SIDES:
        p = layout.path_index(side, "vwap")
        assert out[f"champion/{side}/std_ratio"] == pytest.approx(np.std(bps[:, N, p, 0], ddof=1)
                                                                 / np.std(twap[:, N, p, 0], ddof=1), rel=1e-9)
        assert out[f"champion/{side}/std_ratio/lo"] <= out[f"champion/{side}/std_ratio"]


def test_gate_rows_and_printed_lines_follow_the_metric_verdicts():
    from components.evaluator.eval_config import gate_lines, rows_from_metrics
    slices = _slice_case(n_bad=250)
    names = {(): "overall", (("asset", "AAA"),): "asset=AAA", (("asset", "BBB"),): "asset=BBB"}
    cand = {names[k]: lem_metrics.metric_values(lem, base, blocks=blocks, min_slice_orders=200, n_boot=50)
            for k, (lem, base, blocks) in slices.items()}
    gates, champion = rows_from_metrics(cand, {}, None)
    assert [g["slice"] for g in gates] == ["overall", "asset=AAA", "asset=BBB"] and champion == []
    by = {g["slice"]: g for g in gates}
    assert by["overall"]["result"] == "pass" and by["overall"]["better"] and by["asset=AAA"]["result"] == "pass"
    assert by["asset=BBB"]["result"].startswith("FAILED: match buy std_ratio")
    assert [c["verdict"] for c in by["asset=BBB"]["checks"][:4]] == ["FAIL"] * 4
    lines = gate_lines(gates)
    assert lines[0].startswith("3 of 3 slices gated") and "95%" in lines[0] and "1.1" in lines[0]
    head_lines = [line for line in lines if "std ratio vs TWAP" in line or "mean - TWAP" in line]
    assert len(head_lines) == 3 * 3  # one line per gated slice and head
    bad = [line for line in head_lines if line.lstrip().startswith("asset=BBB") and " min_n " in line]
    assert len(bad) == 1 and bad[0].count("FAIL") == 2 and "[" in bad[0], bad
    assert any("overall significantly better" in line and line.endswith("yes") for line in lines)
    # TFMA's verdict on the overall threshold is explained
    gates, _ = rows_from_metrics(cand, {}, {"overall": [("gate/overall_match_std_ratio_hi", False, 1.02)]})
    assert gates[0]["result"] == ("FAILED: not significantly better than TWAP (volume): match std ratio interval "
                                  "reaches 1.020 (needs < 1 on both sides)")
