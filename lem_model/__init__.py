"""lem_model: the Large Execution Model library (Keras 3 + NumPy; no TFX).

Light on import: `lem_model.slippage`, `lem_model.baselines`, `lem_model.layout` and `lem_model.presets` need
at most NumPy; the Keras parts (`build_lem`, `compile_lem`, `LargeExecutionModel`, `LEMLoss`, `lem_metrics`)
load on first use.
"""
_LAZY = {
    "build_lem": "lem_model.model", "compile_lem": "lem_model.model", "LargeExecutionModel": "lem_model.model",
    "PAPER_CONFIG": "lem_model.presets", "SMALL_CONFIG": "lem_model.presets", "RECURRENT_CHOICES": "lem_model.model",
    "LEMLoss": "lem_model.loss", "lem_objective": "lem_model.loss", "head_slippage": "lem_model.loss",
    "SlippageMetric": "lem_model.metrics", "lem_metrics": "lem_model.metrics",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lem_model' has no attribute {name!r}")
