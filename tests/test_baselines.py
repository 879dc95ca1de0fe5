"""TWAP and static VWAP-curve baselines."""
import numpy as np
import pytest

from lem_model import baselines, slippage


def test_twap_schedule_is_even_and_evaluates_to_zero_against_twap_volume():
    s = baselines.twap_schedule(3, 4)
    np.testing.assert_allclose(s, 0.25)
    price = np.array([[1.0, 2.0, 3.0, 4.0]] * 3)
    r = slippage.slippage(s, np.ones((3, 4)), price, 4, "buy", "twap", "volume")
    np.testing.assert_allclose(r.bps, 0.0, atol=1e-9)


def test_static_vwap_curve_averages_normalised_past_windows():
    n = 3
    # two past windows of 3 bars right before the order: [1, 1, 2] and [2, 4, 2]
    hist = np.array([[9.0, 1.0, 1.0, 2.0, 2.0, 4.0, 2.0]])
    curve = baselines.static_vwap_curve(hist, n)
    expected = (np.array([1, 1, 2]) / 4 + np.array([2, 4, 2]) / 8) / 2
    np.testing.assert_allclose(curve[0], expected / expected.sum())
    np.testing.assert_allclose(curve.sum(axis=1), 1.0)


def test_static_vwap_curve_uses_seasonal_period_and_only_past_bars():
    n, period = 2, 4
    # windows start 4 and 8 bars before the order (j*period >= n): bars 4..5 and 0..1 of 8 history bars
    hist = np.array([[3.0, 1.0, 50.0, 50.0, 1.0, 3.0, 77.0, 77.0]])
    curve = baselines.static_vwap_curve(hist, n, period=period)
    np.testing.assert_allclose(curve[0], [0.5, 0.5])
    # the curve depends on history only: the order's own bars are not an input at all
    hist2 = hist.copy()
    hist2[0, 6:] = 1e6  # bars between the last seasonal window and the order do not enter
    np.testing.assert_allclose(baselines.static_vwap_curve(hist2, n, period=period), curve)


def test_static_vwap_curve_without_history_volume_is_twap():
    curve = baselines.static_vwap_curve(np.zeros((2, 10)), 5)
    np.testing.assert_allclose(curve, 0.2)


def test_static_vwap_curve_rejects_bad_volumes():
    with pytest.raises(ValueError, match="first row 1"):
        baselines.static_vwap_curve(np.array([[1.0, 2.0], [1.0, -1.0]]), 1)
