"""The TFMA slippage metric: its combiner equals the ONE evaluator, counts non-finite values, and the
EvalConfig carries the blessing thresholds of the config."""
import json

import numpy as np
import pytest

from components.evaluator import metrics as lem_metrics
from components.evaluator import order_slippage as osl
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
    return alloc, {"volume": volume, "quote_volume": quote, "timestamp": timestamp, "frequency_minutes": freq}


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
    labels = osl.labels_from_raw(**raw, norm_window=W, lookback=L, n_ahead=N)
    bps = slippage.evaluate_allocations(alloc, labels)
    assert out["order_count"] == 300
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
    cfg = build_eval_config(n_ahead=N, lookback=L, norm_window=W, max_nonfinite=0, max_match_std_ratio=0.8,
                            champion_max_std_increase_bps=2.5, slice_features=["asset"])
    spec = cfg.metrics_specs[0]
    assert json.loads(spec.metrics[0].config) == {"n_ahead": N, "lookback": L, "norm_window": W}
    assert spec.thresholds["nonfinite_count"].value_threshold.upper_bound.value == 0
    overall = spec.per_slice_thresholds["match_vwap_std_ratio"].thresholds[0]
    assert overall.threshold.value_threshold.upper_bound.value == pytest.approx(0.8)
    assert list(overall.slicing_specs[0].feature_keys) == []  # overall slice only
    champion = spec.per_slice_thresholds["match_vwap_std_bps"].thresholds[0].threshold.change_threshold
    assert champion.absolute.value == pytest.approx(2.5)
    assert [m.is_baseline for m in cfg.model_specs] == [False, True]
    assert [list(s.feature_keys) for s in cfg.slicing_specs] == [[], ["asset"]]
    no_champion = build_eval_config(n_ahead=N, lookback=L, norm_window=W, max_nonfinite=0, max_match_std_ratio=1,
                                    champion_max_std_increase_bps=None)
    assert len(no_champion.model_specs) == 1
