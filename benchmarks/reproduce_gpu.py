"""The paper-size crypto LEM trained on a GPU machine that has no TensorFlow (JAX there), evaluated here.

The GPU machines this project is lent (benchmarks/RESULTS.md) carry PyTorch and JAX but no TensorFlow, so the TFX
Trainer cannot run there. This script trains the SAME model (`lem_model.build_lem` + `compile_lem`, Keras 3 on
the JAX backend) on the SAME windows the pipeline's ExampleGen cuts (`components.example_gen.ingest.asset_series`:
one source bar length per asset, resampling, missing-bar rule, outlier rule, window cut, time split with
embargo), with the same features (`lem_model.features.build_features`), constraints (min rate 1/N^2, max rate 1),
frequency weighting and callbacks as the Trainer, and scores the test orders with the ONE slippage evaluator
(`lem_model.slippage.evaluate_allocations`), the TWAP and volume-curve VWAP baselines and the block bootstrap.

Three stages:

    # 1. here (project venv): the series and window starts of each split -> one .npz (8 MB, travels to the GPU)
    .venv/bin/python benchmarks/reproduce_gpu.py prepare --config benchmarks/reproduce/crypto-paper.yaml \
        --eval-test-config benchmarks/reproduce/crypto.yaml --out .gpu/crypto.npz
    # 2. on the GPU machine (Keras + tkan wheels carried, KERAS_BACKEND=jax): train to early stopping or to the
    #    time budget, then write the per-order slippage of the eval and test orders (not the 150 MB of weights)
    KERAS_BACKEND=jax python3 benchmarks/reproduce_gpu.py train --data .gpu/crypto.npz --out $OUT --budget-s 420
    # 3. here: tables, intervals and the committed CPU run's figures beside them
    .venv/bin/python benchmarks/reproduce_gpu.py report --data .gpu/crypto.npz --run DIR \
        --output benchmarks/results/reproduce-crypto-gpu.json

On this workplace's lent GPU machine (Python 3.12 with JAX, no TensorFlow, no network), as run on 2026-12-04:
carry the wheels the model needs and `.gpu/` (both in `.git/info/exclude`):
`python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform
manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform
manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl keras==3.12.4 namex==0.1.0 optree==0.20.0 tkan==0.4.2
keras_efficient_kan==0.1.8`, then run there `python3 -m pip install -q --no-index --no-deps --no-compile
--no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; export
KERAS_BACKEND=jax PYTHONUNBUFFERED=1; python3 benchmarks/reproduce_gpu.py train --data .gpu/crypto.npz --out
$OUT/run --budget-s 420 --steps-per-epoch 500 --set learning_rate=1e-4` (session 17, the paper's loss; session 18
ran the same with `--set fixed_horizon_risk=true`, since then in crypto-paper.yaml: the chosen result,
`--output benchmarks/results/reproduce-crypto-gpu-fhr.json`). One pass over the 538,346 training windows takes
about 55 s on an H200 (benchmarks/HISTORY.md, sessions 17-18).

Training windows come from `--config` (the paper-size file: stride 1); eval and test windows from
`--eval-test-config` (the committed CPU config: strides 16 / 4 / 2), so the test orders are the committed CPU
run's test orders (the counts are checked in `report`) and validation stays cheap. Both files must agree on the
data, sizes and split dates.

`--quick` (prepare) writes generated bars instead of reading `--config`'s data (tests run all three stages).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if BENCH_DIR not in sys.path:
    sys.path.insert(1, BENCH_DIR)

SPLITS = ("train", "eval", "test")
#: Bars of the window gathered per feature-building chunk on the device.
FEATURE_CHUNK = 8192
#: Batch of validation and prediction (inputs padded to a multiple of it: one compiled shape each).
EVAL_BATCH = 1024
#: What a data file must agree on between the training and the eval/test configuration.
SAME_DATA_FIELDS = ("source", "input_patterns", "source_bar_minutes", "frequencies", "start", "eval_start",
                    "test_start", "end", "embargo_bars", "quote_volume")


# ------------------------------------------------------------------------------------------- prepare
def _load_config(path: str):
    from pipeline.configs import PipelineConfig
    return PipelineConfig.from_file(path)


def series_windows(config, splits) -> tuple[list, dict]:
    """The ExampleGen's cut of `config`'s data: ([{asset, frequency, timestamp, volume, quote_volume}, ...],
    {split: (series index [K], start [K])}) for the named `splits` (the window of series s at start j covers its
    bars j .. j+W+L+N-1)."""
    from components.example_gen import ingest
    from components.example_gen.config import SPLIT_NAMES
    from components.market_data import readers
    ing = config.ingestion_config()
    files = readers.list_input_files(config.data.source, ing.input_patterns)
    by_asset: dict = {}
    for path in files:
        for asset in readers.list_assets(path, chunk_rows=ing.chunk_rows):
            by_asset.setdefault(asset, []).append(path)
    series, windows = [], {s: ([], []) for s in splits}
    counts: dict = {}
    for asset in sorted(by_asset):
        chunks = ingest.read_asset(asset, by_asset[asset], ing, counts)
        for freq, ts, v, q, starts, split_idx in ingest.asset_series(asset, chunks, ing, counts):
            k = len(series)
            series.append({"asset": asset, "frequency": int(freq), "timestamp": np.asarray(ts, np.int64),
                           "volume": np.asarray(v, np.float32), "quote_volume": np.asarray(q, np.float32)})
            for s in splits:
                sel = starts[split_idx == SPLIT_NAMES.index(s)]
                windows[s][0].append(np.full(len(sel), k, np.int32))
                windows[s][1].append(sel.astype(np.int32))
    out = {s: (np.concatenate(a) if a else np.zeros(0, np.int32), np.concatenate(b) if b else np.zeros(0, np.int32))
           for s, (a, b) in windows.items()}
    return series, out


def _same_series(a: dict, b: dict) -> bool:
    return (a["asset"] == b["asset"] and a["frequency"] == b["frequency"]
            and np.array_equal(a["timestamp"], b["timestamp"]) and np.array_equal(a["volume"], b["volume"]))


def check_configs_agree(train_cfg, et_cfg, names: tuple = ("--config", "--eval-test-config")) -> None:
    """Raise ValueError unless the training and the eval/test configuration read the same data the same way
    (SAME_DATA_FIELDS and the sizes): they may differ in strides, model and training only."""
    for f in SAME_DATA_FIELDS:
        if getattr(train_cfg.data, f) != getattr(et_cfg.data, f):
            raise ValueError(f"{names[0]} and {names[1]} differ in data.{f}: "
                             f"{getattr(train_cfg.data, f)!r} vs {getattr(et_cfg.data, f)!r}")
    if train_cfg.sizes != et_cfg.sizes:
        raise ValueError(f"{names[0]} and {names[1]} differ in sizes: {train_cfg.sizes} vs {et_cfg.sizes}")


def prepare(config_path: str, eval_test_config_path: str, out: str) -> dict:
    """Write the .npz the device stage reads; returns its description."""
    import dataclasses
    train_cfg, et_cfg = _load_config(config_path), _load_config(eval_test_config_path)
    check_configs_agree(train_cfg, et_cfg, (config_path, eval_test_config_path))
    series, train = series_windows(train_cfg, ("train",))
    et_series, et = series_windows(et_cfg, ("eval", "test"))
    if len(series) != len(et_series) or not all(_same_series(a, b) for a, b in zip(series, et_series)):
        raise ValueError("the two configurations cut different series (they must differ in strides only)")
    windows = {"train": train["train"], "eval": et["eval"], "test": et["test"]}
    for s in SPLITS:
        if len(windows[s][0]) == 0:
            raise ValueError(f"no {s} windows: check the split dates of {config_path}")
    arrays = {}
    for k, s in enumerate(series):
        for f in ("timestamp", "volume", "quote_volume"):
            arrays[f"series{k}_{f}"] = s[f]
    for s in SPLITS:
        arrays[f"{s}_series"], arrays[f"{s}_start"] = windows[s]
    sizes = dataclasses.asdict(train_cfg.sizes)
    meta = {"configs": {"train": os.path.relpath(config_path, ROOT), "eval_test": os.path.relpath(eval_test_config_path, ROOT)},
            "series": [{"asset": s["asset"], "frequency": s["frequency"], "bars": int(len(s["timestamp"]))}
                       for s in series],
            "sizes": sizes, "model": dataclasses.asdict(train_cfg.model),
            "training": dataclasses.asdict(train_cfg.training),
            "frequencies": [int(f) for f in train_cfg.data.frequencies],
            "strides": {"train": {str(f): train_cfg.ingestion_config().stride_for(f) for f in train_cfg.data.frequencies},
                        "eval_test": {str(f): et_cfg.ingestion_config().stride_for(f) for f in et_cfg.data.frequencies}},
            "windows": {s: int(len(windows[s][0])) for s in SPLITS}, "prepared_at_commit": _commit()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **arrays)
    return meta


def _commit() -> str:
    from _common import git_commit
    return git_commit()


def load_data(path: str) -> tuple[dict, dict]:
    z = np.load(path, allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    return meta, {k: z[k] for k in z.files if k != "meta"}


def gather(meta: dict, arrays: dict, split: str, idx=None) -> dict:
    """Raw windows of `split` (optionally the rows `idx`): volume, quote_volume [K, T] float32, timestamp [K, T]
    int64, frequency_minutes [K], asset [K] (str)."""
    s = meta["sizes"]
    t = s["norm_window"] + s["lookback"] + s["n_ahead"]
    ser, start = arrays[f"{split}_series"], arrays[f"{split}_start"]
    if idx is not None:
        ser, start = ser[idx], start[idx]
    out = {f: np.zeros((len(ser), t), np.int64 if f == "timestamp" else np.float32)
           for f in ("timestamp", "volume", "quote_volume")}
    cols = np.arange(t)
    for k in np.unique(ser):
        rows = np.flatnonzero(ser == k)
        pos = start[rows, None] + cols[None, :]
        for f in out:
            out[f][rows] = arrays[f"series{k}_{f}"][pos]
    freq = np.array([meta["series"][k]["frequency"] for k in range(len(meta["series"]))], np.int64)
    assets = np.array([meta["series"][k]["asset"] for k in range(len(meta["series"]))])
    out["frequency_minutes"], out["asset"] = freq[ser], assets[ser]
    return out


# ------------------------------------------------------------------------------------------- train (device)
def model_arrays(meta: dict, arrays: dict, split: str, chunk: int = FEATURE_CHUNK) -> dict:
    """Features of every window of `split`, built in chunks: bars [K, L+N, F], labels [K, N, 2], the loss
    weight [K] (the Trainer's `frequency_weighting`) and frequency_minutes [K]."""
    import keras
    from lem_model.features import build_features_numpy, frequency_loss_weights
    s = meta["sizes"]
    k_all = len(arrays[f"{split}_series"])
    bars, labels, freqs = [], [], []
    for lo in range(0, k_all, chunk):
        raw = gather(meta, arrays, split, np.arange(lo, min(lo + chunk, k_all)))
        f = build_features_numpy(raw["volume"], raw["quote_volume"], raw["timestamp"], raw["frequency_minutes"],
                                 norm_window=s["norm_window"], lookback=s["lookback"], n_ahead=s["n_ahead"])
        bars.append(f["bars"])
        labels.append(f["labels"])
        freqs.append(raw["frequency_minutes"])
    bars = np.concatenate(bars)
    weight = frequency_loss_weights(bars, meta["training"].get("frequency_weighting", "none"), min(meta["frequencies"]))
    weight = (np.ones(len(bars)) if weight is None else keras.ops.convert_to_numpy(weight)).astype(np.float32)
    return {"bars": bars, "labels": np.concatenate(labels), "weight": weight,
            "frequency_minutes": np.concatenate(freqs)}


def _inputs(bars, n_ahead: int) -> dict:
    from lem_model.presets import paper_min_rate
    b = len(bars)
    return {"bars": bars, "min_rate": np.full((b, 1), paper_min_rate(n_ahead), np.float32),
            "max_rate": np.ones((b, 1), np.float32)}


def _batches_class():
    import keras

    class RandomBatches(keras.utils.PyDataset):
        """`steps` batches per (pseudo-)epoch drawn without replacement from one permutation that carries on
        across epochs (a new permutation after each full pass), so an epoch can be shorter than a pass."""

        def __init__(self, data: dict, n_ahead: int, batch: int, steps: int, seed: int):
            super().__init__(workers=1, use_multiprocessing=False)
            self.data, self.n_ahead, self.batch, self.steps = data, n_ahead, batch, steps
            self.rng = np.random.default_rng(seed)
            self.perm, self.pos = self.rng.permutation(len(data["bars"])), 0

        def __len__(self):
            return self.steps

        def _next(self):
            if self.pos + self.batch > len(self.perm):
                self.perm, self.pos = self.rng.permutation(len(self.data["bars"])), 0
            idx = np.sort(self.perm[self.pos:self.pos + self.batch])
            self.pos += self.batch
            return idx

        def __getitem__(self, i):
            idx = self._next()
            return (_inputs(self.data["bars"][idx], self.n_ahead), self.data["labels"][idx],
                    self.data["weight"][idx])

    return RandomBatches


def _callbacks(training: dict, budget_s: float, t_start: float, log):
    import keras

    class Budget(keras.callbacks.Callback):
        """Keeps the best weights by val_loss (restored at the end), prints one line per epoch and stops when the
        next epoch would end past the time budget (measured from the script's start)."""

        def __init__(self):
            super().__init__()
            self.best, self.best_weights, self.best_epoch, self.stop_reason = np.inf, None, -1, "epochs"
            self.epoch_s, self.first_step_s, self.step_ms = [], None, None

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_train_batch_end(self, batch, logs=None):
            now = time.time()
            if not self.epoch_s and batch == 0:
                self.first_step_s, self.t_step1 = now - self.t0, now
                log(f"first step (compilation included) {self.first_step_s:.1f} s")
            elif not self.epoch_s and batch == 100:
                self.step_ms = 1000 * (now - self.t_step1) / 100
                log(f"steps 2-101: {self.step_ms:.1f} ms per step")
            if now - t_start > budget_s:
                self.stop_reason = "time budget"
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.epoch_s.append(time.time() - self.t0)
            val = float(logs.get("val_loss", np.inf))
            if val < self.best:
                self.best, self.best_epoch = val, epoch
                self.best_weights = [np.asarray(w).copy() for w in self.model.get_weights()]
            lr = float(np.asarray(self.model.optimizer.learning_rate))
            log(f"epoch {epoch + 1} {self.epoch_s[-1]:.1f} s loss {logs.get('loss', np.nan):.5f} "
                f"val_loss {val:.5f} lr {lr:.2e} elapsed {time.time() - t_start:.0f} s")
            typical = float(np.median(self.epoch_s[1:] if len(self.epoch_s) > 1 else self.epoch_s))
            if time.time() - t_start + typical > budget_s:
                self.stop_reason = "time budget"
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    budget = Budget()
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(training["early_stopping_patience"]))
    reduce = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=int(training["reduce_lr_patience"]),
                                               factor=float(training["reduce_lr_factor"]),
                                               min_lr=float(training["min_learning_rate"]))
    return budget, [budget, early, reduce]


def pad_rows(data: dict, multiple: int) -> dict:
    """`data` with its rows repeated (last row, loss weight 0) up to a multiple of `multiple`: one compiled shape
    for validation and prediction (the padded rows add nothing to a weighted loss and are cut from outputs)."""
    k = len(data["bars"])
    extra = (-k) % multiple
    if not extra:
        return dict(data)
    out = {key: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) for key, v in data.items()}
    out["weight"][k:] = 0.0
    return out


def predict_bps(model, data: dict, n_ahead: int, batch: int) -> np.ndarray:
    """Per-order slippage [K, N+1, 4, 2] (bps, float32) of every head by the ONE evaluator."""
    from lem_model.slippage import evaluate_allocations
    k = len(data["bars"])
    padded = pad_rows(data, batch)
    alloc = np.asarray(model.predict(_inputs(padded["bars"], n_ahead), batch_size=batch, verbose=0))[:k]
    return evaluate_allocations(alloc, data["labels"]).astype(np.float32)


def _limit(arrays: dict, k: int) -> dict:
    """Every split cut to at most `k` evenly spaced windows (smoke tests)."""
    out = dict(arrays)
    for sp in SPLITS:
        m = len(arrays[f"{sp}_series"])
        if k and k < m:
            idx = np.unique(np.linspace(0, m - 1, k).round().astype(np.int64))
            out[f"{sp}_series"], out[f"{sp}_start"] = arrays[f"{sp}_series"][idx], arrays[f"{sp}_start"][idx]
    return out


def train(data_path: str, out: str, *, budget_s: float, steps_per_epoch: int, overrides: dict, seed: int,
          limit: int = 0) -> dict:
    t_start = time.time()
    import keras
    import lem_model
    from lem_model.features import NUM_BAR_FEATURES

    os.makedirs(out, exist_ok=True)
    log_file = open(os.path.join(out, "train.log"), "a", encoding="utf-8")

    def log(msg):
        line = f"[gpu-train {time.time() - t_start:6.1f}s] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    meta, arrays = load_data(data_path)
    arrays = _limit(arrays, limit)
    training = dict(meta["training"])
    hp = dict(meta["model"])
    for k, v in overrides.items():
        (hp if k in hp else training)[k] = v
    s = meta["sizes"]
    n = s["n_ahead"]
    if list(training.get("min_rates") or [None]) != [None] or [float(x) for x in training.get("max_rates") or [1.0]] != [1.0]:
        raise ValueError(f"training.min_rates {training.get('min_rates')} / max_rates {training.get('max_rates')}: "
                         "this script trains with the paper's constraint only (min rate 1/N^2, max rate 1)")
    devices, device_kind = [], platform.processor() or platform.machine()
    if keras.backend.backend() == "jax":
        import jax
        devices, device_kind = [str(d) for d in jax.devices()], jax.devices()[0].device_kind
    log(f"backend {keras.backend.backend()} {keras.__version__}; devices {devices} ({device_kind})")
    t0 = time.time()
    data = {sp: model_arrays(meta, arrays, sp) for sp in SPLITS}
    feature_s = time.time() - t0
    counts = ", ".join(f"{sp} {len(d['bars'])}" for sp, d in data.items())
    log(f"features: {counts} windows in {feature_s:.1f} s")

    keras.utils.set_random_seed(seed)
    model = lem_model.build_lem(num_features=NUM_BAR_FEATURES, lookback=s["lookback"], n_ahead=n, **hp)
    lem_model.compile_lem(model, learning_rate=float(training["learning_rate"]),
                          pnl_sharpness=training.get("pnl_sharpness"),
                          fixed_horizon_risk=bool(training.get("fixed_horizon_risk", False)),
                          risk_term=training.get("risk_term"), metrics=False)
    params = int(model.count_params())
    batch = int(training["batch_size"])
    steps = int(steps_per_epoch) or int(np.ceil(len(data["train"]["bars"]) / batch))
    log(f"LEM {params:,} parameters; lr {training['learning_rate']}, batch {batch}, {steps} steps per epoch, "
        f"up to {training['epochs']} epochs, budget {budget_s:.0f} s")
    batches = _batches_class()(data["train"], n, batch, steps, seed)
    ev = pad_rows(data["eval"], EVAL_BATCH)
    budget, callbacks = _callbacks(training, budget_s, t_start, log)
    t0 = time.time()
    hist = model.fit(batches, validation_data=(_inputs(ev["bars"], n), ev["labels"], ev["weight"]),
                     validation_batch_size=EVAL_BATCH, epochs=int(training["epochs"]), callbacks=callbacks,
                     verbose=0)
    fit_s = time.time() - t0
    epochs_run = len(hist.history.get("loss", []))
    if budget.stop_reason != "time budget" and epochs_run < int(training["epochs"]):
        budget.stop_reason = "early stopping"
    log(f"fit {fit_s:.1f} s, {epochs_run} epochs ({budget.stop_reason}); best epoch {budget.best_epoch + 1} "
        f"val_loss {budget.best:.5f}")
    t0 = time.time()
    bps = {sp: predict_bps(model, data[sp], n, EVAL_BATCH) for sp in ("eval", "test")}
    predict_s = time.time() - t0
    np.savez_compressed(os.path.join(out, "slippage.npz"), eval_bps=bps["eval"], test_bps=bps["test"],
                        eval_labels=data["eval"]["labels"], test_labels=data["test"]["labels"])
    # samples/s after the first epoch (its time holds the compilation)
    later = budget.epoch_s[1:]
    result = {"command": "benchmarks/reproduce_gpu.py " + " ".join(sys.argv[1:]),
              "backend": keras.backend.backend(), "keras": keras.__version__, "devices": devices,
              "device_kind": device_kind,
              "machine": platform.node(), "data_prepared_at_commit": meta.get("prepared_at_commit"),
              "parameters": params, "model": hp,
              # the options of the loss the model was compiled with (read back from it, not from the config)
              "loss": {k: v for k, v in model.loss.get_config().items()
                       if k in ("mask_sharpness", "pnl_sharpness", "fixed_horizon_risk", "risk_term")},
              "training": {**training, "steps_per_epoch": steps, "seed": seed}, "overrides": overrides,
              "budget_s": budget_s, "stop_reason": budget.stop_reason, "epochs_run": epochs_run,
              "best_epoch": budget.best_epoch + 1, "best_val_loss": budget.best,
              "history": {k: [float(x) for x in v] for k, v in hist.history.items()},
              "epoch_seconds": [round(x, 2) for x in budget.epoch_s],
              "optimizer_steps": int(np.asarray(model.optimizer.iterations)),
              "train_samples_seen": int(np.asarray(model.optimizer.iterations)) * batch,
              "first_step_s": budget.first_step_s, "step_ms_steps_2_101": budget.step_ms,
              "samples_per_s_after_first_epoch": (round(steps * batch * len(later) / sum(later), 1) if later else None),
              "seconds": {"features": round(feature_s, 1), "fit": round(fit_s, 1), "first_epoch": round(budget.epoch_s[0], 1) if budget.epoch_s else None,
                          "predict_and_score": round(predict_s, 1), "total": round(time.time() - t_start, 1)},
              "windows": {sp: int(len(d["bars"])) for sp, d in data.items()}, "limit": int(limit)}
    with open(os.path.join(out, "train.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {out}/slippage.npz and train.json; total {time.time() - t_start:.0f} s")
    return result


# ------------------------------------------------------------------------------------------- report
def vwap_curve_schedules(meta: dict, arrays: dict, test: dict) -> np.ndarray:
    """The volume-curve VWAP schedule [K, N] of each test order, its profile from the bars of the training
    windows only (each bar once; `lem_model.baselines`), per asset x frequency (TWAP where none)."""
    from lem_model import baselines
    s = meta["sizes"]
    t, o, n = s["norm_window"] + s["lookback"] + s["n_ahead"], s["norm_window"] + s["lookback"], s["n_ahead"]
    bars = {}  # (asset, frequency) -> the covered bars of all its segments (a gap splits a series into segments)
    for k, info in enumerate(meta["series"]):
        starts = arrays["train_start"][arrays["train_series"] == k]
        if not len(starts):
            continue
        covered = np.zeros(len(arrays[f"series{k}_timestamp"]), bool)
        for j in starts:  # windows overlap: mark the covered bars once
            covered[j:j + t] = True
        ts, vol = bars.setdefault((info["asset"], info["frequency"]), ([], []))
        ts.append(arrays[f"series{k}_timestamp"][covered])
        vol.append(arrays[f"series{k}_volume"][covered])
    profiles = {key: baselines.volume_curve_profile(np.concatenate(ts), np.concatenate(vol), key[1])
                for key, (ts, vol) in bars.items()}
    out = np.zeros((len(test["asset"]), n))
    for key in set(zip(test["asset"].tolist(), test["frequency_minutes"].tolist())):
        rows = np.flatnonzero((test["asset"] == key[0]) & (test["frequency_minutes"] == key[1]))
        profile = profiles.get(key, np.ones(baselines.bars_per_day(key[1])))
        first = baselines.time_of_bar(test["timestamp"][rows, o], key[1])
        out[rows] = baselines.volume_curve_schedule(profile, first, n)
    return out


def tables(bps, labels, curve, frequency_minutes, asset, blocks) -> tuple:
    """(`reproduce.report_tables` of per-order slippage `bps` [K, N+1, 4, 2] and the baselines of the same orders
    (`order_slippage.baseline_slippage`: TWAP, and the volume-curve VWAP of `curve` [K, N]), the OrderSlippage)."""
    from components.evaluator.order_slippage import OrderSlippage, baseline_slippage
    import reproduce
    result = OrderSlippage(lem_bps=bps, baseline_bps=baseline_slippage(labels, curve), labels=labels)
    return reproduce.report_tables(result, frequency_minutes, asset, blocks), result


def paired_with_run(bps, orders: dict, o: int, n: int, pipeline_root: str, split: str, blocks) -> dict:
    """This model's match head against a finished pipeline run's (its newest Trainer model, the report's code:
    `reproduce_tails.per_order`) on the same orders, per frequency and side: the std ratio (this / that) and the
    paired difference of |slippage|, with block-bootstrap intervals (`bootstrap.compare`)."""
    import reproduce_tails
    from lem_model import bootstrap, layout
    other = reproduce_tails.per_order(pipeline_root, split)
    key = lambda a, f, t: f"{a}|{int(f)}|{int(t)}"  # noqa: E731
    index = {key(a, f, t): i for i, (a, f, t) in enumerate(zip(other["asset"], other["frequency"], other["start"]))}
    mine = [key(a, f, t) for a, f, t in zip(orders["asset"], orders["frequency_minutes"], orders["timestamp"][:, o])]
    missing = sum(k not in index for k in mine)
    if missing or len(index) != len(mine):
        raise ValueError(f"{pipeline_root} {split}: {len(index)} orders, {len(mine)} here, {missing} not found")
    j = np.array([index[k] for k in mine])
    t = layout.target_index("volume")
    out = {"pipeline_root": pipeline_root, "model_dir": str(other["model_dir"]), "orders": len(mine)}
    freq = orders["frequency_minutes"]
    for name, m in [("overall", np.ones(len(mine), bool))] + [(f"{f} min", freq == f) for f in sorted(set(freq.tolist()))]:
        out[name] = {side: bootstrap.compare(bps[m][:, n, layout.path_index(side, "vwap"), t],
                                             other[f"lem_{side}"][j][m], blocks[m]) for side in layout.SIDES}
    return out


def report(data_path: str, run_dir: str, output: str, *, cpu_result: str | None, command: str,
           split: str = "test", pair_root: str | None = None) -> dict:
    """Score the orders of `split` that `train` wrote to `run_dir` as benchmarks/reproduce.py scores a pipeline
    run (`reproduce.summarise_tables`: the report's tables, the paper's beside them, issue #21's targets;
    `reproduce_tails.concentration` per slice); writes `output` (.json) and its .md."""
    import reproduce
    import reproduce_tails
    from _common import git_commit, machine_info
    from lem_model import bootstrap
    meta, arrays = load_data(data_path)
    with open(os.path.join(run_dir, "train.json"), encoding="utf-8") as f:
        run = json.load(f)
    log_path = os.path.join(run_dir, "train.log")
    if os.path.exists(log_path):
        with open(log_path, encoding="utf-8") as f:
            run["log"] = f.read().splitlines()
    arrays = _limit(arrays, int(run.get("limit", 0)))
    n, o = meta["sizes"]["n_ahead"], meta["sizes"]["norm_window"] + meta["sizes"]["lookback"]
    z = np.load(os.path.join(run_dir, "slippage.npz"))
    bps, labels = z[f"{split}_bps"].astype(np.float64), z[f"{split}_labels"].astype(np.float64)
    orders = gather(meta, arrays, split)
    if len(orders["asset"]) != len(bps):
        raise ValueError(f"{run_dir} scored {len(bps)} {split} orders, {data_path} has {len(orders['asset'])}")
    first = orders["timestamp"][:, o]
    blocks = bootstrap.day_blocks(first)
    freq, asset = orders["frequency_minutes"], orders["asset"]
    tabs, scored = tables(bps, labels, vwap_curve_schedules(meta, arrays, orders), freq, asset, blocks)
    day = lambda t: str(np.datetime64(int(t), "s"))[:16]  # noqa: E731
    results = reproduce.summarise_tables(
        "crypto", tabs, n_ahead=n, split=split,
        period=f"{day(first.min())} .. {day(first.max())} ({len(np.unique(blocks))} days)", orders=int(len(bps)),
        counts={**{a: int((asset == a).sum()) for a in sorted(set(asset.tolist()))},
                **{f"{f} min": int((freq == f).sum()) for f in sorted(set(freq.tolist()))}})
    results["concentration"] = reproduce_tails.concentration_by_frequency(
        bps, scored.baseline_bps["twap_volume_vs_vwap"], blocks, freq)
    loss = ", fixed-horizon risk" if run["training"].get("fixed_horizon_risk") else ""
    result = {"experiment": "crypto", "what": "the paper-size crypto LEM trained on a GPU under Keras/JAX "
                                              "(benchmarks/reproduce_gpu.py), scored on the committed crypto "
                                              f"config's {split} orders by the report's code",
              "command": command, "commit": git_commit(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"host": f"{platform.node()} {platform.machine()}", **machine_info(),
                          "cpu": f"training: {run.get('device_kind', '?')} ({', '.join(run['devices'])}); scoring: "
                                 f"{machine_info().get('cpu')}"},
              "data": {k: meta[k] for k in ("configs", "strides", "windows", "sizes", "frequencies")},
              "training_run": run, "results": results,
              "targets": reproduce.page_targets(f"crypto (GPU, paper size{loss}, seed {run['training']['seed']})",
                                                results["targets"])}
    if cpu_result and os.path.exists(cpu_result):
        with open(cpu_result, encoding="utf-8") as f:
            cpu = json.load(f)["results"]
        result["cpu_committed"] = {"file": os.path.relpath(cpu_result, ROOT), "orders": cpu.get("orders"),
                                   "same_orders": cpu.get("orders_per_slice") == results["orders_per_slice"]
                                   if split == cpu.get("split") else None}
    if pair_root:
        result["paired_with_run"] = paired_with_run(bps, orders, o, n, pair_root, split, blocks)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=float)
    write_markdown(result, output)
    return result


def write_markdown(result: dict, json_path: str) -> None:
    """The report's Markdown, beside its JSON (`report`, and `render` from a written JSON)."""
    with open(os.path.splitext(json_path)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(result))


def markdown(result: dict) -> str:
    import reproduce
    run, res = result["training_run"], result["results"]
    tr = run["training"]
    lines = [f"# Paper-size crypto LEM on a GPU ({res['split']} split {res['period']}, {res['orders']} orders)", "",
             f"Command: `{result['command']}`; commit {result['commit']}; {result['date']}.", "",
             f"Trained on {run.get('device_kind', '?')} ({', '.join(run['devices'])}; Keras {run['keras']}, "
             f"{run['backend']} backend): "
             f"{run['parameters']:,} parameters; lr {tr['learning_rate']}, batch {tr['batch_size']}, "
             f"{tr['steps_per_epoch']} steps per epoch, fixed_horizon_risk {tr.get('fixed_horizon_risk')}, seed "
             f"{tr['seed']}, overrides {json.dumps(run['overrides'])}; {run['epochs_run']} epochs run "
             f"({run['stop_reason']}), best epoch {run['best_epoch']} (val loss {run['best_val_loss']:.5f}); "
             f"{run['optimizer_steps']:,} steps = {run['train_samples_seen']:,} windows drawn from "
             f"{run['windows']['train']:,}; {run['step_ms_steps_2_101']:.1f} ms per step, "
             f"{run['samples_per_s_after_first_epoch']} samples/s after the first epoch; seconds "
             f"{json.dumps(run['seconds'])}." if run.get("step_ms_steps_2_101") else
             f"Trained on {', '.join(run['devices'])}: {run['parameters']:,} parameters; seconds {json.dumps(run['seconds'])}.",
             ""]
    pair = result.get("paired_with_run")
    if pair:
        lines += [f"Against the pipeline run `{pair['model_dir']}` on the same {pair['orders']} orders (match head, "
                  "this model / that one; 95 % block-bootstrap intervals):", "",
                  "| slice | std ratio buy | std ratio sell | mean abs diff buy (bps) | mean abs diff sell (bps) |",
                  "|---|---|---|---|---|"]
        for name, sides in pair.items():
            if isinstance(sides, dict) and "buy" in sides:
                b, s_ = sides["buy"], sides["sell"]
                lines.append(f"| {name} | {b['std_ratio']:.3f} [{b['std_ratio_lo']:.3f}, {b['std_ratio_hi']:.3f}] | "
                             f"{s_['std_ratio']:.3f} [{s_['std_ratio_lo']:.3f}, {s_['std_ratio_hi']:.3f}] | "
                             f"{b['diff_mean']:.2f} [{b['diff_lo']:.2f}, {b['diff_hi']:.2f}] | "
                             f"{s_['diff_mean']:.2f} [{s_['diff_lo']:.2f}, {s_['diff_hi']:.2f}] |")
        lines.append("")
    return "\n".join(lines + reproduce.markdown_tables(res)) + "\n"


# ------------------------------------------------------------------------------------------- main
def _overrides(pairs) -> dict:
    """["learning_rate=1e-4", "recurrent=lstm", "max_rates=[1.0]"] -> {name: JSON value, else the text}."""
    out = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise SystemExit(f"--set {p!r}: expected NAME=VALUE")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--config", default=os.path.join(BENCH_DIR, "reproduce", "crypto-paper.yaml"))
    a.add_argument("--eval-test-config", default=os.path.join(BENCH_DIR, "reproduce", "crypto.yaml"))
    a.add_argument("--out", default=os.path.join(ROOT, ".gpu", "crypto.npz"))
    a.add_argument("--quick", metavar="WORKDIR", help="generated bars and a tiny model instead (benchmarks/reproduce.py "
                                                      "--quick's configuration, written under WORKDIR)")
    b = sub.add_parser("train")
    b.add_argument("--data", default=os.path.join(ROOT, ".gpu", "crypto.npz"))
    b.add_argument("--out", required=True)
    b.add_argument("--budget-s", type=float, default=420.0, help="stop when the next epoch would end past this")
    b.add_argument("--steps-per-epoch", type=int, default=0, help="0 = one pass over the training windows")
    b.add_argument("--set", action="append", help="override a model or training field, e.g. learning_rate=1e-4")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--limit", type=int, default=0, help="at most this many windows per split (smoke tests)")
    c = sub.add_parser("report")
    c.add_argument("--data", default=os.path.join(ROOT, ".gpu", "crypto.npz"))
    c.add_argument("--run", required=True, help="the folder train wrote (train.json, slippage.npz)")
    c.add_argument("--output", default=os.path.join(BENCH_DIR, "results", "reproduce-crypto-gpu.json"))
    c.add_argument("--cpu-result", default=os.path.join(BENCH_DIR, "results", "reproduce-crypto.json"))
    c.add_argument("--split", choices=("eval", "test"), default="test")
    c.add_argument("--pair-root", help="a finished pipeline run of the eval/test config (its pipeline root): compare "
                                       "the match heads order by order")
    d = sub.add_parser("render", help="rewrite the Markdown beside a written report JSON from it (no data, no run)")
    d.add_argument("json")
    args = p.parse_args(argv)
    if args.stage == "render":
        with open(args.json, encoding="utf-8") as f:
            write_markdown(json.load(f), args.json)
    elif args.stage == "prepare":
        if args.quick:
            import reproduce
            args.config = args.eval_test_config = reproduce.quick_config("crypto", args.quick)
        meta = prepare(args.config, args.eval_test_config, args.out)
        print(json.dumps({k: meta[k] for k in ("windows", "strides")}))
    elif args.stage == "train":
        train(args.data, args.out, budget_s=args.budget_s, steps_per_epoch=args.steps_per_epoch,
              overrides=_overrides(args.set), seed=args.seed, limit=args.limit)
    else:
        r = report(args.data, args.run, args.output, cpu_result=args.cpu_result, split=args.split,
                   pair_root=args.pair_root,
                   command="benchmarks/reproduce_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
