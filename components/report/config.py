"""The execution report's settings (`report` in the pipeline configuration), passed to the ExecutionReport
component's parameters by `pipeline.pipeline.create_pipeline`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReportConfig:
    """The HTML report component (tables 1-5, figures 5-19 kinds) on `split`."""
    enabled: bool = True
    split: str = "test"
    max_curves: int = 400  # execution curves drawn per figure panel (all orders enter the mean curve)
