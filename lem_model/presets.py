"""Named sizes and hyperparameters, pure Python so that every layer of the project can import them cheaply.

`PAPER_SIZES`: the paper's order window in bars (docs/example-contract.md): W = 336 normalisation bars
(§3.3), L = 120 lookback bars and N = 12 execution bars (the paper's README configuration).
`PAPER_CONFIG`: `build_lem` hyperparameters of the paper's README configuration; `SMALL_CONFIG`: the quick one
(tests use smaller still).
"""

PAPER_SIZES = {"norm_window": 336, "lookback": 120, "n_ahead": 12}
PAPER_CONFIG = dict(lookback=PAPER_SIZES["lookback"], n_ahead=PAPER_SIZES["n_ahead"], hidden_size=200,
                    num_embedding=20, num_heads=8, fused_mlp_hidden_dim=100)
#: Recurrent blocks `lem_model.model.build_lem` supports (tkan: the paper's, CC BY-NC-SA; lstm/gru: licence-clean).
RECURRENT_CHOICES = ("tkan", "lstm", "gru")
#: How `LargeExecutionModel` computes its function (`implementation=`, `lem_model.kernels`): "reference" (each
#: block's definition), "auto" (each block's registered kernel where it takes the call: same function, fewer ops;
#: the default) or "fast" (as "auto", a kernel that declines is an error).
IMPLEMENTATIONS = ("auto", "fast", "reference")
DEFAULT_IMPLEMENTATION = "auto"
#: Default `LargeExecutionModel(xla_max_batch=)`: in traced TensorFlow inference graphs of the fast form, batches
#: up to this size run XLA-compiled. Measured on 2 CPU cores, paper config: the 131 TKAN steps take ~2 ms XLA vs
#: ~15 ms plain at batch 1 (while-loop overhead per step), break-even near batch 8-16.
XLA_MAX_BATCH = 8
#: Default `LargeExecutionModel(input_clip=)`: input bar features are clipped to +-this (in feature units: volume
#: ratios to the window's normal volume, returns in units of the window's sigma); 1e6 = only guards against
#: overflow, a smaller value saturates extreme bars outside the range training saw.
INPUT_CLIP = 1e6
#: Per-example loss weights by bar frequency in training (`lem_model.features.frequency_loss_weights`):
#: "none" (the paper) or "inverse_sqrt" (weight sqrt(f_min / f): slippage scales with the square root of the
#: order's duration, so without it the longest bars dominate the gradient of a multi-frequency model).
FREQUENCY_WEIGHTINGS = ("none", "inverse_sqrt")
#: `LargeExecutionModel`'s other options at their defaults (the paper's form), the one definition that the model and
#: the pipeline's model section (`components.trainer.config.ModelConfig`) refer to.
MODEL_DEFAULTS = dict(fused_mlp_layers=2, recurrent="tkan", dropout=0.0, clip_sharpness=100.0, input_clip=INPUT_CLIP,
                      volume_clip=INPUT_CLIP, tilt_bound=0.0, implementation=DEFAULT_IMPLEMENTATION,
                      xla_max_batch=XLA_MAX_BATCH, context_chunks=1)
SMALL_CONFIG = dict(lookback=60, n_ahead=PAPER_SIZES["n_ahead"], hidden_size=32, num_embedding=8, num_heads=4,
                    fused_mlp_hidden_dim=32)
#: Forms of the match head's risk term (`lem_model.loss`): "softplus_abs" is the paper's eq. 46 and the default,
#: "squared" is D^2 (the variance the match-VWAP std measures).
RISK_TERMS = ("softplus_abs", "squared")
#: The LEM loss's options at their defaults, the paper's objective (`lem_model.loss` explains each): the one
#: definition that `LEMLoss`, `lem_objective` and `compile_lem` refer to. mask_sharpness: of the soft completion
#: weight; pnl_sharpness: risk aversion k of the flexible heads' PnL term softplus(k * (D_buy - D_sell)) / k (1 is
#: eq. 44); fixed_horizon_risk / fixed_horizon_pnl: the risk term on / the PnL term off the minimum-period-N head.
LOSS_DEFAULTS = dict(mask_sharpness=500.0, pnl_sharpness=1.0, fixed_horizon_risk=False, fixed_horizon_pnl=True,
                     risk_term=RISK_TERMS[0])
#: The loss options the Trainer trains with by default (`components.trainer.config.TrainingConfig`): the paper's,
#: with the risk term on the minimum-period-N head too (the blessing gate checks that head's slippage std against
#: TWAP's, and without it that std can be several times TWAP's: TrainingConfig says more).
TRAINER_LOSS_DEFAULTS = {**LOSS_DEFAULTS, "fixed_horizon_risk": True}
PAPER_PNL_SHARPNESS = LOSS_DEFAULTS["pnl_sharpness"]  # the name older code imports


def paper_min_rate(n_ahead: int) -> float:
    """The paper's training constraint (§3.4), the default `min_rate` everywhere: trade at least 1/N^2 of the
    order per bar while it is incomplete."""
    return 1.0 / float(n_ahead) ** 2
