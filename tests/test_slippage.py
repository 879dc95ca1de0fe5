"""The NumPy slippage evaluator against hand-computed cases, and the table statistics/layout."""
import numpy as np
import pytest

from lem_model import slippage as sl


VOL = np.array([[1.0, 2.0, 3.0]])
PRICE = np.array([[10.0, 11.0, 12.0]])


def test_vwap_volume_order_with_early_completion():
    # completes at bar 1; min period 1 -> window = bars 0..1
    r = sl.slippage([[0.5, 0.5, 0.0]], VOL, PRICE, 1, "buy", "vwap", "volume")
    assert r.window_bars[0] == 2
    assert r.achieved[0] == pytest.approx(10.5)
    assert r.benchmark[0] == pytest.approx((10 * 1 + 11 * 2) / 3)
    assert r.bps[0] == pytest.approx(1e4 * (31.5 / 32 - 1))       # -156.25 bps
    assert r.improvement_bps[0] == pytest.approx(156.25)            # buying below the benchmark is good


def test_min_period_extends_window_past_completion():
    r = sl.slippage([[0.5, 0.5, 0.0]], VOL, PRICE, 3, "sell", "vwap", "volume")
    assert r.window_bars[0] == 3
    assert r.benchmark[0] == pytest.approx(68 / 6)
    assert r.bps[0] == pytest.approx(1e4 * (10.5 / (68 / 6) - 1))
    assert r.improvement_bps[0] == pytest.approx(r.bps[0])          # sells: higher is better


def test_window_ends_at_completion_when_later_than_min_period():
    r = sl.slippage([[0.2, 0.0, 0.8]], VOL, PRICE, 1, "buy", "twap", "volume")
    assert r.window_bars[0] == 3
    assert r.benchmark[0] == pytest.approx(11.0)
    assert r.achieved[0] == pytest.approx(0.2 * 10 + 0.8 * 12)


def test_twap_benchmark_and_per_order_min_period():
    alloc = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    r = sl.slippage(alloc, np.vstack([VOL, VOL]), np.vstack([PRICE, PRICE]), np.array([1, 2]), "buy", "twap",
                    "volume")
    np.testing.assert_array_equal(r.window_bars, [1, 2])
    np.testing.assert_allclose(r.benchmark, [10.0, 10.5])
    np.testing.assert_allclose(r.bps, [0.0, 1e4 * (10 / 10.5 - 1)])


def test_notional_order_buys_shares_at_each_price():
    price = np.array([[10.0, 20.0, 30.0]])
    r = sl.slippage([[0.5, 0.5, 0.0]], VOL, price, 1, "buy", "twap", "notional")
    shares = 0.5 / 10 + 0.5 / 20
    assert r.achieved[0] == pytest.approx(1.0 / shares)             # 13.33: more shares when cheap
    assert r.benchmark[0] == pytest.approx(15.0)
    assert r.bps[0] == pytest.approx(1e4 * ((1 / shares) / 15 - 1))


def test_twap_notional_vs_volume_differ_like_harmonic_vs_arithmetic_mean():
    price = np.array([[10.0, 20.0]])
    vol = np.array([[1.0, 1.0]])
    flat = [[0.5, 0.5]]
    vol_r = sl.slippage(flat, vol, price, 2, "buy", "twap", "volume")
    not_r = sl.slippage(flat, vol, price, 2, "buy", "twap", "notional")
    assert vol_r.achieved[0] == pytest.approx(15.0)
    assert not_r.achieved[0] == pytest.approx(2 / (1 / 10 + 1 / 20))  # harmonic mean 13.33


def test_zero_volume_window_falls_back_to_twap():
    r = sl.slippage([[0.5, 0.5, 0.0]], np.zeros((1, 3)), PRICE, 1, "buy", "vwap", "volume")
    assert r.benchmark[0] == pytest.approx(10.5)
    assert r.bps[0] == pytest.approx(0.0)


def test_undefined_prices_give_nan_not_zero():
    r = sl.slippage([[0.5, 0.5, 0.0]], VOL, np.zeros((1, 3)), 1, "buy", "vwap", "notional")
    assert np.isnan(r.bps[0])


@pytest.mark.parametrize("alloc,mp,msg", [
    ([[0.5, 0.4, 0.0]], 1, "sum to 1"),
    ([[1.2, -0.2, 0.0]], 1, "negative"),
    ([[0.5, 0.5, 0.0]], 0, "min_period"),
    ([[0.5, 0.5, 0.0]], 4, "min_period"),
    ([[np.nan, 0.5, 0.5]], 1, "non-finite"),
])
def test_bad_inputs_are_rejected_with_a_clear_error(alloc, mp, msg):
    with pytest.raises(ValueError, match=msg):
        sl.slippage(alloc, VOL, PRICE, mp, "buy", "vwap", "volume")


def test_evaluate_allocations_matches_per_head_calls():
    rng = np.random.default_rng(0)
    b, n = 6, 4
    a = rng.dirichlet(np.ones(n), size=(b, n + 1, 4, 2))              # [B, M, 4, 2, N]
    a[..., 2:] *= rng.integers(0, 2, size=a.shape[:-1] + (1,))       # some orders complete early
    a /= a.sum(-1, keepdims=True)
    alloc = np.moveaxis(a, -1, 1)                                     # [B, N, M, 4, 2]
    labels = np.stack([rng.uniform(0, 2, (b, n)), rng.uniform(0.9, 1.1, (b, n))], -1)
    bps = sl.evaluate_allocations(alloc, labels)
    assert bps.shape == (b, n + 1, 4, 2)
    for m in range(n + 1):
        for p, (side, bench) in enumerate(zip(("buy", "buy", "sell", "sell"), ("vwap", "twap") * 2)):
            for t, target in enumerate(("volume", "notional")):
                r = sl.slippage(a[:, m, p, t], labels[..., 0], labels[..., 1], min(m + 1, n), side, bench, target)
                np.testing.assert_allclose(bps[:, m, p, t], r.bps, rtol=1e-12, atol=1e-9)


def test_table_statistics_match_numpy_and_count_invalid():
    v = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    s = sl.table_statistics(v)
    assert s["n"] == 4 and s["n_invalid"] == 1
    assert s["mean"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s["median"] == pytest.approx(2.5)
    assert s["p5"] == pytest.approx(np.percentile([1, 2, 3, 4], 5))
    assert s["q75"] == pytest.approx(3.25)


def test_table_layout_follows_paper_table_1():
    rng = np.random.default_rng(1)
    n = 3
    lem_bps = rng.normal(size=(50, n + 1, 4, 2))
    text = sl.format_slippage_table(lem_bps, baselines={"TWAP Notional": rng.normal(size=50),
                                                        "TWAP Volume": rng.normal(size=50)}, title="Table 1")
    lines = text.splitlines()
    assert lines[0] == "Table 1"
    assert lines[1].split()[:4] == ["Order", "Type", "Min", "Period"]
    body = [l.split() for l in lines[3:]]
    assert body[0][:3] == ["TWAP", "Notional", "All"] and body[1][:3] == ["TWAP", "Volume", "All"]
    assert body[2][:2] == ["BUY", "1"] and body[3][0] == "2" and body[5][:2] == ["Match", "VWAP"]
    assert body[6][:2] == ["SELL", "1"] and body[9][:2] == ["Match", "VWAP"]
    assert len(body) == 2 + 2 * (n + 1)
    buy_m2 = sl.table_statistics(lem_bps[:, 1, 0, 0])
    assert body[3][1] == f"{buy_m2['mean']:.2f}"
