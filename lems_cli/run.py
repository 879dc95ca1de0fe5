"""`lems run --config FILE`: run the TFX pipeline locally (LocalDagRunner, SQLite ML Metadata, DirectRunner)
and say what happened: the slippage table, the blessing decision, where the report, the pipeline root and the
pushed model are."""
from __future__ import annotations

import os


def add_parser(parser):
    parser.add_argument("--config", required=True, help="pipeline configuration (YAML or JSON; see pipeline/configs.py)")
    parser.add_argument("--root", help="override the config's root directory (pipeline root + ML Metadata)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one field of the config (repeatable; VALUE read as JSON where it parses), "
                             "e.g. --set model.input_clip=5 --set training.epochs=3")


def print_summary(config, summary) -> None:
    """Human-readable end of a run."""
    print()
    print("=" * 100)
    print(f"Pipeline '{config.pipeline_name}' finished in {summary.seconds:.0f} s (run {summary.run_id})")
    for node_id, node in sorted(summary.nodes.items(), key=lambda kv: kv[1].execution_id or 0):
        secs = f"{node.seconds:7.1f} s" if node.seconds is not None else ""
        print(f"  {node_id:32s} {node.state:9s} {secs}")
    if summary.report_dir:
        tables = os.path.join(summary.report_dir, "tables.txt")
        if os.path.exists(tables):
            print()
            with open(tables, encoding="utf-8") as f:
                print(f.read().rstrip())
    print()
    verdict = {True: "BLESSED (no gated slice significantly worse than TWAP (volume); overall significantly better)",
               False: "NOT BLESSED (the failed checks below and in the report)",
               None: "unknown (no Evaluator output)"}[summary.blessed]
    print(f"Blessing:        {verdict}")
    evaluator = summary.nodes.get("Evaluator")
    if evaluator and evaluator.outputs.get("evaluation"):
        from components.evaluator.eval_config import gate_summary_lines, validation_lines
        evaluation = evaluator.outputs["evaluation"][0]
        for line in (validation_lines(evaluation)[1:] if summary.blessed is False else []) + \
                gate_summary_lines(evaluation):
            print(f"                 {line}")
    print(f"Pushed model:    {summary.pushed_model_dir or 'not pushed'}")
    if summary.report_dir:
        print(f"Report:          {os.path.join(summary.report_dir, 'index.html')}")
    print(f"Pipeline root:   {os.path.abspath(config.pipeline_root)}")
    print(f"ML Metadata:     {os.path.abspath(config.metadata_sqlite)}")
    if summary.model_dir:
        print(f"Trained model:   {summary.model_dir}")
    print("=" * 100)


def run(args) -> int:
    from pipeline.configs import PipelineConfig
    config = PipelineConfig.from_file(args.config)  # types, choices and keys checked here, before TensorFlow
    try:
        config = config.with_overrides(args.set)
        if args.root:
            config = config.replace(root=args.root)
        config.validate()
    except ValueError as e:
        raise SystemExit(f"lems run: {args.config}: {e}") from e
    from pipeline import local_runner
    summary = local_runner.run(config)
    print_summary(config, summary)
    return 0
