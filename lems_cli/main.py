"""`lems` command line. Each subcommand lives in its own module with `add_parser(subparsers)` and `run(args)`.

Modules are imported lazily so that `lems --help` does not load TensorFlow. Global options (anywhere on the
line): `--verbose` keeps third-party logs (TensorFlow C++, absl, Beam, warnings; quiet by default, see
lems_cli/logs.py) and the traceback of a user error; `lems --version` prints the installed package version.

A user error (`lems_cli.errors.CliError`: a bad configuration, a missing file, a missing option) is printed as
one line `error: ...` on stderr with exit status 2, without a traceback unless `--verbose`.
"""
import argparse
import importlib
import sys

# subcommand name -> (module, one-line help)
SUBCOMMANDS = {
    "init": ("lems_cli.init", "write a documented starting pipeline configuration (YAML) with relative paths"),
    "compile-kubeflow": ("lems_cli.compile_kubeflow", "compile the pipeline to a Kubeflow Pipelines V2 / Vertex AI "
                                                      "pipeline spec (IR YAML)"),
    "backfill": ("lems_cli.backfill", "historical schedules and slippage of every order window in a date range (Parquet)"),
    "predict": ("lems_cli.predict", "remaining schedule of one order from a TF Serving PredictionService"),
    "serve": ("lems_cli.serve", "development gRPC PredictionService over the pushed SavedModel (not production)"),
    "push": ("lems_cli.push", "push a run's trained model for serving although it was not blessed "
                              "(--unblessed; development only, marked as such)"),
    "quickstart": ("lems_cli.quickstart", "train a small LEM on generated bars and print its slippage against TWAP"),
    "backtest": ("lems_cli.backtest", "walk-forward backtest: one pipeline run per fold, then figures with "
                                      "intervals per fold, pooled, test and final (JSON, Markdown, plot)"),
    "run": ("lems_cli.run", "run the TFX pipeline locally from a configuration file (YAML/JSON)"),
    "demo": ("lems_cli.demo", "run the whole TFX pipeline on the embedded default data and report what happened"),
}


def version() -> str:
    """The installed `lems-tfx` distribution's version (package metadata)."""
    from importlib import metadata
    try:
        return metadata.version("lems-tfx")
    except metadata.PackageNotFoundError:
        return "unknown (lems-tfx is not installed; run `pip install -e .`)"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lems", description="Large Execution Models on TFX",
                                     epilog="global options: --verbose (third-party logs on), --version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    if argv[:1] == ["--version"]:
        print(f"lems {version()}")
        return 0
    from lems_cli import logs
    logs.setup(verbose=verbose)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.print_help() if not argv or argv[0] in ("-h", "--help") else parser.parse_args(argv)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    sub_parser = argparse.ArgumentParser(prog=f"lems {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
    module.add_parser(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    from lems_cli.errors import CliError, one_line
    try:
        return module.run(args) or 0
    except CliError as e:
        if verbose:
            import traceback
            traceback.print_exc()
        print(f"error: {one_line(e.message)}", file=sys.stderr, flush=True)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
