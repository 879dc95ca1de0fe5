"""`IngestionConfig`: everything the market-data ExampleGen needs, in one JSON-serialisable object.

The pipeline config (`pipeline/configs.py`) builds one and passes it to `MarketDataExampleGen`; the
benchmark entry point `components.example_gen.ingest.run_ingestion` takes the same object.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Mapping, Optional, Sequence

import pandas as pd

from components.market_data.outliers import OUTLIER_MODES
from components.market_data.resample import MISSING_RULES
from components.market_data.readers import (BAD_ROW_POLICIES, MISSING_QUOTE_POLICIES, QUOTE_VOLUME_RULES,
                                            check_timezone)
from lem_model.presets import PAPER_SIZES

SPLIT_NAMES = ("train", "eval", "test")


@dataclasses.dataclass(frozen=True)
class IngestionConfig:
    """Market-data ingestion settings.

    Sizes (bars of each example's own frequency): `norm_window` W, `lookback` L, `n_ahead` N.
    `frequencies`: target bar lengths in minutes, resampled from each asset's source bars where the target
      is a multiple of the source bar length (paper: 15, 90, 250 minutes for crypto, 1440 for equities;
      a target an asset cannot be built at is skipped and counted as `frequency_not_derivable`).
    `stride` (or per frequency `stride_by_frequency`): bars between consecutive example origins.
    Splits: time ranges `train` [start, eval_start), `eval` [eval_start, test_start), `test` [test_start, end)
      (None = open). An example belongs to the split whose range holds its N EXECUTION bars (bars W+L ..
      W+L+N-1, open of the first to close of the last); its W normalisation and L lookback bars may reach back
      into earlier splits (they are known when the order starts), but no bar of any example opens before
      `start` or closes after `end`. In every split after the first, the first execution bar must open at
      least `embargo_bars` bars (of the example's frequency) after the split's start, so no training window's
      execution bars (its labels) lie in the eval period or its embargo, nor an eval window's in the test
      period or its embargo. Dropped and counted: execution bars straddling a boundary
      (`examples_straddling_split`), in an embargo (`examples_in_embargo`), a bar outside [start, end)
      (`examples_outside_range`). Never hashed. (Before issue 32 the whole W+L+N-bar window had to lie in one
      split, which cost each split after the first its first W+L bars of orders.)
    Missing bars: `missing_bar_rule` ("zero_fill" or "skip"), per frequency override
      `missing_bar_rule_by_frequency` (default daily bars: "skip", trading days are consecutive), gaps longer
      than `max_gap_bars` split a series (see `components.market_data.resample`).
    `bad_rows`: "error" (default) or "drop" (counted) for bad values (see `components.market_data.readers`).
    `quote_volume`: "file" (default: each file's own quote volume, see `components.market_data.readers`) or
      "volume_x_adj_close" (volume x adjusted close on every row, the paper's equity notional, §3.2; a file
      without an adjusted close is refused).
    `missing_quote_volume`: an empty `quote_volume` cell of a tidy file: "fill" (default: volume x close,
      estimated, counted `rows_quote_volume_filled` in the counts and per asset in the report), "drop" (the
      row, counted `rows_quote_volume_missing`) or "fail" (an error naming file, row, asset and time).
    `timezone` (default "UTC"): the zone of NAIVE timestamps of tidy files (an IANA name, e.g.
      "America/New_York"): read as its wall-clock times and converted to UTC, daylight saving included (the
      spring-forward hour has no bars to fill; a time inside it is an error; the repeated fall-back hour is
      read in file order, first as daylight time, then as standard time). Timestamps with an offset are
      converted with their own offset, whatever it is (-04:00 and -05:00 in one file are one zone). Yahoo
      daily `Date` labels stay 00:00 UTC.
    A bar is valid as `lem_model.request_rules` defines it for serving too (finite, >= 0, empty on both sides
      or neither): a row with volume 0 and quote volume > 0 (or the reverse) is a bad row (`bad_rows`:
      an error naming file, row, asset and time, or dropped and counted `rows_inconsistent_volume`).
    `min_examples_per_split`: the run fails when a split gets fewer examples; the message lists, per asset
      and frequency, the source bar length used, the bars' date range and the examples per split.
    `input_patterns`: which files under the input base to read (`components.market_data.readers.
      list_input_files`): a pattern without `*?[` matches files whose relative path contains it
      (case-insensitive, e.g. "binance", "klines"); a glob matches the relative path, a folder (recursively)
      or the file name (e.g. "*.parquet"). No match is an error listing the files seen.
    Source bar length: ONE per asset. An asset found at two bar lengths (e.g. 1-minute and 15-minute rows of
      a tidy file's `frequency` column, or BTCUSDT-1m and BTCUSDT-15m klines) is refused, naming the files,
      the asset and the bar lengths with their row counts, unless declared: `source_bar_minutes` (every
      asset) or per asset `source_bar_minutes_by_asset` ({"BTCUSDT": 15}); then only that length's rows are
      read (others counted `rows_other_bar_length`; an asset without it is skipped, counted
      `assets_without_declared_bar_length`). Never picked silently, never merged.
    Several files for one asset at its source bar length (e.g. `binance_vision_klines_paper_pairs.parquet`,
      true quote volume, and `binance_freqtrade_15m_1h.parquet`, quote volume estimated: its
      `quote_volume_is_estimate` column; with `source_bar_minutes: 15` the freqtrade 1-hour rows are
      `rows_other_bar_length`): merged per bar, by default, the true quote volume preferred wherever both
      give a bar (the estimated one dropped, counted `bars_duplicate_replaced_by_true_quote`), each file
      filling the other's gaps; two files of the same kind repeating an open time are an error, or with
      `bad_rows="drop"` the first file in path order is kept (`rows_duplicate_across_files`). Each bar keeps
      whether its quote volume is estimated through resampling (estimated when any source bar is); the
      report counts them per asset (`components.example_gen.ingest`).
    Outlier bars (`components.market_data.outliers`, causal: trailing `outlier_window` bars before each bar,
      per asset and frequency): log volume more than `outlier_volume_z` robust sigmas above its trailing
      median, or a bar-VWAP log return more than `outlier_return_z` robust sigmas from its trailing median.
      `outliers`: "flag" (default: counted and listed in the report, and the ingestion fails naming them),
      "drop" (removed and counted; they become missing bars of the missing-bar rule) or "off".
      Defaults, measured on the 15-minute BTC/ETH/XRP bars 2017-2024 of `/work/shared/data`: no bar flagged
      at 15 or 90 minutes; of 200 random 15-minute bars per asset made 1000x in quote volume, 198-200 flagged;
      made 1000x in volume and quote volume (same VWAP), 110-130 flagged.
    Whole-series screen (`components.market_data.outliers.screen`, non-causal: each bar against the bars
      before AND after it, per asset and frequency, under the same `outliers` mode and counted
      `bars_outlier_screen_spike` / `bars_outlier_screen_vwap` beside the causal scores): an isolated
      volume or quote-volume spike more than `screen_volume_z` robust sigmas above both sides that the next
      bar does not keep (a news burst decays over bars; a corrupted value does not), and a bar VWAP more than
      `screen_vwap_z` robust sigmas off both sides in one direction (a volume or quote volume altered alone:
      a flipped byte). 0 turns one off. Defaults (10, 150), measured (issue 36): no bar flagged in the
      generated data (`components.market_data.synthetic`, bursts included: max 5.1 and 7.3), nor in the
      Binance klines, freqtrade and Dow files of `/work/shared/data` at their source and configured
      frequencies (max 8.9 and 98: a real crash); on generated 15-minute bars a one-bar spike of volume and
      quote volume (same VWAP) is flagged at 1000x always, at 100x in ~83 % of positions, at 30x rarely and
      at 10x never (real series hold genuine isolated 12x bars at z 6.9, so 10x cannot be told from data);
      of volumes multiplied by 0.1-7 alone, ~89 % are flagged, all by more than 1.7x.
    """
    frequencies: Sequence[int] = (15, 90, 250)  # the paper's crypto bars; its equities use (1440,)
    norm_window: int = PAPER_SIZES["norm_window"]
    lookback: int = PAPER_SIZES["lookback"]
    n_ahead: int = PAPER_SIZES["n_ahead"]
    stride: int = 1
    stride_by_frequency: Mapping[int, int] = dataclasses.field(default_factory=dict)
    start: Optional[str] = None
    eval_start: Optional[str] = "2017-01-01"
    test_start: Optional[str] = "2020-01-01"
    end: Optional[str] = None
    embargo_bars: int = 12
    missing_bar_rule: str = "zero_fill"
    missing_bar_rule_by_frequency: Mapping[int, str] = dataclasses.field(default_factory=lambda: {1440: "skip"})
    max_gap_bars: int = 8
    bad_rows: str = "error"
    quote_volume: str = "file"
    min_examples_per_split: int = 1
    input_patterns: Sequence[str] = ("*",)
    source_bar_minutes: Optional[int] = None
    source_bar_minutes_by_asset: Mapping[str, int] = dataclasses.field(default_factory=dict)
    outliers: str = "flag"
    outlier_window: int = 96
    outlier_volume_z: float = 12.0
    outlier_return_z: float = 200.0
    screen_volume_z: float = 10.0
    screen_vwap_z: float = 150.0
    missing_quote_volume: str = "fill"
    timezone: str = "UTC"
    chunk_rows: int = 200_000

    def __post_init__(self):
        for f in self.frequencies:
            if int(f) < 1:
                raise ValueError(f"frequencies must be positive minutes, got {f}")
        repeated = sorted({int(f) for f in self.frequencies if list(map(int, self.frequencies)).count(int(f)) > 1})
        if repeated:
            raise ValueError(f"frequencies lists {repeated} more than once (every example would be cut twice); "
                             f"got {list(self.frequencies)}")
        if int(self.embargo_bars) < 0:
            raise ValueError(f"embargo_bars must be >= 0 bars, got {self.embargo_bars}")
        if int(self.stride) < 1 or any(int(v) < 1 for v in self.stride_by_frequency.values()):
            raise ValueError(f"stride and stride_by_frequency values must be >= 1 bar, got {self.stride} and "
                             f"{dict(self.stride_by_frequency)}")
        stray = sorted(int(k) for k in self.stride_by_frequency if int(k) not in {int(f) for f in self.frequencies})
        if stray:
            raise ValueError(f"stride_by_frequency has key(s) {stray} that match no frequency of "
                             f"{list(self.frequencies)}; remove them or add the frequency")
        if self.norm_window < 2 or self.lookback < 1 or self.n_ahead < 1:
            raise ValueError(f"need norm_window >= 2, lookback >= 1, n_ahead >= 1, got "
                             f"{self.norm_window}, {self.lookback}, {self.n_ahead}")
        rules = [self.missing_bar_rule, *self.missing_bar_rule_by_frequency.values()]
        if any(r not in MISSING_RULES for r in rules):
            raise ValueError(f"missing-bar rules must be in {MISSING_RULES}, got {rules}")
        if self.bad_rows not in BAD_ROW_POLICIES:
            raise ValueError(f"bad_rows must be one of {BAD_ROW_POLICIES}, got {self.bad_rows!r}")
        if self.quote_volume not in QUOTE_VOLUME_RULES:
            raise ValueError(f"quote_volume must be one of {QUOTE_VOLUME_RULES}, got {self.quote_volume!r}")
        if self.missing_quote_volume not in MISSING_QUOTE_POLICIES:
            raise ValueError(f"missing_quote_volume must be one of {MISSING_QUOTE_POLICIES}, got "
                             f"{self.missing_quote_volume!r}")
        check_timezone(self.timezone)
        if self.outliers not in OUTLIER_MODES:
            raise ValueError(f"outliers must be one of {OUTLIER_MODES}, got {self.outliers!r}")
        if int(self.outlier_window) < 4 or not float(self.outlier_volume_z) > 0 or not float(self.outlier_return_z) > 0:
            raise ValueError(f"need outlier_window >= 4 bars and outlier_volume_z, outlier_return_z > 0, got "
                             f"{self.outlier_window}, {self.outlier_volume_z}, {self.outlier_return_z}")
        if not (float(self.screen_volume_z) >= 0 and float(self.screen_vwap_z) >= 0):
            raise ValueError(f"screen_volume_z and screen_vwap_z must be >= 0 (0: that screen off), got "
                             f"{self.screen_volume_z}, {self.screen_vwap_z}")
        declared = {"source_bar_minutes": self.source_bar_minutes,
                    **{f"source_bar_minutes_by_asset[{a!r}]": m for a, m in self.source_bar_minutes_by_asset.items()}}
        for name, m in declared.items():
            if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
                raise ValueError(f"{name} must be a whole number of minutes >= 1, got {m!r}")
        bounds = [self.boundary_seconds(x) for x in (self.start, self.eval_start, self.test_start, self.end)]
        known = [b for b in bounds if b is not None]
        if known != sorted(known) or len(set(known)) != len(known):
            raise ValueError(f"split dates must increase: start={self.start}, eval_start={self.eval_start}, "
                             f"test_start={self.test_start}, end={self.end}")

    @property
    def window_length(self) -> int:
        return self.norm_window + self.lookback + self.n_ahead

    def stride_for(self, frequency_minutes: int) -> int:
        return int(self.stride_by_frequency.get(int(frequency_minutes), self.stride))

    def source_minutes_for(self, asset: str) -> Optional[int]:
        """The declared source bar length of `asset` (None: the asset must have exactly one)."""
        return self.source_bar_minutes_by_asset.get(asset, self.source_bar_minutes)

    def missing_rule_for(self, frequency_minutes: int) -> str:
        return self.missing_bar_rule_by_frequency.get(int(frequency_minutes), self.missing_bar_rule)

    @staticmethod
    def boundary_seconds(date: Optional[str]) -> Optional[int]:
        """ISO date/time (naive = UTC) -> Unix seconds, None stays None."""
        if date is None:
            return None
        t = pd.Timestamp(date)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        return int(t.value // 1_000_000_000)

    def split_ranges(self) -> list[tuple[Optional[int], Optional[int]]]:
        """[(start_s, end_s)] of train, eval, test (None = open)."""
        s, e1, e2, end = (self.boundary_seconds(x) for x in (self.start, self.eval_start, self.test_start, self.end))
        return [(s, e1), (e1, e2), (e2, end)]

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["frequencies"] = list(self.frequencies)
        d["input_patterns"] = list(self.input_patterns)
        d["stride_by_frequency"] = {str(k): v for k, v in self.stride_by_frequency.items()}
        d["missing_bar_rule_by_frequency"] = {str(k): v for k, v in self.missing_bar_rule_by_frequency.items()}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | Mapping) -> "IngestionConfig":
        d = dict(json.loads(text) if isinstance(text, str) else text)
        if "stride_by_frequency" in d:
            d["stride_by_frequency"] = {int(f): int(v) for f, v in dict(d["stride_by_frequency"]).items()}
        if "missing_bar_rule_by_frequency" in d:
            rules = dict(d["missing_bar_rule_by_frequency"])
            d["missing_bar_rule_by_frequency"] = {int(f): v for f, v in rules.items()}
        for k in ("frequencies",):
            if k in d:
                d[k] = tuple(int(x) for x in d[k])
        for k in ("norm_window", "lookback", "n_ahead", "stride", "embargo_bars", "max_gap_bars",
                  "min_examples_per_split", "chunk_rows", "outlier_window"):
            if k in d:
                d[k] = int(d[k])
        for k in ("outlier_volume_z", "outlier_return_z", "screen_volume_z", "screen_vwap_z"):
            if k in d:
                d[k] = float(d[k])
        if d.get("source_bar_minutes") is not None:
            d["source_bar_minutes"] = _minutes(d["source_bar_minutes"], "source_bar_minutes")
        if "source_bar_minutes_by_asset" in d:
            d["source_bar_minutes_by_asset"] = {
                str(a): _minutes(m, f"source_bar_minutes_by_asset[{a!r}]")
                for a, m in dict(d["source_bar_minutes_by_asset"] or {}).items()}
        if "input_patterns" in d:
            d["input_patterns"] = tuple(d["input_patterns"])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ingestion config keys {sorted(unknown)}")
        return cls(**d)


def _minutes(value, name: str) -> int:
    """A whole number of minutes from JSON/YAML (int, or a float/str holding one); ValueError naming `name`."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number of minutes, got {value!r}") from None
    if isinstance(value, bool) or f != int(f):
        raise ValueError(f"{name} must be a whole number of minutes, got {value!r}")
    return int(f)
