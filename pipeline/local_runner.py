"""Thin local runner: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner (from `config.beam_pipeline_args`).

    from pipeline.configs import PipelineConfig
    from pipeline import local_runner
    summary = local_runner.run(PipelineConfig.from_file("run.yaml"))

`run` returns a `RunSummary` read back from ML Metadata: each component's execution state (COMPLETE,
CACHED, FAILED) and output artifact URIs, the blessing decision, the pushed model directory and the report.

Before anything runs, `check_metadata_store` pairs the pipeline root with its ML Metadata store: a run whose
store is new or empty while the pipeline root already holds artifacts is refused (TFX would restart its
execution ids and overwrite or delete the earlier artifacts), and so is a store other than the one recorded
in `<pipeline_root>/_lems_metadata_store.json`. Nothing is deleted; the message says how to proceed.

One run per root: `run` holds the root's run lock (`pipeline.run_lock.RunLock`, an OS file lock on
`<root>/_lems_run.lock`) for the whole run; a second run on the same root is refused at once with
`RunInProgress` naming the holder (pid, host, start time), and the lock of a killed run is taken over with a
warning.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from pipeline.configs import PipelineConfig
from pipeline.pipeline import create_pipeline
from pipeline.run_lock import RUN_LOCK_FILE, RunInProgress, RunLock  # noqa: F401  (re-exported)


@dataclass
class NodeRun:
    """One component execution of a pipeline run."""
    node_id: str
    state: str                                       # NEW, RUNNING, COMPLETE, CACHED, FAILED, CANCELED
    outputs: Dict[str, List[str]] = field(default_factory=dict)   # output key -> artifact URIs
    execution_id: Optional[int] = None
    seconds: Optional[float] = None                  # from ML Metadata create / last update times


@dataclass
class RunSummary:
    """What a pipeline run did, from ML Metadata."""
    run_id: str
    nodes: Dict[str, NodeRun]
    seconds: float = 0.0
    blessed: Optional[bool] = None
    pushed_model_dir: Optional[str] = None
    report_dir: Optional[str] = None
    model_dir: Optional[str] = None

    def states(self) -> Dict[str, str]:
        return {k: v.state for k, v in self.nodes.items()}


#: What each component does while it runs, for the progress lines (`ComponentProgress`).
STEP_WORK = {
    "MarketDataExampleGen": "reading the bar files, resampling, cutting and splitting the order windows",
    "StatisticsGen": "computing statistics of the examples",
    "CuratedSchemaGen": "writing the curated schema",
    "ExampleValidator": "checking the examples against the schema",
    "AnomaliesGate": "stopping the run if the examples have anomalies",
    "Transform": "applying the feature builder to the train and eval splits",
    "Trainer": "training the LEM (the first epoch also builds the input pipeline and compiles the training "
               "step), then exporting the SavedModel",
    "latest_blessed_model_resolver": "looking up the latest blessed model",
    "VwapCurveBaseline": "estimating the intraday volume profile on the train split, annotating the evaluated "
                         "splits",
    "Evaluator": "slippage of the model and the baselines per slice, bootstrap intervals, the blessing gate",
    "ServingCheck": "loading the SavedModel as TF Serving does, replaying its warm-up requests, comparing with "
                    "the Python path",
    "Pusher": "copying the model to the serving directory if it was blessed",
    "ExecutionReport": "computing the report's tables and figures on the test split, rendering the HTML",
}


def step_work(node: str) -> str:
    """`STEP_WORK` of a component id (resolver ids carry a suffix)."""
    return next((work for prefix, work in STEP_WORK.items() if node == prefix or node.startswith(prefix + "-")),
                "running")


class _LastWrite:
    """sys.stdout while a run is in progress: writes through, remembering when it last printed anything."""

    def __init__(self, stream):
        self._stream, self.last = stream, time.monotonic()

    def write(self, text):
        if text:
            self.last = time.monotonic()
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class ComponentProgress(logging.Filter):
    """Prints `[pipeline] i/n Component: what it does` as each component of a LocalDagRunner run starts,
    `[pipeline] i/n Component finished in s (total s)` as it ends, and, while one runs and nothing has been
    printed for `quiet_seconds` (10 s), `[pipeline] Component still running (s): what it does`, so a run is
    never silent for longer without saying what it does.

    LocalDagRunner runs the components one after the other and announces each on TFX's absl logger
    ("Component %s is running." / "Component %s is finished."). This context manager watches those records
    with a filter on the `absl` logger, whatever its verbosity: it lowers absl's verbosity to INFO for the run
    and lets through only the records at or above the level the logger had (so a quiet command stays quiet and
    `--verbose` still shows everything). A component that raises is reported as failed with its elapsed time.
    """
    _EVENT = re.compile(r"^Component (\S+) is (running|finished)\.$")

    def __init__(self, total: int, *, enabled: bool = True, stream=None, quiet_seconds: float = 10.0):
        super().__init__()
        self.total, self.enabled, self.stream = total, enabled, stream
        self.quiet_seconds = float(quiet_seconds)
        self.finished: List[tuple] = []           # (component id, seconds), in order
        self._running: Optional[tuple] = None     # (component id, start time)
        self._logger = logging.getLogger("absl")
        self._watch: Optional[_LastWrite] = None
        self._done = None

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._EVENT.match(record.getMessage()) if record.levelno == logging.INFO else None
        if match:
            node, what = match.groups()
            if what == "running":
                self._running = (node, time.time())
                self._print(f"[pipeline] {len(self.finished) + 1}/{self.total} {node}: {step_work(node)}")
            elif self._running and self._running[0] == node:
                seconds = time.time() - self._running[1]
                self.finished.append((node, seconds))
                self._running = None
                self._print(f"[pipeline] {len(self.finished)}/{self.total} {node} finished in {seconds:.1f} s "
                            f"(total {time.time() - self._start:.0f} s)")
        return record.levelno >= self._floor

    def _print(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream or sys.stdout, flush=True)
            if self._watch is not None:
                self._watch.last = time.monotonic()

    def _heartbeat(self):
        while not self._done.wait(0.5):
            running = self._running
            if running and time.monotonic() - self._watch.last >= self.quiet_seconds:
                node, t0 = running
                self._print(f"[pipeline] {node} still running ({time.time() - t0:.0f} s): {step_work(node)}")

    def __enter__(self):
        if self.enabled and self.quiet_seconds > 0:
            import threading
            self._watch = _LastWrite(sys.stdout)
            sys.stdout = self._watch
            if self.stream is not None and self.stream is self._watch._stream:
                self.stream = self._watch
            self._done = threading.Event()
            threading.Thread(target=self._heartbeat, name="pipeline-progress", daemon=True).start()
        self._start = time.time()
        self._old_level = self._logger.level
        self._floor = self._logger.getEffectiveLevel()
        self._old_verbosity = None
        if self._floor > logging.INFO:
            # through absl's verbosity, not only the logger's level: code that saves and restores the verbosity
            # around a call (TensorFlow's SavedModel export does) then restores INFO, not the quiet level
            from absl import logging as absl_logging
            self._old_verbosity = absl_logging.get_verbosity()
            absl_logging.set_verbosity(absl_logging.INFO)
            self._logger.setLevel(logging.INFO)
        self._logger.addFilter(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._watch is not None:
            self._done.set()
            if sys.stdout is self._watch:
                sys.stdout = self._watch._stream
            if self.stream is self._watch:
                self.stream = self._watch._stream
        self._logger.removeFilter(self)
        if self._old_verbosity is not None:
            from absl import logging as absl_logging
            absl_logging.set_verbosity(self._old_verbosity)
        self._logger.setLevel(self._old_level)
        if exc_type is not None and self._running:
            node, t0 = self._running
            self._print(f"[pipeline] {node} FAILED after {time.time() - t0:.1f} s: {exc_type.__name__}")
        return False


def metadata_connection(path: str):
    from tfx import v1 as tfx
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(path)


STORE_ID_FILE = "_lems_metadata_store.json"
STORE_CONTEXT_TYPE = "lems_metadata_store"


class MetadataStoreMismatch(RuntimeError):
    """The ML Metadata store does not go with the pipeline root's artifacts (see `check_metadata_store`)."""


def _root_artifacts(pipeline_root: str) -> List[str]:
    """Entries of the pipeline root other than the store id file (component output directories)."""
    if not os.path.isdir(pipeline_root):
        return []
    return sorted(e for e in os.listdir(pipeline_root) if e != STORE_ID_FILE)


def check_metadata_store(config: PipelineConfig) -> str:
    """Refuse a metadata store that does not go with the pipeline root; returns the store id.

    The store id is a UUID kept in the store (a context of type `lems_metadata_store`) and in
    `<pipeline_root>/_lems_metadata_store.json`. Refused (MetadataStoreMismatch, nothing deleted or written):
    the root records a store id the store does not hold (another, a new or an emptied store), or the root
    holds artifacts while the store is new or empty. Otherwise the id is created where it is missing (a new
    pair, or a store and root from before these ids) and returned.
    """
    import json
    import uuid
    config = config.resolved()
    root, db = config.pipeline_root, config.metadata_sqlite
    marker_path = os.path.join(root, STORE_ID_FILE)
    marker = None
    if os.path.exists(marker_path):
        with open(marker_path, encoding="utf-8") as f:
            marker = json.load(f).get("store_id")
    artifacts = _root_artifacts(root)
    store = metadata_store(config) if os.path.exists(db) and os.path.getsize(db) > 0 else None
    store_id, empty = None, True
    if store is not None:
        from ml_metadata.metadata_store import metadata_store as mlmd
        ids = [c.name for c in store.get_contexts_by_type(STORE_CONTEXT_TYPE)]
        store_id = ids[0] if ids else None
        empty = not store.get_executions(list_options=mlmd.ListOptions(limit=1))
    how = (f"Nothing was deleted. To proceed: restore the metadata store that goes with {root} (its file was "
           f"{db}), or run with a new `root` (or `metadata_path` and `root`) for a fresh pipeline; to start over "
           f"in place on purpose, move {root} away first.")
    if marker is not None and marker != store_id:
        state = ("does not exist or is empty" if store is None or (empty and store_id is None) else
                 f"is another store (id {store_id})" if store_id else "holds no store id")
        raise MetadataStoreMismatch(
            f"pipeline root {root} belongs to ML Metadata store {marker} ({marker_path}), but the store {db} "
            f"{state}: its artifacts would be overwritten or orphaned. {how}")
    if marker is None and artifacts and empty:
        raise MetadataStoreMismatch(
            f"ML Metadata store {db} is {'new' if store is None else 'empty'} but pipeline root {root} already "
            f"holds artifacts ({', '.join(artifacts[:5])}{', ...' if len(artifacts) > 5 else ''}): TFX would "
            f"restart its execution ids and overwrite or delete them. {how}")
    if store_id is None:
        from ml_metadata.proto import metadata_store_pb2
        store = store or metadata_store(config)
        type_id = store.put_context_type(metadata_store_pb2.ContextType(name=STORE_CONTEXT_TYPE))
        store_id = str(uuid.uuid4())
        store.put_contexts([metadata_store_pb2.Context(type_id=type_id, name=store_id)])
    if marker is None:
        os.makedirs(root, exist_ok=True)
        tmp = f"{marker_path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"store_id": store_id, "metadata": db}, f, indent=2)
        os.replace(tmp, marker_path)
    return store_id


def run(config: PipelineConfig, *, progress: bool = True) -> RunSummary:
    """Run the whole pipeline locally; raises if a component fails. Returns the run's summary.

    Holds the root's run lock (`RunLock`) throughout: a second run on the same root raises `RunInProgress`
    at once, naming the holder. progress: print one line per component as it finishes, with its elapsed
    time (`ComponentProgress`)."""
    config = config.resolved()
    with RunLock(config.root):
        return _run_locked(config, progress=progress)


def _run_locked(config: PipelineConfig, *, progress: bool) -> RunSummary:
    from tfx import v1 as tfx
    check_metadata_store(config)   # refuses a new/emptied/other store for a root that holds artifacts
    pipeline = create_pipeline(config, metadata_connection_config=metadata_connection(config.metadata_sqlite))
    start = time.time()
    with ComponentProgress(len(pipeline.components), enabled=progress):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    summary = latest_run(config)
    summary.seconds = time.time() - start
    return summary


def metadata_store(config: PipelineConfig):
    """The ML Metadata store of `config` (its SQLite file; relative paths resolved as the runner does)."""
    from ml_metadata.metadata_store import metadata_store as mlmd
    return mlmd.MetadataStore(metadata_connection(config.resolved().metadata_sqlite))


def latest_run(config: PipelineConfig) -> RunSummary:
    """Summary of the most recent run of `config.pipeline_name` recorded in the SQLite ML Metadata store."""
    from ml_metadata.proto import metadata_store_pb2
    config = config.resolved()
    store = metadata_store(config)
    runs = list(store.get_contexts_by_type("pipeline_run"))
    pipeline_ctx = store.get_context_by_type_and_name("pipeline", config.pipeline_name)
    if pipeline_ctx is not None:  # keep runs of this pipeline (a store may hold several)
        mine = {e.id for e in store.get_executions_by_context(pipeline_ctx.id)}
        runs = [c for c in runs if {e.id for e in store.get_executions_by_context(c.id)} & mine]
    if not runs:
        raise RuntimeError(f"no pipeline run recorded in {config.metadata_sqlite}")
    run_ctx = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    executions = store.get_executions_by_context(run_ctx.id)
    state_names = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
    node_type = store.get_context_type("node")
    events = store.get_events_by_execution_ids([e.id for e in executions]) if executions else []
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in events}))} if events else {}
    nodes: Dict[str, NodeRun] = {}
    for e in executions:
        node_ctx = [c for c in store.get_contexts_by_execution(e.id) if c.type_id == node_type.id]
        node_id = node_ctx[0].name.split(".", 1)[-1] if node_ctx else str(e.id)
        outputs: Dict[str, List[str]] = {}
        for ev in events:
            if ev.execution_id == e.id and ev.type == metadata_store_pb2.Event.OUTPUT and ev.path.steps:
                outputs.setdefault(ev.path.steps[0].key, []).append(artifacts[ev.artifact_id].uri)
        nodes[node_id] = NodeRun(node_id=node_id, state=state_names.get(e.last_known_state, "UNKNOWN"),
                                 outputs=outputs, execution_id=e.id,
                                 seconds=(e.last_update_time_since_epoch - e.create_time_since_epoch) / 1e3)
    summary = RunSummary(run_id=run_ctx.name, nodes=nodes)
    evaluator = nodes.get("Evaluator")
    if evaluator and evaluator.outputs.get("blessing"):
        uri = evaluator.outputs["blessing"][0]
        summary.blessed = os.path.exists(os.path.join(uri, "BLESSED"))
    pusher = nodes.get("Pusher")
    if pusher and pusher.outputs.get("pushed_model"):
        pushed = [a for a in store.get_artifacts_by_uri(pusher.outputs["pushed_model"][0])]
        for a in pushed:
            if a.custom_properties.get("pushed") and a.custom_properties["pushed"].int_value:
                summary.pushed_model_dir = a.custom_properties["pushed_destination"].string_value
    trainer = nodes.get("Trainer")
    if trainer and trainer.outputs.get("model"):
        summary.model_dir = os.path.join(trainer.outputs["model"][0], "Format-Serving")
    report = nodes.get("ExecutionReport")
    if report and report.outputs.get("report"):
        summary.report_dir = report.outputs["report"][0]
    return summary
