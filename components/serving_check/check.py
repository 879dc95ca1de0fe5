"""`check_serving_model(model_dir, examples)`: would `tensorflow_model_server` serve this SavedModel, warm and
with the allocations the Python path computes? (The pre-push check; `component.ServingCheck` runs it.)

1. the warm-up file (`components.trainer.warmup`) exists and covers every signature at every batch size in
   `warmup_batch_sizes(xla_max_batch)` (those the model's XLA path compiles for, `lem_model.json`);
2. the model loads through the session-based loader with tag `serve` (`session_model.SessionModel`, the way
   TF Serving's C++ server loads it);
3. every warm-up request runs there, by SignatureDef tensor names, as `--enable_model_warmup` replays them;
4. on a few real examples (serialized tf.Examples of the split the Evaluator used), every signature
   (`serve_tf_examples` on the examples, `serving_default` and `serve_scenario` on their raw bars, all
   together and the first alone) gives, through the session, the allocations of the Python path
   (`tf.saved_model.load(...).signatures`) within float32 tolerance (rtol 1e-5, atol 1e-6).

The result lists every failure with its reason; nothing raises on a bad model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from components.trainer.warmup import read_warmup_requests, warmup_batch_sizes
from lem_model import layout
from lem_model.presets import XLA_MAX_BATCH, paper_min_rate

RTOL, ATOL = 1e-5, 1e-6
BAR_SIGNATURES = ("serving_default", "serve_scenario")
EXAMPLES_SIGNATURE = "serve_tf_examples"


@dataclass
class CheckResult:
    """passed: no failure. failures: one line per problem (what, where, why). details: what was run."""
    failures: list = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> str:
        return json.dumps({"passed": self.passed, "failures": self.failures, "details": self.details}, indent=2,
                          default=str)


def _summary(exc: Exception) -> str:
    text = (getattr(exc, "message", None) or str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: " + (" ".join(lines[:3]) if lines else "")[:500]


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple:
    if a.shape != b.shape:
        return False, f"shape {list(a.shape)} vs {list(b.shape)}"
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False, "non-finite allocations"
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    ok = bool(np.all(diff <= atol + rtol * np.abs(b.astype(np.float64))))
    return ok, f"max |diff| {diff.max():.3g}"


def raw_bars_of_examples(serialized, window_bars: int, n_ahead: int) -> dict:
    """`serving_default` inputs of serialized tf.Examples (their bars; the default rates 1/N^2 and 1)."""
    import tensorflow as tf
    spec = {"volume": tf.io.FixedLenFeature([window_bars], tf.float32),
            "quote_volume": tf.io.FixedLenFeature([window_bars], tf.float32),
            "timestamp": tf.io.FixedLenFeature([window_bars], tf.int64),
            "frequency_minutes": tf.io.FixedLenFeature([], tf.int64)}
    parsed = {k: v.numpy() for k, v in tf.io.parse_example(tf.constant(list(serialized)), spec).items()}
    b = len(serialized)
    parsed["min_rate"] = np.full(b, paper_min_rate(n_ahead), np.float32)
    parsed["max_rate"] = np.ones(b, np.float32)
    return parsed


def check_serving_model(model_dir: str, examples, *, rtol: float = RTOL, atol: float = ATOL,
                        require_warmup: bool = True) -> CheckResult:
    """Run the check on the SavedModel in `model_dir` with `examples` (serialized tf.Examples, a few)."""
    import tensorflow as tf
    from components.serving_check.session_model import SessionModel

    result = CheckResult()
    fail = result.failures.append
    examples = [bytes(e) for e in examples]
    result.details["model_dir"] = model_dir
    result.details["examples"] = len(examples)
    if not examples:
        fail("no examples to compare the signatures on")
    try:
        from components.trainer.export import read_metadata
        meta = read_metadata(model_dir)
        window_bars, n_ahead = int(meta["window_bars"]), int(meta["n_ahead"])
    except Exception as exc:  # noqa: BLE001 -- reported, never raised
        fail(f"assets.extra/lem_model.json unreadable: {_summary(exc)}")
        return result

    # 1. warm-up file coverage
    try:
        requests = read_warmup_requests(model_dir)
    except Exception as exc:  # noqa: BLE001
        fail(f"warm-up file unreadable: {_summary(exc)}")
        requests = []
    coverage = {}
    for r in requests:
        sig = r.model_spec.signature_name or "serving_default"
        first = next(iter(r.inputs.values()), None)
        batch = int(first.tensor_shape.dim[0].size) if first is not None and first.tensor_shape.dim else 0
        coverage.setdefault(sig, set()).add(batch)
    result.details["warmup_requests"] = len(requests)
    result.details["warmup_coverage"] = {k: sorted(v) for k, v in coverage.items()}
    if require_warmup and not requests:
        fail("no warm-up requests (assets.extra/tf_serving_warmup_requests missing or empty): the first Predict "
             "of each batch size would compile XLA code on the request path")

    # 2. session-based load (TF Serving's way)
    try:
        model = SessionModel(model_dir)
    except Exception as exc:  # noqa: BLE001
        fail(f"session-based SavedModel loader (tag 'serve') failed: {_summary(exc)}")
        return result
    try:
        signatures = sorted(model.signature_defs)
        result.details["signatures"] = signatures
        if requests:
            xla_max_batch = int(meta.get("xla_max_batch", XLA_MAX_BATCH))  # models exported before it: default
            needed = set(warmup_batch_sizes(xla_max_batch)[:-1])   # the XLA-compiled (padded) sizes
            for sig in signatures:
                missing = sorted(needed - coverage.get(sig, set()))
                if missing:
                    fail(f"warm-up file does not cover signature {sig!r} at batch size(s) {missing}")

        # 3. replay the warm-up requests by tensor names
        for i, r in enumerate(requests):
            sig = r.model_spec.signature_name or "serving_default"
            try:
                model.run(sig, {k: tf.make_ndarray(v) for k, v in r.inputs.items()})
            except Exception as exc:  # noqa: BLE001
                fail(f"warm-up request {i} ({sig!r}) failed in the session: {_summary(exc)}")
        if not examples:
            return result

        # 4. session vs Python path on real examples
        python = tf.saved_model.load(model_dir).signatures
        num_scenarios = layout.num_min_periods(n_ahead) * layout.PATHS_PER_MIN_PERIOD
        cases = []    # (signature, inputs, label)
        if EXAMPLES_SIGNATURE in signatures:
            cases.append((EXAMPLES_SIGNATURE, {"examples": np.array(examples, dtype=object)}, "all examples"))
        bars = raw_bars_of_examples(examples, window_bars, n_ahead)
        scen = (np.arange(len(examples), dtype=np.int64) * 7 + 3) % num_scenarios
        for sig in BAR_SIGNATURES:
            if sig not in signatures:
                fail(f"signature {sig!r} missing (has {signatures})")
                continue
            full = dict(bars, scenario=scen) if sig == "serve_scenario" else dict(bars)
            cases.append((sig, full, "all examples"))
            cases.append((sig, {k: v[:1] for k, v in full.items()}, "example 0 alone (a live order)"))
        compared = 0
        for sig, inputs, label in cases:
            try:
                want = {k: v.numpy() for k, v in python[sig](**{k: tf.constant(v) for k, v in inputs.items()}).items()}
            except Exception as exc:  # noqa: BLE001
                fail(f"Python path (tf.saved_model.load) failed on {sig!r}, {label}: {_summary(exc)}")
                continue
            try:
                got = model.run(sig, inputs)
            except Exception as exc:  # noqa: BLE001
                fail(f"session path failed on {sig!r}, {label}: {_summary(exc)}")
                continue
            for name in sorted(set(want) | set(got)):
                if name not in got or name not in want:
                    fail(f"{sig!r} output {name!r} missing from the {'session' if name not in got else 'Python'} path")
                    continue
                ok, how = _close(np.asarray(got[name]), np.asarray(want[name]), rtol, atol)
                if not ok:
                    fail(f"{sig!r} output {name!r}, {label}: session and Python paths disagree ({how}; "
                         f"rtol {rtol}, atol {atol})")
            compared += 1
        result.details["comparisons"] = compared
    finally:
        model.close()
    return result


def read_examples(split_uri: str, limit: int) -> list:
    """The first `limit` serialized tf.Examples of a split (gzipped TFRecord files, ExampleGen's layout)."""
    import glob

    import tensorflow as tf
    files = sorted(glob.glob(os.path.join(split_uri, "*")))
    if not files:
        raise FileNotFoundError(f"no example files under {split_uri}")
    out = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(int(limit)):
        out.append(bytes(record.numpy()))
    return out
