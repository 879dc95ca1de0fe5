"""The Evaluator's blessing rules (`evaluation` in the pipeline configuration): one dataclass, read by
`components.evaluator.eval_config.build_eval_config` (which turns it into TFMA's EvalConfig) and by
`components.evaluator.gate` (the gate itself, whose defaults are these).

Light on purpose (no TFMA import): `pipeline.configs` reads configuration files before TensorFlow is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvaluationConfig:
    """Blessing gate of the Evaluator on the orders of `split` (components.evaluator.gate): the LEM against
    TWAP (volume) vs VWAP on the same orders, with block-bootstrap intervals over order start days.

    A slice (overall, each slice feature alone and all of them crossed) with at least `min_slice_orders` orders
    is gated; it FAILS when the model is significantly worse than TWAP (volume): the std ratio LEM / TWAP of the
    match-VWAP head or of the minimum-period-N head (no flexibility), on either side, has its interval entirely
    above 1 or its point estimate above 1 + max_std_ratio_margin; or the minimum-period-1 head's mean slippage is
    on the wrong side of TWAP's with an interval that excludes 0; or it has non-finite values. The model is
    blessed when no gated slice fails AND overall the match-VWAP std ratio's interval lies entirely below 1 on
    both sides (significantly better than TWAP). A smaller slice is reported, not gated (only non-finite values
    fail it); that includes the overall slice: a split with fewer than min_slice_orders orders is too small to
    show anything, and the "significantly better" criterion is then not applied.

    max_nonfinite: most non-finite slippage values / allocations allowed (0 = all metrics finite).
    interval_level: level of the block-bootstrap intervals, in (0, 1).
    max_std_ratio_margin: a std ratio above 1 + this fails whatever its interval (>= 0).
    compare_with_champion: when a blessed model exists, also compare with it on the same orders (the
    challenger's match-VWAP std / the champion's, per side, same rule as the std ratios); false = no comparison.
    slice_features: features to slice the statistics by (besides the overall slice).
    min_slice_orders: a slice is gated only with at least this many orders.
    """
    split: str = "test"
    max_nonfinite: int = 0
    interval_level: float = 0.95
    max_std_ratio_margin: float = 0.10
    compare_with_champion: bool = True
    slice_features: list = field(default_factory=lambda: ["asset", "frequency_minutes"])
    min_slice_orders: int = 200
