"""Backfill throughput: order windows per second of `backfill.beam_pipeline.run_backfill` on the DirectRunner
(in_memory, and multi_processing with `--workers` processes), for the paper configuration and a small one.

Models have random (seeded) weights: `backfill.testing.export_untrained_model` pushes them through the real
transform graph and the Trainer's exporter; throughput does not depend on the weights. Data: generated
15-minute bars (`components.market_data.synthetic`), one tidy Parquet file per asset. Every window gets all
(N+1) heads x 4 paths x 2 targets = 104 scenario rows at N = 12 (the default of `lems backfill`).

windows/s = windows backfilled / seconds of the whole run (Beam: reading bars, cutting windows, inference,
rows with the slippage evaluator, Parquet; plus the commit), worker start-up and model loading included.

    python -m benchmarks.backfill_throughput [--days 4] [--assets 2] [--workers 2] [--configs paper,small]
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from benchmarks._common import format_table, machine_info  # noqa: E402
from lem_model.presets import PAPER_CONFIG, PAPER_SIZES, SMALL_CONFIG  # noqa: E402

CONFIGS = {
    # the paper's README configuration (lem_model.presets) with W 336 and TKAN recurrent layers (the paper's)
    "paper": dict(PAPER_CONFIG, norm_window=PAPER_SIZES["norm_window"], recurrent="tkan"),
    # lem_model.presets.SMALL_CONFIG with W 336 and LSTM recurrent layers
    "small": dict(SMALL_CONFIG, norm_window=PAPER_SIZES["norm_window"], recurrent="lstm"),
}
ASSET_NAMES = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT", "BNBUSDT", "ADAUSDT")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=4, help="days of order origins backfilled per asset")
    ap.add_argument("--assets", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="multi_processing workers")
    ap.add_argument("--configs", default="paper,small")
    ap.add_argument("--modes", default="in_memory,multi_processing")
    ap.add_argument("--batch-size", type=int, default=256)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd

    from backfill import testing
    from backfill.beam_pipeline import run_backfill
    from backfill.spec import BackfillSpec

    work = tempfile.mkdtemp(prefix="lems-backfill-bench-")
    rows = []
    try:
        assets = ASSET_NAMES[:a.assets]
        start = pd.Timestamp("2024-03-01", tz="UTC")
        for name in a.configs.split(","):
            cfg = dict(CONFIGS[name])
            sizes = {k: cfg.pop(k) for k in ("norm_window", "lookback", "n_ahead")}
            warm_bars = sizes["norm_window"] + sizes["lookback"]
            first_day = (start + pd.Timedelta(minutes=15 * warm_bars)).normalize() + pd.Timedelta(days=1)
            periods = int((first_day - start).total_seconds() // 900) + a.days * 96 + sizes["n_ahead"] + 1
            src = os.path.join(work, name, "src")
            testing.write_synthetic_source(src, assets, start=str(start.date()), periods=periods)
            t0 = time.time()
            model_base = os.path.join(work, name, "models", "lem")
            testing.export_untrained_model(model_base, **sizes, **cfg)
            print(f"[{name}] model exported in {time.time() - t0:.1f} s; {periods} bars per asset", flush=True)
            for mode in a.modes.split(","):
                args = [f"--direct_running_mode={mode}",
                        f"--direct_num_workers={1 if mode == 'in_memory' else a.workers}"]
                out = os.path.join(work, name, f"out-{mode}")
                spec = BackfillSpec(source=src, model_dir=model_base, output_dir=out,
                                    start_date=str(first_day.date()),
                                    end_date=str((first_day + pd.Timedelta(days=a.days - 1)).date()),
                                    assets=assets, frequencies=(15,), batch_size=a.batch_size)
                t0 = time.time()
                rec = run_backfill(spec, args)
                wall = time.time() - t0
                rows.append([name, mode, 1 if mode == "in_memory" else a.workers, rec["windows"], rec["rows"],
                             f"{wall:.1f}", f"{rec['windows'] / wall:.1f}", f"{rec['rows'] / wall:.0f}"])
                print(f"[{name}/{mode}] {rec['windows']} windows, {rec['rows']} rows in {wall:.1f} s "
                      f"-> {rec['windows'] / wall:.1f} windows/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = machine_info()
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']:.0f} GiB; python {info['python']}")
    print(format_table(["config", "mode", "workers", "windows", "rows", "seconds", "windows/s", "rows/s"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
