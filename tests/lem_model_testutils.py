"""Tiny LEM configurations and random inputs shared by the tests/test_model_*.py files (not a test)."""
import numpy as np

TINY = dict(lookback=10, n_ahead=4, hidden_size=8, num_embedding=4, num_heads=2, fused_mlp_hidden_dim=8)
NUM_FEATURES = 5


def tiny_model(recurrent="lstm", num_features=NUM_FEATURES, random_output=True, **overrides):
    """A tiny LEM; random_output (default): its allocator's output layer random (`random_output_layer`), so that
    its allocations depend on the inputs as a trained model's do (a fresh LEM starts every path at TWAP)."""
    from lem_model import build_lem
    model = build_lem(num_features=num_features, recurrent=recurrent, **{**TINY, **overrides})
    return random_output_layer(model) if random_output else model


def random_output_layer(model, seed=0):
    """Give the allocator's output weights (`w_out`, zero at initialisation) random values, in place; returns
    the model. Causality and equivalence tests need allocations that move with the inputs."""
    rng = np.random.default_rng(seed)
    found = [v for v in model.weights if v.path.endswith("w_out")]
    if not found:
        raise ValueError("model has no allocator output weights named w_out")
    for v in found:
        v.assign((rng.normal(size=v.shape) * 0.5 / np.sqrt(v.shape[-2])).astype("float32"))
    return model


def random_inputs(batch, lookback=TINY["lookback"], n_ahead=TINY["n_ahead"], num_features=NUM_FEATURES,
                  seed=0, scale=1.0, min_rate=None, max_rate=1.0):
    rng = np.random.default_rng(seed)
    min_rate = 1.0 / n_ahead ** 2 if min_rate is None else min_rate
    return {"bars": (scale * rng.normal(size=(batch, lookback + n_ahead, num_features))).astype("float32"),
            "min_rate": np.full((batch, 1), min_rate, "float32"),
            "max_rate": np.full((batch, 1), max_rate, "float32")}


def random_labels(batch, n_ahead=TINY["n_ahead"], seed=1):
    """[B, N, 2]: positive volumes and a random-walk VWAP around 1."""
    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.2, 2.0, (batch, n_ahead))
    price = np.exp(np.cumsum(0.01 * rng.normal(size=(batch, n_ahead)), axis=1))
    return np.stack([vol, price], -1).astype("float32")


def generated_examples(n_bars=900, norm_window=24, lookback=TINY["lookback"], n_ahead=TINY["n_ahead"],
                       stride=3, seed=0, assets=("BTCUSDT",), freq_minutes=15):
    """Model inputs and labels from the project's synthetic generator, window cutter and feature builder."""
    from components.market_data.synthetic import generate_bars
    from components.market_data.windows import cut_windows_batch
    from lem_model.features import build_features_numpy
    frame = generate_bars(list(assets), periods=n_bars, freq_minutes=freq_minutes, seed=seed)
    parts = []
    for asset, g in frame.groupby("asset", sort=True):
        parts.append(cut_windows_batch(g["volume"].to_numpy(np.float32), g["quote_volume"].to_numpy(np.float32),
                                       (g["timestamp"].astype("int64") // 10 ** 9).to_numpy(), asset=asset,
                                       frequency_minutes=freq_minutes, norm_window=norm_window,
                                       lookback=lookback, n_ahead=n_ahead, stride=stride))
    raw = {k: np.concatenate([p[k] for p in parts]) for k in ("volume", "quote_volume", "timestamp",
                                                              "frequency_minutes")}
    feats = build_features_numpy(raw["volume"], raw["quote_volume"], raw["timestamp"], raw["frequency_minutes"],
                                 norm_window=norm_window, lookback=lookback, n_ahead=n_ahead)
    b = feats["bars"].shape[0]
    x = {"bars": feats["bars"], "min_rate": np.full((b, 1), 1.0 / n_ahead ** 2, np.float32),
         "max_rate": np.ones((b, 1), np.float32)}
    return x, feats["labels"]


# Tolerances for float32 outputs of two *different* computations of the same function: another graph (traced or
# eager, saved and loaded, another signature), another batch size, process or backend. oneDNN picks its kernels
# by CPU (AVX2 or AVX-512) and shape, so such outputs agree to float32 rounding (~1e-7 relative per op, ~1e-6
# after the model), not bit for bit. The same computation repeated is compared exactly (assert_array_equal).
# Both still fail on a real error: 1 % of an allocation of 1/N is ~1e-3.
ALLOC_TOL = dict(rtol=1e-5, atol=1e-6)       # allocations: fractions in [0, 1]
XLA_ALLOC_TOL = dict(rtol=1e-5, atol=1e-5)   # XLA-compiled vs plain: XLA also uses its own exp/tanh approximations
# Slippage in bps derived from allocations: bps = 1e4 (achieved / benchmark - 1) moves by about
# 1e4 x sum_i |d alloc_i| x |price_i / benchmark - 1|, i.e. ~1e4 x 1e-5 x 1e-2 = 1e-3 bps for the tolerances
# above and prices within 1 % of the benchmark; a 1 % allocation error moves it by ~1e-2 x the slippage spread.
BPS_TOL = dict(rtol=1e-5, atol=1e-3)
