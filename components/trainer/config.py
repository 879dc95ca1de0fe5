"""The Trainer's settings (`model` and `training` in the pipeline configuration): two dataclasses, read by
`module.run_fn`.

`pipeline.configs.PipelineConfig` holds them as its `model` and `training` sections and passes `dataclasses.asdict`
of each in the Trainer's custom config; `run_fn` rebuilds them with `ModelConfig(**values)` and
`TrainingConfig(**values)`. The model's and the loss's defaults are defined once, in `lem_model.presets`; the
training recipe's here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from lem_model.presets import MODEL_DEFAULTS as M, PAPER_CONFIG, TRAINER_LOSS_DEFAULTS as LOSS


@dataclass
class ModelConfig:
    """Hyperparameters of `lem_model.model.build_lem` but the sizes (`sizes`): the paper README configuration by
    default (`lem_model.presets.PAPER_CONFIG`, `MODEL_DEFAULTS`; `LargeExecutionModel` documents each).

    implementation: "auto" | "fast" | "reference": how the model computes its function (same allocations to
    float32 rounding); xla_max_batch: small-batch XLA bound of exported SavedModels (0 = off: then TF Serving needs
    no `--xla_cpu_compilation_enabled`); input_clip: bar features clipped to +-input_clip before the model reads
    them; volume_clip: the linear `volume` feature (volume / normal volume) clipped to at most volume_clip, its
    log1p kept; tilt_bound: each order's term of the allocator's output logits bounded to +-tilt_bound around the
    learned per-step base rate (`lem_model.layers.StepwiseFusedAllocator`), 0 = no bound (the paper's form);
    context_chunks: batch chunks the context block trains on, run at the same time by TensorFlow's inter-op
    threads (2 on a multi-core CPU: a step ~4 % faster; 1 = one pass, for one GPU).
    """
    hidden_size: int = PAPER_CONFIG["hidden_size"]
    num_embedding: int = PAPER_CONFIG["num_embedding"]
    num_heads: int = PAPER_CONFIG["num_heads"]
    fused_mlp_hidden_dim: int = PAPER_CONFIG["fused_mlp_hidden_dim"]
    fused_mlp_layers: int = M["fused_mlp_layers"]
    recurrent: str = M["recurrent"]
    dropout: float = M["dropout"]
    implementation: str = M["implementation"]
    xla_max_batch: int = M["xla_max_batch"]
    input_clip: float = M["input_clip"]
    volume_clip: float = M["volume_clip"]
    tilt_bound: float = M["tilt_bound"]
    context_chunks: int = M["context_chunks"]

    def build_options(self) -> dict:
        """`build_lem` keyword arguments."""
        return dataclasses.asdict(self)


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
    variance the match-VWAP std measures; lem_model.loss.RISK_TERMS). The loss options' defaults:
    `lem_model.presets.TRAINER_LOSS_DEFAULTS`.
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
    pnl_sharpness: float = LOSS["pnl_sharpness"]
    fixed_horizon_risk: bool = LOSS["fixed_horizon_risk"]
    fixed_horizon_pnl: bool = LOSS["fixed_horizon_pnl"]
    risk_term: str = LOSS["risk_term"]

    def loss_options(self) -> dict:
        """`lem_model.compile_lem` / `LEMLoss` keyword arguments: the loss options set here."""
        return {k: getattr(self, k) for k in LOSS if hasattr(self, k)}
