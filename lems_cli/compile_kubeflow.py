"""`lems compile-kubeflow --config FILE --output pipeline.yaml`: the pipeline as KFP IR YAML (a PipelineSpec).

Submit the file with kfp 2.x (`kfp.Client(host=...).create_run_from_pipeline_package("pipeline.yaml")`) or to
Vertex AI (`google.cloud.aiplatform.PipelineJob(template_path="pipeline.yaml", ...).submit()`); see
kubeflow/README.md.

The spec is checked for submission first (`kubeflow.runner.submission_problems`): a fully qualified image
(`kubeflow.image` / `--image`, registry host and tag), a Beam runner for the cluster (`kubeflow.beam_pipeline_args`
/ `--beam-args`, not the DirectRunner) and a pipeline root in object storage (`root` / `--root`, e.g.
gs://BUCKET/lems), as well as the data source and serving directory. Anything else is refused with one line
naming each field; `--allow-local` compiles anyway (local paths then only warn), e.g. for a cluster whose pods
mount the same volume, or for a test.
"""
from __future__ import annotations

import json
import sys
import warnings


def add_parser(parser) -> None:
    parser.add_argument("--config", required=True, help="pipeline config (YAML or JSON; pipeline/configs.py)")
    parser.add_argument("--output", required=True, help="KFP IR YAML to write (.yaml/.yml, e.g. pipeline.yaml)")
    parser.add_argument("--image", help="pipeline image (overrides kubeflow.image of the config)")
    parser.add_argument("--beam-args", help="Beam arguments of the Beam components on the cluster, one string "
                                            "(overrides kubeflow.beam_pipeline_args), e.g. "
                                            "'--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp'")
    parser.add_argument("--trainer-gpus", type=int, help="GPUs requested by the Trainer (overrides the config)")
    parser.add_argument("--root", help="pipeline root base in object storage (overrides the config's root), e.g. "
                                       "gs://BUCKET/lems: artifacts go to ROOT/pipeline_root")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one field of the config, as `lems run --set` (repeatable)")
    parser.add_argument("--allow-local", action="store_true",
                        help="compile although the image is unqualified, Beam runs DirectRunner or paths are "
                             "local (for a test, or pods that mount the same volume)")


def run(args) -> int:
    import shlex

    from lems_cli.errors import CliError, load_config
    over = {}
    if args.beam_args is not None:
        over["beam_pipeline_args"] = shlex.split(args.beam_args)
    if args.trainer_gpus is not None:
        over["trainer_gpus"] = args.trainer_gpus
    if args.image:
        over["image"] = args.image
    replace = {"kubeflow": over} if over else {}
    if args.root:
        replace["root"] = args.root
    config = load_config(args.config, args.set, **replace)
    from kubeflow.runner import LocalPathWarning, SubmissionError, beam_args, beam_runner, compile_pipeline, summarize
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", LocalPathWarning)
        try:
            spec = compile_pipeline(config, args.output, for_submission=not args.allow_local)
        except SubmissionError as e:
            raise CliError(str(e)) from e
        except ValueError as e:
            raise CliError(f"lems compile-kubeflow: {e}") from e
    for w in seen:
        if issubclass(w.category, LocalPathWarning):
            print(f"lems compile-kubeflow: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    s = summarize(spec)
    print(f"wrote {args.output}: {len(s['tasks'])} tasks, image {sorted(set(s['images'].values()))}, Beam runner "
          f"{beam_runner(beam_args(config)) or 'DirectRunner (default)'}, pipeline root {spec['defaultPipelineRoot']}")
    for task, deps in s["tasks"].items():
        print(f"  {task} <- {', '.join(deps) or '(root)'}")
    for executor, res in s["resources"].items():
        print(f"  resources of {executor}: {json.dumps(res, sort_keys=True)}")
    print(f"submit: kfp.Client(host=HOST).create_run_from_pipeline_package({args.output!r}) or "
          f"google.cloud.aiplatform.PipelineJob(display_name=..., template_path={args.output!r}).submit()")
    return 0
