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
#: How `LargeExecutionModel` computes its function (`implementation=`): "reference" (the layers' own calls),
#: "fast" (`lem_model.fast`, same function, fewer ops) or "auto" (fast where it can, the default).
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
SMALL_CONFIG = dict(lookback=60, n_ahead=PAPER_SIZES["n_ahead"], hidden_size=32, num_embedding=8, num_heads=4,
                    fused_mlp_hidden_dim=32)
#: Risk aversion k of the flexible heads' PnL term softplus(k * (D_buy - D_sell)) / k (`lem_model.loss`); 1 is the
#: paper's eq. 44.
PAPER_PNL_SHARPNESS = 1.0
#: Forms of the match head's risk term (`lem_model.loss`): "softplus_abs" is the paper's eq. 46 and the default,
#: "squared" is D^2 (the variance the match-VWAP std measures).
RISK_TERMS = ("softplus_abs", "squared")


def paper_min_rate(n_ahead: int) -> float:
    """The paper's training constraint (§3.4), the default `min_rate` everywhere: trade at least 1/N^2 of the
    order per bar while it is incomplete."""
    return 1.0 / float(n_ahead) ** 2
