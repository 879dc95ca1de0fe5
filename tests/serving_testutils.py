"""Tiny trained LEM exported with the Trainer's exporter, for the serving tests (not a test).

`components.trainer.export.export_serving_model` needs a `tft.TFTransformOutput`; running a Transform (Beam)
per test session would cost minutes, so `FeatureTransformStandIn` stands in for it: same raw feature spec
as the ExampleGen's examples, and a `transform_features_layer()` that applies the Transform module's own
`preprocessing_fn` (analyzer-free: it calls the ONE feature builder) directly instead of through TFT's traced
graph. Everything else (signatures, shapes, the Keras model, `tf.saved_model.save`) is the Trainer's path.
"""
from __future__ import annotations

import os

import numpy as np

# W, L, N (bars) and model hyperparameters of the tiny served model
SIZES = dict(norm_window=24, lookback=12, n_ahead=6)
HYPER = dict(hidden_size=8, num_embedding=4, num_heads=2, fused_mlp_hidden_dim=8, recurrent="lstm")
FREQ = 15
WINDOW = sum(SIZES.values())


def make_bars(periods: int = 600, seed: int = 0, asset: str = "BTCUSDT", freq_minutes: int = FREQ) -> dict:
    """Synthetic bars of one asset: volume, quote_volume (float64), timestamp (int64 Unix s)."""
    from components.market_data.synthetic import generate_bars
    frame = generate_bars([asset], start="2024-03-01", periods=periods, freq_minutes=freq_minutes, seed=seed)
    ts = (frame["timestamp"].astype("int64") // 10**9).to_numpy()
    return {"volume": frame["volume"].to_numpy(np.float64), "quote_volume": frame["quote_volume"].to_numpy(np.float64),
            "timestamp": ts.astype(np.int64)}


class FeatureTransformStandIn:
    """The two methods of `tft.TFTransformOutput` the exporter uses, backed by the Transform's `preprocessing_fn`."""

    def __init__(self, norm_window: int, lookback: int, n_ahead: int):
        self.sizes = dict(norm_window=norm_window, lookback=lookback, n_ahead=n_ahead)
        self.total = norm_window + lookback + n_ahead

    def raw_feature_spec(self) -> dict:
        import tensorflow as tf
        t = self.total
        return {"volume": tf.io.FixedLenFeature([t], tf.float32),
                "quote_volume": tf.io.FixedLenFeature([t], tf.float32),
                "timestamp": tf.io.FixedLenFeature([t], tf.int64),
                "asset": tf.io.FixedLenFeature([], tf.string),
                "frequency_minutes": tf.io.FixedLenFeature([], tf.int64),
                "origin_time": tf.io.FixedLenFeature([], tf.int64)}

    def transform_features_layer(self):
        import tensorflow as tf
        from components.transform.preprocessing import preprocessing_fn
        sizes = self.sizes

        class _Layer(tf.Module):
            def __call__(self, raw):
                return preprocessing_fn(raw, sizes)

        return _Layer()


def train_tiny_lem(bars: dict, *, seed: int = 0, epochs: int = 2, **options):
    """A tiny LEM fitted for a few epochs on the windows of `bars` (so its allocations are not the init's);
    options: further `build_lem` options (e.g. xla_max_batch)."""
    import keras
    from components.market_data.windows import cut_windows_batch
    from lem_model.features import NUM_BAR_FEATURES, build_features_numpy
    from lem_model.model import build_lem, compile_lem

    keras.utils.set_random_seed(seed)
    win = cut_windows_batch(bars["volume"], bars["quote_volume"], bars["timestamp"], asset="BTCUSDT",
                            frequency_minutes=FREQ, stride=3, **SIZES)
    feats = build_features_numpy(win["volume"], win["quote_volume"], win["timestamp"], win["frequency_minutes"],
                                 **SIZES)
    n = len(feats["bars"])
    rng = np.random.default_rng(seed)
    x = {"bars": feats["bars"], "min_rate": np.full((n, 1), 1.0 / SIZES["n_ahead"] ** 2, np.float32),
         "max_rate": rng.choice([0.5, 1.0], size=(n, 1)).astype(np.float32)}
    from lem_model_testutils import random_output_layer
    model = build_lem(num_features=NUM_BAR_FEATURES, lookback=SIZES["lookback"], n_ahead=SIZES["n_ahead"],
                      **{**HYPER, **options})
    random_output_layer(model, seed)  # allocations that depend on the bars from the start (a fresh LEM is TWAP)
    compile_lem(model, learning_rate=1e-3, metrics=False, jit_compile=False)
    model.fit(x, feats["labels"], batch_size=32, epochs=epochs, verbose=0)
    return model


def export_version(model, model_base_path: str, version: int, **export_kw) -> str:
    """Export `model` with the Trainer's exporter to `<model_base_path>/<version>/` (Pusher layout);
    `export_kw`: e.g. trained_frequencies."""
    from components.trainer.export import export_serving_model
    path = os.path.join(model_base_path, str(version))
    export_serving_model(model, FeatureTransformStandIn(**SIZES), path, **SIZES, **export_kw)
    return path
