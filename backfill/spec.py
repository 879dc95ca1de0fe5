"""`BackfillSpec`: what one backfill run computes (dates, assets, frequencies, scenarios) and where it writes.

Scenarios: every order window gets one row per scenario = (order constraint, minimum-period head, path,
target). Heads: minimum period 1..N bars, or "match" (the match-benchmark head, window = all N bars).
Constraints: (min_rate, max_rate) fractions of the order per bar (None min_rate = the training default 1/N^2).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

import pandas as pd

from lem_model import layout
from lem_model.presets import paper_min_rate

MATCH = "match"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One row kind: constraint, head `m` (0..N, N = match head), path and target (lem_model.layout)."""
    min_rate: float
    max_rate: float
    head: int
    path: int
    target: int


@dataclasses.dataclass(frozen=True)
class BackfillSpec:
    """A backfill request.

    source: directory (or file) of raw bar files (any format `components.market_data.readers` reads);
    model_dir: pushed SavedModel, a version directory or `<serving_dir>/<model_name>` (highest version);
    output_dir: Parquet dataset root (`date=YYYY-MM-DD/asset=SYMBOL/part-00000.parquet`, `_manifest.json`);
    start_date, end_date: first and last UTC date (inclusive) of the windows' `origin_time` (first
      execution bar); assets: symbols (None = every asset in the source); frequencies: bar lengths in
      minutes; stride: bars between consecutive order origins; heads: minimum periods (1..N) and/or "match"
      (None = all N+1 heads); paths / targets: names from `lem_model.layout`; constraints: (min_rate,
      max_rate) pairs (None min_rate = 1/N^2); input_patterns / bad_rows / max_gap_bars: ExampleGen options;
    batch_size: windows per model call; log_every: a progress log line every that many windows (per worker).
    """
    source: str
    model_dir: str
    output_dir: str
    start_date: str
    end_date: str
    assets: Optional[tuple] = None
    frequencies: tuple = (15,)
    stride: int = 1
    heads: Optional[tuple] = None
    paths: tuple = layout.PATHS
    targets: tuple = layout.TARGETS
    constraints: tuple = ((None, 1.0),)
    input_patterns: tuple = ("*",)
    bad_rows: str = "error"
    max_gap_bars: int = 8
    batch_size: int = 256
    log_every: int = 10_000

    def __post_init__(self):
        start, end = self.date_bounds()
        if end <= start:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        if self.stride < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("stride, batch_size and log_every must be >= 1")
        for p in self.paths:
            if p not in layout.PATHS:
                raise ValueError(f"unknown path {p!r}; choose from {layout.PATHS}")
        for t in self.targets:
            if t not in layout.TARGETS:
                raise ValueError(f"unknown target {t!r}; choose from {layout.TARGETS}")
        for a in self.assets or ():
            if not a or "/" in a or a.startswith("."):
                raise ValueError(f"invalid asset symbol {a!r}")
        if not self.frequencies:
            raise ValueError("at least one frequency (minutes) is required")
        if not self.constraints:
            raise ValueError("at least one (min_rate, max_rate) constraint is required")

    def date_bounds(self) -> tuple[int, int]:
        """[start, end) in Unix seconds: start_date 00:00 UTC to the day after end_date 00:00 UTC."""
        s = pd.Timestamp(self.start_date)
        e = pd.Timestamp(self.end_date)
        if s.tzinfo is not None or e.tzinfo is not None or s != s.normalize() or e != e.normalize():
            raise ValueError(f"start_date/end_date must be plain dates (YYYY-MM-DD, UTC), got "
                             f"{self.start_date!r}, {self.end_date!r}")
        return int(s.value // 10**9), int((e + pd.Timedelta(days=1)).value // 10**9)

    def dates(self) -> list[str]:
        """Every date of the range, YYYY-MM-DD."""
        return [d.strftime("%Y-%m-%d") for d in pd.date_range(self.start_date, self.end_date, freq="D")]

    def head_indices(self, n_ahead: int) -> list[int]:
        """Head indices m (0..N) of `heads`: minimum period p -> m = p - 1; "match" -> N."""
        if self.heads is None:
            return list(range(n_ahead + 1))
        out = []
        for h in self.heads:
            if str(h).lower() == MATCH:
                m = n_ahead
            else:
                p = int(h)
                if not 1 <= p <= n_ahead:
                    raise ValueError(f"minimum period {p} is outside 1..N={n_ahead} bars of the model")
                m = p - 1
            if m not in out:
                out.append(m)
        return sorted(out)

    def constraint_pairs(self, n_ahead: int) -> list[tuple[float, float]]:
        out = []
        for lo, hi in self.constraints:
            lo = paper_min_rate(n_ahead) if lo is None else float(lo)
            hi = float(hi)
            if not 0.0 <= lo <= 1.0 / n_ahead <= hi <= 1.0:
                raise ValueError(f"constraint (min_rate={lo}, max_rate={hi}) is infeasible for N={n_ahead}: "
                                 f"need 0 <= min_rate <= 1/N <= max_rate <= 1")
            out.append((lo, hi))
        return out

    def scenarios(self, n_ahead: int) -> list[Scenario]:
        """All scenarios in row order: constraint, head, path, target."""
        return [Scenario(lo, hi, m, layout.PATHS.index(p), layout.TARGETS.index(t))
                for lo, hi in self.constraint_pairs(n_ahead) for m in self.head_indices(n_ahead)
                for p in self.paths for t in self.targets]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def resolve_model_dir(path: str) -> tuple[str, str]:
    """(SavedModel directory, version name): `path` itself when it holds saved_model.pb, else its highest
    numeric version subdirectory (the Pusher / TF Serving layout)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path, os.path.basename(os.path.normpath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory not found: {path}")
    versions = [d for d in os.listdir(path) if d.isdigit()
                and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"{path}: no saved_model.pb and no numeric version directory holding one "
                                f"(expected <serving_dir>/<model_name>/<version>/saved_model.pb)")
    v = max(versions, key=int)
    return os.path.join(path, v), v
