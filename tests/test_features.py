"""lem_model.features: equals an independent NumPy reference, is causal, finite on degenerate input, and the
same inside a TensorFlow graph."""
import datetime
import math

import numpy as np
import pytest

from lem_model import features, layout
from lem_model.features import BAR_FEATURE_NAMES, NUM_BAR_FEATURES, build_features, build_features_numpy

W, L, N = 6, 5, 3
T = W + L + N
O = W + L


def reference_features(volume, quote_volume, timestamp, frequency_minutes, W, L, N):
    """Independent per-example NumPy/Python computation of the contract's features (loops, datetime)."""
    B, T = volume.shape
    o = W + L
    bars = np.zeros((B, L + N, NUM_BAR_FEATURES))
    labels = np.zeros((B, N, 2))
    for b in range(B):
        v = np.array([x if np.isfinite(x) and x > 0 else 0.0 for x in volume[b]], np.float64)
        q = np.array([x if np.isfinite(x) and x > 0 else 0.0 for x in quote_volume[b]], np.float64)
        priced = (v > 0) & (q > 0)
        first = next((t for t in range(T) if priced[t]), None)
        p = np.ones(T)
        last = None
        for t in range(T):
            if priced[t]:
                last = q[t] / v[t]
            if last is not None:
                p[t] = last
            elif first is not None and first < o:
                p[t] = q[first] / v[first]
            else:
                p[t] = 1.0
        norm = v[:W].mean()
        if norm <= 0:
            norm = v[:o].mean() if v[:o].mean() > 0 else 1.0
        r = np.diff(np.log(p))
        sigma = math.sqrt(np.var(r[: W - 1]) + 1e-12)
        ref = p[o - 1]
        for j, t in enumerate(range(W, T)):
            dt = datetime.datetime.fromtimestamp(int(timestamp[b, t]), tz=datetime.timezone.utc)
            tod = (dt.hour * 3600 + dt.minute * 60 + dt.second) / 86400
            dow = dt.weekday() / 7
            moy = (dt.month - 1) / 12
            row = {
                "volume": v[t] / norm, "log_volume": math.log1p(v[t] / norm), "unpriced": float(not priced[t]),
                "vwap_return": math.log(p[t] / p[t - 1]) / sigma, "log_vwap_rel": math.log(p[t] / ref) / sigma,
                "time_of_day_sin": math.sin(2 * math.pi * tod), "time_of_day_cos": math.cos(2 * math.pi * tod),
                "day_of_week_sin": math.sin(2 * math.pi * dow), "day_of_week_cos": math.cos(2 * math.pi * dow),
                "month_sin": math.sin(2 * math.pi * moy), "month_cos": math.cos(2 * math.pi * moy),
                "log_frequency": math.log(frequency_minutes[b]) / math.log(1440),
            }
            bars[b, j] = [row[n] for n in BAR_FEATURE_NAMES]
        labels[b, :, 0] = v[o:] / norm
        labels[b, :, 1] = p[o:] / ref
    return bars, labels


def random_windows(rng, B=16, T=T, freq=None):
    freq = freq if freq is not None else rng.choice([15, 90, 250, 1440], size=B)
    start = rng.integers(1_000_000_000, 2_000_000_000, size=B)
    ts = (start // (freq * 60) * (freq * 60))[:, None] + (freq * 60)[:, None] * np.arange(T)[None]
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (B, T)), axis=1)) * rng.uniform(0.01, 100, (B, 1))
    vol = rng.lognormal(0, 1, (B, T)) * rng.uniform(0.1, 1e4, (B, 1))
    vol[rng.random((B, T)) < 0.15] = 0.0
    vol[0, :3] = 0.0           # leading unpriced bars: back-filled from the first priced bar (< o)
    vol[1, O - 2:O + 1] = 0.0  # unpriced bars around the origin: forward-filled
    return vol.astype(np.float32), (vol * price).astype(np.float32), ts.astype(np.int64), freq.astype(np.int64)


def test_feature_names_and_label_layout():
    assert NUM_BAR_FEATURES == len(BAR_FEATURE_NAMES) == len(set(BAR_FEATURE_NAMES))
    assert features.LABEL_NAMES[layout.LABEL_VOLUME] == "volume"
    assert features.LABEL_NAMES[layout.LABEL_VWAP] == "vwap"


def test_matches_independent_numpy_reference():
    rng = np.random.default_rng(0)
    v, q, ts, f = random_windows(rng)
    out = build_features_numpy(v, q, ts, f, norm_window=W, lookback=L, n_ahead=N)
    ref_bars, ref_labels = reference_features(v, q, ts, f, W, L, N)
    assert out["bars"].shape == (16, L + N, NUM_BAR_FEATURES) and out["bars"].dtype == np.float32
    assert out["labels"].shape == (16, N, 2) and out["labels"].dtype == np.float32
    np.testing.assert_allclose(out["bars"], ref_bars, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(out["labels"], ref_labels, rtol=1e-4, atol=1e-5)


def test_forward_fill_carries_previous_vwap_and_labels_are_scale_free():
    v = np.array([[1, 1, 1, 1, 1, 1, 2, 0, 4, 1, 1, 0, 2, 0]], np.float32)
    p = np.array([[10, 10, 10, 10, 10, 10, 11, 99, 12, 13, 14, 99, 20, 99]], np.float32)
    ts = (1_700_000_000 // 900 * 900 + 900 * np.arange(T))[None]
    out = build_features_numpy(v, v * p, ts, [15], norm_window=W, lookback=L, n_ahead=N)
    lab = out["labels"][0]
    # execution bars o..o+2 = indices 11, 12, 13: unpriced bar 11 carries bar 10's VWAP (14), bar 13 carries 20.
    np.testing.assert_allclose(lab[:, 1], [14 / 14, 20 / 14, 20 / 14], rtol=1e-6)
    np.testing.assert_allclose(lab[:, 0], [0, 2, 0], rtol=1e-6)
    unpriced = out["bars"][0, :, BAR_FEATURE_NAMES.index("unpriced")]
    np.testing.assert_array_equal(unpriced, [0, 1, 0, 0, 0, 1, 0, 1])
    # scaling all volumes or all prices leaves every output unchanged
    out2 = build_features_numpy(v * 1000, v * 1000 * p * 0.01, ts, [15], norm_window=W, lookback=L, n_ahead=N)
    np.testing.assert_allclose(out2["bars"], out["bars"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out2["labels"], out["labels"], rtol=1e-5)


@pytest.mark.parametrize("k", range(N))
def test_causal_rows_before_o_plus_k_ignore_later_bars(k):
    rng = np.random.default_rng(k)
    v, q, ts, f = random_windows(rng, B=8)
    base = build_features_numpy(v, q, ts, f, norm_window=W, lookback=L, n_ahead=N)["bars"]
    v2, q2 = v.copy(), q.copy()
    v2[:, O + k:] = rng.uniform(0, 1e6, v2[:, O + k:].shape)
    q2[:, O + k:] = rng.uniform(0, 1e9, q2[:, O + k:].shape)
    v2[:, -1] = 0.0
    pert = build_features_numpy(v2, q2, ts, f, norm_window=W, lookback=L, n_ahead=N)["bars"]
    np.testing.assert_allclose(pert[:, :L + k], base[:, :L + k], rtol=1e-6, atol=1e-6)
    assert not np.allclose(pert[:, L + k:], base[:, L + k:])  # the perturbation is visible from row L+k


def test_degenerate_inputs_stay_finite():
    ts = (1_600_000_000 + 900 * np.arange(T))[None].repeat(5, 0)
    v = np.ones((5, T), np.float32)
    q = 50 * v
    v[0] = 0.0                                   # nothing traded at all
    q[1] = 0.0                                   # volume without notional
    v[2, :O] = 0.0                               # first trade only at the origin
    v[3, 2] = np.nan
    q[3, 4] = np.inf                             # non-finite inputs
    v[4, 0] = -5.0                               # negative volume
    out = build_features_numpy(v, q, ts, [15, 90, 250, 1440, 0], norm_window=W, lookback=L, n_ahead=N)
    assert np.isfinite(out["bars"]).all() and np.isfinite(out["labels"]).all()
    # constant price (row 4 after cleaning): returns and relative prices are exactly 0, labels 1
    assert np.all(out["bars"][4, :, BAR_FEATURE_NAMES.index("vwap_return")] == 0)
    np.testing.assert_allclose(out["labels"][4, :, 1], 1.0)


def test_calendar_matches_python_datetime():
    rng = np.random.default_rng(3)
    ts = rng.integers(0, 4_000_000_000, size=(1, 2000))
    cal = [np.asarray(c) for c in features.calendar_features(ts)]
    for i in range(ts.shape[1]):
        dt = datetime.datetime.fromtimestamp(int(ts[0, i]), tz=datetime.timezone.utc)
        def phase(s, c, n):  # sin/cos pair -> integer position on a cycle of n
            return round(((math.atan2(s[0, i], c[0, i]) / (2 * math.pi)) % 1) * n) % n
        assert phase(cal[4], cal[5], 12) == dt.month - 1
        assert phase(cal[2], cal[3], 7) == dt.weekday()
        seconds = dt.hour * 3600 + dt.minute * 60 + dt.second
        assert phase(cal[0], cal[1], 86400) == pytest.approx(seconds, abs=20) or seconds > 86380


def test_same_result_in_a_tf_graph_with_unknown_batch():
    import tensorflow as tf
    rng = np.random.default_rng(5)
    v, q, ts, f = random_windows(rng, B=4)
    spec = [tf.TensorSpec([None, T], tf.float32), tf.TensorSpec([None, T], tf.float32),
            tf.TensorSpec([None, T], tf.int64), tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=spec)
    def graph(v, q, ts, f):
        return build_features(v, q, ts, f, norm_window=W, lookback=L, n_ahead=N)

    g = graph(v, q, ts, f)
    eager = build_features_numpy(v, q, ts, f, norm_window=W, lookback=L, n_ahead=N)
    np.testing.assert_allclose(g["bars"].numpy(), eager["bars"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g["labels"].numpy(), eager["labels"], rtol=1e-6)


def test_rejects_bad_sizes():
    v = np.ones((1, T), np.float32)
    with pytest.raises(ValueError, match="norm_window"):
        build_features_numpy(v, v, np.zeros((1, T), np.int64), [15], norm_window=1, lookback=L + W - 1, n_ahead=N)
    with pytest.raises(ValueError, match="W\\+L\\+N"):
        build_features_numpy(v, v, np.zeros((1, T), np.int64), [15], norm_window=W, lookback=L, n_ahead=N + 1)
