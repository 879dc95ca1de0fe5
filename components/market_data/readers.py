"""Readers of market-data files into validated chunks of bars (pandas/NumPy; streamed, one chunk at a time).

Formats (`detect_format` picks one from the file name and first line):
  * **Binance Data Vision klines** `<SYMBOL>-<interval>-<YYYY-MM>[-DD].csv` or the same-named `.zip`, with or
    without a header row; 12 columns (open_time, open, high, low, close, volume, close_time, quote_volume,
    count, taker_buy_volume, taker_buy_quote_volume, ignore). Open times are Unix seconds, milliseconds
    (Binance), microseconds (Binance spot since 2025) or nanoseconds, decided per row by magnitude
    (`OPEN_TIME_UNITS`: [1e8, 1e11) s, [1e11, 1e14) ms, [1e14, 1e17) us, [1e17, 1e19] ns); any other value
    is refused (naming file and row). Asset and bar interval come from the file name (the interval falls
    back to close_time - open_time). A `<file>.CHECKSUM` beside the file (Binance Data Vision's
    `<sha256>  <name>`) is verified: a mismatch is refused.
  * **Yahoo-style daily CSV** `<SYMBOL>.csv` with Date, Open, High, Low, Close, Adj Close, Volume. The date is
    the bar label at 00:00 UTC. Yahoo has no notional: quote volume = Volume x Adj Close (Close if there is
    no Adj Close), as the paper does for equities.
  * **Tidy Parquet/CSV** with `timestamp, asset, volume, quote_volume[, close][, frequency]` (the layout of
    `/work/shared/data`). Without `quote_volume`, quote volume = volume x close; an empty `quote_volume` cell
    is filled from volume x close (counted), dropped or refused (`missing_quote_volume`, `read_tidy`).
    Timestamps: with an offset (each value converted to UTC with its own offset, so -04:00 and -05:00 of one
    zone across DST are one series) or naive (wall-clock times of `timezone`, default UTC, converted to UTC
    with its DST rules: a time the zone skips is an error, its repeated fall-back hour is read in file
    order, first as daylight then as standard time; `_localize`); mixing naive and offset values is an
    error. The
    bar length is the `frequency` label (`15m`, `1h`, `1d`, ...) or, without it, the most common gap between
    an asset's consecutive bars in the file; without the label, an asset whose bars also run at another
    spacing (at least `MIXED_RUN_GAPS` consecutive gaps of another length, e.g. 5-minute rows beside
    15-minute rows) is refused, naming the file, the asset and the bar lengths found with their counts
    (rows of two bar lengths cannot be told apart without the label; with it, each length is its own
    series and the ExampleGen takes one per asset, see `IngestionConfig.source_bar_minutes`).
    With `quote_volume="volume_x_adj_close"` (`QUOTE_VOLUME_RULES`) the quote volume is volume x `adj_close`
    on every row instead (the paper's equity notional); a file without `adj_close` is refused.

Where each bar's quote volume came from (`BarChunk.quote_volume_is_estimate`, one bool per bar): True when the
file says so (a tidy `quote_volume_is_estimate` column, e.g. the freqtrade caches of `/work/shared/data` whose
quote volume is volume x typical price; true/false, 1/0 or empty = false) or when the reader made it from
volume x close (a tidy file without `quote_volume`, or a row whose `quote_volume` is empty); False for Binance
klines (Binance's own quote-asset volume), for tidy rows with their own `quote_volume` and no flag, and for
the equity notionals (Yahoo Volume x Adj Close, `quote_volume="volume_x_adj_close"`: that IS the definition
of the paper's equity notional, not an estimate of it). The ExampleGen prefers true quote volume per bar when
two files give the same bar (`components.example_gen.ingest._merge_chunks`) and carries the flag through
grid alignment and resampling (a bar is estimated when any of its source bars is).

Bad input (item 7 of the spec) and what happens:
  * always an error (`MarketDataError` naming file, row and problem): missing or misnamed columns,
    non-numeric fields, unparseable or mixed-timezone timestamps, timestamps that go backwards within a file
    (per asset and bar length), unknown file format;
  * an error by default (naming file, row, asset and bar time), or a counted drop with `bad_rows="drop"`
    (counter names `DROP_*`): NaN or infinite values (or beyond float32, the examples' type), negative
    volume or quote volume, zero or negative prices, a bar that is not a VALID BAR of
    `lem_model.request_rules` (volume 0 with quote volume > 0 or the reverse: serving refuses it, so
    ingestion does too, `rows_inconsistent_volume`), a traded bar whose VWAP lies outside its own
    [low, high] by more than `VWAP_RANGE_TOL` (files with low and high columns: a corrupt volume or quote
    volume, e.g. flipped bytes, `rows_vwap_outside_range`), duplicate timestamps within a file (the first
    row is kept). A dropped bar is a missing
    bar for the missing-bar rule, so it is counted twice (the drop, then e.g. `bars_zero_filled`);
  * a file that cannot be read at all (truncated Parquet `ArrowInvalid`, `BadZipFile`, bad CSV, bad
    encoding...) is a `MarketDataError` naming the file and the underlying error. Parquet page checksums are
    NOT verified: the pinned pyarrow (10.0.1) can neither write nor check them (`page_checksum_verification`
    came with pyarrow 13); bytes flipped inside values are caught by the VWAP range check above and the
    ExampleGen's whole-series screen (`components.market_data.outliers.screen`), and each input file's
    sha256 is kept in the ingestion report.
Row numbers are 1-based lines of the CSV file (header included) or 1-based data rows of a Parquet file.

Per-asset reading (what the ExampleGen does, so that memory follows one asset's series): `list_assets` names
a file's assets cheaply (Binance/Yahoo: the file name; tidy: only the `asset` column), and
`read_file(..., asset=A)` yields only A's rows (a tidy file is scanned, other assets' rows are skipped
unconverted; row numbers, checks and drop counters are those of a full read, per asset). `BarChunk.n_read`
counts the rows read before drops.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import os
import re
import zipfile
from typing import Iterator, MutableMapping, Sequence

import numpy as np
import pandas as pd

from lem_model.request_rules import bar_consistent

DROP_NON_FINITE = "rows_non_finite"
DROP_NEGATIVE_VOLUME = "rows_negative_volume"
DROP_NON_POSITIVE_PRICE = "rows_non_positive_price"
DROP_DUPLICATE_TIMESTAMP = "rows_duplicate_timestamp"
#: A bar empty on one side only (volume 0 and quote volume > 0, or the reverse): not a valid bar
#: (`lem_model.request_rules.bar_consistent`, the rule both serving signatures apply).
DROP_INCONSISTENT_VOLUME = "rows_inconsistent_volume"
#: A traded bar whose VWAP (quote volume / volume) lies outside its own [low, high] by more than
#: `VWAP_RANGE_TOL`: its volume or quote volume is corrupt (checked where the file has low and high).
DROP_VWAP_OUTSIDE_RANGE = "rows_vwap_outside_range"
#: Relative slack of that check: the Binance klines, freqtrade and Dow files of /work/shared/data stay within
#: 0.3 % (rounding of prices and quote volumes); a volume or quote volume altered by a few % leaves the range.
VWAP_RANGE_TOL = 0.01
#: Tidy rows whose `quote_volume` cell is empty (NaN): filled from volume x close (`MISSING_QUOTE_FILLED`),
#: dropped (`DROP_MISSING_QUOTE`) or refused, by `missing_quote_volume` (`MISSING_QUOTE_POLICIES`).
MISSING_QUOTE_FILLED = "rows_quote_volume_filled"
DROP_MISSING_QUOTE = "rows_quote_volume_missing"
MISSING_QUOTE_POLICIES = ("fill", "drop", "fail")
#: Tidy column saying a row's quote volume is an estimate (bool; see the module docstring).
ESTIMATE_COLUMN = "quote_volume_is_estimate"
BAD_ROW_POLICIES = ("error", "drop")
#: How a bar's quote volume is made (`IngestionConfig.quote_volume`): "file" = the file's own (Binance: its
#: quote volume; tidy: its `quote_volume` column, else volume x close; Yahoo: Volume x Adj Close);
#: "volume_x_adj_close" = volume x adjusted close on every row (paper §3.2 for equities; tidy files need an
#: `adj_close` column, Yahoo files an `Adj Close` one; Binance klines have none and are refused).
QUOTE_VOLUME_RULES = ("file", "volume_x_adj_close")

BINANCE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                   "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore")
YAHOO_REQUIRED = ("Date", "Volume")
TIDY_REQUIRED = ("timestamp", "asset", "volume")
_BINANCE_NAME = re.compile(r"^(?P<asset>[A-Z0-9]+)-(?P<interval>\d+[smhdwM])-(?P<period>\d{4}-\d{2}(-\d{2})?)$")
_INTERVAL_MINUTES = {"s": 1 / 60, "m": 1, "h": 60, "d": 1440, "w": 10080}
DEFAULT_CHUNK_ROWS = 200_000
_FILTER_SCAN_ROWS = 50_000  # rows per scan batch of a Parquet file filtered for one asset
_PARQUET_BUFFER = 1 << 20  # bytes: Parquet column chunks are streamed, not read whole (memory ~ chunk_rows)
#: Unix open-time units by magnitude: (low, high, unit, microseconds per unit); values outside are refused.
OPEN_TIME_UNITS = ((10 ** 8, 10 ** 11, "s", 10 ** 6), (10 ** 11, 10 ** 14, "ms", 10 ** 3),
                   (10 ** 14, 10 ** 17, "us", 1), (10 ** 17, 10 ** 19 + 1, "ns", None))
#: Unlabelled tidy bars: this many consecutive gaps of one other length mean a second bar length.
MIXED_RUN_GAPS = 8
CHECKSUM_SUFFIX = ".CHECKSUM"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class MarketDataError(ValueError):
    """A problem with an input file, naming the file, the row and the problem."""


@dataclasses.dataclass
class BarChunk:
    """Validated bars of ONE asset at ONE source bar length from one file (a slice of it).

    `timestamp_us`: int64 bar open, Unix microseconds UTC; `volume`, `quote_volume`: float64 >= 0;
    `row`: int64 row numbers in the file (for messages); `quote_volume_is_estimate`: bool per bar, True where
    the quote volume is an estimate (module docstring; None on construction = all False)."""
    asset: str
    source_minutes: int
    timestamp_us: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    row: np.ndarray
    file: str
    n_read: int = -1  # rows of the file read into this chunk, before drops (-1: unknown)
    quote_volume_is_estimate: np.ndarray | None = None
    n_quote_filled: int = 0  # kept rows whose empty quote_volume cell was filled from volume x close

    def __post_init__(self):
        if self.quote_volume_is_estimate is None:
            self.quote_volume_is_estimate = np.zeros(len(self.timestamp_us), bool)
        else:
            self.quote_volume_is_estimate = np.asarray(self.quote_volume_is_estimate, bool)

    def __len__(self) -> int:
        return len(self.timestamp_us)


def interval_minutes(label: str) -> int:
    """`15m` -> 15, `1h` -> 60, `1d` -> 1440, `90min` -> 90 (bar-length labels of Binance and tidy files)."""
    m = re.fullmatch(r"(\d+)\s*(min|m|h|d|w)", str(label).strip())
    if not m:
        raise ValueError(f"unknown bar length label {label!r} (expected e.g. 15m, 90min, 1h, 1d)")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"min": 1, "m": 1, "h": 60, "d": 1440, "w": 10080}[unit]


# ----------------------------------------------------------------------------------------------- dispatch
def detect_format(path: str) -> str | None:
    """"binance", "yahoo", "tidy", or None for files that are not market data (e.g. README)."""
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    if ext == ".zip" or (ext == ".csv" and _BINANCE_NAME.match(stem)):
        return "binance"
    if ext == ".parquet":
        return "tidy"
    if ext == ".csv":
        with open(path, "r", encoding="utf-8-sig", errors="replace") as f:
            header = [h.strip() for h in f.readline().split(",")]
        if "Date" in header:
            return "yahoo"
        if "timestamp" in header:
            return "tidy"
        first = header[0] if header else ""
        if first.isdigit():
            raise MarketDataError(f"{path}: row 1: looks like Binance klines without a header, but the file "
                                  f"name is not <SYMBOL>-<interval>-<YYYY-MM[-DD]>.csv")
        raise MarketDataError(f"{path}: row 1: unknown CSV layout, header {header[:8]}: expected Binance klines, "
                              f"Yahoo (Date, ..., Volume) or tidy (timestamp, asset, volume, quote_volume)")
    return None


def _matches(pattern: str, rel: str) -> bool:
    """Does relative path `rel` match `pattern` (see `list_input_files`)?"""
    rel = rel.replace(os.sep, "/")
    pat = pattern.strip().strip("/").replace(os.sep, "/")
    if not any(ch in pat for ch in "*?["):
        return pat.lower() in rel.lower()
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(p, pat) for p in prefixes) or fnmatch.fnmatch(parts[-1], pat)


def list_input_files(input_base: str, patterns: Sequence[str] = ("*",)) -> list[str]:
    """Market-data files (.csv, .zip, .parquet) under `input_base` (recursively) matching any of `patterns`,
    sorted. A pattern without glob characters (`*?[`) matches every file whose path relative to
    `input_base` contains it, case-insensitively (`binance` finds `binance/BTCUSDT-1m-2018-02.zip` and
    `binance_vision_klines.parquet`); a glob matches the relative path, one of its folders (then everything
    below it) or the file name (`*.parquet`, `BTCUSDT-*`, `2024/*`). Other files (README, .json,
    .CHECKSUM, ...) are skipped. Raises `MarketDataError` listing the files seen when nothing matches."""
    if not os.path.isdir(input_base):
        raise MarketDataError(f"{input_base}: input folder does not exist (or is not a folder)")
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    out, seen = set(), []
    for root, _, files in os.walk(input_base):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, input_base)
            seen.append(rel)
            if os.path.splitext(name)[1] in (".csv", ".zip", ".parquet") and any(_matches(p, rel) for p in patterns):
                out.add(path)
    if not out:
        data = sorted(r for r in seen if os.path.splitext(r)[1] in (".csv", ".zip", ".parquet"))
        shown = ", ".join(data[:20]) + (f", ... ({len(data)} in all)" if len(data) > 20 else "")
        raise MarketDataError(
            f"{input_base}: no market-data file matches input_patterns {patterns}: "
            + (f"files seen: {shown}" if data else f"no .csv/.zip/.parquet file there ({len(seen)} other files)")
            + ". A pattern without *?[ matches any file whose relative path contains it (e.g. 'klines'); a glob "
              "matches the path, a folder or the file name (e.g. '*.parquet'); '*' takes everything.")
    return sorted(out)


def read_file(path: str, *, bad_rows: str = "error", drops: MutableMapping[str, int] | None = None,
              chunk_rows: int = DEFAULT_CHUNK_ROWS, asset: str | None = None,
              quote_volume: str = "file", missing_quote_volume: str = "fill",
              timezone: str = "UTC") -> Iterator[BarChunk]:
    """Stream the validated bars of one file as `BarChunk`s (see the module docstring); with `asset`, only
    that asset's rows (tidy files: the other rows are skipped unparsed; row numbers stay those of the file).
    `quote_volume`: one of `QUOTE_VOLUME_RULES`; `missing_quote_volume` and `timezone`: tidy files
    (`read_tidy`)."""
    if quote_volume not in QUOTE_VOLUME_RULES:
        raise ValueError(f"quote_volume must be one of {QUOTE_VOLUME_RULES}, got {quote_volume!r}")
    fmt = _named(path, detect_format, path)
    if fmt == "tidy":
        return _named_iter(path, read_tidy(path, bad_rows=bad_rows, drops=drops, chunk_rows=chunk_rows, asset=asset,
                                           quote_volume=quote_volume, missing_quote_volume=missing_quote_volume,
                                           timezone=timezone))
    reader = {"binance": read_binance_klines, "yahoo": read_yahoo_daily}.get(fmt)
    if reader is None:
        raise MarketDataError(f"{path}: not a market-data file (.csv, .zip or .parquet)")
    if fmt == "binance" and quote_volume != "file":
        raise MarketDataError(f"{path}: quote_volume={quote_volume!r} needs an adjusted close, which Binance klines "
                              f"do not have: use quote_volume='file' (their true quote volume)")
    if asset is not None and asset not in list_assets(path):
        return iter(())
    options = {"quote_volume": quote_volume} if fmt == "yahoo" else {}
    return _named_iter(path, reader(path, bad_rows=bad_rows, drops=drops, chunk_rows=chunk_rows, **options))


def _read_error(path: str, e: Exception) -> MarketDataError:
    return MarketDataError(f"{path}: cannot read the file ({type(e).__name__}: {e}); is it truncated or "
                           f"corrupt? Download or write it again")


def _named(path: str, fn, *args, **kwargs):
    """`fn(...)`, with any error that is not already a `MarketDataError` re-raised naming `path`."""
    try:
        return fn(*args, **kwargs)
    except MarketDataError:
        raise
    except Exception as e:  # pylint: disable=broad-except  (ArrowInvalid, BadZipFile, ParserError, ...)
        raise _read_error(path, e) from e


def _named_iter(path: str, chunks: Iterator[BarChunk]) -> Iterator[BarChunk]:
    try:
        yield from chunks
    except MarketDataError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise _read_error(path, e) from e


def verify_checksum(path: str) -> bool:
    """Verify `path` against `path + ".CHECKSUM"` (Binance Data Vision: `<sha256 hex>  <file name>`) when that
    file exists; True when verified, False when there is none; `MarketDataError` on a mismatch."""
    sidecar = path + CHECKSUM_SUFFIX
    if not os.path.exists(sidecar):
        return False
    with open(sidecar, "r", encoding="utf-8", errors="replace") as f:
        fields = f.read().split()
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise MarketDataError(f"{sidecar}: not a sha256 checksum file (expected '<64 hex digits>  <file name>')")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest().lower() != fields[0].lower():
        raise MarketDataError(f"{path}: sha256 {h.hexdigest()} does not match {os.path.basename(sidecar)} "
                              f"({fields[0].lower()}): the file is corrupt or incomplete; download it again")
    return True


def list_assets(path: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> list[str]:
    """The assets of one file, cheaply: Binance and Yahoo files hold one asset (from the file name); tidy
    files: the distinct values of the `asset` column only (read in chunks). Raises like the readers for an
    unknown format, a bad Binance file name or missing required tidy columns; any other read error is a
    `MarketDataError` naming the file."""
    return _named(path, _list_assets, path, chunk_rows)


def _list_assets(path: str, chunk_rows: int) -> list[str]:
    fmt = detect_format(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    if fmt == "binance":
        m = _BINANCE_NAME.match(stem)
        if not m:
            raise MarketDataError(f"{path}: Binance kline files must be named <SYMBOL>-<interval>-<YYYY-MM[-DD]>"
                                  f".csv/.zip (e.g. BTCUSDT-1m-2018-02.zip) to tell the asset")
        return [m.group("asset")]
    if fmt == "yahoo":
        return [stem]
    if fmt != "tidy":
        raise MarketDataError(f"{path}: not a market-data file (.csv, .zip or .parquet)")
    found: dict[str, None] = {}
    if path.endswith(".parquet"):
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(path, buffer_size=_PARQUET_BUFFER, pre_buffer=False)  # stream pages
        _require(path, pf.schema_arrow.names, TIDY_REQUIRED, "tidy")
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=["asset"]):
            found.update(dict.fromkeys(_asset_strings(pc.unique(batch.column(0)).to_pandas())))
    else:
        header = pd.read_csv(path, nrows=0).columns
        _require(path, [c.strip() for c in header], TIDY_REQUIRED, "tidy")
        col = [c for c in header if c.strip() == "asset"][0]
        for frame in pd.read_csv(path, usecols=[col], chunksize=chunk_rows, dtype={col: str}):
            found.update(dict.fromkeys(_asset_strings(frame[col].drop_duplicates())))
    return list(found)


def _asset_strings(values: pd.Series) -> np.ndarray:
    """Asset labels as the tidy reader names them (`str` of each value)."""
    return values.astype(str).to_numpy()


def read_bars(paths: Sequence[str] | str, *, bad_rows: str = "error",
              drops: MutableMapping[str, int] | None = None) -> pd.DataFrame:
    """All bars of `paths` as one tidy frame: timestamp (UTC), asset, source_minutes, volume, quote_volume,
    quote_volume_is_estimate."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    frames = []
    for p in paths:
        for c in read_file(p, bad_rows=bad_rows, drops=drops):
            frames.append(pd.DataFrame({
                "timestamp": pd.to_datetime(c.timestamp_us, unit="us", utc=True), "asset": c.asset,
                "source_minutes": c.source_minutes, "volume": c.volume, "quote_volume": c.quote_volume,
                ESTIMATE_COLUMN: c.quote_volume_is_estimate}))
    if not frames:
        return pd.DataFrame(columns=["timestamp", "asset", "source_minutes", "volume", "quote_volume",
                                     ESTIMATE_COLUMN])
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------- checks
def _count(drops, key, n):
    if drops is not None and n:
        drops[key] = drops.get(key, 0) + int(n)


def _numeric(frame: pd.DataFrame, col: str, path: str, rows: np.ndarray) -> np.ndarray:
    s = frame[col]
    if s.dtype.kind in "fiub":
        return s.to_numpy(np.float64)
    values = pd.to_numeric(s, errors="coerce")
    bad = values.isna() & s.notna() & ~s.astype(str).str.strip().str.lower().isin(["nan", "inf", "-inf", ""])
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise MarketDataError(f"{path}: row {rows[i]}: non-numeric value {s.iloc[i]!r} in column {col!r}")
    return values.to_numpy(np.float64)


def _integers(frame: pd.DataFrame, col: str, path: str, rows: np.ndarray) -> np.ndarray:
    """An integer column exactly (int64; nanosecond times do not survive float64), else `_numeric`."""
    if frame[col].dtype.kind in "iu":
        return frame[col].to_numpy(np.int64)
    return _numeric(frame, col, path, rows)


def _finite32(x: np.ndarray) -> np.ndarray:
    """Finite and representable as float32 (the examples' type: a larger value would become inf there)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & (np.abs(x) <= _FLOAT32_MAX)


def unix_microseconds(values: np.ndarray, path: str, rows: np.ndarray, col: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer Unix times in s, ms, us or ns (per value, by magnitude: `OPEN_TIME_UNITS`) -> (int64
    microseconds, microseconds of one unit of each value); `MarketDataError` naming file, row and value for
    anything else (e.g. 0, negative, or a count of days)."""
    t = np.asarray(values)
    if not np.isfinite(t).all():
        i = int(np.argmax(~np.isfinite(t)))
        raise MarketDataError(f"{path}: row {rows[i]}: missing {col}")
    t = t.astype(np.int64)
    us = np.zeros(len(t), np.int64)
    unit_us = np.zeros(len(t), np.int64)
    known = np.zeros(len(t), bool)
    for lo, hi, _, mult in OPEN_TIME_UNITS:
        m = (t >= lo) & (t < hi)
        us[m] = t[m] * mult if mult else t[m] // 1000
        unit_us[m] = mult or 1
        known |= m
    if not known.all():
        i = int(np.argmax(~known))
        raise MarketDataError(
            f"{path}: row {rows[i]}: {col} {int(t[i])} is not a Unix time in seconds, milliseconds, microseconds "
            f"or nanoseconds (by magnitude: [1e8, 1e11) s, [1e11, 1e14) ms, [1e14, 1e17) us, [1e17, 1e19] ns)")
    return us, unit_us


def _validate(path: str, asset: str, ts_us: np.ndarray, volume: np.ndarray, quote_volume: np.ndarray,
              price: np.ndarray | None, rows: np.ndarray, bad_rows: str, drops, last_ts: dict, key,
              keep: np.ndarray | None = None, low: np.ndarray | None = None,
              high: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of rows to keep; raises `MarketDataError` (or counts drops) for bad rows. `keep`: rows
    the caller already dropped (and counted) are False. A kept bar is a valid bar of
    `lem_model.request_rules` (finite, >= 0, empty on both sides or on neither, as float32)."""
    if bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"bad_rows must be one of {BAD_ROW_POLICIES}, got {bad_rows!r}")
    keep = np.ones(len(ts_us), bool) if keep is None else np.asarray(keep, bool).copy()
    price_arr = price if price is not None else np.ones(len(ts_us))
    with np.errstate(all="ignore"):
        consistent = bar_consistent(np, np.asarray(volume, np.float32), np.asarray(quote_volume, np.float32))
        outside = np.zeros(len(ts_us), bool)
        if low is not None and high is not None:  # a bar's VWAP lies within its own price range
            traded = consistent & (np.asarray(volume, np.float32) > 0)
            vwap = np.where(traded, quote_volume / np.where(traded, volume, 1.0), np.nan)
            outside = traded & np.isfinite(low) & np.isfinite(high) & (
                (vwap > high * (1 + VWAP_RANGE_TOL)) | (vwap < low * (1 - VWAP_RANGE_TOL)))
    checks = [
        (DROP_NON_FINITE, ~(_finite32(volume) & _finite32(quote_volume) & np.isfinite(price_arr)),
         "NaN or infinite volume, quote volume or price (or a volume beyond float32, the examples' type)"),
        (DROP_NON_POSITIVE_PRICE, price_arr <= 0, "zero or negative price"),
        (DROP_NEGATIVE_VOLUME, (volume < 0) | (quote_volume < 0), "negative volume or quote volume"),
        (DROP_INCONSISTENT_VOLUME, ~consistent,
         "volume and quote volume disagree: a bar must be empty on both sides (no trade) or on neither, with "
         "a positive implied price (lem_model.request_rules.bar_consistent, the rule serving applies)"),
        (DROP_VWAP_OUTSIDE_RANGE, outside,
         f"bar VWAP (quote volume / volume) outside the bar's [low, high] by more than {VWAP_RANGE_TOL:.0%}: a "
         f"corrupt volume or quote volume (e.g. flipped bytes)"),
    ]
    for reason, bad, what in checks:
        bad = bad & keep
        if bad.any():
            i = int(np.argmax(bad))
            if bad_rows == "error":
                rng = (f", low {low[i]!r}, high {high[i]!r}" if reason == DROP_VWAP_OUTSIDE_RANGE else "")
                raise MarketDataError(f"{path}: row {rows[i]}: {what} (asset {asset}, bar {_when(ts_us[i])}, "
                                      f"volume {volume[i]!r}, quote volume {quote_volume[i]!r}{rng}; "
                                      f"{int(bad.sum())} such rows in this chunk; use bad_rows='drop' to "
                                      f"drop and count them)")
            _count(drops, reason, bad.sum())
            keep &= ~bad
    # Order within the file, per (asset, bar length): strictly increasing after dropping bad rows.
    idx = np.flatnonzero(keep)
    t = ts_us[idx]
    prev = last_ts.get(key)
    full = t if prev is None else np.concatenate([[prev], t])
    d = np.diff(full)
    off = 1 if prev is None else 0  # d[j] compares full[j + 1] = t[j + off] with its predecessor
    if (d < 0).any():
        j = int(np.argmax(d < 0))
        raise MarketDataError(f"{path}: row {rows[idx[j + off]]}: timestamps of "
                              f"{asset} go backwards ({pd.Timestamp(int(full[j + 1]), unit='us', tz='UTC')} "
                              f"after {pd.Timestamp(int(full[j]), unit='us', tz='UTC')}): sort the file")
    dup = d == 0
    if dup.any():
        j = int(np.argmax(dup))
        if bad_rows == "error":
            raise MarketDataError(f"{path}: row {rows[idx[j + off]]}: duplicate timestamp "
                                  f"{pd.Timestamp(int(full[j + 1]), unit='us', tz='UTC')} for {asset} "
                                  f"({int(dup.sum())} duplicates in this chunk; use bad_rows='drop' to keep "
                                  f"the first and count the rest)")
        _count(drops, DROP_DUPLICATE_TIMESTAMP, dup.sum())
        keep[idx[np.flatnonzero(dup) + off]] = False
    if len(t):
        last_ts[key] = int(t[-1])
    return keep


def _when(ts_us) -> str:
    """A bar open time (Unix microseconds) for messages: ISO, UTC."""
    try:
        return pd.Timestamp(int(ts_us), unit="us", tz="UTC").isoformat()
    except (ValueError, OverflowError):
        return f"{ts_us} us"


def _chunk(path, asset, minutes, ts_us, volume, quote_volume, rows, keep, estimate=None, filled=None) -> BarChunk:
    return BarChunk(asset=asset, source_minutes=int(minutes), timestamp_us=ts_us[keep].astype(np.int64),
                    volume=volume[keep], quote_volume=quote_volume[keep], row=rows[keep].astype(np.int64),
                    file=path, n_read=len(ts_us),
                    quote_volume_is_estimate=None if estimate is None else np.asarray(estimate, bool)[keep],
                    n_quote_filled=0 if filled is None else int(np.sum(np.asarray(filled, bool) & keep)))


_TRUE_WORDS = ("true", "1", "1.0", "yes", "t", "y")
_FALSE_WORDS = ("false", "0", "0.0", "no", "f", "n", "", "nan", "none", "<na>")


def _flags(frame: pd.DataFrame, col: str, path: str, rows: np.ndarray) -> np.ndarray:
    """A boolean column (bool, 0/1 numbers, or true/false strings; empty = False) -> bool array;
    `MarketDataError` naming file and row for anything else."""
    s = frame[col]
    if s.dtype.kind == "b":
        return s.to_numpy(bool)
    if s.dtype.kind in "iuf":
        v = s.to_numpy(np.float64)
        bad = ~(np.isnan(v) | (v == 0) | (v == 1))
        if bad.any():
            i = int(np.argmax(bad))
            raise MarketDataError(f"{path}: row {rows[i]}: {col} must be true/false (or 1/0), got {s.iloc[i]!r}")
        return v == 1
    text = s.astype(object).where(s.notna(), "").astype(str).str.strip().str.lower()
    true = text.isin(_TRUE_WORDS).to_numpy()
    bad = ~true & ~text.isin(_FALSE_WORDS).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise MarketDataError(f"{path}: row {rows[i]}: {col} must be true/false (or 1/0), got {s.iloc[i]!r}")
    return true


def _require(path: str, columns, required, fmt: str):
    missing = [c for c in required if c not in columns]
    if missing:
        raise MarketDataError(f"{path}: row 1: missing column(s) {missing} for the {fmt} format; found "
                              f"{list(columns)[:12]}")


# ----------------------------------------------------------------------------------------------- Binance
def _open_binance_text(path: str):
    if path.endswith(".zip"):
        zf = zipfile.ZipFile(path)
        members = [n for n in zf.namelist() if n.endswith(".csv")]
        if len(members) != 1:
            raise MarketDataError(f"{path}: expected exactly one .csv inside the zip, found {zf.namelist()}")
        return io.TextIOWrapper(zf.open(members[0]), encoding="utf-8-sig")
    return open(path, "r", encoding="utf-8-sig")


def read_binance_klines(path: str, *, bad_rows: str = "error", drops=None, chunk_rows: int = DEFAULT_CHUNK_ROWS
                        ) -> Iterator[BarChunk]:
    """Binance Data Vision klines (CSV or ZIP, header optional, ms or us open times) -> `BarChunk`s."""
    stem = os.path.splitext(os.path.basename(path))[0]
    m = _BINANCE_NAME.match(stem)
    if not m:
        raise MarketDataError(f"{path}: Binance kline files must be named <SYMBOL>-<interval>-<YYYY-MM[-DD]>"
                              f".csv/.zip (e.g. BTCUSDT-1m-2018-02.zip) to tell the asset")
    asset = m.group("asset")
    label = m.group("interval")
    minutes = None if label.endswith(("s", "M")) else interval_minutes(label)
    verify_checksum(path)
    with _open_binance_text(path) as text:
        first = text.readline()
    cells = [c.strip() for c in first.split(",")]
    header = not cells[0].lstrip("-").isdigit()
    if len(cells) < 8:
        raise MarketDataError(f"{path}: row 1: {len(cells)} columns, Binance klines have 12")
    if header and cells[0] == "open_time":
        names = cells
    else:  # no header, or a header with other spellings: Binance's fixed column order
        names = list(BINANCE_COLUMNS[:len(cells)]) + [f"extra{i}" for i in range(len(cells) - 12)]
    _require(path, names, ("open_time", "close", "volume", "close_time", "quote_volume"), "Binance")
    last_ts: dict = {}
    start = 2 if header else 1
    with _open_binance_text(path) as text:
        for frame in pd.read_csv(text, header=0 if header else None, names=names, chunksize=chunk_rows):
            rows = np.arange(start, start + len(frame))
            start += len(frame)
            us, _ = unix_microseconds(_integers(frame, "open_time", path, rows), path, rows, "open_time")
            if minutes is None or minutes == 0:
                t_close_us, unit = unix_microseconds(_integers(frame, "close_time", path, rows), path, rows,
                                                     "close_time")
                span = np.median(t_close_us - us + unit)  # close_time = next open - 1 unit
                minutes = max(1, int(round(span / 60e6)))
            volume = _numeric(frame, "volume", path, rows)
            quote = _numeric(frame, "quote_volume", path, rows)
            close = _numeric(frame, "close", path, rows)
            low = _numeric(frame, "low", path, rows) if "low" in frame.columns else None
            high = _numeric(frame, "high", path, rows) if "high" in frame.columns else None
            keep = _validate(path, asset, us, volume, quote, close, rows, bad_rows, drops, last_ts, asset,
                             low=low, high=high)
            yield _chunk(path, asset, minutes, us, volume, quote, rows, keep)


# ----------------------------------------------------------------------------------------------- Yahoo
#: Bar times before this (Unix microseconds, 1971-01-01 UTC) are refused: a modern time read in a unit 1000x
#: too fine (seconds as milliseconds, milliseconds as microseconds, ...) lands in 1970.
EARLIEST_TIME_US = 365 * 86400 * 10 ** 6


def _check_epoch(us: np.ndarray, path: str, rows: np.ndarray, col: str) -> np.ndarray:
    early = us < EARLIEST_TIME_US
    if early.any():
        i = int(np.argmax(early))
        raise MarketDataError(f"{path}: row {rows[i]}: {col} {pd.Timestamp(int(us[i]), unit='us', tz='UTC')} is "
                              f"before 1971: a Unix time written in the wrong unit (e.g. seconds stored as "
                              f"milliseconds or nanoseconds)? Store bar open times as dates/times in UTC")
    return us


def _parse_times(values: pd.Series, path: str, rows: np.ndarray, col: str, timezone: str = "UTC",
                 groups: np.ndarray | None = None, seen: dict | None = None) -> np.ndarray:
    """Strings or datetimes -> int64 Unix microseconds UTC (`_parse_times_us`: naive values are wall-clock
    times of `timezone`); times before 1971 (`EARLIEST_TIME_US`: a unit error) -> error."""
    return _check_epoch(_parse_times_us(values, path, rows, col, timezone, groups, seen), path, rows, col)


def check_timezone(timezone: str) -> str:
    """`timezone` if it names a zone (IANA name such as "America/New_York", or "UTC"); else ValueError."""
    try:
        pd.Timestamp("2020-01-01").tz_localize(str(timezone))
    except Exception:  # pylint: disable=broad-except  (UnknownTimeZoneError, ZoneInfoNotFoundError, ...)
        raise ValueError(f"timezone must name a time zone (IANA, e.g. 'UTC', 'America/New_York'), got "
                         f"{timezone!r}") from None
    return str(timezone)


def _localize(naive: pd.Series, timezone: str, path: str, rows: np.ndarray, col: str,
              groups: np.ndarray | None, seen: dict | None) -> pd.Series:
    """Naive wall-clock times of `timezone` -> UTC. A time the zone skips (the spring-forward hour) is an
    error naming the row; a time it repeats (the fall-back hour) is read as its FIRST occurrence (daylight
    time) the first time it appears for a series (`groups`: one key per row, e.g. asset and bar length) and
    as its second (standard time) after that, in file order (`seen` carries this across chunks)."""
    if timezone.upper() == "UTC":
        return naive.dt.tz_localize("UTC")
    n = len(naive)
    early = naive.dt.tz_localize(timezone, ambiguous=np.ones(n, bool), nonexistent="NaT")
    late = naive.dt.tz_localize(timezone, ambiguous=np.zeros(n, bool), nonexistent="NaT")
    skipped = (early.isna() & naive.notna()).to_numpy()
    if skipped.any():
        i = int(np.argmax(skipped))
        raise MarketDataError(f"{path}: row {rows[i]}: {col} {naive.iloc[i]} does not exist in time zone {timezone} "
                              f"(the clocks skip it: the spring-forward hour). Naive times are read as wall-clock "
                              f"times of data.timezone = {timezone}: is that their zone? (UTC times: timezone: UTC)")
    ambiguous = (early != late).to_numpy() & early.notna().to_numpy()
    out = early.copy()
    if ambiguous.any():
        seen = {} if seen is None else seen
        keys = np.zeros(n, object) if groups is None else np.asarray(groups, object)
        second = np.zeros(n, bool)
        values = naive.to_numpy()
        for i in np.flatnonzero(ambiguous):
            k = (keys[i], values[i])
            second[i] = k in seen
            seen[k] = True
        out[second] = late[second]
    return out.dt.tz_convert("UTC")


def _parse_times_us(values: pd.Series, path: str, rows: np.ndarray, col: str, timezone: str = "UTC",
                    groups: np.ndarray | None = None, seen: dict | None = None) -> np.ndarray:
    s = values
    if pd.api.types.is_datetime64_any_dtype(s):
        if getattr(s.dt, "tz", None) is not None:
            dt = s.dt.tz_convert("UTC")
        else:
            dt = _localize(s, timezone, path, rows, col, groups, seen)
        return dt.astype("int64").to_numpy() // 1000
    if s.dtype.kind in "iuf":
        raise MarketDataError(f"{path}: row {rows[0]}: column {col!r} holds numbers, expected dates/times "
                              f"(ISO strings or datetime values)")
    st = s.astype(str).str.strip()
    aware = st.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True) & st.str.contains(r"\d[T ]\d", regex=True)
    if aware.any() and not aware.all():
        i = int(np.argmax((aware != aware.iloc[0]).to_numpy()))
        raise MarketDataError(f"{path}: row {rows[i]}: mixed timezones in column {col!r}: {st.iloc[i]!r} vs "
                              f"{st.iloc[0]!r} (all values must be naive = wall-clock times of data.timezone, "
                              f"{timezone}, or all carry an offset)")
    try:
        if aware.any():  # each value converted with its own offset (a zone's offset changes at DST)
            dt = pd.to_datetime(st, utc=True, errors="raise")
        else:
            dt = _localize(pd.to_datetime(st, errors="raise"), timezone, path, rows, col, groups, seen)
    except MarketDataError:
        raise
    except (ValueError, TypeError) as e:
        parsed = pd.to_datetime(st, utc=True, errors="coerce")
        i = int(np.argmax(parsed.isna().to_numpy()))
        raise MarketDataError(f"{path}: row {rows[i]}: cannot parse {col} {st.iloc[i]!r} ({e})") from None
    return dt.astype("int64").to_numpy() // 1000


def read_yahoo_daily(path: str, *, bad_rows: str = "error", drops=None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     quote_volume: str = "file") -> Iterator[BarChunk]:
    """Yahoo-style daily CSV (asset = file stem) -> `BarChunk`s; quote volume = Volume x Adj Close (Close
    when the file has no Adj Close, unless `quote_volume="volume_x_adj_close"`, which requires it)."""
    asset = os.path.splitext(os.path.basename(path))[0]
    last_ts: dict = {}
    start = 2
    for frame in pd.read_csv(path, chunksize=chunk_rows, dtype={"Date": str}):
        frame.columns = [c.strip() for c in frame.columns]
        _require(path, frame.columns, YAHOO_REQUIRED, "Yahoo")
        if quote_volume == "volume_x_adj_close":
            _require(path, frame.columns, ("Adj Close",), "Yahoo (quote_volume='volume_x_adj_close')")
        price_col = "Adj Close" if "Adj Close" in frame.columns else "Close"
        _require(path, frame.columns, (price_col,), "Yahoo")
        rows = np.arange(start, start + len(frame))
        start += len(frame)
        ts = _parse_times(frame["Date"], path, rows, "Date")
        volume = _numeric(frame, "Volume", path, rows)
        price = _numeric(frame, price_col, path, rows)
        if "Close" in frame.columns and price_col != "Close":
            price_close = _numeric(frame, "Close", path, rows)
            price_check = np.where(np.isfinite(price_close) & (price_close <= 0), price_close, price)
        else:
            price_check = price
        quote = volume * price
        keep = _validate(path, asset, ts, volume, quote, price_check, rows, bad_rows, drops, last_ts, asset)
        yield _chunk(path, asset, 1440, ts, volume, quote, rows, keep)


# ----------------------------------------------------------------------------------------------- tidy
def _asset_mask(column, asset: str) -> np.ndarray:
    """Rows of an Arrow column whose asset label is `asset` (dictionary columns: compare the dictionary)."""
    import pyarrow as pa
    if pa.types.is_dictionary(column.type) and column.null_count == 0:
        hits = np.flatnonzero(_asset_strings(column.dictionary.to_pandas()) == asset)
        return np.isin(column.indices.to_numpy(zero_copy_only=False), hits)
    return _asset_strings(column.to_pandas()) == asset


def _tidy_frames(path: str, chunk_rows: int, asset: str | None = None, extra: Sequence[str] = ()
                 ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """(frame, 1-based row numbers) chunks of a tidy file; with `asset`, only that asset's rows. `extra`:
    columns required beyond `TIDY_REQUIRED` (and read)."""
    required = (*TIDY_REQUIRED, *extra)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(path, buffer_size=_PARQUET_BUFFER, pre_buffer=False)  # stream pages
        names = pf.schema_arrow.names
        _require(path, names, required, "tidy")
        wanted = [c for c in ("timestamp", "asset", "volume", "quote_volume", "close", "low", "high", *extra,
                              "frequency", ESTIMATE_COLUMN) if c in names]
        start = 1
        # Filtering for one asset scans the whole file: smaller scan batches bound the decode buffers.
        scan_rows = chunk_rows if asset is None else min(chunk_rows, _FILTER_SCAN_ROWS)
        for batch in pf.iter_batches(batch_size=scan_rows, columns=wanted):
            rows = np.arange(start, start + batch.num_rows)
            start += batch.num_rows
            if asset is not None:
                mask = _asset_mask(batch.column(wanted.index("asset")), asset)
                if not mask.any():
                    continue
                batch, rows = batch.filter(mask), rows[mask]
            yield batch.to_pandas(), rows
    else:
        start = 2
        for frame in pd.read_csv(path, chunksize=chunk_rows, dtype={"timestamp": str, "asset": str}):
            frame.columns = [c.strip() for c in frame.columns]
            _require(path, frame.columns, required, "tidy")
            rows = np.arange(start, start + len(frame))
            start += len(frame)
            if asset is not None:
                mask = _asset_strings(frame["asset"]) == asset
                if not mask.any():
                    continue
                frame, rows = frame[mask].reset_index(drop=True), rows[mask]
            yield frame, rows


def read_tidy(path: str, *, bad_rows: str = "error", drops=None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
              asset: str | None = None, quote_volume: str = "file", missing_quote_volume: str = "fill",
              timezone: str = "UTC") -> Iterator[BarChunk]:
    """Tidy Parquet/CSV (`timestamp, asset, volume, quote_volume[, close][, adj_close][, frequency]
    [, quote_volume_is_estimate]`) -> `BarChunk`s, one per (asset, bar length) present in each chunk; with
    `asset`, that asset's rows only. `quote_volume="volume_x_adj_close"`: quote volume = volume x adj_close on
    every row (and adj_close is the price checked for non-positive values). Estimated quote volume: the
    `quote_volume_is_estimate` column, or made here from volume x close (module docstring).
    `missing_quote_volume` (`MISSING_QUOTE_POLICIES`), for an empty `quote_volume` cell: "fill" with volume x
    close (counted `rows_quote_volume_filled`, and per chunk `BarChunk.n_quote_filled`; estimated), "drop"
    the row (counted `rows_quote_volume_missing`) or "fail" (`MarketDataError` naming file, row, asset and
    time). `timezone`: the zone of naive timestamps (`_localize`); values with an offset carry their own."""
    if missing_quote_volume not in MISSING_QUOTE_POLICIES:
        raise ValueError(f"missing_quote_volume must be one of {MISSING_QUOTE_POLICIES}, got {missing_quote_volume!r}")
    last_ts: dict = {}
    inferred: dict = {}
    unlabelled: dict = {}  # asset -> open times of its unlabelled rows (checked for a second bar length)
    tz_seen: dict = {}  # (asset, label, wall time) of the repeated fall-back hour already read (`_localize`)
    adjusted = quote_volume == "volume_x_adj_close"
    for frame, rows in _tidy_frames(path, chunk_rows, asset, extra=("adj_close",) if adjusted else ()):
        if "quote_volume" not in frame.columns and "close" not in frame.columns and not adjusted:
            raise MarketDataError(f"{path}: row 1: needs quote_volume, or close to estimate it as volume x close; "
                                  f"found {list(frame.columns)}")
        assets = _asset_strings(frame["asset"])
        if "frequency" in frame.columns:
            labels = frame["frequency"].astype(str).to_numpy()
        else:
            labels = np.full(len(frame), "", dtype=object)
        groups = np.array([f"{a}\0{lab}" for a, lab in zip(assets, labels)], object) \
            if timezone.upper() != "UTC" else None
        ts = _parse_times(frame["timestamp"], path, rows, "timestamp", timezone, groups, tz_seen)
        volume = _numeric(frame, "volume", path, rows)
        close = _numeric(frame, "close", path, rows) if "close" in frame.columns else None
        ranged = {"low", "high"} <= set(frame.columns) and not adjusted  # (adjusted prices leave the range)
        low = _numeric(frame, "low", path, rows) if ranged else None
        high = _numeric(frame, "high", path, rows) if ranged else None
        estimate = np.zeros(len(frame), bool)
        filled = np.zeros(len(frame), bool)
        pre_keep = np.ones(len(frame), bool)
        if adjusted:
            close = _numeric(frame, "adj_close", path, rows)
            quote = volume * close
        else:
            if ESTIMATE_COLUMN in frame.columns:
                estimate = _flags(frame, ESTIMATE_COLUMN, path, rows)
            if "quote_volume" in frame.columns:
                quote = _numeric(frame, "quote_volume", path, rows)
                made = frame["quote_volume"].isna().to_numpy()
                if made.any() and missing_quote_volume == "fail":
                    i = int(np.argmax(made))
                    raise MarketDataError(
                        f"{path}: row {rows[i]}: empty quote_volume (asset {assets[i]}, bar {_when(ts[i])}; "
                        f"{int(made.sum())} such rows in this chunk): missing_quote_volume is 'fail'; set it to "
                        f"'fill' (volume x close, counted rows_quote_volume_filled) or 'drop' (counted "
                        f"rows_quote_volume_missing)")
                if made.any() and missing_quote_volume == "drop":
                    pre_keep &= ~made
                    _count(drops, DROP_MISSING_QUOTE, made.sum())
                elif close is not None:  # "fill": estimate only where the quote volume is missing
                    quote = np.where(made, volume * close, quote)
                    estimate = estimate | made
                    filled = made
            else:
                quote = volume * close
                estimate = np.ones(len(frame), bool)
        a_codes, a_names = pd.factorize(assets)
        l_codes, l_names = pd.factorize(labels)
        codes = a_codes * len(l_names) + l_codes
        uniq, first = np.unique(codes, return_index=True)
        for code in uniq[np.argsort(first)]:  # (asset, label) pairs in order of first appearance
            name, label = a_names[code // len(l_names)], l_names[code % len(l_names)]
            sel = np.flatnonzero(codes == code)
            if label:
                try:
                    minutes = interval_minutes(label)
                except ValueError as e:
                    raise MarketDataError(f"{path}: row {rows[sel[0]]}: {e}") from None
            else:
                minutes = inferred.get(name)
                if minutes is None:
                    d = np.diff(np.sort(ts[sel]))
                    d = d[d > 0]
                    if not len(d):
                        raise MarketDataError(f"{path}: row {rows[sel[0]]}: cannot infer the bar length of {name} "
                                              f"from a single bar: add a 'frequency' column (e.g. 15m)")
                    vals, counts = np.unique(d, return_counts=True)
                    minutes = max(1, int(round(vals[np.argmax(counts)] / 60e6)))
                    inferred[name] = minutes
            keep = _validate(path, name, ts[sel], volume[sel], quote[sel], None if close is None else close[sel],
                             rows[sel], bad_rows, drops, last_ts, (name, label), keep=pre_keep[sel],
                             low=None if low is None else low[sel], high=None if high is None else high[sel])
            if not label:
                unlabelled.setdefault(name, []).append(ts[sel])
            chunk = _chunk(path, name, minutes, ts[sel], volume[sel], quote[sel], rows[sel], keep, estimate[sel],
                           filled[sel])
            _count(drops, MISSING_QUOTE_FILLED, chunk.n_quote_filled)
            yield chunk
    for name, parts in unlabelled.items():
        check_single_bar_length(path, name, np.concatenate(parts), inferred[name])


def check_single_bar_length(path: str, asset: str, timestamp_us: np.ndarray, minutes: int) -> None:
    """Unlabelled rows of one asset (open times, microseconds, in file order) whose bar length was inferred
    as `minutes`: `MarketDataError` naming the file, the asset and the bar lengths found (with their counts
    of gaps) when at least `MIXED_RUN_GAPS` consecutive gaps of one other length show a second series, or
    when at least `MIXED_RUN_GAPS` (and 1 %) of the rows repeat an open time (two overlapping series; with
    `bad_rows="drop"` the duplicates would otherwise be dropped and the two series merged)."""
    t = np.sort(np.asarray(timestamp_us, np.int64))
    dups = int(np.sum(t[1:] == t[:-1]))
    if dups >= MIXED_RUN_GAPS and dups >= 0.01 * len(t):
        raise MarketDataError(
            f"{path}: asset {asset} has {dups} rows repeating an open time out of {len(t)} and no 'frequency' "
            f"column: two overlapping series (e.g. 5-minute and 15-minute bars)? Rows of two bar lengths cannot "
            f"be told apart without the label and are never merged into one series: add a 'frequency' column "
            f"(e.g. 15m), then declare the source bar length to use (source_bar_minutes)")
    timestamp_us = np.unique(t)
    d = np.diff(timestamp_us)
    if len(d) < MIXED_RUN_GAPS:
        return
    cuts = np.flatnonzero(np.diff(d)) + 1
    starts = np.concatenate([[0], cuts])
    lengths = np.diff(np.concatenate([starts, [len(d)]]))
    values = d[starts]
    step = int(minutes) * 60_000_000
    other = (lengths >= MIXED_RUN_GAPS) & (values > 0) & (values != step)
    if not other.any():
        return
    found = {int(minutes): int(np.sum(d == step))}
    for v, n in zip(values[other], lengths[other]):
        m = v / 60e6
        key = int(m) if m == int(m) else round(float(m), 3)
        found[key] = found.get(key, 0) + int(n)
    first = pd.Timestamp(int(timestamp_us[starts[np.argmax(other)]]), unit="us", tz="UTC")
    listed = ", ".join(f"{m} min ({n} gaps)" for m, n in sorted(found.items()))
    raise MarketDataError(
        f"{path}: asset {asset} has bars of {len(found)} lengths and no 'frequency' column: {listed} (a run of "
        f">= {MIXED_RUN_GAPS} gaps of another length starts at {first}). Rows of two bar lengths cannot be told "
        f"apart without the label and are never merged into one series: add a 'frequency' column (e.g. 15m), "
        f"then declare the source bar length to use (source_bar_minutes), or keep one bar length per file")
