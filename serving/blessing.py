"""Blessing state of a pushed model version: blessed (pushed by the Pusher), UNBLESSED (pushed on purpose by
`lems push --unblessed`) or unknown (a SavedModel directory that is not a pushed version).

The Pusher copies a model into `<serving_dir>/<model_name>/<version>/` only when the Evaluator blessed it (and
ServingCheck passed); it writes no marker. `lems push --unblessed` copies a model the Evaluator did not bless
into the same layout and writes `MARKER` (`<version>/assets.extra/lems_blessing.json`) next to the Trainer's
own files in `assets.extra/`, which TF Serving ignores: the SavedModel is served unchanged by
`tensorflow_model_server` and `lems serve` alike. What reads the marker:

  * `lems serve` (serving/server.py) logs a warning when it serves a version that carries it;
  * `lems backfill` warns and writes the state into every row (`model_blessing`) and its run record/manifest.

No TensorFlow: JSON and paths only.

    state = blessing_of("runs/demo/serving/lem/1767000000")
    state["state"]        # "blessed" | "unblessed" | "unknown"
"""
from __future__ import annotations

import json
import os
from typing import Optional

#: Where the marker lives inside a version directory (TF Serving reads only saved_model.pb, variables/,
#: assets/ and the warm-up file of assets.extra/).
MARKER = os.path.join("assets.extra", "lems_blessing.json")

BLESSED, UNBLESSED, UNKNOWN = "blessed", "unblessed", "unknown"
STATES = (BLESSED, UNBLESSED, UNKNOWN)


def marker_path(version_dir: str) -> str:
    return os.path.join(version_dir, MARKER)


def read_marker(version_dir: str) -> Optional[dict]:
    """The marker of `version_dir` as written by `write_marker`, or None when there is none."""
    path = marker_path(version_dir)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    if not isinstance(value, dict) or value.get("state") not in STATES:
        raise ValueError(f"{path}: not a blessing marker (expected a JSON object with 'state' in {STATES})")
    return value


def write_marker(version_dir: str, marker: dict) -> str:
    """Write `marker` (must hold 'state') into `version_dir`; returns the file path."""
    if marker.get("state") not in STATES:
        raise ValueError(f"marker state must be one of {STATES}, got {marker.get('state')!r}")
    path = marker_path(version_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(marker, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def blessing_of(version_dir: str) -> dict:
    """{"state": ..., "reason": one line, "marker": the marker or None} of one SavedModel directory.

    A marker decides. Without one, a directory named by a version number (the Pusher's layout) was pushed by
    the Pusher, which pushes only blessed models: "blessed"; any other directory (e.g. a Trainer's
    `Format-Serving` output given directly) is "unknown"."""
    marker = read_marker(version_dir)
    if marker is not None:
        reason = marker.get("reason") or f"marked {marker['state']} by {marker.get('pushed_by', 'lems push')}"
        return {"state": marker["state"], "reason": reason, "marker": marker}
    if os.path.basename(os.path.normpath(version_dir)).isdigit():
        return {"state": BLESSED, "reason": "a pushed version without an unblessed marker (the Pusher pushes only "
                                            "models the Evaluator blessed)", "marker": None}
    return {"state": UNKNOWN, "reason": "not a pushed version (no <serving_dir>/<model>/<version>/ layout, no "
                                        "marker): its blessing is not recorded with it", "marker": None}
