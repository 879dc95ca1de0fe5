"""The volume-curve VWAP baseline: profile from the training split only, one schedule per evaluation order."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components.evaluator import vwap_curve
from components.evaluator.order_slippage import VWAP_CURVE_FEATURE
from lem_model import baselines

W, L, N = 4, 4, 4
T = W + L + N
FREQ = 15
DAY0 = 1_700_006_400  # a UTC midnight (19675 * 86400)


def _example(asset, start, volume):
    ts = start + 60 * FREQ * np.arange(T)
    f = {"asset": tf.train.Feature(bytes_list=tf.train.BytesList(value=[asset.encode()])),
         "frequency_minutes": tf.train.Feature(int64_list=tf.train.Int64List(value=[FREQ])),
         "timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=ts.tolist())),
         "volume": tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(volume, np.float32).tolist()))}
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


def _intraday(start, rng, shape_scale=1.0):
    """Volumes of the T bars from `start`: a U-shaped intraday curve (x shape_scale) times noise."""
    tob = baselines.time_of_bar(start + 60 * FREQ * np.arange(T), FREQ)
    return (1.0 + shape_scale * np.cos(2 * np.pi * tob / 96) ** 2) * rng.lognormal(0, 0.1, T) * 100


def _write_split(root, split, records):
    d = os.path.join(root, f"Split-{split}")
    os.makedirs(d, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(d, "part.gz"), tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for r in records:
            w.write(r)


def _dataset(root, test_scale, train_scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    train_starts = [DAY0 + 900 * 4 * i for i in range(24 * 10)]          # 10 days, every 4th bar
    test_starts = [DAY0 + 86_400 * 20 + 900 * 3 * i for i in range(40)]  # later, another phase
    _write_split(root, "train", [_example("AAA", s, _intraday(s, rng, train_scale)) for s in train_starts])
    _write_split(root, "test", [_example("AAA", s, _intraday(s, rng, 1.0) * test_scale) for s in test_starts])
    os.makedirs(os.path.join(root, "schema"), exist_ok=True)
    with open(os.path.join(root, "schema", "schema.pbtxt"), "w") as f:
        f.write('feature { name: "volume" type: FLOAT }\n')


def _run(tmp_path, name, **kw):
    root = str(tmp_path / name)
    _dataset(root, **kw)
    out = os.path.join(root, "out")
    summary = vwap_curve.build(root, ["train", "test"], os.path.join(root, "schema"), out, os.path.join(out, "schema"),
                               train_split="train", splits=["test"], norm_window=W, lookback=L, n_ahead=N)
    records = [tf.train.Example.FromString(bytes(r.numpy())) for r in
               tf.data.TFRecordDataset(os.path.join(out, "Split-test", vwap_curve.DATA_FILE), compression_type="GZIP")]
    schedules = np.array([list(r.features.feature[VWAP_CURVE_FEATURE].float_list.value) for r in records])
    return summary, schedules, out


def test_profile_uses_training_bars_only(tmp_path):
    base, sched, out = _run(tmp_path, "a", test_scale=1.0)
    # test-split volumes x 7 and a flat shape there: same profile, same schedules
    other, sched2, _ = _run(tmp_path, "b", test_scale=7.0)
    assert other["profiles"] == base["profiles"]
    np.testing.assert_array_equal(sched, sched2)
    # training-split volumes change: the profile changes
    changed, _, _ = _run(tmp_path, "c", test_scale=1.0, train_scale=3.0)
    assert changed["profiles"] != base["profiles"]
    # the U shape is learnt: bars near midnight (cos^2 = 1) get more than bars near 06:00 (cos^2 = 0)
    profile = np.array(base["profiles"][f"AAA/{FREQ}"])
    assert profile.shape == (96,) and profile[0] > 1.5 * profile[24]
    assert json.load(open(os.path.join(out, vwap_curve.PROFILE_FILE)))["splits"]["test"]["examples"] == {"AAA/15": 40}


def test_every_evaluation_order_gets_a_schedule_of_its_execution_bars(tmp_path):
    summary, sched, out = _run(tmp_path, "a", test_scale=1.0)
    assert sched.shape == (40, N)
    np.testing.assert_allclose(sched.sum(axis=1), 1.0, atol=1e-6)
    profile = np.array(summary["profiles"][f"AAA/{FREQ}"])
    start = DAY0 + 86_400 * 20 + 900 * 3 * 5  # 6th test order: first execution bar = bar W + L
    first = baselines.time_of_bar(np.array([start + 900 * (W + L)]), FREQ)
    np.testing.assert_allclose(sched[5], baselines.volume_curve_schedule(profile, first, N)[0], rtol=1e-5)
    schema = open(os.path.join(out, "schema", "schema.pbtxt")).read()
    assert VWAP_CURVE_FEATURE in schema and "volume" in schema
    with pytest.raises(ValueError, match="train_split 'nope'"):
        vwap_curve.build(str(tmp_path / "a"), ["train", "test"], "", "", "", train_split="nope", splits=["test"],
                         norm_window=W, lookback=L, n_ahead=N)


def test_volume_curve_profile_and_schedule():
    ts = DAY0 + 900 * np.arange(96 * 3)
    vol = np.tile(np.r_[np.full(48, 3.0), np.full(48, 1.0)], 3)
    profile = baselines.volume_curve_profile(ts, vol, FREQ)
    np.testing.assert_allclose(profile, np.r_[np.full(48, 1.5), np.full(48, 0.5)])
    s = baselines.volume_curve_schedule(profile, np.array([46, 95]), 4)
    np.testing.assert_allclose(s[0], [0.375, 0.375, 0.125, 0.125])  # crosses from heavy to light bars
    np.testing.assert_allclose(s[1], [1 / 10, 3 / 10, 3 / 10, 3 / 10])  # wraps over midnight
    with pytest.raises(ValueError, match="same length"):
        baselines.volume_curve_profile(ts[:3], vol, FREQ)
