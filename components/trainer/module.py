"""Trainer module (penguin style): `run_fn(fn_args)` trains a LEM on the transformed examples and exports it.

The recipe (paper §3.4, defaults of `components.trainer.config.TrainingConfig`, passed as `custom_config`):
Adam, batch 256, shuffled train split, early stopping (patience 2, best weights restored), reduce-LR-on-
plateau (patience 1), minimum trading rate 1/N^2 and maximum rate 1 (unconstrained) per execution bar;
several (min_rate, max_rate) configurations may be given: every example is then seen with each of them
(the batch is tiled, so the effective batch is K x batch_size). The GPU is used when TensorFlow sees one
(`use_gpu: false` hides it); optional mixed precision; TensorBoard logs go to the model-run artifact; Keras
progress is printed locally. The SavedModel (transform graph embedded, two signatures) is written by
`components.trainer.export`.

custom_config = {"sizes": {n_ahead, lookback, norm_window}, "model": {ModelConfig fields},
                 "training": {TrainingConfig fields}}.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from components.trainer import export
from components.trainer.config import ModelConfig, TrainingConfig
from lem_model.features import frequency_loss_weights
from lem_model.presets import paper_min_rate

BARS_KEY = "bars"
LABELS_KEY = "labels"
log = logging.getLogger(__name__)


def constraint_pairs(training: TrainingConfig, n_ahead: int) -> list:
    """[(min_rate, max_rate)] of the training recipe; None min_rate = the paper's 1/N^2."""
    mins = training.min_rates or [None]
    maxs = training.max_rates or [1.0]
    if len(mins) != len(maxs):
        raise ValueError(f"training.min_rates {mins} and max_rates {maxs} must have the same length")
    return [(paper_min_rate(n_ahead) if lo is None else float(lo), float(hi)) for lo, hi in zip(mins, maxs)]


def input_fn(file_pattern, data_accessor, tf_transform_output, *, batch_size: int, constraints, shuffle: bool,
             shuffle_buffer: int = 10_000, seed: int | None = None, weighting: str = "none",
             min_frequency: float = 1.0) -> tf.data.Dataset:
    """Transformed examples -> batches of ({"bars", "min_rate", "max_rate"}, labels[, weights]), one pass
    (finite).

    With K constraint pairs each batch of B examples becomes K*B rows, one copy per (min_rate, max_rate).
    weighting != "none" adds per-example loss weights (`lem_model.features.frequency_loss_weights`).
    """
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, shuffle_buffer_size=shuffle_buffer,
                                       shuffle_seed=seed, num_epochs=1, label_key=LABELS_KEY),
        tf_transform_output.transformed_metadata.schema)
    mins = tf.constant([c[0] for c in constraints], tf.float32)
    maxs = tf.constant([c[1] for c in constraints], tf.float32)
    k = len(constraints)

    def to_model_inputs(features, labels):
        bars = features[BARS_KEY]
        b = tf.shape(bars)[0]
        bars = tf.tile(bars, [k, 1, 1])
        labels = tf.tile(labels, [k, 1, 1])
        min_rate = tf.reshape(tf.repeat(mins, b), [-1, 1])
        max_rate = tf.reshape(tf.repeat(maxs, b), [-1, 1])
        inputs = {BARS_KEY: bars, "min_rate": min_rate, "max_rate": max_rate}
        weights = frequency_loss_weights(bars, weighting, min_frequency)
        return (inputs, labels) if weights is None else (inputs, labels, weights)

    dataset = dataset.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(input_options())


def input_options() -> tf.data.Options:
    """tf.data options of the Trainer's input: autotuning off. With it on, each pass's iterator runs a model
    thread whose wait between optimisations doubles up to 60 s, and the exhausted iterator's destructor
    waits that out: measured (TF 2.16.2, 2 cores) as the whole process idle for 15-60 s at the end of 30-50 %
    of the epochs (docs/experiments.md, training speed). AUTOTUNE parallelism then means one call per core, and
    the input pass costs ~2 s of a ~60 s epoch either way; the order of the examples is unchanged."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _configure_devices(training: TrainingConfig) -> str:
    if not training.use_gpu:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as e:  # devices already initialised
            log.warning("could not hide GPUs: %s", e)
    gpus = tf.config.list_logical_devices("GPU")
    if training.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16" if gpus else "mixed_bfloat16")
    return f"GPU ({len(gpus)})" if gpus else "CPU"


class EpochLine(keras.callbacks.Callback):
    """One short line per epoch: time, loss, val loss and the slippage figures that matter most (validation
    match-VWAP |bps| = tracking risk, buy/sell VWAP-volume bps); every metric stays in TensorBoard and
    history.json. Used when `training.verbose` is 2 (default); 1 = Keras's progress bar, 0 = silent."""
    KEYS = (("loss", "loss"), ("val_loss", "val_loss"), ("val_match_vwap_abs_bps", "val match|vwap| bps"),
            ("val_buy_vwap_volume_bps", "val buy vwap bps"), ("val_sell_vwap_volume_bps", "val sell vwap bps"))

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{label} {float(logs[key]):.4g}" for key, label in self.KEYS if key in logs]
        print(f"[trainer] epoch {epoch + 1}/{self.epochs} {time.time() - self._t0:.1f} s  " + "  ".join(parts),
              flush=True)


def _callbacks(training: TrainingConfig, log_dir: str):
    epoch_line = [EpochLine(training.epochs)] if training.verbose == 2 else []
    return epoch_line + [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=training.early_stopping_patience,
                                      restore_best_weights=True, verbose=1),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=training.reduce_lr_patience,
                                          factor=training.reduce_lr_factor,
                                          min_lr=training.min_learning_rate, verbose=1),
        keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"),
    ]


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (GenericExecutor)."""
    cfg = fn_args.custom_config or {}
    sizes = cfg.get("sizes", {})
    model_config = ModelConfig(**cfg.get("model", {}))
    training = TrainingConfig(**cfg.get("training", {}))
    n_ahead, lookback, norm_window = int(sizes["n_ahead"]), int(sizes["lookback"]), int(sizes["norm_window"])
    keras.utils.set_random_seed(training.seed)
    device = _configure_devices(training)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    bars_spec = tf_transform_output.transformed_feature_spec()[BARS_KEY]
    if list(bars_spec.shape)[:1] != [lookback + n_ahead]:
        raise ValueError(f"transformed 'bars' have shape {bars_spec.shape}, expected [L+N={lookback + n_ahead}, F]")
    num_features = int(bars_spec.shape[-1])

    constraints = constraint_pairs(training, n_ahead)
    common = dict(batch_size=training.batch_size, constraints=constraints, seed=training.seed,
                  weighting=training.frequency_weighting,
                  min_frequency=min(cfg.get("frequencies") or [1]))
    train_ds = input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, shuffle=True,
                        shuffle_buffer=training.shuffle_buffer, **common)
    eval_ds = input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, shuffle=False, **common)

    from lem_model.model import build_lem, compile_lem
    model = build_lem(num_features=num_features, lookback=lookback, n_ahead=n_ahead, **model_config.build_options())
    compile_lem(model, learning_rate=training.learning_rate, jit_compile=training.jit_compile,
                **training.loss_options())
    print(f"[trainer] LEM N={n_ahead} L={lookback} W={norm_window} F={num_features} on {device}; "
          f"{model.count_params():,} parameters; constraints (min_rate, max_rate) = {constraints}", flush=True)

    steps = training.steps_per_epoch or (fn_args.train_steps or None)
    val_steps = training.validation_steps or (fn_args.eval_steps or None)
    if steps:
        train_ds = train_ds.repeat()
    start = time.time()
    print(f"[trainer] training up to {training.epochs} epochs; the first also builds the input pipeline and compiles "
          f"the training step", flush=True)
    history = model.fit(train_ds, validation_data=eval_ds, epochs=training.epochs,
                        steps_per_epoch=steps, validation_steps=val_steps,
                        callbacks=_callbacks(training, fn_args.model_run_dir),
                        verbose=1 if training.verbose == 1 else 0)
    seconds = time.time() - start
    hist = {k: [float(x) for x in v] for k, v in history.history.items()}
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "history.json"), "w") as f:
        f.write(json.dumps({"history": hist, "train_seconds": seconds, "device": device}, indent=2))

    print("[trainer] exporting the serving SavedModel (transform graph, signatures, warm-up requests)", flush=True)
    export.export_serving_model(
        model, tf_transform_output, fn_args.serving_model_dir, norm_window=norm_window, lookback=lookback,
        n_ahead=n_ahead, trained_frequencies=cfg.get("frequencies"),
        session_frequencies=cfg.get("session_frequencies"),
        metadata={"model": dataclasses.asdict(model_config), "num_features": num_features,
                  "training": dataclasses.asdict(training), "epochs_run": len(hist.get("loss", [])),
                  "train_seconds": round(seconds, 1), "device": device})
