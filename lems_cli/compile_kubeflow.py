"""`lems compile-kubeflow --config FILE --output spec.json`: the pipeline as a Kubeflow Pipelines V2 spec."""
from __future__ import annotations

import json


def add_parser(parser) -> None:
    parser.add_argument("--config", required=True, help="pipeline config (YAML or JSON; pipeline/configs.py)")
    parser.add_argument("--output", required=True, help="pipeline-job JSON to write (e.g. spec.json)")
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
    spec = compile_pipeline(config, args.output, image=args.image)
    s = summarize(spec)
    print(f"wrote {args.output}: {len(s['tasks'])} tasks, image {sorted(set(s['images'].values()))}")
    for task, deps in s["tasks"].items():
        print(f"  {task} <- {', '.join(deps) or '(root)'}")
    for executor, res in s["resources"].items():
        print(f"  resources of {executor}: {json.dumps(res, sort_keys=True)}")
    return 0
