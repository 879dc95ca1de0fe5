"""`lems quickstart`: train a small LEM on generated bars and print its slippage against TWAP (paper Table 1).

Everything runs in-process, without TFX: synthetic bars (`components.market_data.synthetic`) -> order
windows (`components.market_data.windows`) -> features and labels (`lem_model.features`) -> time-ordered
train / validation / test split (an example belongs to a split only when all its W+L+N bars lie inside the
split's time range, so splits share no bar) -> `lem_model.build_lem` / `compile_lem` -> slippage of the test
orders with the ONE evaluator (`lem_model.slippage`) next to the TWAP baselines (`lem_model.baselines`).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lem_model.presets import PAPER_CONFIG, PAPER_SIZES, SMALL_CONFIG, paper_min_rate


def _without_n_ahead(config: dict) -> dict:  # N comes from --n-ahead
    return {k: v for k, v in config.items() if k != "n_ahead"}


SIZES = {
    "tiny": dict(lookback=30, hidden_size=16, num_embedding=4, num_heads=2, fused_mlp_hidden_dim=16),
    "small": _without_n_ahead(SMALL_CONFIG),
    "paper": _without_n_ahead(PAPER_CONFIG),
}


def add_parser(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data (generated)")
    g.add_argument("--assets", nargs="+", default=["BTCUSDT", "ETHUSDT"], help="synthetic assets")
    g.add_argument("--bars", type=int, default=5000, help="bars per asset (default 5000)")
    g.add_argument("--freq-minutes", type=int, default=15, help="bar length in minutes (default 15)")
    g.add_argument("--norm-window", type=int, default=PAPER_SIZES["norm_window"],
                   help="W: volume-normalisation bars (default %(default)s)")
    g.add_argument("--n-ahead", type=int, default=PAPER_SIZES["n_ahead"],
                   help="N: execution bars per order (default %(default)s)")
    g.add_argument("--lookback", type=int, default=None, help="L: history bars (default: from --size)")
    g.add_argument("--stride", type=int, default=2, help="bars between order origins (default 2)")
    g.add_argument("--val-fraction", type=float, default=0.15, help="share of the timeline for validation")
    g.add_argument("--test-fraction", type=float, default=0.2, help="share of the timeline for the test")
    g.add_argument("--seed", type=int, default=0)
    m = parser.add_argument_group("model and training")
    m.add_argument("--size", choices=sorted(SIZES), default="small", help="model size preset (default small)")
    m.add_argument("--recurrent", choices=("tkan", "lstm", "gru"), default="tkan",
                   help="recurrent block (tkan: paper default, CC BY-NC-SA; lstm/gru: licence-clean)")
    m.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--learning-rate", type=float, default=1e-3,
                   help="Adam learning rate (default 1e-3 for a short run; the paper uses 1e-5)")
    m.add_argument("--benchmark", choices=("vwap", "twap"), default="vwap", help="table benchmark (default vwap)")
    m.add_argument("--target", choices=("volume", "notional"), default="volume", help="table target")


def _windows(args, lookback):
    from components.market_data.synthetic import generate_bars
    from components.market_data.windows import cut_windows_batch

    frame = generate_bars(list(args.assets), periods=args.bars, freq_minutes=args.freq_minutes, seed=args.seed)
    parts, drops = [], {}
    for asset, g in frame.groupby("asset", sort=True):
        parts.append(cut_windows_batch(
            g["volume"].to_numpy(np.float32), g["quote_volume"].to_numpy(np.float32),
            (g["timestamp"].astype("int64") // 10 ** 9).to_numpy(np.int64), asset=asset,
            frequency_minutes=args.freq_minutes, norm_window=args.norm_window, lookback=lookback,
            n_ahead=args.n_ahead, stride=args.stride, drops=drops))
    keys = ("volume", "quote_volume", "timestamp", "frequency_minutes", "origin_time")
    raw = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    t_first, t_last = frame["timestamp"].min().value // 10 ** 9, frame["timestamp"].max().value // 10 ** 9
    return raw, drops, (t_first, t_last)


def _split(raw, bounds, args):
    """Time-ordered split: an example is in a split when all its bars (open to close) lie in its range."""
    t0, t1 = bounds
    span = t1 - t0
    val_start = t0 + int(span * (1 - args.val_fraction - args.test_fraction))
    test_start = t0 + int(span * (1 - args.test_fraction))
    first = raw["timestamp"][:, 0]
    end = raw["timestamp"][:, -1] + 60 * args.freq_minutes
    ranges = {"train": (-np.inf, val_start), "val": (val_start, test_start), "test": (test_start, np.inf)}
    splits = {name: np.flatnonzero((first >= lo) & (end <= hi)) for name, (lo, hi) in ranges.items()}
    straddling = len(first) - sum(len(v) for v in splits.values())
    return splits, straddling


def run(args) -> int:
    import keras  # noqa: F401  (loads the backend)
    from lem_model import baselines, build_lem, compile_lem, layout, slippage
    from lem_model.features import build_features_numpy

    cfg = dict(SIZES[args.size])
    lookback = args.lookback or cfg.pop("lookback")
    cfg.pop("lookback", None)
    n = args.n_ahead
    t_start = time.time()
    raw, drops, bounds = _windows(args, lookback)
    splits, straddling = _split(raw, bounds, args)
    print(f"[quickstart] {len(raw['origin_time'])} order windows from {len(args.assets)} generated asset(s) x "
          f"{args.bars} bars of {args.freq_minutes} min (W={args.norm_window}, L={lookback}, N={n}); "
          f"dropped by the cutter: {dict(drops) or 0}; straddling a split boundary (dropped): {straddling}")
    data = {}
    for name, idx in splits.items():
        if len(idx) == 0:
            raise SystemExit(f"quickstart: the {name} split is empty; use more --bars or other fractions")
        f = build_features_numpy(raw["volume"][idx], raw["quote_volume"][idx], raw["timestamp"][idx],
                                 raw["frequency_minutes"][idx], norm_window=args.norm_window,
                                 lookback=lookback, n_ahead=n)
        b = len(idx)
        x = {"bars": f["bars"], "min_rate": np.full((b, 1), paper_min_rate(n), np.float32),
             "max_rate": np.ones((b, 1), np.float32)}
        data[name] = (x, f["labels"])
        print(f"[quickstart] {name}: {b} orders")

    model = build_lem(num_features=data["train"][0]["bars"].shape[-1], lookback=lookback, n_ahead=n,
                      recurrent=args.recurrent, **cfg)
    compile_lem(model, learning_rate=args.learning_rate)
    print(f"[quickstart] LEM size={args.size} recurrent={args.recurrent}: {model.count_params():,} parameters; "
          f"training {args.epochs} epoch(s), batch {args.batch_size}", flush=True)
    t_fit = time.time()
    hist = model.fit(*data["train"], validation_data=data["val"], epochs=args.epochs,
                     batch_size=args.batch_size, shuffle=True, verbose=2)
    fit_s = time.time() - t_fit
    n_train = len(data["train"][1]) * args.epochs
    print(f"[quickstart] trained in {fit_s:.1f} s ({n_train / fit_s:.0f} samples/s incl. tracing); "
          f"loss {hist.history['loss'][0]:.4f} -> {hist.history['loss'][-1]:.4f}, "
          f"val loss {hist.history['val_loss'][-1]:.4f}")

    x_test, labels = data["test"]
    alloc = model.predict(x_test, batch_size=256, verbose=0)
    lem_bps = slippage.evaluate_allocations(alloc, labels)
    vol, price = labels[..., layout.LABEL_VOLUME], labels[..., layout.LABEL_VWAP]
    twap = baselines.twap_schedule(len(labels), n)
    base = {f"TWAP {t.capitalize()}": slippage.slippage(twap, vol, price, n, "buy", args.benchmark, t).bps
            for t in ("notional", "volume")}
    title = (f"Test split ({len(labels)} orders, time-ordered): LEM {args.target} orders vs "
             f"{args.benchmark.upper()} by minimum period, slippage in bps "
             f"(lower is better for BUY, higher for SELL)")
    print()
    print(slippage.format_slippage_table(lem_bps, benchmark=args.benchmark, target=args.target, baselines=base,
                                         title=title))
    print(f"\n[quickstart] done in {time.time() - t_start:.1f} s")
    return 0
