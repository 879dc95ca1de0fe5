"""The walk-forward backtest's configuration: a pipeline configuration file with one more section, `backtest`.

    backtest:
      name: crypto                      # names the outputs: <output_dir>/backtest-<name>.json / .md / .png
      output_dir: benchmarks/results
      fold_boundaries: [2020-07-01, 2021-01-01, 2021-07-01, 2022-01-01, 2022-07-01, 2023-01-01]
      test: [2023-01-01, 2024-01-10]    # scored once, by a model trained on everything before it
      final: [2024-01-10, null]         # null = the end of the data; read once, when the config is final
      validation_days: 91               # the Trainer's early-stopping split: the last days before each period
      period_overrides:                 # optional: `lems run --set` assignments for one period, e.g. another file
        final: ["data.input_patterns=[\"newer_file.parquet\"]"]

Every period [a, b) (fold k: [fold_boundaries[k], fold_boundaries[k+1]); then test, then final) is ONE pipeline
run of the rest of the file in its own root `<root>/<period name>`, with its data splits set to
    train [data.start, a - validation_days),  eval [a - validation_days, a),  test [a, b)
so the model trains (and early-stops) only on bars before the period, and the Evaluator blesses and the backtest
scores the period itself (`evaluation.split` and `report.split` = test). The pipeline's embargo (`data.
embargo_bars`) keeps every training window's execution bars out of the following split and its embargo, and a
window belongs to the split of its execution bars (`components.example_gen.config.IngestionConfig`).

This module reads files and builds configurations only (no TensorFlow): `lems backtest` checks a file before
anything heavy loads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

import pandas as pd

from pipeline.configs import PipelineConfig

PERIOD_KINDS = ("folds", "test", "final")


@dataclass
class BacktestConfig:
    """The `backtest` section (module docstring). Dates are ISO dates or times (naive = UTC)."""
    name: str = "backtest"
    output_dir: str = "benchmarks/results"
    fold_boundaries: List[str] = field(default_factory=list)
    test: Optional[List[Optional[str]]] = None
    final: Optional[List[Optional[str]]] = None
    validation_days: int = 91
    period_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.fold_boundaries) < 2:
            raise ValueError("backtest.fold_boundaries needs at least two dates (one fold: [first, second))")
        stamps = [_stamp(d, "backtest.fold_boundaries") for d in self.fold_boundaries]
        if any(b <= a for a, b in zip(stamps, stamps[1:])):
            raise ValueError(f"backtest.fold_boundaries must increase, got {self.fold_boundaries}")
        for name in ("test", "final"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or len(value) != 2 or value[0] is None:
                raise ValueError(f"backtest.{name} must be [start, end] (end may be null: the end of the data), "
                                 f"got {value!r}")
            if value[1] is not None and _stamp(value[1], f"backtest.{name}") <= _stamp(value[0], f"backtest.{name}"):
                raise ValueError(f"backtest.{name} must end after it starts, got {value}")
        if int(self.validation_days) < 1:
            raise ValueError(f"backtest.validation_days must be >= 1, got {self.validation_days}")
        for key, value in (self.period_overrides or {}).items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"backtest.period_overrides[{key!r}] must be a list of SECTION.FIELD=VALUE strings")
        if not str(self.name).replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"backtest.name must be letters, digits, '-' or '_', got {self.name!r}")


@dataclass(frozen=True)
class Period:
    """One scored period: a fold of the walk-forward, or the test or the final period."""
    name: str            # "fold-1" .. "fold-K", "test", "final"
    kind: str            # "folds" | "test" | "final"
    start: str
    end: Optional[str]   # None: the end of the data

    @property
    def label(self) -> str:
        return f"{self.name} [{self.start}, {self.end or 'end of data'})"


def _stamp(value, where: str) -> pd.Timestamp:
    try:
        t = pd.Timestamp(str(value))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {value!r} is not a date ({e})") from None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%d") if t == t.normalize() else t.strftime("%Y-%m-%dT%H:%M:%S")


def load(path: str, overrides=()) -> tuple:
    """(PipelineConfig, BacktestConfig) of a backtest file: the `backtest` section, and the rest read as a
    pipeline configuration (types, choices and keys as `PipelineConfig.from_file` checks them; the values as
    `validate` checks them on each period's configuration, whose splits the periods set, so the file's own
    `eval_start`, `test_start` and `end` are not used); `overrides` as `lems run --set`."""
    import yaml
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backtest config not found: {path}")
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) if path.endswith((".yaml", ".yml")) else json.load(f)
    if not isinstance(values, dict) or not isinstance(values.get("backtest"), dict):
        raise ValueError(f"{path}: a backtest config needs a `backtest` section (walkforward/config.py)")
    section = dict(values.pop("backtest"))
    known = {f.name for f in dataclasses.fields(BacktestConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} in backtest; allowed: {sorted(known)}")
    try:
        backtest = BacktestConfig(**section)
        pipeline = PipelineConfig.from_dict(values).with_overrides(list(overrides))
        first = periods(backtest, ("folds",))[0]
        period_config(pipeline, backtest, first)  # validates the values with the first fold's splits
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e
    return pipeline, backtest


def periods(backtest: BacktestConfig, kinds=("folds",)) -> List[Period]:
    """The periods of `kinds` (any of "folds", "test", "final"), in time order."""
    unknown = set(kinds) - set(PERIOD_KINDS)
    if unknown:
        raise ValueError(f"unknown period kind(s) {sorted(unknown)}; choose from {PERIOD_KINDS}")
    out = []
    if "folds" in kinds:
        b = backtest.fold_boundaries
        out += [Period(f"fold-{i + 1}", "folds", _iso(_stamp(b[i], "")), _iso(_stamp(b[i + 1], "")))
                for i in range(len(b) - 1)]
    for kind in ("test", "final"):
        value = getattr(backtest, kind)
        if kind in kinds:
            if value is None:
                raise ValueError(f"backtest.{kind} is not set in this config")
            out.append(Period(kind, kind, _iso(_stamp(value[0], "")),
                              None if value[1] is None else _iso(_stamp(value[1], ""))))
    return out


def period_config(pipeline: PipelineConfig, backtest: BacktestConfig, period: Period) -> PipelineConfig:
    """The pipeline configuration of one period (module docstring): its own root, pipeline name and serving
    directory; splits train / eval (validation) / test (the period); blessing and report on the period."""
    start = _stamp(period.start, period.name)
    validation_start = start - pd.Timedelta(days=int(backtest.validation_days))
    data_start = pipeline.data.start
    if data_start is not None and _stamp(data_start, "data.start") >= validation_start:
        raise ValueError(f"{period.label}: data.start {data_start} leaves no training bars before the validation "
                         f"split ({_iso(validation_start)}); move the first fold boundary later")
    root = os.path.join(pipeline.root, period.name)
    overrides = (backtest.period_overrides or {}).get(period.name) or (backtest.period_overrides or {}).get(period.kind)
    if overrides:
        pipeline = pipeline.with_overrides(overrides)
    return pipeline.replace(
        pipeline_name=f"{pipeline.pipeline_name}-{period.name}",
        root=root, metadata_path=None,
        data={"eval_start": _iso(validation_start), "test_start": period.start, "end": period.end},
        evaluation={"split": "test"},
        report={"split": "test"},
        serving={"serving_dir": os.path.join(root, "serving")},
    ).validate()


def config_hash(config: PipelineConfig) -> str:
    """A short hash of everything a period's result depends on (its full configuration but the locations)."""
    values = config.to_dict()
    for key in ("root", "metadata_path", "beam_pipeline_args", "kubeflow"):
        values.pop(key, None)
    values.get("serving", {}).pop("serving_dir", None)
    values.get("data", {}).pop("source", None)
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
