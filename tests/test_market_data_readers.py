"""Readers on small fixtures (Binance zip/csv, ms/us, with/without header; Yahoo; tidy CSV/Parquet) and every
bad-input class: an error naming file, row and problem, or a counted drop."""
import os
import zipfile

import numpy as np
import pandas as pd
import pytest

from components.market_data import readers
from components.market_data.readers import MarketDataError

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "market_data")


def utc(s):
    return pd.Timestamp(s, tz="UTC")


def test_binance_zipped_monthly_without_header_milliseconds_keeps_off_grid_open():
    df = readers.read_bars(os.path.join(FIX, "binance", "BTCUSDT-1m-2018-02.zip"))
    assert list(df.asset.unique()) == ["BTCUSDT"] and set(df.source_minutes) == {1}
    assert len(df) == 8
    assert df.timestamp.iloc[0] == utc("2018-02-09 15:36:00")
    assert df.timestamp.iloc[5] == utc("2018-02-09 15:58:14.789")  # off-grid open, aligned later
    np.testing.assert_allclose(df.volume.values, np.arange(1, 9))
    np.testing.assert_allclose(df.quote_volume.iloc[0], 1.0 * 8000.25)


def test_binance_daily_csv_with_header_microseconds():
    df = readers.read_bars(os.path.join(FIX, "binance", "ETHUSDT-15m-2025-01-02.csv"))
    assert set(df.source_minutes) == {15}
    assert list(df.timestamp) == list(pd.date_range("2025-01-02", periods=6, freq="15min", tz="UTC"))
    assert df.volume.iloc[3] == 0.0 and df.quote_volume.iloc[3] == 0.0
    np.testing.assert_allclose(df.quote_volume.iloc[1], 20.0 * 3401.5)


def test_yahoo_daily_quote_volume_is_volume_times_adj_close():
    df = readers.read_bars(os.path.join(FIX, "yahoo", "AAPL.csv"))
    assert list(df.asset.unique()) == ["AAPL"] and set(df.source_minutes) == {1440}
    assert df.timestamp.iloc[3] == utc("2017-01-03")
    np.testing.assert_allclose(df.quote_volume.iloc[0], 20905900 * 110.00)


def test_tidy_csv_and_parquet():
    df = readers.read_bars(os.path.join(FIX, "tidy", "bars.csv"))
    assert sorted(df.asset.unique()) == ["DOGEUSDT", "SOLUSDT"] and set(df.source_minutes) == {15}
    doge = df[df.asset == "DOGEUSDT"]
    np.testing.assert_allclose(doge.quote_volume.values, [1000 * 0.10, 2000 * 0.11, 3000 * 0.12, 4000 * 0.13])
    sol = df[df.asset == "SOLUSDT"]
    np.testing.assert_allclose(sol.quote_volume.values, (100 + np.arange(4)) * 120.5)
    pq = readers.read_bars(os.path.join(FIX, "tidy", "ADAUSDT-1h.parquet"))
    assert set(pq.source_minutes) == {60} and len(pq) == 5 and pq.timestamp.iloc[0] == utc("2024-03-01")


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_tidy_quote_volume_from_adjusted_close_on_request(tmp_path, ext):
    """quote_volume="volume_x_adj_close": volume x adj_close on every row, over the file's own quote_volume
    (the paper's equity notional); the default keeps the file's. Adjusted prices are checked like prices."""
    frame = pd.DataFrame({"timestamp": pd.date_range("2020-01-02", periods=4, freq="D", tz="UTC"),
                          "asset": "KO", "frequency": "1d", "close": [50.0, 51.0, 52.0, 53.0],
                          "adj_close": [40.0, 41.0, 42.5, 43.0], "volume": [10.0, 20.0, 30.0, 40.0]})
    frame["quote_volume"] = frame.volume * frame.close
    path = tmp_path / f"dow.{ext}"
    frame.to_parquet(path) if ext == "parquet" else frame.to_csv(path, index=False)
    own = readers.read_bars(str(path))
    np.testing.assert_allclose(own.quote_volume.values, [500.0, 1020.0, 1560.0, 2120.0])
    adj = pd.concat([pd.DataFrame({"v": c.volume, "q": c.quote_volume}) for c in
                     readers.read_file(str(path), quote_volume="volume_x_adj_close")])
    np.testing.assert_allclose(adj.q.values, [400.0, 820.0, 1275.0, 1720.0])
    np.testing.assert_allclose(adj.v.values, frame.volume.values)
    with pytest.raises(MarketDataError, match=r"missing column\(s\) \['adj_close'\]"):
        list(readers.read_file(_write(tmp_path / f"no_adj.{ext}", frame.drop(columns=["adj_close"])),
                               quote_volume="volume_x_adj_close"))
    bad = frame.assign(adj_close=[40.0, -1.0, 42.5, 43.0])
    row = 2 if ext == "parquet" else 3  # Parquet: data rows; CSV: lines with the header
    with pytest.raises(MarketDataError, match=f"row {row}: zero or negative price"):
        list(readers.read_file(_write(tmp_path / f"bad.{ext}", bad), quote_volume="volume_x_adj_close"))
    with pytest.raises(ValueError, match="quote_volume must be one of"):
        readers.read_file(str(path), quote_volume="adjusted")


def _write(path, frame):
    frame.to_parquet(path) if str(path).endswith(".parquet") else frame.to_csv(path, index=False)
    return str(path)


def test_quote_volume_from_adjusted_close_refuses_files_without_one(tmp_path):
    yahoo = write(tmp_path, "ABC.csv", "Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,2,10\n")
    assert readers.read_bars(yahoo).quote_volume.tolist() == [20.0]  # default: Close when no Adj Close
    with pytest.raises(MarketDataError, match=r"ABC.csv.*\['Adj Close'\]"):
        list(readers.read_file(yahoo, quote_volume="volume_x_adj_close"))
    kline = os.path.join(FIX, "binance", "ETHUSDT-15m-2025-01-02.csv")
    with pytest.raises(MarketDataError, match="Binance klines do not have"):
        readers.read_file(kline, quote_volume="volume_x_adj_close")


def test_chunked_reading_gives_the_same_bars(tmp_path):
    p = os.path.join(FIX, "binance", "BTCUSDT-1m-2018-02.zip")
    chunks = list(readers.read_file(p, chunk_rows=3))
    assert [len(c) for c in chunks] == [3, 3, 2]
    assert np.concatenate([c.row for c in chunks]).tolist() == list(range(1, 9))


def test_list_input_files_recursive_and_skips_other_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "README.md").write_text("x")
    (tmp_path / "a" / "X.csv").write_text("Date,Adj Close,Volume\n")
    assert readers.list_input_files(str(tmp_path)) == [str(tmp_path / "a" / "X.csv")]


# ------------------------------------------------------------------------------------------- bad input
def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


YAHOO_HEAD = "Date,Open,High,Low,Close,Adj Close,Volume\n"
GOOD = ["2020-01-02,1,1,1,10,10,100", "2020-01-03,1,1,1,11,11,200", "2020-01-06,1,1,1,12,12,300"]


def yahoo(tmp_path, rows, name="XYZ.csv"):
    return write(tmp_path, name, YAHOO_HEAD + "\n".join(rows) + "\n")


@pytest.mark.parametrize("row,problem,counter", [
    ("2020-01-07,1,1,1,13,13,nan", "NaN or infinite", readers.DROP_NON_FINITE),
    ("2020-01-07,1,1,1,13,inf,100", "NaN or infinite", readers.DROP_NON_FINITE),
    ("2020-01-07,1,1,1,13,13,-5", "negative volume", readers.DROP_NEGATIVE_VOLUME),
    ("2020-01-07,1,1,1,0,0,100", "zero or negative price", readers.DROP_NON_POSITIVE_PRICE),
    ("2020-01-07,1,1,1,-3,-3,100", "zero or negative price", readers.DROP_NON_POSITIVE_PRICE),
    ("2020-01-06,1,1,1,13,13,100", "duplicate timestamp", readers.DROP_DUPLICATE_TIMESTAMP),
])
def test_bad_values_error_names_file_and_row_or_are_counted(tmp_path, row, problem, counter):
    path = yahoo(tmp_path, GOOD + [row])
    with pytest.raises(MarketDataError, match=rf"XYZ\.csv: row 5: .*{problem}"):
        readers.read_bars(path)
    drops = {}
    df = readers.read_bars(path, bad_rows="drop", drops=drops)
    assert drops == {counter: 1} and len(df) == 3


def test_unsorted_timestamps_error(tmp_path):
    path = yahoo(tmp_path, [GOOD[0], GOOD[2], GOOD[1]])
    with pytest.raises(MarketDataError, match=r"row 4: timestamps of XYZ go backwards"):
        readers.read_bars(path, bad_rows="drop")


def test_unsorted_across_chunks_error(tmp_path):
    path = yahoo(tmp_path, [GOOD[1], GOOD[2], GOOD[0]])
    with pytest.raises(MarketDataError, match=r"row 4: .*go backwards"):
        list(readers.read_file(path, chunk_rows=2))


def test_missing_and_misnamed_columns(tmp_path):
    p = write(tmp_path, "ABC.csv", "Date,Open,High,Low,Close,Adj Close,Vol\n2020-01-02,1,1,1,1,1,1\n")
    with pytest.raises(MarketDataError, match=r"ABC\.csv: row 1: missing column\(s\) \['Volume'\]"):
        readers.read_bars(p)
    p = write(tmp_path, "t.csv", "timestamp,asset,vol,quote_volume\n2020-01-02T00:00:00Z,A,1,1\n")
    with pytest.raises(MarketDataError, match=r"t\.csv: row 1: missing column\(s\) \['volume'\]"):
        readers.read_bars(p)
    p = write(tmp_path, "u.csv", "timestamp,asset,volume\n2020-01-02T00:00:00Z,A,1\n")
    with pytest.raises(MarketDataError, match="needs quote_volume, or close"):
        readers.read_bars(p)
    p = write(tmp_path, "v.csv", "when,what\n1,2\n")
    with pytest.raises(MarketDataError, match=r"v\.csv: row 1: unknown CSV layout"):
        readers.read_bars(p)


def test_non_numeric_field(tmp_path):
    path = yahoo(tmp_path, GOOD + ["2020-01-07,1,1,1,13,13,lots"])
    with pytest.raises(MarketDataError, match=r"row 5: non-numeric value 'lots' in column 'Volume'"):
        readers.read_bars(path, bad_rows="drop")


def test_mixed_timezones(tmp_path):
    # values with offsets are each converted with their own (issue 36: a zone's offset changes at DST)
    p = write(tmp_path, "t.csv", "timestamp,asset,volume,quote_volume\n"
                                 "2020-01-02T00:00:00+00:00,A,1,1\n2020-01-02T01:15:00+01:00,A,1,1\n")
    assert readers.read_bars(p).timestamp.tolist() == [utc("2020-01-02 00:00"), utc("2020-01-02 00:15")]
    # naive and offset-bearing values in one column stay an error
    p = write(tmp_path, "n.csv", "timestamp,asset,volume,quote_volume\n"
                                 "2020-01-02 00:00:00,A,1,1\n2020-01-02T00:15:00+00:00,A,1,1\n")
    with pytest.raises(MarketDataError, match=r"n\.csv: row 3: mixed timezones"):
        readers.read_bars(p)


def test_tidy_other_zone_is_converted_to_utc(tmp_path):
    p = write(tmp_path, "t.csv", "timestamp,asset,volume,quote_volume\n"
                                 "2020-01-02T01:00:00+01:00,A,1,1\n2020-01-02T01:15:00+01:00,A,1,1\n")
    assert readers.read_bars(p).timestamp.iloc[0] == utc("2020-01-02 00:00")


def test_binance_bad_name_and_bad_row(tmp_path):
    p = write(tmp_path, "klines.csv", "1,2,3,4,5,6,7,8,9,10,11,12\n")
    with pytest.raises(MarketDataError, match="klines.csv: row 1: looks like Binance klines"):
        readers.read_bars(p)
    rows = [f"{1514764800000 + i * 60000},1,1,1,1,{v},{1514764800000 + i * 60000 + 59999},{q},1,0,0,0"
            for i, (v, q) in enumerate([(1, 1), (2, 2), (-1, 1)])]
    zpath = str(tmp_path / "BTCUSDT-1m-2018-01.zip")
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("BTCUSDT-1m-2018-01.csv", "\n".join(rows) + "\n")
    with pytest.raises(MarketDataError, match=r"BTCUSDT-1m-2018-01\.zip: row 3: negative volume"):
        readers.read_bars(zpath)


# ------------------------------------------------------------------------------------------- per-asset reads
def test_list_assets_is_cheap_and_per_file(tmp_path):
    assert readers.list_assets(os.path.join(FIX, "binance", "BTCUSDT-1m-2018-02.zip")) == ["BTCUSDT"]
    assert readers.list_assets(os.path.join(FIX, "yahoo", "AAPL.csv")) == ["AAPL"]
    assert sorted(readers.list_assets(os.path.join(FIX, "tidy", "bars.csv"), chunk_rows=3)) == ["DOGEUSDT", "SOLUSDT"]
    assert readers.list_assets(os.path.join(FIX, "tidy", "ADAUSDT-1h.parquet")) == ["ADAUSDT"]
    p = write(tmp_path, "t.csv", "timestamp,asset,vol,quote_volume\n2020-01-02T00:00:00Z,A,1,1\n")
    with pytest.raises(MarketDataError, match=r"t\.csv: row 1: missing column\(s\) \['volume'\]"):
        readers.list_assets(p)
    with pytest.raises(MarketDataError, match="klines.csv: row 1: looks like Binance klines"):
        readers.list_assets(write(tmp_path, "klines.csv", "1,2,3,4,5,6,7,8,9,10,11,12\n"))


def interleaved(n=40):
    ts = pd.date_range("2024-01-01", periods=n, freq="15min", tz="UTC")
    a = pd.DataFrame({"timestamp": ts, "asset": "AAA", "volume": np.arange(n) + 1.0, "quote_volume": 2.0})
    b = pd.DataFrame({"timestamp": ts, "asset": "BBB", "volume": np.arange(n) + 100.0, "quote_volume": 3.0})
    return pd.concat([a, b]).sort_values(["timestamp", "asset"]).reset_index(drop=True).assign(frequency="15m")


@pytest.mark.parametrize("fmt,dictionary", [("parquet", True), ("parquet", False), ("csv", False)])
def test_asset_filtered_read_equals_the_assets_rows_of_a_full_read(tmp_path, fmt, dictionary):
    df = interleaved()
    path = str(tmp_path / f"t.{fmt}")
    if fmt == "csv":
        df.assign(timestamp=df.timestamp.dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(path, index=False)
    else:
        df.assign(asset=df.asset.astype("category") if dictionary else df.asset).to_parquet(path, index=False)
    assert sorted(readers.list_assets(path, chunk_rows=7)) == ["AAA", "BBB"]
    full = [c for c in readers.read_file(path, chunk_rows=7)]
    for asset in ("AAA", "BBB"):
        got = list(readers.read_file(path, chunk_rows=7, asset=asset))
        assert {c.asset for c in got} == {asset} and all(c.source_minutes == 15 for c in got)
        want_rows = np.concatenate([c.row for c in full if c.asset == asset])
        assert np.concatenate([c.row for c in got]).tolist() == want_rows.tolist()  # the file's row numbers
        np.testing.assert_array_equal(np.concatenate([c.volume for c in got]),
                                      np.concatenate([c.volume for c in full if c.asset == asset]))
        assert sum(c.n_read for c in got) == 40
    assert list(readers.read_file(path, asset="ZZZ")) == []


def test_asset_filtered_read_reports_the_files_row_and_drops(tmp_path):
    df = interleaved(10)
    df.loc[7, "volume"] = -1.0  # row 8 of the file (1-based data rows), asset BBB
    path = str(tmp_path / "t.parquet")
    df.to_parquet(path, index=False)
    assert len(list(readers.read_file(path, asset="AAA"))) == 1  # the other asset's bad row is not its problem
    with pytest.raises(MarketDataError, match=r"t\.parquet: row 8: negative volume .*asset BBB"):
        list(readers.read_file(path, asset="BBB", chunk_rows=3))
    drops = {}
    got = list(readers.read_file(path, asset="BBB", bad_rows="drop", drops=drops))
    assert drops == {readers.DROP_NEGATIVE_VOLUME: 1} and sum(len(c) for c in got) == 9
    assert sum(c.n_read for c in got) == 10
