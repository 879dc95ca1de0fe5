"""Worker of reference_compare.py: trains the REFERENCE `lems==0.1.1` (CC BY-NC-SA 4.0) on a subset of our raw
order windows and writes its allocations for the test windows.

Runs ONLY under benchmarks/.venv-ref/bin/python (setup_reference_venv.sh); nothing in lems-tfx imports the
package, and no code of it is copied here: this script calls its public API (`lems.models.LargeExecutionModel`,
`lems.loss.lem_loss`, `lems.data_formater.prepare_data_with_ahead_inputs`, `add_config_to_X`,
`add_config_to_y`). Top-level imports are the standard library and NumPy only, so reference_compare_ours.py
can import `perturb_bar` and `causality_check` from here.

How the reference's inputs are built from our windows (read from the installed package's `data_formater.py`)
-----------------------------------------------------------------------------------------------------------
Its own pipeline, `full_generate(volumes, notionals, asset, ...)`, builds per bar the 7 columns
  [volume, freq_min, month (the column is named "hour" but holds `index.month`), day of week (Monday = 0),
   return vwap_t / vwap_{t-1} - 1, vwap (forward-filled notional / volume), volume]
and `prepare_data_with_ahead_inputs` cuts, for a first execution bar `row`, X = features[row-L : row+N-1]
(`[L+N-1, 7]`, i.e. bars o-L .. o+N-2), divides the last column by s = sum of column 0 over bars
row-L-336 .. row-2, sets column 0 to (that last column) / s again (volume / s^2: the published code does so),
divides the price column by its first row, and y = [volume_{o..o+N-1} / sum(volume of the L lookback bars),
vwap_{o..o+N-1} / vwap_{o-L}]. We build the 7 columns the same way from one window's raw bars (NumPy below:
`window_features`) and call the package's own `prepare_data_with_ahead_inputs` on that one window, padded with
one unused bar at the end (its loop stops one bar before the series' end), so the package does the cutting and
normalisation itself. It hardcodes 336 normalisation bars: windows must have W >= 336 (the last 336 + L + N bars
are used). Differences from `full_generate` that cannot be avoided on cut windows: the forward fill starts
inside the window (bars before the window's first priced bar take that bar's VWAP), and bar 0's return is 0
(read by neither X nor s). Then `add_config_to_X(X, 1/N^2, 1)` (the paper's training constraint, as our
Trainer) and `add_config_to_y(y)`.

Variants
--------
published: exactly the layout above. The model's step k reads X row L+k (attention, its own inputs and the
  market VWAP/TWAP curves built from the price/volume columns), and row L+k is bar o+k, the execution bar of
  step k: each allocation sees one bar of its own future (step N-1 is the remainder 1 - sum, X ends at o+N-2).
causal: the same recipe on the feature series delayed by one bar (features'[t] = features[t-1], a zero-volume
  bar in front), y unchanged: row L+k is then bar o+k-1, so step k sees only bars before its execution bar.
  s then sums the volume of bars 0 .. o-3 (all before the order), and the price column is relative to bar o-L-1.
`causality_check` verifies both claims by perturbing single execution bars.

Output: `--output` .npz with `allocations` [B_test, N, N+1, 4, 2] float32: the reference's own output layout,
which is already ours (step, minimum-period index with the match head last, path buy-VWAP / buy-TWAP /
sell-VWAP / sell-TWAP, target volume / notional: `lems.loss.create_mask` and `add_config_to_y` use the same
axes), so no conversion is needed; one BENCH_RESULT line (params, train seconds, samples/s, loss per epoch,
the causality check).

Usage: reference_compare_driver.py --subset subset.npz --output ref.npz --variant causal --hidden 32 \
        --embedding 8 --heads 4 --fused 32 --epochs 12 --batch 256 --lr 1e-3 --threads 2
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, pin_tf_threads  # noqa: E402

#: The reference's hardcoded normalisation section (`normalization_section = 24 * 7 * 2`).
REFERENCE_NORM_BARS = 336
VARIANTS = ("published", "causal")
#: Which bars X holds and which bar step k reads, per variant (o = first execution bar).
INPUT_LAYOUT = {"published": "X rows = bars o-L .. o+N-2; step k reads row L+k = bar o+k (its own execution bar)",
                "causal": "X rows = bars o-L-1 .. o+N-3; step k reads row L+k = bar o+k-1 (before its execution "
                          "bar)"}
#: |change| of an allocation (fraction of the order) above which it counts as "changed" in `causality_check`.
CHANGE_TOL = 1e-6


def load_split(subset_path: str, split: str) -> dict:
    """One split of the subset .npz written by reference_compare.py: volume, quote_volume, timestamp [B, T],
    frequency_minutes [B], plus the sizes W, L, N."""
    z = np.load(subset_path, allow_pickle=False)
    out = {k: z[f"{split}_{k}"] for k in ("volume", "quote_volume", "timestamp", "frequency_minutes")}
    out.update({k: int(z[k]) for k in ("norm_window", "lookback", "n_ahead")})
    return out


def perturb_bar(volume, quote_volume, bar: int, volume_factor: float = 3.0, price_factor: float = 1.02):
    """Copies of the raw windows with bar `bar` moved: volume x volume_factor, VWAP x price_factor."""
    v, q = np.array(volume, np.float32), np.array(quote_volume, np.float32)
    v[:, bar] *= volume_factor
    q[:, bar] *= volume_factor * price_factor
    return v, q


def causality_check(predict, volume, quote_volume, *, origin: int, n_ahead: int) -> dict:
    """For each execution step k, move bar o+k (`perturb_bar`) and compare the allocations (all heads) with the
    unperturbed ones: `before` = max |change| at steps < k, `at` = at step k. A causal model has before = at = 0
    for every k; a model that sees its own execution bar has at > 0. `predict(volume, quote_volume)` ->
    allocations [B, N, N+1, 4, 2]."""
    base = np.asarray(predict(volume, quote_volume), np.float64)
    rows = []
    for k in range(n_ahead):
        alloc = np.asarray(predict(*perturb_bar(volume, quote_volume, origin + k)), np.float64)
        d = np.abs(alloc - base)
        rows.append({"k": k, "before": float(d[:, :k].max()) if k else 0.0, "at": float(d[:, k].max()),
                     "after": float(d[:, k + 1:].max()) if k + 1 < n_ahead else 0.0})
    sees_own = [r["k"] for r in rows if r["at"] > CHANGE_TOL]
    sees_earlier = [r["k"] for r in rows if r["before"] > CHANGE_TOL]
    return {"windows": int(np.shape(volume)[0]), "tol": CHANGE_TOL, "rows": rows,
            "steps_that_see_own_bar": sees_own, "steps_that_see_later_bars": sees_earlier,
            "causal": not sees_own and not sees_earlier,
            "max_change_at_or_before": max(max(r["at"], r["before"]) for r in rows)}


def window_features(volume, quote_volume, timestamp, frequency_minutes) -> tuple:
    """The 7 per-bar columns of the reference's `full_generate` for windows `[B, T]` -> (features [B, T, 7],
    vwap [B, T], volume [B, T]) (module docstring)."""
    vol = np.asarray(volume, np.float32)  # float32 throughout, as full_generate's frames
    vol = np.where(np.isfinite(vol) & (vol > 0), vol, np.float32(0))
    q = np.asarray(quote_volume, np.float32)
    q = np.where(np.isfinite(q) & (q > 0), q, np.float32(0))
    priced = (vol > 0) & (q > 0)
    b, t = vol.shape
    idx = np.where(priced, np.arange(t)[None, :], 0)
    last = np.maximum.accumulate(idx, axis=1)                             # last priced bar <= t (0 if none)
    first = np.argmax(priced, axis=1)                                     # bars before it take its VWAP
    last = np.where(np.arange(t)[None, :] < first[:, None], first[:, None], last)
    raw = np.where(priced, q / np.where(priced, vol, np.float32(1)), np.float32(1))
    vwap = np.take_along_axis(raw, last, axis=1)
    ret = np.concatenate([np.zeros((b, 1), np.float32), vwap[:, 1:] / vwap[:, :-1] - np.float32(1)], axis=1)
    ts = np.asarray(timestamp, np.int64)
    month = ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    dow = (np.floor_divide(ts, 86_400) + 3) % 7                           # 1970-01-01 was a Thursday
    freq = np.broadcast_to(np.asarray(frequency_minutes, np.float32).reshape(-1, 1), (b, t))
    feats = np.stack([vol, freq, month.astype(np.float32), dow.astype(np.float32), ret, vwap, vol], axis=-1)
    return feats, vwap, vol


def reference_inputs(split: dict, variant: str, volume=None, quote_volume=None) -> tuple:
    """Windows of `split` (optionally with other volume / quote_volume) -> ([X, min_rate, max_rate], y) of the
    reference's layout, through its own `prepare_data_with_ahead_inputs` (module docstring)."""
    from lems.data_formater import add_config_to_X, add_config_to_y, prepare_data_with_ahead_inputs
    w, lookback, n = split["norm_window"], split["lookback"], split["n_ahead"]
    if w < REFERENCE_NORM_BARS:
        raise ValueError(f"the reference needs {REFERENCE_NORM_BARS} normalisation bars, windows have W={w}")
    cut = w - REFERENCE_NORM_BARS
    volume = split["volume"] if volume is None else volume
    quote_volume = split["quote_volume"] if quote_volume is None else quote_volume
    feats, vwap, vol = window_features(volume[:, cut:], quote_volume[:, cut:], split["timestamp"][:, cut:],
                                       split["frequency_minutes"])
    if variant == "causal":
        feats = np.concatenate([np.zeros_like(feats[:, :1]), feats[:, :-1]], axis=1)
    elif variant != "published":
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    pad = lambda a: np.concatenate([a, a[:, -1:]], axis=1)  # noqa: E731 - one unused bar at the end
    feats, vwap, vol, ts = pad(feats), pad(vwap), pad(vol), pad(split["timestamp"][:, cut:])
    xs, ys = [], []
    for i in range(feats.shape[0]):
        x, y, _ = prepare_data_with_ahead_inputs(vwap[i], vol[i], feats[i], ts[i], lookback, n)
        if len(x) != 1:
            raise ValueError(f"window {i}: the reference's data preparation rejected it (zero volume sums or "
                             "non-finite features); reference_compare.py should have filtered it out")
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs).astype(np.float32)
    inputs = [np.asarray(a, np.float32) for a in add_config_to_X(x, 1.0 / n ** 2, 1.0)]
    return inputs, add_config_to_y(np.concatenate(ys)).astype(np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--subset", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--variant", choices=VARIANTS, required=True)
    for name, default in [("hidden", 32), ("embedding", 8), ("heads", 4), ("fused", 32), ("epochs", 12),
                          ("batch", 256), ("threads", 2), ("seed", 0), ("check-windows", 16)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--lr", type=float, default=1e-3)
    a = p.parse_args()

    import tensorflow as tf
    pin_tf_threads(tf, a.threads, a.threads)
    import keras
    from lems.loss import lem_loss
    from lems.models import LargeExecutionModel

    keras.utils.set_random_seed(a.seed)
    train, test = load_split(a.subset, "train"), load_split(a.subset, "test")
    x, y = reference_inputs(train, a.variant)
    x_test, _ = reference_inputs(test, a.variant)
    model = LargeExecutionModel(lookback=train["lookback"], n_ahead=train["n_ahead"], hidden_size=a.hidden,
                                num_embedding=a.embedding, num_heads=a.heads, fused_mlp_hidden_dim=a.fused)
    model([v[:2] for v in x])  # build
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=a.lr), loss=lem_loss, jit_compile=False)
    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=a.batch, epochs=a.epochs, shuffle=True, verbose=0)
    train_s = time.perf_counter() - t0
    alloc = model.predict(x_test, batch_size=a.batch, verbose=0).astype(np.float32)

    o, n, k = test["norm_window"] + test["lookback"], test["n_ahead"], min(a.check_windows, len(alloc))
    probe = {key: (v[:k] if np.ndim(v) and len(v) == len(alloc) else v) for key, v in test.items()}

    def predict(volume, quote_volume):
        inputs, _ = reference_inputs(probe, a.variant, volume, quote_volume)
        return model.predict(inputs, batch_size=k, verbose=0)

    check = causality_check(predict, probe["volume"], probe["quote_volume"], origin=o, n_ahead=n)
    emit_trained(a.output, {"impl": f"reference lems 0.1.1 ({a.variant})", "inputs": INPUT_LAYOUT[a.variant]},
                 model, hist, train_s, len(y), a.epochs, alloc, check)


def emit_trained(output: str, fields: dict, model, hist, train_s: float, train_windows: int, epochs: int, alloc,
                 check: dict) -> None:
    """Save the test allocations to `output` (.npz) and emit the worker's result line (both workers)."""
    np.savez_compressed(output, allocations=alloc)
    emit({**fields, "params": int(model.count_params()), "train_s": train_s, "train_windows": int(train_windows),
          "samples_per_s": train_windows * epochs / train_s, "loss": [float(v) for v in hist.history["loss"]],
          "test_windows": int(len(alloc)), "allocation_sum_error": float(np.abs(alloc.sum(axis=1) - 1.0).max()),
          "allocation_min": float(alloc.min()), "causality": check})


if __name__ == "__main__":
    main()
