"""`lems demo` (what `make demo` calls): the whole TFX pipeline on the embedded default data.

Generates the default synthetic market data (`components.market_data.synthetic.write_default_dataset`) into
`<root>/data` on first use, runs the pipeline with `pipeline.configs.demo_config` under the local runner, and
ends by saying what happened: the slippage table, the blessing decision, where the report, the pipeline root
and the pushed model are. A second `lems demo` on the same root is served from the cache where inputs are
unchanged (`--fresh` starts over).
"""
from __future__ import annotations

import os
import shutil
import time


def add_parser(parser):
    parser.add_argument("--root", default="./runs/demo", help="run directory (data, pipeline root, metadata, "
                                                              "serving); default ./runs/demo")
    parser.add_argument("--fresh", action="store_true", help="delete the run directory first")
    parser.add_argument("--save-config", metavar="FILE", help="only write the demo configuration (documented "
                                                              "YAML, paths under --root as given) to FILE, for "
                                                              "`lems run --config FILE`, and exit (no run)")


def ensure_demo_data(data_dir: str) -> bool:
    """Write the embedded default data set into `data_dir` unless it is there; True if written."""
    marker = os.path.join(data_dir, ".complete")
    if os.path.exists(marker):
        return False
    from components.market_data.synthetic import write_default_dataset
    if os.path.isdir(data_dir):
        shutil.rmtree(data_dir)
    write_default_dataset(data_dir)
    with open(marker, "w") as f:
        f.write("written by lems demo\n")
    return True


def run(args) -> int:
    from lems_cli.run import print_summary
    from pipeline import local_runner
    from pipeline.configs import demo_config

    if args.save_config:  # write the configuration only (relative paths as --root was given)
        from lems_cli.init import write_config
        write_config(demo_config(args.root).validate(), args.save_config, force=True)
        print(f"[demo] wrote the demo configuration to {args.save_config} (not run); "
              f"run it with `lems run --config {args.save_config}`")
        return 0
    root = os.path.abspath(args.root)
    if args.fresh and os.path.isdir(root):
        shutil.rmtree(root)
    config = demo_config(root)
    start = time.time()
    if ensure_demo_data(config.data.source):
        print(f"[demo] wrote the embedded default data to {config.data.source} ({time.time() - start:.1f} s)")
    print(f"[demo] running pipeline '{config.pipeline_name}' (N={config.sizes.n_ahead}, L={config.sizes.lookback}, "
          f"W={config.sizes.norm_window}; frequencies {config.data.frequencies} min) under {root}", flush=True)
    try:
        summary = local_runner.run(config)
    except local_runner.MetadataStoreMismatch as e:  # refused before anything ran; the message says what to do
        from lems_cli.errors import CliError
        raise CliError(str(e)) from e
    except getattr(local_runner, "RunInProgress", ()) as e:  # another run holds the root: refused at once
        from lems_cli.errors import CliError
        raise CliError(str(e), code=1) from e
    summary.seconds = time.time() - start
    print_summary(config, summary)
    return 0
