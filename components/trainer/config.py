"""The Trainer's settings (`training` in the pipeline configuration): one dataclass, read by `module.run_fn`.

`pipeline.configs.PipelineConfig` holds it as its `training` section and passes `dataclasses.asdict` of it in the
Trainer's custom config; `run_fn` rebuilds it with `TrainingConfig(**values)`, so each default is defined here
only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from lem_model.presets import PAPER_PNL_SHARPNESS, RISK_TERMS


@dataclass
class TrainingConfig:
    """The paper's recipe (§3.4) as defaults.

    min_rates / max_rates: constraint configurations (fractions of the order per bar) each training example is
    seen with; None in min_rates means the paper's 1/N^2, max rate 1 = unconstrained. min_learning_rate is
    the floor of reduce-LR-on-plateau. steps_per_epoch / validation_steps: None = one pass over the split.
    frequency_weighting: "none" or "inverse_sqrt" (each example's loss weighted by sqrt(f_min / f) for its bar
    frequency f: slippage grows with the square root of an order's duration, so unweighted the longest bars
    dominate a multi-frequency model; lem_model.presets.FREQUENCY_WEIGHTINGS). pnl_sharpness: risk aversion k
    of the flexible heads' PnL term softplus(k * (D_buy - D_sell)) / k (lem_model.loss; 1 = the paper).
    fixed_horizon_risk: train the minimum-period-N head (no time flexibility) with the match head's risk term
    as well as its PnL term (lem_model.loss; false = the paper). On by default: the blessing gate checks that
    head's slippage std against TWAP's on every gated slice (components.evaluator.gate), and without the risk
    term its std can be several times TWAP's (the demo's sell side: 2.8x). fixed_horizon_pnl: false drops that
    head's PnL term, so it is trained as a tracker (needs fixed_horizon_risk; lem_model.loss says why a causal
    model gains nothing in expectation from that term); true = the paper. risk_term: the form of that risk term,
    "softplus_abs" (the paper's softplus(|D|), a mean-absolute penalty) or "squared" (D^2, whose mean is the
    variance the match-VWAP std measures; lem_model.loss.RISK_TERMS).
    """
    learning_rate: float = 1e-5
    batch_size: int = 256
    epochs: int = 50
    shuffle_buffer: int = 10_000
    early_stopping_patience: int = 2
    reduce_lr_patience: int = 1
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-7
    min_rates: list = field(default_factory=lambda: [None])
    max_rates: list = field(default_factory=lambda: [1.0])
    steps_per_epoch: Optional[int] = None
    validation_steps: Optional[int] = None
    mixed_precision: bool = False
    use_gpu: bool = True
    jit_compile: Any = "auto"  # Keras `Model.compile(jit_compile=...)`: "auto" (XLA where Keras enables it), True, False
    seed: int = 42
    verbose: int = 2
    frequency_weighting: str = "none"
    pnl_sharpness: float = PAPER_PNL_SHARPNESS
    fixed_horizon_risk: bool = True
    fixed_horizon_pnl: bool = True
    risk_term: str = RISK_TERMS[0]
