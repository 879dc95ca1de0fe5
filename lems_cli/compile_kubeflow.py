"""`lems compile-kubeflow --config FILE --output pipeline.yaml`: the pipeline as KFP IR YAML (a PipelineSpec).

Submit the file with kfp 2.x (`kfp.Client(host=...).create_run_from_pipeline_package("pipeline.yaml")`) or to
Vertex AI (`google.cloud.aiplatform.PipelineJob(template_path="pipeline.yaml", ...).submit()`); see
kubeflow/README.md. Local `root`, `data.source` or `serving.serving_dir` are reported as warnings.
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


def run(args) -> int:
    import shlex

    from kubeflow.runner import compile_pipeline, summarize
    from pipeline.configs import PipelineConfig
    config = PipelineConfig.from_file(args.config)
    over = {}
    if args.beam_args is not None:
        over["beam_pipeline_args"] = shlex.split(args.beam_args)
    if args.trainer_gpus is not None:
        over["trainer_gpus"] = args.trainer_gpus
    if over:
        config = config.replace(kubeflow=over)
    from kubeflow.runner import LocalPathWarning
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", LocalPathWarning)
        spec = compile_pipeline(config, args.output, image=args.image)
    for w in seen:
        if issubclass(w.category, LocalPathWarning):
            print(f"lems compile-kubeflow: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    s = summarize(spec)
    print(f"wrote {args.output}: {len(s['tasks'])} tasks, image {sorted(set(s['images'].values()))}")
    for task, deps in s["tasks"].items():
        print(f"  {task} <- {', '.join(deps) or '(root)'}")
    for executor, res in s["resources"].items():
        print(f"  resources of {executor}: {json.dumps(res, sort_keys=True)}")
    print(f"submit: kfp.Client(host=HOST).create_run_from_pipeline_package({args.output!r}) or "
          f"google.cloud.aiplatform.PipelineJob(display_name=..., template_path={args.output!r}).submit()")
    return 0
