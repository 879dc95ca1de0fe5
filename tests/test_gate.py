"""The blessing gate (components.evaluator.gate) on constructed per-order slippage: significantly worse fails,
worse only inside the noise passes, blessing needs a significantly better overall slice, every gated head counts,
the min-period-1 mean must not be significantly on the wrong side, and the margin catches a bad point estimate
whatever its interval."""
import json

import numpy as np
import pytest

from components.evaluator import gate
from lem_model import layout

N = 4
VOL = layout.target_index("volume")
MATCH, MIN_N, MIN_1 = N, N - 1, 0


def _path(side):
    return layout.path_index(side, "vwap")


def _scaled(rng, twap, ratio, noise=0.05):
    """A series whose std is exactly `ratio` x std(twap): ratio x twap plus `noise` (relative) independent noise,
    rescaled (noise=None: fully independent of twap)."""
    z = rng.normal(0.0, 1.0, twap.shape) if noise is None else twap + noise * twap.std() * rng.normal(0.0, 1.0, twap.shape)
    z = z - z.mean() + (0.0 if noise is None else twap.mean())
    return z * (ratio * twap.std(ddof=1) / z.std(ddof=1))


def _good(b=600, n_blocks=60, seed=0):
    """A model significantly better than TWAP (volume) on every head: match 0.8x TWAP's std, min-N 0.9x, min-1
    2 bps better than TWAP on both sides (lower for buys, higher for sells). Returns (lem_bps, baselines, blocks)."""
    rng = np.random.default_rng(seed)
    twap = rng.normal(0.5, 10.0, b)
    lem = np.repeat(np.repeat(twap[:, None, None, None], N + 1, 1), 4, 2).repeat(2, 3).copy()
    for side in layout.SIDES:
        lem[:, MATCH, _path(side), VOL] = _scaled(rng, twap, 0.8)
        lem[:, MIN_N, _path(side), VOL] = _scaled(rng, twap, 0.9)
    lem[:, MIN_1, _path("buy"), VOL] = twap - 2.0 + 0.1 * rng.normal(size=b)
    lem[:, MIN_1, _path("sell"), VOL] = twap + 2.0 + 0.1 * rng.normal(size=b)
    blocks = np.arange(b) * n_blocks // b
    return lem, {gate.REFERENCE: twap, "twap_notional_vs_vwap": twap.copy()}, blocks


def _check(result, head, side):
    [c] = [c for c in result["checks"] if c["head"] == head and c["side"] == side]
    return c


def _fails(result):
    return sorted((c["head"], c["side"]) for c in result["checks"] if c["verdict"] == gate.FAIL)


def test_a_model_significantly_better_everywhere_passes_and_is_blessed():
    lem, base, blocks = _good()
    r = gate.evaluate_slice(lem, base, blocks, n_boot=300)
    assert _fails(r) == [] and not r["failed"] and r["better"] and r["gated"]
    assert [(c["head"], c["side"], c["figure"]) for c in r["checks"]] == [
        ("match", "buy", "std_ratio"), ("match", "sell", "std_ratio"), ("min_n", "buy", "std_ratio"),
        ("min_n", "sell", "std_ratio"), ("min_1", "buy", "mean_diff_bps"), ("min_1", "sell", "mean_diff_bps"),
        ("all", "both", "nonfinite_count")]
    assert _check(r, "match", "buy")["value"] == pytest.approx(0.8) and _check(r, "match", "sell")["hi"] < 1
    assert _check(r, "min_1", "buy")["value"] == pytest.approx(-2.0, abs=0.05)
    assert (r["orders"], r["blocks"], r["level"], r["margin"]) == (600, 60, 0.95, 0.10)
    json.loads(json.dumps(r))  # JSON-serialisable as returned
    assert gate.blessed({"overall": r})


def test_a_slice_significantly_worse_fails():
    """Match-VWAP std 1.06x TWAP's on the buy side with a tight interval: inside the margin, but lo > 1."""
    lem, base, blocks = _good(seed=1)
    lem[:, MATCH, _path("buy"), VOL] = _scaled(np.random.default_rng(101), base[gate.REFERENCE], 1.06, noise=0.02)
    r = gate.evaluate_slice(lem, base, blocks, n_boot=300)
    c = _check(r, "match", "buy")
    assert c["value"] == pytest.approx(1.06) and c["lo"] > 1.0 and c["value"] < 1.1
    assert _fails(r) == [("match", "buy")] and r["failed"] and "interval above 1" in c["reason"]
    assert not r["better"] and not gate.blessed({"overall": r})


def test_a_slice_worse_only_inside_the_noise_passes():
    """Std ratio 1.05 on an independent, noisy sample: its interval contains 1, so the slice does not fail
    (under the old point-estimate rule, ratio <= 1, it did)."""
    lem, base, blocks = _good(b=240, n_blocks=12, seed=2)
    lem[:, MATCH, _path("sell"), VOL] = _scaled(np.random.default_rng(102), base[gate.REFERENCE], 1.05, noise=None)
    r = gate.evaluate_slice(lem, base, blocks, n_boot=500)
    c = _check(r, "match", "sell")
    assert c["value"] == pytest.approx(1.05) and c["lo"] < 1.0 < c["hi"]
    assert c["verdict"] == gate.PASS and not r["failed"]
    assert not r["better"]  # ...but not significantly better either


def test_an_overall_slice_that_is_not_significantly_better_is_not_blessed():
    lem, base, blocks = _good(b=240, n_blocks=12, seed=3)
    for side in layout.SIDES:  # point estimate below 1, interval across 1
        lem[:, MATCH, _path(side), VOL] = _scaled(np.random.default_rng(103), base[gate.REFERENCE], 0.97, noise=None)
    r = gate.evaluate_slice(lem, base, blocks, n_boot=500)
    assert all(_check(r, "match", s)["lo"] < 1.0 <= _check(r, "match", s)["hi"] for s in layout.SIDES)
    assert not r["failed"] and not r["better"]
    assert not gate.blessed({"overall": r})
    good = gate.evaluate_slice(*_good(seed=3), n_boot=300)
    assert gate.blessed({"overall": good, "asset=A": r})  # a passing slice needs no "better" of its own
    assert not gate.blessed({"asset=A": good})  # no overall slice: nothing shows the model is better


def test_a_bad_no_flexibility_head_fails():
    """The minimum-period-N head's sell std 2.8x TWAP's (the demo's head trained without the risk term)."""
    lem, base, blocks = _good(seed=4)
    lem[:, MIN_N, _path("sell"), VOL] = _scaled(np.random.default_rng(104), base[gate.REFERENCE], 2.8, noise=0.5)
    r = gate.evaluate_slice(lem, base, blocks, n_boot=300)
    assert _fails(r) == [("min_n", "sell")] and r["failed"]
    assert _check(r, "min_n", "sell")["lo"] > 1 and r["better"]  # the match head alone would have blessed it
    assert not gate.blessed({"overall": r})


@pytest.mark.parametrize("side, shift", [("buy", +1.5), ("sell", -1.5)])
def test_a_min_1_mean_on_the_wrong_side_with_an_excluding_interval_fails(side, shift):
    lem, base, blocks = _good(seed=5)
    twap = base[gate.REFERENCE]
    lem[:, MIN_1, _path(side), VOL] = twap + shift + np.random.default_rng(105).normal(0.0, 2.0, twap.shape)
    r = gate.evaluate_slice(lem, base, blocks, n_boot=300)
    c = _check(r, "min_1", side)
    assert c["value"] == pytest.approx(shift, abs=0.3) and (c["lo"] > 0 if side == "buy" else c["hi"] < 0)
    assert _fails(r) == [("min_1", side)] and r["failed"]
    # the same shift inside the noise passes: the interval includes 0
    lem[:, MIN_1, _path(side), VOL] = twap + 0.1 * shift + np.random.default_rng(105).normal(0.0, 20.0, twap.shape)
    c = _check(gate.evaluate_slice(lem, base, blocks, n_boot=300), "min_1", side)
    assert c["lo"] < 0 < c["hi"] and c["verdict"] == gate.PASS


def test_the_margin_fails_a_point_estimate_above_1_10_whatever_its_interval():
    lem, base, blocks = _good(b=80, n_blocks=8, seed=6)
    lem[:, MATCH, _path("buy"), VOL] = _scaled(np.random.default_rng(106), base[gate.REFERENCE], 1.15, noise=None)
    r = gate.evaluate_slice(lem, base, blocks, n_boot=500)
    c = _check(r, "match", "buy")
    assert c["value"] == pytest.approx(1.15) and c["lo"] < 1.0  # not significant: only the margin decides
    assert c["verdict"] == gate.FAIL and "margin" in c["reason"] and r["failed"]
    assert _check(gate.evaluate_slice(lem, base, blocks, n_boot=500, margin=0.2), "match", "buy")["verdict"] == gate.PASS


def test_small_slices_are_reported_not_gated_and_non_finite_values_fail():
    lem, base, blocks = _good(seed=7)
    lem[:, MIN_N, _path("buy"), VOL] *= 3.0
    small = gate.evaluate_slice(lem, base, blocks, n_boot=200, min_orders=1000)
    assert _fails(small) == [("min_n", "buy")] and not small["gated"] and not small["failed"]
    good = gate.evaluate_slice(*_good(seed=7), n_boot=200)
    assert gate.blessed({"overall": good, "asset=A": small})
    assert not gate.blessed({"overall": good, "asset=A": gate.evaluate_slice(lem, base, blocks, n_boot=200)})
    lem, base, blocks = _good(seed=7)
    lem[3] = np.nan
    r = gate.evaluate_slice(lem, base, blocks, n_boot=200)
    assert _fails(r) == [("all", "both")] and _check(r, "all", "both")["value"] == lem[3].size
    assert not gate.evaluate_slice(lem, base, blocks, n_boot=200, max_nonfinite=lem[3].size)["failed"]


def test_champion_comparison_is_paired_on_the_same_orders():
    lem, base, blocks = _good(seed=8)
    same = gate.compare_with_champion(lem, lem.copy(), blocks, n_boot=200)
    assert [c["side"] for c in same["checks"]] == ["buy", "sell"] and not same["failed"]
    assert all(c["value"] == pytest.approx(1.0) and c["lo"] == pytest.approx(1.0) for c in same["checks"])
    worse = lem.copy()
    worse[:, MATCH] *= 1.05  # 5 % more spread on every order: inside the margin, but significant
    r = gate.compare_with_champion(worse, lem, blocks, n_boot=200)
    assert r["failed"] and all(c["verdict"] == gate.FAIL and c["lo"] > 1 for c in r["checks"])
    assert not gate.compare_with_champion(lem, worse, blocks, n_boot=200)["failed"]  # better than the champion


def test_inputs_are_checked():
    lem, base, blocks = _good(b=50, n_blocks=5)
    with pytest.raises(ValueError, match="twap_volume_vs_vwap"):
        gate.evaluate_slice(lem, {"twap_notional_vs_vwap": base["twap_notional_vs_vwap"]}, blocks)
    with pytest.raises(ValueError, match="level"):
        gate.evaluate_slice(lem, base, blocks, level=1.0)
    with pytest.raises(ValueError, match="blocks"):
        gate.evaluate_slice(lem, base, blocks[:-1])
    with pytest.raises(ValueError, match="lem_bps"):
        gate.evaluate_slice(lem[:, :, :2], base, blocks)


def test_an_overall_slice_too_small_to_gate_does_not_apply_the_better_criterion():
    lem, base, blocks = _good(b=240, n_blocks=12, seed=3)
    for side in layout.SIDES:  # not significantly better
        lem[:, MATCH, _path(side), VOL] = _scaled(np.random.default_rng(103), base[gate.REFERENCE], 0.97, noise=None)
    assert not gate.blessed({"overall": gate.evaluate_slice(lem, base, blocks, n_boot=300, min_orders=200)})
    small = gate.evaluate_slice(lem, base, blocks, n_boot=300, min_orders=241)
    assert not small["gated"] and not small["better"] and gate.blessed({"overall": small})
    lem[0, MATCH] = np.nan  # ...but non-finite values fail a slice of any size
    assert gate.evaluate_slice(lem, base, blocks, n_boot=300, min_orders=241)["failed"]
