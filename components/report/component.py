"""ExecutionReport: a custom TFX component that writes the HTML report (PNG figures) of a trained LEM.

It runs the exported model (signature `serve_tf_examples`) over one split of the ExampleGen output (default
`test`), evaluates every order with the ONE slippage evaluator (through `components.evaluator.order_slippage`)
and renders the paper's tables and figures (`components.report.render`) with the baselines (TWAP volume /
notional, and the VWAP curve when the examples come from the VwapCurveBaseline component), block-bootstrap
95 % intervals and paired comparisons (`lem_model.bootstrap`), per-asset and per-frequency tables, the training
curves of the Trainer's `history.json` (input `model_run`), and, from the Evaluator's output, the blessing
decision, the per-slice gate results and champion vs challenger. Output artifact `report` (type `ExecutionReport`): `index.html`,
`figures/*.png`, `tables.txt` (Table 1 as text) and `summary.json`.
"""

import glob
import json
import os

import numpy as np
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact

from components.evaluator import order_slippage as osl
from components.report import render
from components.trainer import export

RAW_KEYS = ("volume", "quote_volume", "timestamp", "frequency_minutes", "asset")
#: Read when present (examples annotated by the VwapCurveBaseline component).
OPTIONAL_KEYS = (osl.VWAP_CURVE_FEATURE,)


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
    out = {k: [] for k in RAW_KEYS + OPTIONAL_KEYS}
    for i, s in enumerate(serialized):
        feats = tf.train.Example.FromString(s).features.feature
        for k in RAW_KEYS + OPTIONAL_KEYS:
            if k not in feats:
                if k in OPTIONAL_KEYS:
                    continue
                raise ValueError(f"{split_uri}: example {i} lacks feature '{k}'")
            f = feats[k]
            kind = f.WhichOneof("kind")
            values = list(getattr(f, kind).value)
            out[k].append(values if k in ("volume", "quote_volume", "timestamp") + OPTIONAL_KEYS else values[0])
    optional = {}
    for k in OPTIONAL_KEYS:
        if out[k] and len(out[k]) != len(serialized):
            raise ValueError(f"{split_uri}: feature '{k}' is in {len(out[k])} of {len(serialized)} examples")
        optional[k] = np.asarray(out[k], np.float64) if out[k] else None
    return {"serialized": np.asarray(serialized, dtype=object), **optional,
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


def _read_history(model_run_uri: str):
    import tensorflow as tf
    path = os.path.join(model_run_uri, "history.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


@tfx.dsl.components.component
def ExecutionReportComponent(
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    report: tfx.dsl.components.OutputArtifact[ExecutionReport],
    model_run: tfx.dsl.components.InputArtifact[standard_artifacts.ModelRun] = None,
    blessing: tfx.dsl.components.InputArtifact[standard_artifacts.ModelBlessing] = None,
    evaluation: tfx.dsl.components.InputArtifact[standard_artifacts.ModelEvaluation] = None,
    split: tfx.dsl.components.Parameter[str] = "test",
    title: tfx.dsl.components.Parameter[str] = "LEM",
    max_curves: tfx.dsl.components.Parameter[int] = 400,
) -> None:
    """Tables 1-5 (+ per-frequency and per-asset Table 1), baseline comparisons with intervals, slice gates,
    training curves and Figures 5-19 kinds for `split`, as `report.uri/index.html`."""
    from tfx.utils import path_utils
    model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    history = _read_history(model_run.uri) if model_run is not None else None
    blessed = None if blessing is None else bool(blessing.get_int_custom_property("blessed"))
    write_report(report.uri, artifact_utils.get_split_uri([examples], split), model_dir, split=split, title=title,
                 max_curves=max_curves, history=history, blessed=blessed,
                 evaluation_uri=evaluation.uri if evaluation is not None else None)


def split_slippage(model_dir: str, split_uri: str):
    """Every order of the examples under `split_uri` through the SavedModel `model_dir`: (raw examples
    (`read_raw_examples`), the model's metadata, its sizes {norm_window, lookback, n_ahead}, its allocations
    [B, N, N+1, 4, 2], the order slippage (`components.evaluator.order_slippage.order_slippage`))."""
    meta = export.read_metadata(model_dir)
    sizes = {k: int(meta[k]) for k in ("norm_window", "lookback", "n_ahead")}
    raw = read_raw_examples(split_uri)
    allocations = predict_examples(model_dir, raw["serialized"])
    labels = osl.labels_from_raw(raw["volume"], raw["quote_volume"], raw["timestamp"], raw["frequency_minutes"],
                                 **sizes)
    return raw, meta, sizes, allocations, osl.order_slippage(allocations, labels, raw.get(osl.VWAP_CURVE_FEATURE))


def write_report(out_dir: str, split_uri: str, model_dir: str, *, split: str = "test", title: str = "LEM",
                 max_curves: int = 400, history=None, blessed=None, evaluation_uri: str | None = None) -> dict:
    """The report of the SavedModel `model_dir` on the examples under `split_uri` (one split of an Examples
    artifact, annotated by VwapCurveBaseline when the VWAP-curve baseline is wanted) into `out_dir`; returns
    the summary (`render.render_report`). The component's body; also used to tabulate another split of a
    finished run (evaluation.split: eval)."""
    from lem_model import bootstrap
    raw, meta, sizes, allocations, result = split_slippage(model_dir, split_uri)
    n_orders = len(raw["serialized"])
    o = sizes["norm_window"] + sizes["lookback"]
    starts = raw["timestamp"][:, o]
    blocks = bootstrap.day_blocks(starts)
    day = lambda t: np.datetime_as_string(np.datetime64(int(t), "s"), unit="m")  # noqa: E731
    ratio = osl.match_std_ratio(result.lem_bps, result.baseline_bps) if n_orders else float("nan")
    header = {"split": split, "period (first execution bars, UTC)":
              f"{day(starts.min())} .. {day(starts.max())} ({len(np.unique(blocks))} days)" if len(starts) else "empty",
              "orders": n_orders,
              "orders per asset": ", ".join(f"{a}: {int((raw['asset'] == a).sum())}" for a in sorted(set(raw["asset"]))),
              "orders per frequency": ", ".join(f"{f} min: {int((raw['frequency_minutes'] == f).sum())}"
                                                for f in sorted(set(raw["frequency_minutes"].tolist()))),
              "model": model_dir,
              "N / L / W (bars)": f"{sizes['n_ahead']} / {sizes['lookback']} / {sizes['norm_window']}",
              "epochs run": meta.get("epochs_run"), "training seconds": meta.get("train_seconds"),
              "device": meta.get("device"), "blessed": blessed,
              "match-VWAP std / TWAP (volume) std (overall)": f"{ratio:.3f}",
              "VWAP-curve baseline": "profile from the train split" if raw.get(osl.VWAP_CURVE_FEATURE) is not None
              else "not available (examples not annotated by VwapCurveBaseline)"}
    from components.evaluator.eval_config import gate_rows, validation_lines
    validation = validation_lines(evaluation_uri) if evaluation_uri is not None else []
    gates, champion = gate_rows(evaluation_uri) if evaluation_uri is not None else ([], [])
    return render.render_report(out_dir, allocations, result, raw["frequency_minutes"], raw["asset"], title=title,
                                header=header, validation=validation, max_curves=max_curves, blocks=blocks,
                                history=history, gates=gates, champion=champion)
