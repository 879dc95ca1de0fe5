"""Evaluator: TFMA slippage metric (`metrics`), EvalConfig and blessing thresholds (`eval_config`)."""
