"""The Evaluator's blessing rules (`evaluation` in the pipeline configuration): one dataclass, read by
`components.evaluator.eval_config.build_eval_config` (which turns it into TFMA's EvalConfig).

Light on purpose (no TFMA import): `pipeline.configs` reads configuration files before TensorFlow is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class EvaluationConfig:
    """Blessing rules for the Evaluator (slippage statistics in bps of `split`), applied to EVERY reported slice
    (overall, each slice feature alone and all of them crossed) that has at least `min_slice_orders` orders;
    a smaller slice is reported, not gated (components.evaluator.eval_config).

    max_nonfinite: most non-finite slippage values / allocations allowed (0 = all metrics finite).
    max_match_std_ratio: the match-VWAP head's slippage std divided by TWAP-volume's must not exceed this
    (1.0 = "not above TWAP-volume"). champion_max_std_increase_bps: challenger vs the latest blessed model:
    the match-VWAP std may not be higher than the champion's by more than this (None = no comparison).
    slice_features: features to slice the statistics by (besides the overall slice).
    min_slice_orders: a slice is gated by the thresholds only with at least this many orders.
    """
    split: str = "test"
    max_nonfinite: int = 0
    max_match_std_ratio: float = 1.0
    champion_max_std_increase_bps: Optional[float] = 1.0
    slice_features: list = field(default_factory=lambda: ["asset", "frequency_minutes"])
    min_slice_orders: int = 200
