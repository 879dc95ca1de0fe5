"""VwapCurveBaseline: the historical volume-curve VWAP schedule of every evaluation order, from the TRAINING split.

The schedule desks run today: trade each bar in proportion to the bar's usual share of the day's volume. The
profile is estimated per asset x frequency x time-of-bar (`lem_model.baselines.volume_curve_profile`) on the
bars of the training split only (each bar once, however many training examples contain it), so nothing of the
evaluation or test period enters it. Each example of the annotated splits then gets the feature
`vwap_curve_schedule` [N] = the profile over its N execution bars, normalised (`volume_curve_schedule`); the
Evaluator's slippage metric and the report evaluate that schedule with the ONE evaluator beside the LEM.

Outputs: `examples` (the annotated splits, same tf.Example records plus the feature, gzipped TFRecord like the
ExampleGen's), `schema` (the input schema plus the feature) and `<examples>/vwap_curve_profile.json`.
An asset x frequency without training bars gets TWAP (a flat profile), and the JSON says so.
"""

import glob
import json
import os
from typing import Dict, Sequence, Tuple

import numpy as np
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts

from components.evaluator.order_slippage import VWAP_CURVE_FEATURE
from lem_model import baselines

PROFILE_FILE = "vwap_curve_profile.json"
SCHEMA_FILE = "schema.pbtxt"
DATA_FILE = "data_tfrecord-00000-of-00001.gz"


def _split_files(split_uri: str) -> list:
    files = sorted(f for f in glob.glob(os.path.join(split_uri, "*")) if os.path.isfile(f))
    if not files:
        raise FileNotFoundError(f"no example files under {split_uri}")
    return files


def _records(split_uri: str):
    import tensorflow as tf
    for r in tf.data.TFRecordDataset(_split_files(split_uri), compression_type="GZIP"):
        yield bytes(r.numpy())


def _key(feats, i: int, where: str) -> Tuple[str, int]:
    for name in ("asset", "frequency_minutes", "timestamp", "volume"):
        if name not in feats:
            raise ValueError(f"{where}: example {i} lacks feature '{name}'")
    return feats["asset"].bytes_list.value[0].decode(), int(feats["frequency_minutes"].int64_list.value[0])


def profiles_from_split(split_uri: str) -> Dict[Tuple[str, int], np.ndarray]:
    """(asset, frequency) -> volume profile [bars_per_day] from every distinct bar of the split's examples."""
    import tensorflow as tf
    bars: Dict[Tuple[str, int], Dict[int, float]] = {}
    for i, s in enumerate(_records(split_uri)):
        feats = tf.train.Example.FromString(s).features.feature
        key = _key(feats, i, split_uri)
        seen = bars.setdefault(key, {})
        for t, v in zip(feats["timestamp"].int64_list.value, feats["volume"].float_list.value):
            seen[int(t)] = float(v)
    out = {}
    for (asset, freq), seen in bars.items():
        ts = np.fromiter(seen.keys(), np.int64, len(seen))
        vol = np.fromiter(seen.values(), np.float64, len(seen))
        out[(asset, freq)] = baselines.volume_curve_profile(ts, vol, freq)
    return out


def annotate_split(split_uri: str, out_uri: str, profiles, *, norm_window: int, lookback: int,
                   n_ahead: int) -> dict:
    """Copy the split's examples to `out_uri` with `vwap_curve_schedule` added; returns counts per
    'asset/frequency' (and which of them had no training profile)."""
    import tensorflow as tf
    o = norm_window + lookback
    os.makedirs(out_uri, exist_ok=True)
    counts, flat = {}, set()
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(os.path.join(out_uri, DATA_FILE), options) as writer:
        for i, s in enumerate(_records(split_uri)):
            ex = tf.train.Example.FromString(s)
            feats = ex.features.feature
            asset, freq = _key(feats, i, split_uri)
            ts = feats["timestamp"].int64_list.value
            if len(ts) != o + n_ahead:
                raise ValueError(f"{split_uri}: example {i} has {len(ts)} bars, expected W+L+N = {o + n_ahead}")
            profile = profiles.get((asset, freq))
            if profile is None:
                flat.add(f"{asset}/{freq}")
                profile = np.ones(baselines.bars_per_day(freq))
            first = baselines.time_of_bar(np.array([ts[o]]), freq)
            schedule = baselines.volume_curve_schedule(profile, first, n_ahead)[0]
            feats[VWAP_CURVE_FEATURE].float_list.value.extend(schedule.astype(np.float32).tolist())
            writer.write(ex.SerializeToString())
            counts[f"{asset}/{freq}"] = counts.get(f"{asset}/{freq}", 0) + 1
    return {"examples": counts, "no_training_profile": sorted(flat)}


def add_schema_feature(schema_text: str, n_ahead: int) -> str:
    """The schema (pbtxt) plus `vwap_curve_schedule`: FLOAT, shape [N], present in every example."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    schema = text_format.Parse(schema_text, schema_pb2.Schema())
    if any(f.name == VWAP_CURVE_FEATURE for f in schema.feature):
        raise ValueError(f"the input schema already has a feature '{VWAP_CURVE_FEATURE}'")
    f = schema.feature.add(name=VWAP_CURVE_FEATURE, type=schema_pb2.FLOAT)
    f.presence.min_fraction = 1.0
    f.presence.min_count = 1
    f.shape.dim.add(size=int(n_ahead))
    f.float_domain.min = 0.0
    f.float_domain.max = 1.0
    return text_format.MessageToString(schema)


def build(examples_uri: str, split_names: Sequence[str], schema_uri: str, out_examples_uri: str,
          out_schema_uri: str, *, train_split: str, splits: Sequence[str], norm_window: int, lookback: int,
          n_ahead: int) -> dict:
    """The component's work on plain directories (ExampleGen layout `Split-<name>/`); returns the summary."""
    if train_split not in split_names:
        raise ValueError(f"train_split '{train_split}' is not a split of the examples ({list(split_names)})")
    profiles = profiles_from_split(os.path.join(examples_uri, f"Split-{train_split}"))
    summary = {"train_split": train_split, "profiles": {f"{a}/{f}": [round(float(x), 6) for x in p]
                                                          for (a, f), p in sorted(profiles.items())}, "splits": {}}
    for split in splits:
        if split not in split_names:
            raise ValueError(f"split '{split}' to annotate is not a split of the examples ({list(split_names)})")
        summary["splits"][split] = annotate_split(
            os.path.join(examples_uri, f"Split-{split}"), os.path.join(out_examples_uri, f"Split-{split}"),
            profiles, norm_window=norm_window, lookback=lookback, n_ahead=n_ahead)
    with open(os.path.join(schema_uri, SCHEMA_FILE), encoding="utf-8") as f:
        schema_text = f.read()
    os.makedirs(out_schema_uri, exist_ok=True)
    with open(os.path.join(out_schema_uri, SCHEMA_FILE), "w", encoding="utf-8") as f:
        f.write(add_schema_feature(schema_text, n_ahead))
    with open(os.path.join(out_examples_uri, PROFILE_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return summary


def read_profile(examples_uri: str) -> dict:
    """The summary written by the component (`vwap_curve_profile.json`), or {} when absent."""
    path = os.path.join(examples_uri, PROFILE_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@tfx.dsl.components.component
def VwapCurveBaseline(
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    schema: tfx.dsl.components.InputArtifact[standard_artifacts.Schema],
    baseline_examples: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    baseline_schema: tfx.dsl.components.OutputArtifact[standard_artifacts.Schema],
    n_ahead: tfx.dsl.components.Parameter[int],
    lookback: tfx.dsl.components.Parameter[int],
    norm_window: tfx.dsl.components.Parameter[int],
    splits: tfx.dsl.components.Parameter[str] = "test",
    train_split: tfx.dsl.components.Parameter[str] = "train",
) -> None:
    """Annotate `splits` (comma-separated) with the volume-curve schedule estimated on `train_split`."""
    names = artifact_utils.decode_split_names(examples.split_names)
    wanted = [s for s in dict.fromkeys(x.strip() for x in splits.split(",")) if s]
    build(examples.uri, names, schema.uri, baseline_examples.uri, baseline_schema.uri, train_split=train_split,
          splits=wanted, norm_window=norm_window, lookback=lookback, n_ahead=n_ahead)
    baseline_examples.split_names = artifact_utils.encode_split_names(wanted)
