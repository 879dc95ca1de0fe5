"""Find a local pipeline run and what it produced, from its ML Metadata store (for `lems serve`, `lems push`,
`lems backfill`).

A run root is the directory of a config's `root` (`<root>/metadata.sqlite`, `<root>/pipeline_root/`): what
`lems run` / `lems demo` print as "Pipeline root" / "ML Metadata". `find_metadata` also finds it from a path
near it (a serving directory such as `runs/demo/serving/lem`, or a parent of several roots), so the commands
can say what happened without being told where the run is.

`load_run` reads the latest run recorded in the store (`pipeline.local_runner.latest_run`) and adds what the
commands need: the Evaluator's and ServingCheck's verdicts, the Trainer's model, where the Pusher pushes (its
`push_destination`) and the run's volume-curve profile (`VwapCurveBaseline`'s `vwap_curve_profile.json`,
estimated on the training split).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Optional

METADATA_FILE = "metadata.sqlite"
#: How many directories up from the given path `find_metadata` looks for a `metadata.sqlite` of its own (a
#: serving dir sits 2-3 levels below its run root), and up to which of them it also looks one level down (the
#: default config's `runs/serving/lem` beside `runs/lems/`), not higher, so unrelated runs stay out.
SEARCH_LEVELS = 4
CHILD_SEARCH_LEVELS = 3


def find_metadata(path: str) -> Optional[str]:
    """The ML Metadata SQLite file of the run root at or near `path`, or None.

    `path` may be the SQLite file itself, a run root, or a path inside or beside one (e.g. the serving
    directory `runs/demo/serving/lem`): from `path` up to `SEARCH_LEVELS` directories, each directory's own
    `metadata.sqlite` first, then (for the first `CHILD_SEARCH_LEVELS`) its sub-directories' (the most
    recently written when several)."""
    path = os.path.abspath(path)
    if os.path.isfile(path) and path.endswith(".sqlite"):
        return path
    current = path
    for level in range(SEARCH_LEVELS):
        if current == os.path.dirname(current):       # filesystem root: never scan it
            break
        own = os.path.join(current, METADATA_FILE)
        if os.path.isfile(own) and os.path.getsize(own) > 0:
            return own
        children = [p for p in glob.glob(os.path.join(current, "*", METADATA_FILE)) if os.path.getsize(p) > 0] \
            if level < CHILD_SEARCH_LEVELS else []
        if children:
            return max(children, key=os.path.getmtime)
        current = os.path.dirname(current)
    return None


@dataclasses.dataclass
class RunInfo:
    """The latest run of one pipeline in a store, as the commands use it."""
    metadata: str                       # the SQLite file
    pipeline_name: str
    summary: object                     # pipeline.local_runner.RunSummary
    infra_blessed: Optional[bool] = None
    push_destination: Optional[str] = None   # the Pusher's base directory (<serving_dir>/<model_name>)
    vwap_curve_profile: Optional[str] = None

    @property
    def root(self) -> str:
        return os.path.dirname(self.metadata)

    @property
    def blessed(self) -> Optional[bool]:
        return self.summary.blessed

    @property
    def trained_model(self) -> Optional[str]:
        """The Trainer's serving model (`<Trainer model uri>/Format-Serving`) when it exists on disk."""
        path = self.summary.model_dir
        return path if path and os.path.isfile(os.path.join(path, "saved_model.pb")) else None

    @property
    def failed_nodes(self) -> list:
        return sorted(n for n, node in self.summary.nodes.items() if node.state == "FAILED")

    def verdict(self) -> str:
        """One phrase: what the run decided about its model."""
        if self.summary.pushed_model_dir:
            return f"BLESSED and pushed to {self.summary.pushed_model_dir}"
        if self.blessed is False:
            return "NOT BLESSED by the Evaluator (the Pusher pushes only blessed models)"
        if self.blessed is True and self.infra_blessed is False:
            return "BLESSED by the Evaluator, but ServingCheck failed (not pushed; see its serving_check.json)"
        if self.failed_nodes:
            return f"failed at {', '.join(self.failed_nodes)} before anything was pushed"
        if self.blessed is None:
            return "not evaluated (no Evaluator output: the run stopped or is still running)"
        return "BLESSED but not pushed"

    def describe(self) -> str:
        return f"run {self.summary.run_id} of pipeline {self.pipeline_name!r} ({self.metadata})"


def _latest_pipeline_name(store) -> Optional[str]:
    """The pipeline whose most recent run is the newest in the store."""
    best = None
    for ctx in store.get_contexts_by_type("pipeline"):
        executions = store.get_executions_by_context(ctx.id)
        if not executions:
            continue
        newest = max(e.create_time_since_epoch for e in executions)
        if best is None or newest > best[0]:
            best = (newest, ctx.name)
    return best[1] if best else None


def _open_store(metadata: str):
    from ml_metadata.metadata_store import metadata_store as mlmd
    from ml_metadata.proto import metadata_store_pb2
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(config)


def load_run(metadata: str, pipeline_name: Optional[str] = None) -> Optional[RunInfo]:
    """The latest run recorded in `metadata` (of `pipeline_name`, else of the pipeline that ran last); None
    when the store holds no run. Read only."""
    from pipeline.configs import PipelineConfig
    from pipeline.local_runner import latest_run
    store = _open_store(metadata)
    name = pipeline_name or _latest_pipeline_name(store)
    if name is None:
        return None
    config = PipelineConfig(pipeline_name=name, root=os.path.dirname(metadata), metadata_path=metadata)
    try:
        summary = latest_run(config)
    except RuntimeError:          # no run of that pipeline
        return None
    info = RunInfo(metadata=metadata, pipeline_name=name, summary=summary)
    check = summary.nodes.get("ServingCheck")
    if check and check.outputs.get("blessing"):
        uri = check.outputs["blessing"][0]
        info.infra_blessed = (True if os.path.exists(os.path.join(uri, "INFRA_BLESSED")) else
                              False if os.path.exists(os.path.join(uri, "INFRA_NOT_BLESSED")) else None)
    pusher = summary.nodes.get("Pusher")
    if pusher and pusher.execution_id is not None:
        (execution,) = store.get_executions_by_id([pusher.execution_id])
        info.push_destination = _push_base_directory(execution)
    info.vwap_curve_profile = _profile_of(summary.nodes.get("VwapCurveBaseline"))
    return info


def _push_base_directory(execution) -> Optional[str]:
    """The Pusher's `push_destination.filesystem.base_directory` (an execution property, JSON of the proto)."""
    prop = execution.custom_properties.get("push_destination")
    if prop is None or not prop.string_value:
        return None
    try:
        value = json.loads(prop.string_value)
    except json.JSONDecodeError:
        return None
    fs = value.get("filesystem", {})
    return fs.get("base_directory") or fs.get("baseDirectory")


def _profile_of(node) -> Optional[str]:
    """`<baseline_examples uri>/vwap_curve_profile.json` of a VwapCurveBaseline node run, when on disk."""
    if node is None or not node.outputs.get("baseline_examples"):
        return None
    path = os.path.join(node.outputs["baseline_examples"][0], "vwap_curve_profile.json")
    return path if os.path.isfile(path) else None


def profile_for_pushed_version(metadata: str, version_dir: str) -> Optional[str]:
    """The `vwap_curve_profile.json` of the run whose Pusher pushed `version_dir` (the PushedModel artifact
    whose `pushed_destination` is that directory; the VwapCurveBaseline output of the same pipeline run), or
    None when the store does not know that version."""
    store = _open_store(metadata)
    target = os.path.abspath(version_dir).rstrip(os.sep)
    try:
        pushed = store.get_artifacts_by_type("PushedModel")
    except Exception:  # noqa: BLE001 -- a store without that type
        return None
    for artifact in pushed:
        dest = artifact.custom_properties.get("pushed_destination")
        if dest is None or os.path.abspath(dest.string_value).rstrip(os.sep) != target:
            continue
        run_type = store.get_context_type("pipeline_run")
        for event in store.get_events_by_artifact_ids([artifact.id]):
            for ctx in store.get_contexts_by_execution(event.execution_id):
                if ctx.type_id != run_type.id:
                    continue
                for candidate in store.get_artifacts_by_context(ctx.id):
                    if f"{os.sep}VwapCurveBaseline{os.sep}baseline_examples{os.sep}" in candidate.uri:
                        path = os.path.join(candidate.uri, "vwap_curve_profile.json")
                        if os.path.isfile(path):
                            return path
    return None
