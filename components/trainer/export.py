"""Export a trained LEM as a SavedModel with the transform graph embedded (docs/example-contract.md).

The Keras 3 model and `tft_layer = tf_transform_output.transform_features_layer()` are held by a `tf.Module`
with three `tf.function` signatures, saved with `tf.saved_model.save`:

- `serving_default`: `volume`, `quote_volume` float32 [B, W+L+N], `timestamp` int64 [B, W+L+N],
  `frequency_minutes` int64 [B], `min_rate`, `max_rate` float32 [B] (fractions of the order per bar)
  -> `allocations` float32 [B, N, N+1, 4, 2];
- `serve_scenario`: the `serving_default` inputs plus `scenario` int64 [B] (one scenario per order,
  `lem_model.layout.scenario_index`) -> `allocations` float32 [B, N]: the same fractions as
  `serving_default` at that scenario, computed by running only that scenario's fused MLPs (the live-order
  path of `serving.LemClient`; for small batches, large ones are cheaper through `serving_default`);
- `serve_tf_examples`: `examples` string [B] (serialized tf.Example with the raw fields; optional float
  features `min_rate`/`max_rate`, default 1/N^2 and 1) -> `allocations`.

Raw fields the transform graph takes but a request does not carry are filled in the graph: `origin_time`
= `timestamp[:, W+L]`, other missing fields with empty/zero placeholders (they do not enter the features).
The sizes and hyperparameters are also written to `assets.extra/lem_model.json` (W and L cannot be read
from the signature shapes alone: those give W+L+N and N).
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import tensorflow as tf

from lem_model import layout

BARS_KEY = "bars"
REQUEST_BAR_FIELDS = ("volume", "quote_volume", "timestamp", "frequency_minutes")
METADATA_FILE = os.path.join("assets.extra", "lem_model.json")


def default_min_rate(n_ahead: int) -> float:
    """The paper's training constraint (§3.4): trade at least 1/N^2 of the order per bar while incomplete."""
    return 1.0 / float(n_ahead) ** 2


def _fill_raw(raw: dict, raw_spec: Mapping, batch, origin_index: int) -> dict:
    """Complete `raw` with every field of the raw feature spec the transform graph expects."""
    out = dict(raw)
    for name, spec in raw_spec.items():
        if name in out:
            continue
        if name == "origin_time":
            value = out["timestamp"][:, origin_index]
        elif spec.dtype == tf.string:
            value = tf.fill([batch], tf.constant("", tf.string))
        else:
            value = tf.zeros([batch], spec.dtype)
        shape = list(getattr(spec, "shape", []) or [])
        out[name] = tf.reshape(value, [batch] + shape) if shape else value
    for name, spec in raw_spec.items():
        shape = list(getattr(spec, "shape", []) or [])
        if shape == [1] and out[name].shape.rank == 1:
            out[name] = tf.expand_dims(out[name], -1)
    return out


def export_serving_model(model, tf_transform_output, export_dir: str, *, norm_window: int, lookback: int,
                         n_ahead: int, metadata: Mapping | None = None) -> str:
    """Save `model` (Keras 3 LEM) with the transform graph and the three signatures to `export_dir`."""
    total = norm_window + lookback + n_ahead
    origin = norm_window + lookback
    raw_spec = {k: v for k, v in tf_transform_output.raw_feature_spec().items()
                if k not in ("min_rate", "max_rate")}
    missing = [k for k in REQUEST_BAR_FIELDS if k not in raw_spec]
    if missing:
        raise ValueError(f"the transform's raw schema lacks {missing}; has {sorted(raw_spec)}")
    parse_spec = dict(raw_spec)
    parse_spec["min_rate"] = tf.io.FixedLenFeature([], tf.float32, default_value=default_min_rate(n_ahead))
    parse_spec["max_rate"] = tf.io.FixedLenFeature([], tf.float32, default_value=1.0)

    module = tf.Module()
    module.model = model
    module.tft_layer = tf_transform_output.transform_features_layer()

    def model_inputs(raw, min_rate, max_rate):
        batch = tf.shape(raw["volume"])[0]
        transformed = module.tft_layer(_fill_raw(raw, raw_spec, batch, origin))
        return {BARS_KEY: transformed[BARS_KEY],
                "min_rate": tf.reshape(tf.cast(min_rate, tf.float32), [-1, 1]),
                "max_rate": tf.reshape(tf.cast(max_rate, tf.float32), [-1, 1])}

    def allocations(raw, min_rate, max_rate):
        out = module.model(model_inputs(raw, min_rate, max_rate), training=False)
        return {"allocations": tf.cast(out, tf.float32)}

    bar_specs = [tf.TensorSpec([None, total], tf.float32, name="volume"),
                 tf.TensorSpec([None, total], tf.float32, name="quote_volume"),
                 tf.TensorSpec([None, total], tf.int64, name="timestamp"),
                 tf.TensorSpec([None], tf.int64, name="frequency_minutes"),
                 tf.TensorSpec([None], tf.float32, name="min_rate"),
                 tf.TensorSpec([None], tf.float32, name="max_rate")]

    @tf.function(input_signature=bar_specs)
    def serve_bars(volume, quote_volume, timestamp, frequency_minutes, min_rate, max_rate):
        raw = {"volume": volume, "quote_volume": quote_volume, "timestamp": timestamp,
               "frequency_minutes": frequency_minutes}
        return allocations(raw, min_rate, max_rate)

    num_scenarios = layout.num_min_periods(n_ahead) * layout.PATHS_PER_MIN_PERIOD

    @tf.function(input_signature=bar_specs + [tf.TensorSpec([None], tf.int64, name="scenario")])
    def serve_scenario(volume, quote_volume, timestamp, frequency_minutes, min_rate, max_rate, scenario):
        checks = [tf.debugging.assert_equal(tf.shape(scenario)[0], tf.shape(volume)[0],
                                            message="scenario must have one entry per order (shape [B])"),
                  tf.debugging.assert_greater_equal(scenario, tf.constant(0, tf.int64),
                                                    message=f"scenario must be in 0..{num_scenarios - 1}"),
                  tf.debugging.assert_less(scenario, tf.constant(num_scenarios, tf.int64),
                                           message=f"scenario must be in 0..{num_scenarios - 1}")]
        with tf.control_dependencies(checks):
            scenario = tf.identity(scenario)
        raw = {"volume": volume, "quote_volume": quote_volume, "timestamp": timestamp,
               "frequency_minutes": frequency_minutes}
        out = module.model.allocate_scenario(model_inputs(raw, min_rate, max_rate), scenario, training=False)
        return {"allocations": tf.cast(out, tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(examples):
        parsed = tf.io.parse_example(examples, parse_spec)
        min_rate, max_rate = parsed.pop("min_rate"), parsed.pop("max_rate")
        parsed["frequency_minutes"] = tf.reshape(parsed["frequency_minutes"], [-1])
        parsed["volume"] = tf.reshape(parsed["volume"], [-1, total])
        parsed["quote_volume"] = tf.reshape(parsed["quote_volume"], [-1, total])
        parsed["timestamp"] = tf.reshape(parsed["timestamp"], [-1, total])
        return allocations(parsed, min_rate, max_rate)

    module.serve_bars = serve_bars
    module.serve_tf_examples = serve_tf_examples
    module.serve_scenario = serve_scenario
    signatures = {"serving_default": serve_bars.get_concrete_function(),
                  "serve_scenario": serve_scenario.get_concrete_function(),
                  "serve_tf_examples": serve_tf_examples.get_concrete_function()}
    tf.saved_model.save(module, export_dir, signatures=signatures)
    meta = {"norm_window": int(norm_window), "lookback": int(lookback), "n_ahead": int(n_ahead),
            "window_bars": int(total), "default_min_rate": default_min_rate(n_ahead), "default_max_rate": 1.0,
            **dict(metadata or {})}
    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_FILE), "w") as f:
        f.write(json.dumps(meta, indent=2, default=str))
    return export_dir


def read_metadata(saved_model_dir: str) -> dict:
    """The sizes/hyperparameters written next to an exported model (`assets.extra/lem_model.json`)."""
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, METADATA_FILE)) as f:
        return json.loads(f.read())
