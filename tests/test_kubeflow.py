"""Kubeflow V2 compilation (`kubeflow/runner.py`, `lems compile-kubeflow`): the same `create_pipeline(config)`
compiled with KubeflowV2DagRunner to KFP IR YAML; the file is read back with kfp 2.5's own package reader (the
code path of `kfp.Client().create_run_from_pipeline_package`) and by Vertex AI's `PipelineJob`; asserts the
component graph, the image, the Trainer's GPU request, the Beam arguments and the local-path warning."""
import json
import os
import warnings

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
    from kubeflow.runner import LocalPathWarning, compile_pipeline, load_spec, summarize
    path = str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    config = _config()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LocalPathWarning)  # every path is a URL: no warning
        spec = compile_pipeline(config, path)
    on_disk = load_spec(path)
    assert on_disk == spec
    return config, on_disk, summarize(on_disk), path


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
    assert spec["pipelineInfo"]["name"] == "lems-kfp"
    assert spec["defaultPipelineRoot"] == config.pipeline_root


def test_image_gpu_and_beam_args(compiled):
    _, spec, s, _ = compiled
    assert s["images"] and set(s["images"].values()) == {IMAGE}
    trainer_exec = spec["root"]["dag"]["tasks"]["Trainer"]["componentRef"]["name"].replace(
        "Trainer", "Trainer_executor")
    res = s["resources"]
    assert list(res) == [trainer_exec], res  # only the Trainer asks for resources
    acc = res[trainer_exec]["accelerator"]
    assert acc["type"] == "nvidia.com/gpu" and int(acc["count"]) == 2
    assert float(res[trainer_exec]["cpuLimit"]) == 8.0 and float(res[trainer_exec]["memoryLimit"]) == 32.0
    for name, args in s["args"].items():  # every container gets the cluster's Beam arguments
        assert args[-len(BEAM):] == BEAM, (name, args)
    assert "--direct_running_mode=in_memory" not in json.dumps(spec)  # local Beam args do not leak


def test_kfp_client_reads_the_package(compiled):
    """kfp 2.5's Client reads a package with `_extract_pipeline_yaml` (create_run_from_pipeline_package ->
    run_pipeline -> _create_job_config): a PipelineSpec proto parse that rejects unknown fields, e.g. the
    PipelineJob wrapper's `displayName`."""
    from kfp.client import client as kfp_client
    config, spec, s, path = compiled
    doc = kfp_client._extract_pipeline_yaml(path)
    ps = doc.pipeline_spec
    assert ps.pipeline_info.name == "lems-kfp" and ps.schema_version == "2.1.0"
    assert ps.default_pipeline_root == config.pipeline_root
    assert set(ps.root.dag.tasks) == set(s["tasks"])
    sent = doc.to_dict()  # what the client puts in the run request (no platform spec: the PipelineSpec itself)
    assert sent["deploymentSpec"] == spec["deploymentSpec"] and sent["root"] == spec["root"]
    wrapped = str(path).replace("pipeline.yaml", "job.yaml")
    import yaml
    with open(wrapped, "w") as f:  # the old PipelineJob wrapper is what the client refuses
        yaml.safe_dump({"displayName": "lems-kfp", "pipelineSpec": spec}, f)
    with pytest.raises(Exception, match="displayName"):
        kfp_client._extract_pipeline_yaml(wrapped)


def test_vertex_ai_pipeline_job_reads_the_package(compiled):
    """Vertex AI: `aiplatform.PipelineJob(template_path=FILE)` builds its job from the same file (no call leaves
    the machine until `.submit()`); the pipeline root comes from `defaultPipelineRoot`."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    config, spec, _, path = compiled
    job = aiplatform.PipelineJob(display_name="lems-kfp", template_path=path, project="proj",
                                 location="europe-west4", credentials=AnonymousCredentials())
    resource = job._gca_resource  # the PipelineJob proto `.submit()` sends
    assert resource.runtime_config.gcs_output_directory == config.pipeline_root
    assert resource.pipeline_spec["pipelineInfo"]["name"] == "lems-kfp"
    assert set(resource.pipeline_spec["root"]["dag"]["tasks"]) == set(spec["root"]["dag"]["tasks"])


def test_local_paths_warn_and_output_must_be_yaml(tmp_path):
    from kubeflow.runner import LocalPathWarning, compile_pipeline, local_paths
    config = _config().replace(root="./runs/lems", data={"source": "/mnt/bars"})
    assert local_paths(config) == {"root": "./runs/lems", "data.source": "/mnt/bars"}
    with pytest.warns(LocalPathWarning) as seen:
        compile_pipeline(config, str(tmp_path / "p.yml"))
    messages = [str(w.message) for w in seen if w.category is LocalPathWarning]
    assert len(messages) == 2 and "root = './runs/lems'" in messages[0] and "data.source" in messages[1]
    with pytest.raises(ValueError, match=r"must end with \.yaml or \.yml"):
        compile_pipeline(_config(), str(tmp_path / "spec.json"))


def test_no_gpu_and_local_beam_args_fallback(tmp_path):
    from kubeflow.runner import compile_pipeline, summarize
    config = _config(trainer_gpus=0, trainer_cpu=None, trainer_memory_gb=None, beam_pipeline_args=None)
    s = summarize(compile_pipeline(config, str(tmp_path / "spec.yaml"), image="other:1"))
    assert s["resources"] == {} and set(s["images"].values()) == {"other:1"}
    for args in s["args"].values():
        assert args[-len(config.beam_pipeline_args):] == list(config.beam_pipeline_args)


def test_cli_and_dockerfile(tmp_path, capsys):
    from lems_cli.main import main
    cfg = tmp_path / "config.json"
    _config().replace(serving={"serving_dir": "/srv/models"}).save(str(cfg))
    out = tmp_path / "cli" / "pipeline.yaml"
    args = ["compile-kubeflow", "--config", str(cfg), "--output", str(out), "--trainer-gpus", "1",
            "--beam-args", "--runner=FlinkRunner --flink_master=flink:8081"]
    # compiled for submission by default: the local serving directory is refused, nothing written
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: kubeflow compile refused (for a local or test compile, pass --allow-local): ")
    assert "serving.serving_dir = '/srv/models' is a local path" in err and "\n" not in err and not out.exists()
    assert main(args + ["--allow-local"]) == 0
    from kubeflow.runner import load_spec
    text = json.dumps(load_spec(str(out)))
    printed = capsys.readouterr()
    assert "warning: kubeflow compile: serving.serving_dir = '/srv/models' is a local path" in printed.err
    assert "create_run_from_pipeline_package" in printed.out
    assert "--flink_master=flink:8081" in text and "DataflowRunner" not in text
    with open(os.path.join(ROOT, "kubeflow", "Dockerfile")) as f:
        docker = f.read()
    assert "FROM gcr.io/tfx-oss-public/tfx:1.16.0" in docker and "pip install" in docker


def test_submission_check_names_each_problem():
    from kubeflow.runner import beam_runner, image_problem, submission_problems
    for ok in (IMAGE, "ghcr.io/org/lems-tfx:0.1.0", "localhost:5000/lems-tfx:1",
               "gcr.io/p/lems-tfx@sha256:" + "0" * 64):
        assert image_problem(ok) is None, ok
    assert "no registry host" in image_problem("lems-tfx:0.1.0")
    assert "no registry host" in image_problem("org/lems-tfx:0.1.0")
    assert "no tag or digest" in image_problem("gcr.io/p/lems-tfx")
    assert beam_runner(["--a=1", "--runner", "FlinkRunner"]) == "FlinkRunner" and beam_runner(BEAM) == "DataflowRunner"
    assert submission_problems(_config()) == []
    problems = submission_problems(PipelineConfig())   # the defaults: local everything
    assert len(problems) == 5
    assert "kubeflow.image 'lems-tfx:0.1.0' names no registry host" in problems[0]
    assert "runs Beam in each pod (no --runner: DirectRunner)" in problems[1]
    assert [p.split(" = ")[0] for p in problems[2:]] == ["root", "data.source", "serving.serving_dir"]
    direct = _config(beam_pipeline_args=["--runner=DirectRunner"])
    assert ["kubeflow.beam_pipeline_args runs Beam in each pod (DirectRunner)" in p
            for p in submission_problems(direct)] == [True]
    assert len(submission_problems(_config().replace(root="file:///mnt/x"))) == 1


def test_cli_compiles_a_submittable_spec_that_kfp_loads(tmp_path, capsys):
    """Image, Beam runner and pipeline root from the config and the command line; the spec loads with kfp's
    own loaders (the client's package reader and the component loader)."""
    from kfp.client import client as kfp_client
    import kfp.components as kc

    from kubeflow.runner import load_spec, summarize
    from lems_cli.main import main
    cfg = tmp_path / "config.yaml"
    _config(beam_pipeline_args=None, image="lems-tfx:0.1.0").save(str(cfg))
    out = tmp_path / "pipeline.yaml"
    base = ["compile-kubeflow", "--config", str(cfg), "--output", str(out)]
    assert main(base) == 2 and "names no registry host" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--image", IMAGE, "--root", "gs://other/lems", "--set",
                        "kubeflow.beam_pipeline_args=" + json.dumps(BEAM)]) == 0
    printed = capsys.readouterr().out
    assert "Beam runner DataflowRunner, pipeline root gs://other/lems/pipeline_root" in printed
    spec = load_spec(str(out))
    assert spec["defaultPipelineRoot"] == "gs://other/lems/pipeline_root"
    s = summarize(spec)
    assert set(s["images"].values()) == {IMAGE}
    assert all(args[-len(BEAM):] == BEAM for args in s["args"].values())
    doc = kfp_client._extract_pipeline_yaml(str(out))
    assert doc.pipeline_spec.default_pipeline_root == "gs://other/lems/pipeline_root"
    assert kc.load_component_from_file(str(out)).name
