"""ExecutionReport: a custom TFX component that writes the HTML report (PNG figures) of a trained LEM.

It runs the exported model (signature `serve_tf_examples`) over one split of the ExampleGen output (default
`test`), evaluates every order with the ONE slippage evaluator (through `components.evaluator.order_slippage`)
and renders the paper's tables and figures (`components.report.render`). The Evaluator's blessing decision and
failed checks are shown at the top. Output artifact `report` (type `ExecutionReport`): `index.html`,
`figures/*.png`, `tables.txt` (Table 1 as text) and `summary.json`.
"""

import glob
import os
import numpy as np
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact

from components.evaluator import metrics as lem_metrics
from components.evaluator import order_slippage as osl
from components.report import render
from components.trainer import export

RAW_KEYS = ("volume", "quote_volume", "timestamp", "frequency_minutes", "asset")


class ExecutionReport(Artifact):
    """HTML report with PNG figures: `<uri>/index.html`."""
    TYPE_NAME = "lems.ExecutionReport"  # KFP V2 needs <namespace>.<Name> for custom artifact types


def read_raw_examples(split_uri: str) -> dict:
    """All examples of a split (gzipped TFRecord files of tf.Example) -> serialized [B] and raw fields."""
    import tensorflow as tf
    files = sorted(glob.glob(os.path.join(split_uri, "*")))
    if not files:
        raise FileNotFoundError(f"no example files under {split_uri}")
    serialized = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    out = {k: [] for k in RAW_KEYS}
    for i, s in enumerate(serialized):
        feats = tf.train.Example.FromString(s).features.feature
        for k in RAW_KEYS:
            if k not in feats:
                raise ValueError(f"{split_uri}: example {i} lacks feature '{k}'")
            f = feats[k]
            kind = f.WhichOneof("kind")
            values = list(getattr(f, kind).value)
            out[k].append(values if k in ("volume", "quote_volume", "timestamp") else values[0])
    return {"serialized": np.asarray(serialized, dtype=object),
            "volume": np.asarray(out["volume"], np.float32), "quote_volume": np.asarray(out["quote_volume"], np.float32),
            "timestamp": np.asarray(out["timestamp"], np.int64),
            "frequency_minutes": np.asarray(out["frequency_minutes"], np.int64),
            "asset": np.asarray([a.decode() for a in out["asset"]])}


def predict_examples(saved_model_dir: str, serialized, batch_size: int = 512) -> np.ndarray:
    """allocations [B, N, N+1, 4, 2] from the `serve_tf_examples` signature."""
    import tensorflow as tf
    fn = tf.saved_model.load(saved_model_dir).signatures["serve_tf_examples"]
    parts = [fn(examples=tf.constant(list(serialized[i:i + batch_size])))["allocations"].numpy()
             for i in range(0, len(serialized), batch_size)]
    return np.concatenate(parts)


@tfx.dsl.components.component
def ExecutionReportComponent(
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    report: tfx.dsl.components.OutputArtifact[ExecutionReport],
    blessing: tfx.dsl.components.InputArtifact[standard_artifacts.ModelBlessing] = None,
    evaluation: tfx.dsl.components.InputArtifact[standard_artifacts.ModelEvaluation] = None,
    split: tfx.dsl.components.Parameter[str] = "test",
    title: tfx.dsl.components.Parameter[str] = "LEM",
    max_curves: tfx.dsl.components.Parameter[int] = 400,
) -> None:
    """Tables 1-5 (+ per-frequency Table 1) and Figures 5-19 kinds for `split`, as `report.uri/index.html`."""
    from tfx.utils import path_utils
    model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    meta = export.read_metadata(model_dir)
    sizes = {k: int(meta[k]) for k in ("norm_window", "lookback", "n_ahead")}
    raw = read_raw_examples(artifact_utils.get_split_uri([examples], split))
    allocations = predict_examples(model_dir, raw["serialized"])
    labels = osl.labels_from_raw(raw["volume"], raw["quote_volume"], raw["timestamp"], raw["frequency_minutes"],
                                 **sizes)
    result = osl.order_slippage(allocations, labels)
    values = lem_metrics.metric_values(result.lem_bps, result.baseline_bps)
    blessed = None if blessing is None else bool(blessing.get_int_custom_property("blessed"))
    header = {"split": split, "orders": len(labels), "model": model_dir,
              "N / L / W (bars)": f"{sizes['n_ahead']} / {sizes['lookback']} / {sizes['norm_window']}",
              "epochs run": meta.get("epochs_run"), "training seconds": meta.get("train_seconds"),
              "device": meta.get("device"), "blessed": blessed,
              "match-VWAP std / TWAP-volume std": f"{values['match_vwap_std_ratio']:.3f}",
              "non-finite values": int(values["nonfinite_count"])}
    from components.evaluator.eval_config import validation_lines
    validation = validation_lines(evaluation.uri) if evaluation is not None else []
    render.render_report(report.uri, allocations, result, raw["frequency_minutes"], raw["asset"], title=title,
                         header=header, validation=validation, max_curves=max_curves)
