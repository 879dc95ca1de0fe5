"""Worker of reference_compare.py: trains OUR LEM (lem_model only, no TFX) on a subset of raw order windows and
writes its allocations for the test windows. Runs in the project venv.

As the Trainer (components/trainer/module.py) feeds it: `bars` and `labels` from the ONE feature builder
(`lem_model.features.build_features_numpy`), `min_rate` = the paper's 1/N^2 (`lem_model.presets.paper_min_rate`) and
`max_rate` = 1 on every example, `lem_model.build_lem` + `compile_lem` (LemAdam at `--lr`, the LEM loss). Unlike
the Trainer: a fixed number of epochs on the given windows (no validation split, early stopping or LR schedule,
so that both implementations get the same epochs), no frequency weighting (the subset has one frequency, where
the Trainer's weight is 1), no XLA (as the reference's driver). Also runs the perturbation check of
reference_compare_driver.causality_check (our model reads bars < o+k for step k).

Output: `--output` .npz with `allocations` [B_test, N, N+1, 4, 2] float32; one BENCH_RESULT line (params, train
seconds, samples/s, loss per epoch, the causality check).

Usage: reference_compare_ours.py --subset subset.npz --output ours.npz --hidden 32 --embedding 8 --heads 4 \
        --fused 32 --epochs 12 --batch 256 --lr 1e-3 --threads 2 [--recurrent tkan]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root (lem_model)
from _common import pin_tf_threads  # noqa: E402
from reference_compare_driver import causality_check, emit_trained, load_split  # noqa: E402  (NumPy only at import)


def model_inputs(split: dict, volume=None, quote_volume=None) -> tuple:
    """({"bars", "min_rate", "max_rate"}, labels) of the windows of `split` (optionally other volumes)."""
    from lem_model.presets import paper_min_rate
    from lem_model.features import build_features_numpy
    n = split["n_ahead"]
    feats = build_features_numpy(split["volume"] if volume is None else volume,
                                 split["quote_volume"] if quote_volume is None else quote_volume,
                                 split["timestamp"], split["frequency_minutes"], norm_window=split["norm_window"],
                                 lookback=split["lookback"], n_ahead=n)
    b = len(feats["bars"])
    x = {"bars": feats["bars"], "min_rate": np.full((b, 1), paper_min_rate(n), np.float32),
         "max_rate": np.ones((b, 1), np.float32)}
    return x, feats["labels"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--subset", required=True)
    p.add_argument("--output", required=True)
    for name, default in [("hidden", 32), ("embedding", 8), ("heads", 4), ("fused", 32), ("epochs", 12),
                          ("batch", 256), ("threads", 2), ("seed", 0), ("check-windows", 16)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--recurrent", default="tkan")
    p.add_argument("--input-clip", type=float, help="LargeExecutionModel(input_clip=): every bar feature to +-this")
    p.add_argument("--volume-clip", type=float, help="LargeExecutionModel(volume_clip=): the linear volume feature")
    p.add_argument("--tilt-bound", type=float, help="LargeExecutionModel(tilt_bound=): each order's allocator "
                   "logit term bounded around the learned base rate")
    p.add_argument("--fixed-horizon-risk", action="store_true",
                   help="the risk term on the minimum-period-N head too (lem_model.loss; off = the paper's objective)")
    a = p.parse_args()

    import tensorflow as tf
    pin_tf_threads(tf, a.threads, a.threads)
    import keras
    import lem_model
    from lem_model.features import NUM_BAR_FEATURES

    keras.utils.set_random_seed(a.seed)
    train, test = load_split(a.subset, "train"), load_split(a.subset, "test")
    x, y = model_inputs(train)
    x_test, _ = model_inputs(test)
    model = lem_model.build_lem(num_features=NUM_BAR_FEATURES, lookback=train["lookback"], n_ahead=train["n_ahead"],
                                hidden_size=a.hidden, num_embedding=a.embedding, num_heads=a.heads,
                                fused_mlp_hidden_dim=a.fused, recurrent=a.recurrent,
                                **{k: v for k, v in (("input_clip", a.input_clip), ("volume_clip", a.volume_clip),
                                                         ("tilt_bound", a.tilt_bound)) if v is not None})
    lem_model.compile_lem(model, learning_rate=a.lr, fixed_horizon_risk=a.fixed_horizon_risk, metrics=False,
                          jit_compile=False)
    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=a.batch, epochs=a.epochs, shuffle=True, verbose=0)
    train_s = time.perf_counter() - t0
    alloc = np.asarray(model.predict(x_test, batch_size=a.batch, verbose=0), np.float32)

    o, n, k = test["norm_window"] + test["lookback"], test["n_ahead"], min(a.check_windows, len(alloc))
    probe = {key: (v[:k] if np.ndim(v) and len(v) == len(alloc) else v) for key, v in test.items()}
    check = causality_check(lambda v, q: model.predict(model_inputs(probe, v, q)[0], batch_size=k, verbose=0),
                            probe["volume"], probe["quote_volume"], origin=o, n_ahead=n)
    emit_trained(a.output, {"impl": "ours lem_model", "recurrent": a.recurrent,
                            "fixed_horizon_risk": a.fixed_horizon_risk, "input_clip": model.input_clip,
                            "volume_clip": model.volume_clip, "tilt_bound": model.tilt_bound, "inputs": "bars rows = bars "
                            "o-L .. o+N-1; step k reads position L+k-1 = bar o+k-1 (lem_model.model)"},
                 model, hist, train_s, len(y), a.epochs, alloc, check)


if __name__ == "__main__":
    main()
