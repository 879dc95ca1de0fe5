"""The walk-forward backtest (`lems backtest`): expanding-window folds, each one pipeline run in its own root,
then the test and final periods, scored with block-bootstrap intervals and the blessing gate.

Layers: `config` (the `backtest` section, the periods and each period's pipeline configuration), `scoring`
(per-order slippage -> figures per slice, pure NumPy), `runner` (runs and resumes the periods, writes the
outputs), `report` (Markdown and plot). Built on `pipeline`; the command line (`lems_cli.backtest`) on top.
"""
