"""Compile the LEM pipeline for Kubeflow Pipelines V2 (`tfx.orchestration.experimental.KubeflowV2DagRunner`) into
the KFP IR YAML (`PipelineSpec`) that kfp 2.x's client and Vertex AI Pipelines submit.

The pipeline is the same `pipeline.pipeline.create_pipeline(config)` the local runner runs; this module only
adds what a cluster needs (all read from `config.kubeflow`, see `pipeline.configs.KubeflowConfig`):

- the image every component runs in (`kubeflow/Dockerfile`: TFX 1.16 base + this package);
- the Trainer's resources: a `ResourceSpec` platform config (the one mechanism TFX 1.16 offers for V2:
  `BaseNode.with_platform_config`; the V2 step builder copies it into the executor's
  `container.resources`, i.e. `accelerator {type, count}`, `cpuLimit`, `memoryLimit` in the spec);
- the Beam arguments of the Beam components (`config.kubeflow.beam_pipeline_args`, else the top-level
  `config.beam_pipeline_args`): the pipeline-level `beam_pipeline_args` that the V2 step builder appends to
  every component's container arguments (TFX's Beam executors read them; the others ignore them).

Compiling for submission (`compile_pipeline(..., for_submission=True)`, what `lems compile-kubeflow` does
unless `--allow-local`) refuses what a cluster could not run as intended (`submission_problems`): an image
without a registry host or tag, Beam on an in-pod runner (DirectRunner) instead of Dataflow / Flink / Spark,
and a pipeline root, data source or serving directory on a local path instead of object storage.

ML Metadata is Kubeflow's own (no SQLite connection is passed). Paths in the config (`root`,
`data.source`, `serving.serving_dir`) must be reachable from the cluster (e.g. `gs://...` or a mounted volume).
"""
from __future__ import annotations

import json
import os
from typing import Optional

from pipeline.configs import PipelineConfig

#: Node id of the Trainer in `create_pipeline` (TFX's default id for `tfx.components.Trainer`).
TRAINER_ID = "Trainer"


def trainer_resource_spec(config: PipelineConfig):
    """`ResourceSpec` proto of the Trainer from `config.kubeflow`, or None when nothing is requested."""
    from kfp.pipeline_spec import pipeline_spec_pb2
    k = config.kubeflow
    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec()
    if k.trainer_cpu:
        spec.cpu_limit = float(k.trainer_cpu)
    if k.trainer_memory_gb:
        spec.memory_limit = float(k.trainer_memory_gb)
    if int(k.trainer_gpus or 0) > 0:
        if not k.gpu_type:
            raise ValueError("kubeflow.gpu_type is required when kubeflow.trainer_gpus > 0 "
                             "(e.g. 'nvidia.com/gpu' on Kubeflow, 'NVIDIA_TESLA_T4' on Vertex AI)")
        spec.accelerator.type = str(k.gpu_type)
        spec.accelerator.count = int(k.trainer_gpus)
    elif int(k.trainer_gpus or 0) < 0:
        raise ValueError(f"kubeflow.trainer_gpus must be >= 0, got {k.trainer_gpus}")
    return spec if spec.ByteSize() else None


def beam_args(config: PipelineConfig) -> list:
    """Beam arguments used on the cluster."""
    args = config.kubeflow.beam_pipeline_args
    return list(config.beam_pipeline_args if args is None else args)


def kubeflow_pipeline(config: PipelineConfig):
    """`create_pipeline(config)` with the cluster's Beam arguments and the Trainer's resource request."""
    from pipeline.pipeline import create_pipeline
    config = config.replace(beam_pipeline_args=beam_args(config))
    pipeline = create_pipeline(config, metadata_connection_config=None)
    trainers = [c for c in pipeline.components if c.id == TRAINER_ID]
    if len(trainers) != 1:
        raise ValueError(f"expected one component with id {TRAINER_ID!r} in the pipeline, found "
                         f"{[c.id for c in pipeline.components]}")
    spec = trainer_resource_spec(config)
    if spec is not None:
        trainers[0].with_platform_config(spec)
    return pipeline


#: Suffixes kfp 2.5's `Client.create_run_from_pipeline_package` accepts for a plain file (IR YAML).
SPEC_SUFFIXES = (".yaml", ".yml")


class LocalPathWarning(UserWarning):
    """A path of a Kubeflow compile that the cluster's pods probably cannot see (not a URL)."""


def local_paths(config: PipelineConfig) -> dict:
    """{field: value} of `root`, `data.source` and `serving.serving_dir` that are local paths (no `scheme://`)."""
    fields = {"root": config.root, "data.source": config.data.source, "serving.serving_dir": config.serving.serving_dir}
    return {name: value for name, value in fields.items() if value and "://" not in str(value)}


def warn_local_paths(config: PipelineConfig) -> dict:
    """Warn (`LocalPathWarning`, one per field) about local paths in a Kubeflow compile; returns them.

    On a cluster they resolve inside each pod: artifacts written there are lost with the pod and the data is
    not found unless the same path is mounted in every pod (a shared volume)."""
    import warnings
    found = local_paths(config)
    for name, value in found.items():
        warnings.warn(f"kubeflow compile: {name} = {value!r} is a local path; the cluster's pods resolve it "
                      "inside their own containers (use gs://..., s3://... or a volume mounted in every pod)",
                      LocalPathWarning, stacklevel=2)
    return found


#: Beam runners that run inside the component's own pod (not on a cluster).
LOCAL_RUNNERS = ("directrunner", "direct", "prismrunner", "prism", "interactiverunner", "swirunner")
#: URI schemes that are not object storage / a cluster-wide filesystem.
LOCAL_SCHEMES = ("file",)


class SubmissionError(ValueError):
    """A Kubeflow compile for submission that the cluster could not run as configured (`submission_problems`)."""


def beam_runner(args) -> Optional[str]:
    """The `--runner` of Beam arguments (`--runner=X` or `--runner X`), None when not given."""
    args = list(args or [])
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(args):
            return args[i + 1]
    return None


def image_problem(image: Optional[str]) -> Optional[str]:
    """Why `image` is not a fully qualified reference a cluster can pull (registry host, repository, tag or
    digest), or None. `lems-tfx:0.1.0` is not (Docker Hub's library namespace is implied, and no cluster
    pulls this project from there); `europe-docker.pkg.dev/proj/repo/lems-tfx:0.1.0`, `ghcr.io/org/lems-tfx@sha256:...`
    and `localhost:5000/lems-tfx:0.1.0` are."""
    if not image:
        return "kubeflow.image is empty"
    name, _, digest = image.partition("@")
    first, slash, rest = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return (f"kubeflow.image {image!r} names no registry host (e.g. REGION-docker.pkg.dev/PROJECT/REPO/"
                f"lems-tfx:0.1.0, ghcr.io/ORG/lems-tfx:0.1.0): the cluster cannot pull it")
    if not digest and ":" not in rest.rsplit("/", 1)[-1]:
        return f"kubeflow.image {image!r} has no tag or digest (e.g. :0.1.0 or @sha256:...)"
    return None


def submission_problems(config: PipelineConfig) -> list:
    """What would stop the compiled spec from running as intended on a cluster, one sentence each (empty =
    submittable): an image without registry host or tag; Beam components on an in-pod runner (DirectRunner,
    also when no --runner is given) instead of a cluster runner; a pipeline root, data source or serving
    directory that is a local path (each pod would see its own container's disk) rather than object storage
    (gs://, s3://, ...)."""
    problems = []
    image = image_problem(config.kubeflow.image)
    if image:
        problems.append(image)
    args = beam_args(config)
    runner = beam_runner(args)
    if runner is None or runner.lower() in LOCAL_RUNNERS:
        where = "kubeflow.beam_pipeline_args" if config.kubeflow.beam_pipeline_args is not None else \
            "beam_pipeline_args (kubeflow.beam_pipeline_args is null)"
        problems.append(f"{where} runs Beam in each pod ({runner or 'no --runner: DirectRunner'}); set "
                        f"kubeflow.beam_pipeline_args to a cluster runner, e.g. [--runner=DataflowRunner, "
                        f"--project=P, --region=R, --temp_location=gs://B/tmp] (or FlinkRunner, SparkRunner, "
                        f"PortableRunner; kubeflow/README.md)")
    for name, value in (("root", config.root), ("data.source", config.data.source),
                        ("serving.serving_dir", config.serving.serving_dir)):
        scheme = str(value).split("://", 1)[0].lower() if "://" in str(value) else None
        if scheme is None or scheme in LOCAL_SCHEMES:
            problems.append(f"{name} = {value!r} is a local path; use object storage (gs://BUCKET/..., "
                            f"s3://BUCKET/...)" + (" for the pipeline root" if name == "root" else ""))
    return problems


def check_submittable(config: PipelineConfig) -> None:
    """Raise SubmissionError naming every `submission_problems` of `config` (none: returns)."""
    problems = submission_problems(config)
    if problems:
        raise SubmissionError("kubeflow compile refused (for a local or test compile, pass --allow-local): "
                              + "; ".join(problems))


def compile_pipeline(config: PipelineConfig, output_path: str, *, image: Optional[str] = None,
                     for_submission: bool = False) -> dict:
    """Write the pipeline as a KFP IR YAML file (a `PipelineSpec`, schema 2.1.0) to `output_path`; returns
    the PipelineSpec as a dict.

    This is the package format kfp 2.x's `Client.create_run_from_pipeline_package` / `upload_pipeline` read
    (`.yaml`/`.yml`) and Vertex AI's `aiplatform.PipelineJob(template_path=...)` accepts; the pipeline root
    travels as `defaultPipelineRoot` (= `config.pipeline_root`). image: overrides `config.kubeflow.image`.
    for_submission: refuse (SubmissionError, nothing written) a config the cluster could not run as intended
    (`submission_problems`: unqualified image, in-pod Beam runner, local paths); otherwise local `root`,
    `data.source` or `serving.serving_dir` only raise a `LocalPathWarning`.
    """
    from tfx import v1 as tfx
    if not str(output_path).endswith(SPEC_SUFFIXES):
        raise ValueError(f"kubeflow compile: output {output_path!r} must end with .yaml or .yml (the IR YAML that "
                         "kfp.Client().create_run_from_pipeline_package and Vertex AI PipelineJob read)")
    if image:
        config = config.replace(kubeflow={"image": image})
    if not config.kubeflow.image:
        raise ValueError("kubeflow.image is required: the pipeline image built from kubeflow/Dockerfile")
    if for_submission:
        check_submittable(config)
    else:
        warn_local_paths(config)
    pipeline = kubeflow_pipeline(config)
    runner_config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
        default_image=config.kubeflow.image, display_name=config.pipeline_name, use_pipeline_spec_2_1=True)
    out_dir = os.path.dirname(os.path.abspath(output_path))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(config=runner_config, output_dir=out_dir)
    job = runner.run(pipeline, write_out=False)  # a PipelineJob {displayName, pipelineSpec, runtimeConfig, ...}
    parameters = job.get("runtimeConfig", {}).get("parameterValues") or job.get("runtimeConfig", {}).get("parameters")
    if parameters:  # create_pipeline defines no RuntimeParameter; their values would be lost with the wrapper
        raise ValueError(f"kubeflow compile: runtime parameter values {sorted(parameters)} cannot be carried by an "
                         "IR YAML file; pass them at submission (create_run_from_pipeline_package(arguments=...))")
    spec = dict(job["pipelineSpec"])
    spec["defaultPipelineRoot"] = job.get("runtimeConfig", {}).get("gcsOutputDirectory") or config.pipeline_root
    write_spec(spec, output_path)
    return spec


def write_spec(spec: dict, path: str) -> None:
    """Write a PipelineSpec dict as IR YAML (one document), atomically."""
    import yaml
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# PIPELINE DEFINITION (KFP IR YAML, PipelineSpec {spec.get('schemaVersion')}) compiled by lems-tfx\n"
                f"# Name: {spec.get('pipelineInfo', {}).get('name')}\n"
                "# Submit: kfp.Client(host=...).create_run_from_pipeline_package(<this file>) or\n"
                "#         google.cloud.aiplatform.PipelineJob(template_path=<this file>, ...).submit()\n")
        yaml.safe_dump(spec, f, sort_keys=True)
    os.replace(tmp, path)


def load_spec(path: str) -> dict:
    """Read an IR YAML file written by `compile_pipeline` (the PipelineSpec dict)."""
    import yaml
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def summarize(spec: dict) -> dict:
    """Component graph, images, Trainer resources and Beam arguments of a compiled spec (for the CLI and tests).

    spec: a PipelineSpec dict (`compile_pipeline`, `load_spec`) or a PipelineJob dict wrapping one.
    Returns {"tasks": {task: [upstream tasks]}, "images": {executor: image},
             "resources": {executor: resources}, "args": {executor: [container args]}}.
    """
    ps = spec.get("pipelineSpec", spec)
    tasks = {name: sorted(t.get("dependentTasks", [])) for name, t in ps["root"]["dag"]["tasks"].items()}
    executors = ps["deploymentSpec"]["executors"]
    images, resources, args = {}, {}, {}
    for name, ex in executors.items():
        c = ex.get("container")
        if c is None:
            continue
        images[name] = c.get("image")
        if c.get("resources"):
            resources[name] = c["resources"]
        args[name] = list(c.get("args", []))
    return {"tasks": tasks, "images": images, "resources": resources, "args": args}


def main(argv=None) -> int:  # python -m kubeflow.runner --config FILE --output pipeline.yaml
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--image")
    a = parser.parse_args(argv)
    spec = compile_pipeline(PipelineConfig.from_file(a.config), a.output, image=a.image)
    print(json.dumps(summarize(spec)["tasks"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
