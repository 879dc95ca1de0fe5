"""LEM loss (paper §2.4) in `keras.ops`, with the benchmark-window rule of `lem_model.slippage`.

`head_slippage` is the Keras twin of `lem_model.slippage.evaluate_allocations` (same window rule, same
price formulas; see the slippage module docstring for the rule). With `mask_sharpness=None` it uses the
hard rule (metrics; equal to the NumPy evaluator), with a number the soft completion weight
`tanh(mask_sharpness * remaining_t)`, exactly 0 once the order is complete (the loss).

Objective and sign convention. Let D = 100 * (P_achieved / P_benchmark - 1) (percent, eq. 43). The paper
prints L = -(PnL + Risk) / n with PnL = sum softplus(D_buy - D_sell) and Risk = sum softplus(|D|)
(eq. 44-46); minimising that would push buys ABOVE and sells BELOW their benchmarks and maximise the match
heads' |D|, the opposite of the text's intent. We minimise the intended objective

    L = [ sum_{a, m < N, bench} softplus(D_buy - D_sell) + sum_{a, path} softplus(|D_match|) ] / (2*N*2 + 2*4)

per sample (mean over the batch): flexible heads are rewarded for buying below and selling above their
benchmark, the match head (m = N) for staying close to it.

Risk aversion of the flexible heads (`pnl_sharpness` k, default 1 = the paper): the PnL term is
softplus(k * (D_buy - D_sell)) / k. With D in percent (|D| mostly below 1), k = 1 makes softplus nearly linear,
so the flexible heads are close to risk-neutral: they maximise the mean spread whatever its variance. k > 1
bends softplus towards max(0, x): outcomes where the buy ends above the sell cost more than equal gains earn, i.e. risk
aversion; k -> 0 is risk-neutral. The match head's risk term is unchanged.

The fixed-horizon head (minimum period N, m = N-1) has no time flexibility: its window is always all N bars,
so its PnL term can only be won by betting on the window's drift. A causal model cannot predict that drift,
and a near-linear objective then pushes the head to a corner of the simplex (measured on the eval split of
real bars with the paper's objective: its std is 1.15-2.0x TWAP's; benchmarks/RESULTS.md).
`fixed_horizon_risk=True` adds the match head's risk term softplus(|D|) for that head as well (its 2 x 4
terms join the risk sum and the denominator); False (default) is the paper's objective.
`fixed_horizon_pnl=False` (with `fixed_horizon_risk=True`) also drops that head's PnL term, so the head is
trained as a tracker of its benchmark, as the match head is. The reason: with the window fixed, the head's
PnL against the window's TWAP or VWAP is sum_t c_t p_t with sum_t c_t = 0, i.e. -sum_t C_t (p_{t+1} - p_t) with
C_t = sum_{s <= t} c_s known before bar t+1; under a martingale price its expectation is zero for every
causal allocation, so the term adds variance and no expected gain. True (default) keeps the paper's term.

The form of the risk term (`risk_term`): "softplus_abs" (default, the paper's eq. 46) is softplus(|D|), which for
D in percent is close to ln 2 + |D| / 2 near 0 and to |D| far from it: a mean-absolute penalty, so a 13 % miss
in one order weighs as much as about 180 misses of 0.13 %. The match head is judged by the std of its slippage,
a root-mean-square figure, where that one order weighs as much as ten thousand. "squared" uses D^2 (percent
units), the term whose mean is the variance about the benchmark, so the loss weighs rare large misses as the
metric does (measured on the crypto experiment: benchmarks/RESULTS.md, V7; not adopted there).

Degenerate samples (zero volume, constant or zero prices, all-zero rows) keep finite gradients: every
division is a double-where safe division, a window without volume falls back to its TWAP, and undefined
ratios give D = 0.
"""
from __future__ import annotations

import numpy as np
import keras
from keras import ops

from lem_model import layout
from lem_model.presets import LOSS_DEFAULTS as D, RISK_TERMS
from lem_model.slippage import COMPLETION_TOL

#: Sharpness of the soft completion weight tanh(s * remaining): ~1 once > 1% of the order remains.
DEFAULT_MASK_SHARPNESS = D["mask_sharpness"]
#: k of the flexible heads' softplus(k * (D_buy - D_sell)) / k (module docstring); 1 = the paper's eq. 44.
DEFAULT_PNL_SHARPNESS = D["pnl_sharpness"]
_EPS = 1e-12


def safe_divide(num, den, fallback=0.0, eps: float = _EPS):
    """num / den where |den| > eps, else `fallback`; the inner where keeps the gradient finite."""
    ok = ops.abs(den) > eps
    return ops.where(ok, num / ops.where(ok, den, 1.0), fallback)


def reverse_cumsum(x, axis: int = -1):
    """remaining_t = sum_{s >= t} x_s; exact zeros after the last non-zero value (no cancellation)."""
    return ops.flip(ops.cumsum(ops.flip(x, axis), axis=axis), axis)


def _constants(n: int):
    m = n + 1
    min_period = np.array([layout.min_period_of_index(i, n) for i in range(m)])
    forced = (np.arange(n)[None, :] < min_period[:, None]).reshape(1, m, 1, 1, n)
    is_vwap = np.array([b == "vwap" for b in layout.PATH_BENCHMARK]).reshape(1, 1, layout.NUM_PATHS, 1)
    is_notional = np.array([t == "notional" for t in layout.TARGETS]).reshape(1, 1, 1, layout.NUM_TARGETS)
    return forced, is_vwap, is_notional


def head_slippage(labels, allocations, mask_sharpness: float | None = None, tol: float = COMPLETION_TOL):
    """Relative slippage P_achieved / P_benchmark - 1 (a fraction; x1e4 = bps) of every head.

    labels: [B, N, 2] (execution-bar volume, VWAP); allocations: [B, N, N+1, 4, 2].
    Returns [B, N+1, 4, 2]. mask_sharpness None: hard window rule; float: soft completion weight.
    """
    labels = ops.cast(labels, "float32")
    a = ops.transpose(ops.cast(allocations, "float32"), (0, 2, 3, 4, 1))  # [B, M, 4, 2, N]
    n = a.shape[-1]
    forced, is_vwap, is_notional = _constants(n)
    vol = ops.maximum(labels[:, :, layout.LABEL_VOLUME], 0.0)[:, None, None, None, :]
    price = labels[:, :, layout.LABEL_VWAP][:, None, None, None, :]

    remaining = ops.maximum(reverse_cumsum(a, -1), 0.0)
    if mask_sharpness is None:
        done = ops.cast(remaining > tol, "float32")
    else:
        done = ops.tanh(mask_sharpness * remaining)
    w = ops.where(ops.convert_to_tensor(forced), 1.0, done)                 # [B, M, 4, 2, N]

    twap = safe_divide(ops.sum(w * price, -1), ops.sum(w, -1))
    wv = w * vol
    vwap = safe_divide(ops.sum(wv * price, -1), ops.sum(wv, -1), fallback=twap)
    bench = ops.where(ops.convert_to_tensor(is_vwap), vwap, twap)            # [B, M, 4, 2]

    sum_a = ops.sum(a, -1)
    ach_volume = safe_divide(ops.sum(a * price, -1), sum_a)
    shares = safe_divide(a, price)
    ach_notional = safe_divide(sum_a, ops.sum(shares, -1))
    achieved = ops.where(ops.convert_to_tensor(is_notional), ach_notional, ach_volume)
    valid = ops.logical_and(achieved > _EPS, bench > _EPS)
    return ops.where(valid, safe_divide(achieved, bench, fallback=1.0) - 1.0, 0.0)


def lem_objective(labels, allocations, mask_sharpness: float = D["mask_sharpness"],
                  pnl_sharpness: float = D["pnl_sharpness"], fixed_horizon_risk: bool = D["fixed_horizon_risk"],
                  risk_term: str = D["risk_term"], fixed_horizon_pnl: bool = D["fixed_horizon_pnl"]):
    """Per-sample loss [B] (see the module docstring for the objective, its sign, `pnl_sharpness`,
    `fixed_horizon_risk`, `fixed_horizon_pnl` and `risk_term`; defaults: `lem_model.presets.LOSS_DEFAULTS`)."""
    check_options(pnl_sharpness, fixed_horizon_risk, fixed_horizon_pnl, risk_term)
    d = 100.0 * head_slippage(labels, allocations, mask_sharpness)      # [B, N+1, 4, 2], percent
    n = d.shape[1] - 1
    flex = d[:, :n] if fixed_horizon_pnl else d[:, :n - 1]
    buy = ops.stack([flex[:, :, layout.path_index("buy", b)] for b in layout.BENCHMARKS], axis=2)
    sell = ops.stack([flex[:, :, layout.path_index("sell", b)] for b in layout.BENCHMARKS], axis=2)
    k = float(pnl_sharpness)
    pnl = ops.sum(ops.softplus(k * (buy - sell)), axis=(1, 2, 3)) / k
    risk_heads = d[:, n - 1:] if fixed_horizon_risk else d[:, n:]
    risk_per_head = ops.square(risk_heads) if risk_term == "squared" else ops.softplus(ops.abs(risk_heads))
    risk = ops.sum(risk_per_head, axis=(1, 2, 3))
    return (pnl + risk) / float(2 * flex.shape[1] * 2 + 2 * layout.NUM_PATHS * risk_heads.shape[1])


def check_options(pnl_sharpness: float, fixed_horizon_risk: bool, fixed_horizon_pnl: bool, risk_term: str):
    """The loss options' one check (ValueError)."""
    if not pnl_sharpness > 0:
        raise ValueError(f"pnl_sharpness must be > 0, got {pnl_sharpness!r}")
    if risk_term not in RISK_TERMS:
        raise ValueError(f"risk_term must be one of {RISK_TERMS}, got {risk_term!r}")
    if not fixed_horizon_pnl and not fixed_horizon_risk:
        raise ValueError("fixed_horizon_pnl=False needs fixed_horizon_risk=True: otherwise the minimum-period-N head "
                         "has no term in the loss")


@keras.saving.register_keras_serializable(package="lem_model", name="LEMLoss")
class LEMLoss(keras.losses.Loss):
    """Keras loss: y_true = labels [B, N, 2], y_pred = allocations [B, N, N+1, 4, 2]."""

    def __init__(self, mask_sharpness: float = D["mask_sharpness"], pnl_sharpness: float = D["pnl_sharpness"],
                 fixed_horizon_risk: bool = D["fixed_horizon_risk"], risk_term: str = D["risk_term"],
                 fixed_horizon_pnl: bool = D["fixed_horizon_pnl"], name: str = "lem_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        check_options(pnl_sharpness, fixed_horizon_risk, fixed_horizon_pnl, risk_term)
        self.fixed_horizon_pnl = bool(fixed_horizon_pnl)
        self.mask_sharpness = float(mask_sharpness)
        self.pnl_sharpness = float(pnl_sharpness)
        self.fixed_horizon_risk = bool(fixed_horizon_risk)
        self.risk_term = str(risk_term)

    def call(self, y_true, y_pred):
        return lem_objective(y_true, y_pred, self.mask_sharpness, self.pnl_sharpness, self.fixed_horizon_risk,
                             self.risk_term, self.fixed_horizon_pnl)

    def get_config(self):
        return {**super().get_config(), "mask_sharpness": self.mask_sharpness, "pnl_sharpness": self.pnl_sharpness,
                "fixed_horizon_risk": self.fixed_horizon_risk, "risk_term": self.risk_term,
                "fixed_horizon_pnl": self.fixed_horizon_pnl}
