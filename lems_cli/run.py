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
    base = os.path.abspath(config.push_base_directory) if "://" not in config.push_base_directory \
        else config.push_base_directory
    if summary.pushed_model_dir:
        print(f"Next:            lems serve --model-base-path {base}")
    elif summary.model_dir:
        root = os.path.abspath(config.root) if "://" not in config.root else config.root
        print(f"Next:            nothing was pushed, so `lems serve` has no version to serve. To serve the trained "
              f"model anyway\n                 (development only, marked UNBLESSED): lems push --unblessed --run "
              f"{root} && lems serve --model-base-path {base}")
    print("=" * 100)


def check_local_paths(config) -> None:
    """Refuse, before anything runs, a local `data.source` that does not exist (CliError naming the field)."""
    source = config.data.source
    if source and "://" not in source and not os.path.exists(source):
        from lems_cli.errors import CliError
        raise CliError(f"data.source: {os.path.abspath(source)} does not exist; point data.source at the folder "
                       f"of your bar files (or write the demo data with `lems demo`)")


def run(args) -> int:
    from lems_cli.errors import load_config
    # types, choices, keys, overrides and consistency checked here, before TensorFlow is imported
    config = load_config(args.config, args.set, **({"root": args.root} if args.root else {}))
    check_local_paths(config)
    from pipeline import local_runner
    try:
        summary = local_runner.run(config)
    except local_runner.MetadataStoreMismatch as e:  # refused before anything ran; the message says what to do
        from lems_cli.errors import CliError
        raise CliError(str(e)) from e
    except getattr(local_runner, "RunInProgress", ()) as e:  # another run holds the root: refused at once
        from lems_cli.errors import CliError
        raise CliError(str(e), code=1) from e
    print_summary(config, summary)
    return 0
