"""The vectorised tf.Example serializer: its records parse to exactly the Examples of the protobuf path
(`to_tf_example`), on generated series (frequencies, strides, dropped windows, fallback series, asset names);
and the ExampleGen's serialized path emits the same examples, splits and counts as the dict path."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components.example_gen import ingest, serialize
from components.example_gen.config import IngestionConfig
from components.market_data import readers, windows


def series(n, freq_minutes, start="2021-03-01", seed=0, zero_runs=()):
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp(start, tz="UTC").value // 10**9) // (freq_minutes * 60) * (freq_minutes * 60)
    ts = t0 + freq_minutes * 60 * np.arange(n, dtype=np.int64)
    v = rng.lognormal(2, 1, n)
    q = v * rng.uniform(10, 20000, n)
    for a, b in zero_runs:
        v[a:b] = 0.0
        q[a:b] = 0.0
    return ts, v, q


def proto_records(ts, v, q, starts, asset, freq, w, lb, n):
    exs = windows.windows_at(v, q, ts, starts, asset=asset, frequency_minutes=freq, origin_offset=w + lb,
                             window_length=w + lb + n)
    return [ingest.to_tf_example(ex) for ex in exs]


def spec(t):
    return {"volume": tf.io.FixedLenFeature([t], tf.float32), "quote_volume": tf.io.FixedLenFeature([t], tf.float32),
            "timestamp": tf.io.FixedLenFeature([t], tf.int64), "asset": tf.io.FixedLenFeature([], tf.string),
            "frequency_minutes": tf.io.FixedLenFeature([], tf.int64),
            "origin_time": tf.io.FixedLenFeature([], tf.int64)}


def assert_same_examples(fast, slow, t):
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert tf.train.Example.FromString(a) == tf.train.Example.FromString(b)
    if fast:
        pa = tf.io.parse_example(tf.constant(fast), spec(t))
        pb = tf.io.parse_example(tf.constant(slow), spec(t))
        for k in pa:
            np.testing.assert_array_equal(pa[k].numpy(), pb[k].numpy())


def test_varint_encoding_matches_the_wire_format():
    assert serialize.varint(0) == b"\x00" and serialize.varint(1) == b"\x01" and serialize.varint(127) == b"\x7f"
    assert serialize.varint(300) == b"\xac\x02" and serialize.varint(-1) == b"\xff" * 9 + b"\x01"
    x = np.array([0, 127, 128, 16383, 16384, 2**28 - 1, 2**28, 2**35, 2**62, -5], np.int64)
    assert serialize.varint_lengths(x).tolist() == [len(serialize.varint(int(v))) for v in x]
    ok = x[(x >= 2**28) & (x < 2**35)]
    assert serialize.encode_varints(ok, 5).tobytes() == b"".join(serialize.varint(int(v)) for v in ok)


@pytest.mark.parametrize("freq,stride,w,lb,n", [(15, 1, 16, 8, 4), (90, 3, 6, 3, 2), (1440, 7, 20, 10, 5),
                                                (15, 2, 336, 120, 12)])
def test_records_parse_to_the_proto_path_examples(freq, stride, w, lb, n):
    total = w + lb + n
    ts, v, q = series(total * 3 + 17, freq, seed=freq,
                      zero_runs=[(0, w + 3), (total + 5, total + 5 + w + 4 * stride)])
    drops = {}
    starts = windows.window_starts(v, q, norm_window=w, lookback=lb, n_ahead=n, stride=stride, drops=drops)
    assert drops and len(starts) and not np.all(np.diff(starts) == stride)  # some windows were dropped
    for sel in (starts, starts[::5], starts[-1:]):
        fast = serialize.serialize_windows(v, q, ts, sel, asset="BTCUSDT", frequency_minutes=freq,
                                           window_length=total, origin_offset=w + lb, block=4)
        assert len({len(r) for r in fast}) == 1  # one record layout per series
        assert_same_examples(fast, proto_records(ts, v, q, sel, "BTCUSDT", freq, w, lb, n), total)
    assert serialize.serialize_windows(v, q, ts, starts[:0], asset="X", frequency_minutes=freq,
                                       window_length=total, origin_offset=w + lb) == []


@pytest.mark.parametrize("asset", ["X", "", "ÄPFEL-€-株", "A" * 300, b"\x00raw bytes\xff"])
def test_asset_names_of_any_length_and_unicode(asset):
    ts, v, q = series(40, 15, seed=3)
    starts = np.arange(0, 40 - 9 + 1)
    fast = serialize.serialize_windows(v, q, ts, starts, asset=asset, frequency_minutes=15, window_length=9,
                                       origin_offset=7)
    assert_same_examples(fast, proto_records(ts, v, q, starts, asset, 15, 4, 3, 2), 9)
    want = asset.encode() if isinstance(asset, str) else asset
    assert tf.train.Example.FromString(fast[0]).features.feature["asset"].bytes_list.value[0] == want


@pytest.mark.parametrize("start_s", [0, 2**28 - 900 * 20, -900 * 50])
def test_series_with_varying_varint_lengths_fall_back_to_the_proto_path(start_s):
    n = 60
    ts = start_s + 900 * np.arange(n, dtype=np.int64)
    _, v, q = series(n, 15, seed=1)
    assert not serialize.fast_path_ok(ts)
    starts = np.arange(0, n - 9 + 1, 2)
    fast = serialize.serialize_windows(v, q, ts, starts, asset="OLD", frequency_minutes=15, window_length=9,
                                       origin_offset=7, block=8)
    assert_same_examples(fast, proto_records(ts, v, q, starts, "OLD", 15, 4, 3, 2), 9)


def test_window_starts_out_of_range_is_an_error():
    ts, v, q = series(20, 15)
    with pytest.raises(ValueError, match="window starts"):
        serialize.serialize_windows(v, q, ts, [12], asset="X", frequency_minutes=15, window_length=9,
                                    origin_offset=7)


def test_ingest_serialized_path_equals_dict_path_with_same_splits_and_counts():
    cfg = IngestionConfig(frequencies=(15, 90), norm_window=16, lookback=8, n_ahead=4, stride=3,
                          eval_start="2024-01-20", test_start="2024-01-27", end="2024-02-03")
    ts, v, q = series(96 * 30, 15, start="2024-01-05", seed=5, zero_runs=[(200, 230)])
    keep = np.ones(len(ts), bool)
    keep[1000:1004] = False  # a gap: zero-filled
    keep[2000:2020] = False  # a long gap: the series breaks
    chunk = readers.BarChunk(asset="ETHUSDT", source_minutes=15, timestamp_us=ts[keep] * 10**6, volume=v[keep],
                             quote_volume=q[keep], row=np.arange(2, 2 + keep.sum()), file="e.csv")
    c_slow, c_fast = {}, {}
    slow = [(s, ingest.to_tf_example(ex)) for s, ex in ingest.asset_examples("ETHUSDT", [chunk], cfg, c_slow)]
    fast = list(ingest.asset_serialized_examples("ETHUSDT", [chunk], cfg, c_fast))
    assert c_fast == c_slow and c_fast["examples_emitted"] == len(fast) > 0
    assert c_fast["series_breaks"] == 1 and c_fast[windows.DROP_NO_NORM_VOLUME] > 0
    assert [s for s, _ in fast] == [s for s, _ in slow] and {s for s, _ in fast} == {0, 1, 2}
    for (_, a), (_, b) in zip(fast, slow):
        assert tf.train.Example.FromString(a) == tf.train.Example.FromString(b)
