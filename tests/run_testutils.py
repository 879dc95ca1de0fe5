"""A pipeline run's ML Metadata records and artifact directories, written with ML Metadata's own API in the shape
TFX's LocalDagRunner writes them (not a test).

What `pipeline.local_runner.latest_run` and `lems_cli.runs` read: contexts of type `pipeline` (the pipeline
name), `pipeline_run` (the run id) and `node` (`<pipeline>.<node id>`); one execution per node, attributed to the
three, with its state; its output artifacts (URIs under `<pipeline_root>/<node>/<key>/<execution id>/`) joined
by OUTPUT events whose path is (output key, index); the Pusher's `push_destination` exec property (JSON of the
PushDestination proto) and its PushedModel's `pushed` / `pushed_destination` custom properties; the blessing
files the Evaluator (BLESSED / NOT_BLESSED) and ServingCheck (INFRA_BLESSED / INFRA_NOT_BLESSED) write.
Running the real pipeline takes minutes; the commands under test only read these records and files.
"""
from __future__ import annotations

import json
import os
import shutil
import time

#: node id -> (output key, artifact type) of the nodes the commands read.
OUTPUTS = {"Trainer": ("model", "Model"), "Evaluator": ("blessing", "ModelBlessing"),
           "ServingCheck": ("blessing", "InfraBlessing"), "Pusher": ("pushed_model", "PushedModel"),
           "VwapCurveBaseline": ("baseline_examples", "Examples")}


def record_run(root: str, *, pipeline_name: str = "lems-test", run_id: str = None, model_dir: str = None,
               blessed: bool = False, infra_blessed: bool = True, push_base: str = None, pushed_version: int = None,
               profile: dict = None) -> dict:
    """Record one run under `root` (`<root>/metadata.sqlite`, `<root>/pipeline_root/`); returns
    {node: artifact uri}. model_dir: a SavedModel copied to the Trainer's `Format-Serving`; blessed: the
    Evaluator's verdict; pushed_version: the Pusher pushed (a copy of the model) to `<push_base>/<version>`;
    profile: VwapCurveBaseline's vwap_curve_profile.json content."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    os.makedirs(root, exist_ok=True)
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(root, "metadata.sqlite")
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)

    def context(type_name, name):
        type_id = store.put_context_type(pb.ContextType(name=type_name))
        found = store.get_context_by_type_and_name(type_name, name)
        if found is not None:
            return found
        (cid,) = store.put_contexts([pb.Context(type_id=type_id, name=name)])
        return store.get_contexts_by_id([cid])[0]

    run_id = run_id or f"run-{time.time_ns()}"
    contexts = [context("pipeline", pipeline_name), context("pipeline_run", run_id)]
    pipeline_root = os.path.join(root, "pipeline_root")
    uris = {}
    for node, (key, type_name) in OUTPUTS.items():
        exec_type = store.put_execution_type(pb.ExecutionType(name=f"tfx.test.{node}"))
        art_type = store.put_artifact_type(pb.ArtifactType(name=type_name))
        execution = pb.Execution(type_id=exec_type, last_known_state=pb.Execution.COMPLETE)
        if node == "Pusher" and push_base:
            execution.custom_properties["push_destination"].string_value = json.dumps(
                {"filesystem": {"base_directory": push_base}}, sort_keys=True)
        [exec_id] = store.put_executions([execution])
        uri = os.path.join(pipeline_root, node, key, str(exec_id))
        os.makedirs(uri, exist_ok=True)
        artifact = pb.Artifact(type_id=art_type, uri=uri, state=pb.Artifact.LIVE)
        if node == "Trainer" and model_dir:
            shutil.copytree(model_dir, os.path.join(uri, "Format-Serving"))
        elif node == "Evaluator":
            open(os.path.join(uri, "BLESSED" if blessed else "NOT_BLESSED"), "w").close()
            artifact.custom_properties["blessed"].int_value = int(blessed)
        elif node == "ServingCheck":
            open(os.path.join(uri, "INFRA_BLESSED" if infra_blessed else "INFRA_NOT_BLESSED"), "w").close()
        elif node == "VwapCurveBaseline" and profile is not None:
            with open(os.path.join(uri, "vwap_curve_profile.json"), "w") as f:
                json.dump(profile, f)
        elif node == "Pusher":
            pushed = pushed_version is not None and blessed and infra_blessed
            artifact.custom_properties["pushed"].int_value = int(pushed)
            if pushed:
                dest = os.path.join(push_base, str(pushed_version))
                shutil.copytree(model_dir, dest)
                artifact.custom_properties["pushed_destination"].string_value = dest
        (execution,) = store.get_executions_by_id([exec_id])
        event = pb.Event(type=pb.Event.OUTPUT)
        event.path.steps.add(key=key)
        event.path.steps.add(index=0)
        store.put_execution(execution, [(artifact, event)], contexts + [context("node", f"{pipeline_name}.{node}")])
        uris[node] = uri
    return uris
