"""Keras slippage metrics in bps (1e4 * (P_achieved / P_benchmark - 1)), hard window rule.

They use `lem_model.loss.head_slippage` with the hard rule, i.e. exactly the NumPy evaluator
(`lem_model.slippage.evaluate_allocations`); tests check the two agree.
"""
from __future__ import annotations

import keras
from keras import ops

from lem_model import layout
from lem_model.loss import head_slippage

# The compiled metrics all read the same [B, N+1, 4, 2] slippage tensor: compute it once per (y_true, y_pred)
# pair (the same tensor objects are passed to every metric of a step, eagerly or while tracing).
_LAST = [None, None, None]


def _shared_head_slippage(y_true, y_pred):
    if _LAST[0] is not y_true or _LAST[1] is not y_pred:
        _LAST[:] = [y_true, y_pred, head_slippage(y_true, y_pred)]
    return _LAST[2]


@keras.saving.register_keras_serializable(package="lem_model", name="SlippageMetric")
class SlippageMetric(keras.metrics.Mean):
    """Mean slippage (bps) of one path.

    heads="flexible": averaged over the N flexible minimum-period heads (paper sign: lower is better for
    buys, higher for sells); heads="match": mean |slippage| of the match head (risk, lower is better) over
    both sides. target: "volume" | "notional" | None (both). min_index: one head instead (0..N).
    """

    def __init__(self, side: str | None, benchmark: str, target: str | None = None, heads: str = "flexible",
                 min_index: int | None = None, name: str | None = None, dtype=None):
        if heads not in ("flexible", "match"):
            raise ValueError(f"heads must be 'flexible' or 'match', got {heads!r}")
        sides = layout.SIDES if side is None else (side,)
        self.path_ids = [layout.path_index(s, benchmark) for s in sides]
        self.target_ids = list(range(layout.NUM_TARGETS)) if target is None else [layout.target_index(target)]
        self.side, self.benchmark, self.target, self.heads, self.min_index = side, benchmark, target, heads, min_index
        if name is None:
            parts = (["match"] if heads == "match" else []) + ([side] if side else []) + [benchmark] \
                + ([target] if target else []) + ([f"m{min_index}"] if min_index is not None else []) \
                + (["abs_bps"] if heads == "match" else ["bps"])
            name = "_".join(parts)
        super().__init__(name=name, dtype=dtype)

    def per_sample(self, y_true, y_pred):
        """[B] mean slippage in bps of the selected heads, paths and targets."""
        d = 1e4 * _shared_head_slippage(y_true, y_pred)                  # [B, N+1, 4, 2]
        n = d.shape[1] - 1
        if self.min_index is not None:
            d = d[:, self.min_index:self.min_index + 1]
        elif self.heads == "flexible":
            d = d[:, :n]
        else:
            d = d[:, n:]
        if self.heads == "match":
            d = ops.abs(d)
        d = ops.take(ops.take(d, self.path_ids, axis=2), self.target_ids, axis=3)
        return ops.mean(d, axis=(1, 2, 3))

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self.per_sample(y_true, y_pred), sample_weight=sample_weight)

    def get_config(self):
        return {"side": self.side, "benchmark": self.benchmark, "target": self.target, "heads": self.heads,
                "min_index": self.min_index, "name": self.name, "dtype": self.dtype}


def lem_metrics() -> list:
    """The compiled metrics: {buy,sell}_{vwap,twap}_{volume,notional}_bps (flexible heads) and
    match_{vwap,twap}_abs_bps (match head, both sides and targets)."""
    out = [SlippageMetric(s, b, t) for s in layout.SIDES for b in layout.BENCHMARKS for t in layout.TARGETS]
    out += [SlippageMetric(None, b, heads="match") for b in layout.BENCHMARKS]
    return out
