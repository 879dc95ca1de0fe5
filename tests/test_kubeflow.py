"""Kubeflow V2 compilation (`kubeflow/runner.py`, `lems compile-kubeflow`): the same `create_pipeline(config)`
compiled with KubeflowV2DagRunner; asserts the component graph, the image, the Trainer's GPU request and
the Beam arguments in the pipeline-job JSON."""
import json
import os

import pytest

from pipeline.configs import PipelineConfig

IMAGE = "europe-docker.pkg.dev/proj/repo/lems-tfx:0.1.0"
BEAM = ["--runner=DataflowRunner", "--project=proj", "--region=europe-west4", "--temp_location=gs://b/tmp"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**kubeflow):
    return PipelineConfig.from_dict({
        "pipeline_name": "lems-kfp", "root": "gs://b/lems",
        "data": {"source": "gs://b/data"}, "serving": {"serving_dir": "gs://b/serving"},
        "sizes": {"n_ahead": 4, "lookback": 8, "norm_window": 16},
        "kubeflow": {"image": IMAGE, "trainer_gpus": 2, "gpu_type": "nvidia.com/gpu", "beam_pipeline_args": BEAM,
                     **kubeflow}})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from kubeflow.runner import compile_pipeline, summarize
    path = str(tmp_path_factory.mktemp("kfp") / "spec.json")
    config = _config()
    spec = compile_pipeline(config, path)
    with open(path) as f:
        on_disk = json.load(f)
    return config, on_disk, summarize(on_disk), spec


def test_component_graph(compiled):
    from pipeline.pipeline import create_pipeline
    config, spec, s, _ = compiled
    local = create_pipeline(config.replace(root="/tmp/unused"))
    tasks = s["tasks"]
    # same pipeline as the local runner (V2 compiles the Resolver into one resolver task per input channel)
    ids = {c.id for c in local.components}
    compiled_ids = {t.split("-")[0] if t.startswith("latest_blessed_model_resolver") else t for t in tasks}
    assert compiled_ids == ids
    trainer_inputs = set(tasks["Trainer"])
    assert "Transform" in trainer_inputs
    assert "Trainer" in tasks["Evaluator"] and "Trainer" in tasks["Pusher"] and "Evaluator" in tasks["Pusher"]
    assert any(t.startswith("latest_blessed_model_resolver") for t in tasks["Evaluator"])
    assert spec["pipelineSpec"]["pipelineInfo"]["name"] == "lems-kfp"
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == config.pipeline_root


def test_image_gpu_and_beam_args(compiled):
    _, spec, s, _ = compiled
    assert s["images"] and set(s["images"].values()) == {IMAGE}
    trainer_exec = spec["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]["componentRef"]["name"].replace(
        "Trainer", "Trainer_executor")
    res = s["resources"]
    assert list(res) == [trainer_exec], res  # only the Trainer asks for resources
    acc = res[trainer_exec]["accelerator"]
    assert acc["type"] == "nvidia.com/gpu" and int(acc["count"]) == 2
    assert float(res[trainer_exec]["cpuLimit"]) == 8.0 and float(res[trainer_exec]["memoryLimit"]) == 32.0
    for name, args in s["args"].items():  # every container gets the cluster's Beam arguments
        assert args[-len(BEAM):] == BEAM, (name, args)
    assert "--direct_running_mode=in_memory" not in json.dumps(spec)  # local Beam args do not leak


def test_no_gpu_and_local_beam_args_fallback(tmp_path):
    from kubeflow.runner import compile_pipeline, summarize
    config = _config(trainer_gpus=0, trainer_cpu=None, trainer_memory_gb=None, beam_pipeline_args=None)
    s = summarize(compile_pipeline(config, str(tmp_path / "spec.json"), image="other:1"))
    assert s["resources"] == {} and set(s["images"].values()) == {"other:1"}
    for args in s["args"].values():
        assert args[-len(config.beam_pipeline_args):] == list(config.beam_pipeline_args)


def test_cli_and_dockerfile(tmp_path):
    from lems_cli.main import main
    cfg = tmp_path / "config.json"
    _config().save(str(cfg))
    out = tmp_path / "cli" / "spec.json"
    assert main(["compile-kubeflow", "--config", str(cfg), "--output", str(out), "--trainer-gpus", "1",
                 "--beam-args", "--runner=FlinkRunner --flink_master=flink:8081"]) == 0
    spec = json.load(open(out))
    text = json.dumps(spec)
    assert "--flink_master=flink:8081" in text and "DataflowRunner" not in text
    with open(os.path.join(ROOT, "kubeflow", "Dockerfile")) as f:
        docker = f.read()
    assert "FROM gcr.io/tfx-oss-public/tfx:1.16.0" in docker and "pip install" in docker
