"""The TWAP baseline (the volume-curve VWAP baseline: tests/test_vwap_curve.py)."""
import numpy as np

from lem_model import baselines, slippage


def test_twap_schedule_is_even_and_evaluates_to_zero_against_twap_volume():
    s = baselines.twap_schedule(3, 4)
    np.testing.assert_allclose(s, 0.25)
    price = np.array([[1.0, 2.0, 3.0, 4.0]] * 3)
    r = slippage.slippage(s, np.ones((3, 4)), price, 4, "buy", "twap", "volume")
    np.testing.assert_allclose(r.bps, 0.0, atol=1e-9)
