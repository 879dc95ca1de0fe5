"""Thin local runner: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner (from `config.beam_pipeline_args`).

    from pipeline.configs import PipelineConfig
    from pipeline import local_runner
    summary = local_runner.run(PipelineConfig.from_file("run.yaml"))

`run` returns a `RunSummary` read back from ML Metadata: each component's execution state (COMPLETE,
CACHED, FAILED) and output artifact URIs, the blessing decision, the pushed model directory and the report.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from pipeline.configs import PipelineConfig
from pipeline.pipeline import create_pipeline


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


def metadata_connection(path: str):
    from tfx import v1 as tfx
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(path)


def run(config: PipelineConfig) -> RunSummary:
    """Run the whole pipeline locally; raises if a component fails. Returns the run's summary."""
    from tfx import v1 as tfx
    config = config.resolved()
    os.makedirs(config.root, exist_ok=True)
    pipeline = create_pipeline(config, metadata_connection_config=metadata_connection(config.metadata_sqlite))
    start = time.time()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    summary = latest_run(config)
    summary.seconds = time.time() - start
    return summary


def _store(config: PipelineConfig):
    from ml_metadata.metadata_store import metadata_store
    return metadata_store.MetadataStore(metadata_connection(config.metadata_sqlite))


def latest_run(config: PipelineConfig) -> RunSummary:
    """Summary of the most recent run of `config.pipeline_name` recorded in the SQLite ML Metadata store."""
    from ml_metadata.proto import metadata_store_pb2
    config = config.resolved()
    store = _store(config)
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
