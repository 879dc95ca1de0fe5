"""Evaluator: TFMA slippage metric (`metrics`), EvalConfig and per-slice blessing thresholds (`eval_config`), and the
volume-curve VWAP baseline component (`vwap_curve`, profile from the training split)."""
