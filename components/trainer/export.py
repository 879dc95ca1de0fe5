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

All three signatures check the order/bar rules of `lem_model.request_rules` in the graph (`request_checks`):
a request (or tf.Example) in milliseconds, with gaps, of a frequency the model was not trained on, with
negative or inconsistent volumes (a bar empty on one side only) or infeasible rates fails with
INVALID_ARGUMENT naming the field. The ExampleGen refuses such bars at ingestion (the same `valid_bars`), so
its windows, which the Evaluator and the report run through `serve_tf_examples`, pass.

Raw fields the transform graph takes but a request does not carry are filled in the graph: `origin_time`
= `timestamp[:, W+L]`, other missing fields with empty/zero placeholders (they do not enter the features).
The sizes and hyperparameters are also written to `assets.extra/lem_model.json` (W and L cannot be read
from the signature shapes alone: those give W+L+N and N), TF Serving's warm-up requests to
`assets.extra/tf_serving_warmup_requests` (`components.trainer.warmup`).
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import tensorflow as tf

from lem_model import layout
from lem_model import request_rules
from lem_model.presets import paper_min_rate

BARS_KEY = "bars"
REQUEST_BAR_FIELDS = ("volume", "quote_volume", "timestamp", "frequency_minutes")
METADATA_FILE = os.path.join("assets.extra", "lem_model.json")


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


def _captured_variables(concrete_functions) -> list:
    """The tf.Variables the concrete functions read (each once, in first-use order)."""
    seen, out = set(), []
    for fn in concrete_functions:
        for v in fn.variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def request_checks(inputs: dict, rule_context: dict) -> list:
    """`tf.debugging.Assert` ops of the order/bar rules (`lem_model.request_rules`) on a signature's raw
    inputs: a violation fails the call with InvalidArgumentError "assertion failed: [<field>: <message>]
    [first bad order:] [b]" (INVALID_ARGUMENT at the server), never a schedule. The asserts run in rule
    order (each depends on the previous one), so the error names the first rule violated, as the client's."""
    import tensorflow.experimental.numpy as tnp
    checks = []
    for rule in request_rules.RULES:
        with tf.control_dependencies(checks[-1:]):
            ok = tf.reshape(rule.check(tnp, inputs, rule_context), [-1])
            first = tf.concat([tf.where(tf.logical_not(ok))[:, 0], tf.constant([-1], tf.int64)], 0)[0]
            checks.append(tf.debugging.Assert(tf.reduce_all(ok), [rule.text(rule_context), "first bad order:", first],
                                              name=f"request_rule_{len(checks)}"))
    return checks


def export_serving_model(model, tf_transform_output, export_dir: str, *, norm_window: int, lookback: int,
                         n_ahead: int, metadata: Mapping | None = None, trained_frequencies=None,
                         session_frequencies=None, warmup: bool = True) -> str:
    """Save `model` (Keras 3 LEM) with the transform graph and the three signatures to `export_dir`.

    trained_frequencies: bar lengths (minutes) of the training data; the raw-bar signatures refuse others
    (None: any >= 1). session_frequencies: those trained with the missing-bar rule "skip" (their bars may step
    over closed sessions). Both are recorded in `assets.extra/lem_model.json`. warmup: also write TF Serving's
    warm-up file (`components.trainer.warmup`; its windows use the first trained frequency, else 15)."""
    rule_context = request_rules.context(horizon=n_ahead, trained_frequencies=trained_frequencies,
                                         session_frequencies=session_frequencies)
    total = norm_window + lookback + n_ahead
    origin = norm_window + lookback
    raw_spec = {k: v for k, v in tf_transform_output.raw_feature_spec().items()
                if k not in ("min_rate", "max_rate")}
    missing = [k for k in REQUEST_BAR_FIELDS if k not in raw_spec]
    if missing:
        raise ValueError(f"the transform's raw schema lacks {missing}; has {sorted(raw_spec)}")
    parse_spec = dict(raw_spec)
    parse_spec["min_rate"] = tf.io.FixedLenFeature([], tf.float32, default_value=paper_min_rate(n_ahead))
    parse_spec["max_rate"] = tf.io.FixedLenFeature([], tf.float32, default_value=1.0)

    module = tf.Module()
    module.tft_layer = tf_transform_output.transform_features_layer()
    # The Keras model is NOT tracked as `module.model`: Keras 3 exports each `keras.Variable` as a second,
    # separate graph variable (`Variable_<n>`) which the checkpoint restores, while the traced functions read
    # the wrapped `tf.Variable`. TF2's Python loader resolves that through the object graph, but TF Serving's
    # session loader (restore op + SignatureDef tensors, components.serving_check) leaves the captured ones
    # uninitialized ("Could not find variable ..."). `module.serving_variables` (below) tracks exactly the
    # tf.Variables the signatures capture, so the restore op initializes them (and no optimizer slots ship).

    def model_inputs(raw, min_rate, max_rate):
        batch = tf.shape(raw["volume"])[0]
        transformed = module.tft_layer(_fill_raw(raw, raw_spec, batch, origin))
        return {BARS_KEY: transformed[BARS_KEY],
                "min_rate": tf.reshape(tf.cast(min_rate, tf.float32), [-1, 1]),
                "max_rate": tf.reshape(tf.cast(max_rate, tf.float32), [-1, 1])}

    def allocations(raw, min_rate, max_rate):
        out = model(model_inputs(raw, min_rate, max_rate), training=False)
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
        with tf.control_dependencies(request_checks(dict(raw, min_rate=min_rate, max_rate=max_rate), rule_context)):
            raw["volume"] = tf.identity(volume)
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
        raw = {"volume": volume, "quote_volume": quote_volume, "timestamp": timestamp,
               "frequency_minutes": frequency_minutes}
        checks += request_checks(dict(raw, min_rate=min_rate, max_rate=max_rate), rule_context)
        with tf.control_dependencies(checks):
            scenario = tf.identity(scenario)
            raw["volume"] = tf.identity(volume)
        out = model.allocate_scenario(model_inputs(raw, min_rate, max_rate), scenario, training=False)
        return {"allocations": tf.cast(out, tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(examples):
        parsed = tf.io.parse_example(examples, parse_spec)
        min_rate, max_rate = parsed.pop("min_rate"), parsed.pop("max_rate")
        parsed["frequency_minutes"] = tf.reshape(parsed["frequency_minutes"], [-1])
        parsed["volume"] = tf.reshape(parsed["volume"], [-1, total])
        parsed["quote_volume"] = tf.reshape(parsed["quote_volume"], [-1, total])
        parsed["timestamp"] = tf.reshape(parsed["timestamp"], [-1, total])
        # the same rules as serving_default: an example it would refuse is refused here too
        with tf.control_dependencies(request_checks(dict(parsed, min_rate=min_rate, max_rate=max_rate),
                                                    rule_context)):
            parsed["volume"] = tf.identity(parsed["volume"])
        return allocations(parsed, min_rate, max_rate)

    module.serve_bars = serve_bars
    module.serve_tf_examples = serve_tf_examples
    module.serve_scenario = serve_scenario
    signatures = {"serving_default": serve_bars.get_concrete_function(),
                  "serve_scenario": serve_scenario.get_concrete_function(),
                  "serve_tf_examples": serve_tf_examples.get_concrete_function()}
    module.serving_variables = _captured_variables(signatures.values())
    tf.saved_model.save(module, export_dir, signatures=signatures)
    meta = {"norm_window": int(norm_window), "lookback": int(lookback), "n_ahead": int(n_ahead),
            "window_bars": int(total), "default_min_rate": paper_min_rate(n_ahead), "default_max_rate": 1.0,
            "trained_frequencies": rule_context["trained_frequencies"],
            "session_frequencies": rule_context["session_frequencies"],
            "implementation": model.implementation, "xla_max_batch": int(model.xla_max_batch),
            **dict(metadata or {})}
    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_FILE), "w") as f:
        f.write(json.dumps(meta, indent=2, default=str))
    if warmup:   # TF Serving's warm-up file: each signature at each batch size the XLA path compiles for
        from components.trainer.warmup import warmup_batch_sizes, write_warmup_file
        write_warmup_file(export_dir, window_bars=total, n_ahead=n_ahead,
                          frequencies=tuple(rule_context["trained_frequencies"] or (15,))[:1],
                          batch_sizes=warmup_batch_sizes(model.xla_max_batch))
    return export_dir


def read_metadata(saved_model_dir: str) -> dict:
    """The sizes/hyperparameters written next to an exported model (`assets.extra/lem_model.json`)."""
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, METADATA_FILE)) as f:
        return json.loads(f.read())
