"""Issue 36: `serve_tf_examples` refuses what `serving_default` refuses (milliseconds, negative volume, a bar
with volume 0 and quote volume > 0, an unknown frequency, min_rate > max_rate), naming the field, over a tiny
LEM exported with the Trainer's exporter (seeded init, loaded in-process: no server)."""
import numpy as np
import pytest

import serving_testutils as U

W, L, N = U.SIZES["norm_window"], U.SIZES["lookback"], U.SIZES["n_ahead"]
T, O = W + L + N, W + L
TRAINED = (U.FREQ, 90)  # conftest.SEEDED_LEM_FREQUENCIES


@pytest.fixture(scope="module")
def signatures(seeded_lem_export):
    """The session's seeded tiny LEM (conftest.seeded_lem_export, exported as trained on TRAINED), loaded."""
    import tensorflow as tf
    from components.trainer.export import read_metadata
    assert read_metadata(seeded_lem_export)["trained_frequencies"] == sorted(TRAINED)
    return tf.saved_model.load(seeded_lem_export).signatures


@pytest.fixture(scope="module")
def good():
    bars = U.make_bars(120)
    sl = slice(100 - O, 100 - O + T)
    return {"volume": bars["volume"][None, sl].astype(np.float32),
            "quote_volume": bars["quote_volume"][None, sl].astype(np.float32),
            "timestamp": bars["timestamp"][None, sl].astype(np.int64),
            "frequency_minutes": np.array([U.FREQ], np.int64),
            "min_rate": np.array([1 / N ** 2], np.float32), "max_rate": np.array([1.0], np.float32)}


def _examples(inputs):
    import tensorflow as tf
    out = []
    for b in range(len(inputs["frequency_minutes"])):
        feature = {
            "volume": tf.train.Feature(float_list=tf.train.FloatList(value=inputs["volume"][b])),
            "quote_volume": tf.train.Feature(float_list=tf.train.FloatList(value=inputs["quote_volume"][b])),
            "timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=inputs["timestamp"][b])),
            "frequency_minutes": tf.train.Feature(int64_list=tf.train.Int64List(
                value=[int(inputs["frequency_minutes"][b])])),
            "asset": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"BTCUSDT"])),
            "origin_time": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(inputs["timestamp"][b, O])])),
            "min_rate": tf.train.Feature(float_list=tf.train.FloatList(value=[float(inputs["min_rate"][b])])),
            "max_rate": tf.train.Feature(float_list=tf.train.FloatList(value=[float(inputs["max_rate"][b])])),
        }
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return np.array(out, object)


def _call(signatures, name, inputs):
    import tensorflow as tf
    if name == "serve_tf_examples":
        return signatures[name](examples=tf.constant(_examples(inputs)))["allocations"].numpy()
    return signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})["allocations"].numpy()


def _bad(good):
    neg = good["volume"].copy()
    neg[0, O - 2] = -1.0
    empty = good["volume"].copy()
    empty[0, O - 3] = 0.0                       # volume 0, quote volume > 0
    return {"ms_timestamps": (dict(good, timestamp=good["timestamp"] * 1000), "timestamp"),
            "negative_volume": (dict(good, volume=neg), "volume"),
            "volume_0_quote_positive": (dict(good, volume=empty), "quote_volume"),
            "frequency_7": (dict(good, frequency_minutes=np.array([7], np.int64),
                                 timestamp=good["timestamp"][:, :1] + 420 * np.arange(T)[None]), "frequency_minutes"),
            "min_rate_above_max_rate": (dict(good, min_rate=np.array([0.5], np.float32),
                                             max_rate=np.array([0.1], np.float32)), "min_rate")}


def test_both_signatures_serve_the_valid_window_alike(signatures, good):
    a = _call(signatures, "serving_default", good)
    b = _call(signatures, "serve_tf_examples", good)
    assert a.shape == (1, N, N + 1, 4, 2) and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", sorted(_bad({k: np.ones((1, T)) if k in ("volume", "quote_volume") else
                                              np.arange(T)[None] if k == "timestamp" else np.ones(1)
                                              for k in ("volume", "quote_volume", "timestamp", "frequency_minutes",
                                                        "min_rate", "max_rate")})))
def test_serve_tf_examples_refuses_what_serving_default_refuses(signatures, good, case):
    import tensorflow as tf
    inputs, field = _bad(good)[case]
    for name in ("serving_default", "serve_tf_examples"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"{field}:"):
            _call(signatures, name, inputs)
