"""`lems push --unblessed --run ROOT`: serve a run's trained model although the Evaluator did not bless it
(development only).

The Pusher copies the Trainer's model into `<serving_dir>/<model_name>/<version>/` only when the Evaluator
blessed it and ServingCheck passed. After a NOT BLESSED run nothing is pushed, so `lems serve` and
`lems backfill` have nothing to read. This command copies the latest run's trained model
(`<pipeline_root>/Trainer/model/<id>/Format-Serving`) into the same TF Serving layout, under a new version
number (seconds since the epoch, as the Pusher numbers them, or one above the highest version there), with the
marker `assets.extra/lems_blessing.json` (`serving.blessing`) saying it is UNBLESSED, which run it came from
and that run's verdict. The copy is written under a temporary name and renamed into place, so a polling server
never sees half a version. `lems serve` warns while it serves such a version; `lems backfill` warns and writes
`unblessed` into every row and its run record.

    lems push --unblessed --run runs/demo                  # the demo's serving dir: runs/demo/serving/lem
    lems push --unblessed --config my.yaml                 # root, serving_dir and model_name from the config
    lems push --unblessed --run runs/x --model-base-path /srv/models/lem
"""
from __future__ import annotations

import os
import shutil
import sys
import time

from lems_cli.errors import CliError


def add_parser(parser) -> None:
    parser.add_argument("--run", metavar="ROOT", help="the run's root directory (`root` of its config, holding "
                                                      "metadata.sqlite and pipeline_root/), e.g. runs/demo")
    parser.add_argument("--config", help="the run's pipeline config (root, serving_dir, model_name from it)")
    parser.add_argument("--unblessed", action="store_true",
                        help="required to push a model the Evaluator did not bless (or that was not pushed for "
                             "another reason): it is pushed with a marker saying so, for development only")
    parser.add_argument("--model-base-path", help="where to push: <serving_dir>/<model_name> (default: the "
                                                  "config's, else where the run's Pusher pushes)")


def next_version(base: str) -> int:
    """A version number above every version under `base`: the time in seconds (the Pusher's numbering), or
    one more than the highest version when that is larger."""
    existing = [int(n) for n in os.listdir(base) if n.isdigit()] if os.path.isdir(base) else []
    return max([int(time.time())] + [v + 1 for v in existing])


def push_model(model_dir: str, base: str, marker: dict) -> str:
    """Copy the SavedModel `model_dir` to `<base>/<new version>/` with `marker` (serving.blessing) inside;
    atomic for a reader of `base` (written under a dot-name, then renamed). Returns the version directory."""
    from serving.blessing import write_marker
    if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        raise CliError(f"{model_dir} holds no saved_model.pb: not a SavedModel directory")
    os.makedirs(base, exist_ok=True)
    version = next_version(base)
    tmp = os.path.join(base, f".lems-push-{version}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    write_marker(tmp, {**marker, "version": version})
    final = os.path.join(base, str(version))
    os.rename(tmp, final)
    return final


def already_pushed(base: str, source: str):
    """The version directory under `base` that already holds an unblessed push of `source`, or None."""
    from serving.blessing import read_marker
    versions = sorted(int(n) for n in os.listdir(base) if n.isdigit()) if os.path.isdir(base) else []
    for version in reversed(versions):
        try:
            marker = read_marker(os.path.join(base, str(version)))
        except ValueError:
            continue
        if marker and os.path.abspath(marker.get("source_model", "")) == os.path.abspath(source):
            return os.path.join(base, str(version))
    return None


def locate_run(run_root=None, config=None):
    """(RunInfo, metadata path) of the latest run of `config` or of the run root `run_root`; CliError naming
    what is missing."""
    from lems_cli.runs import find_metadata, load_run
    if config is not None:
        metadata = os.path.abspath(config.metadata_sqlite)
        if not os.path.isfile(metadata):
            raise CliError(f"no ML Metadata store at {metadata} (the config's metadata file): has this config "
                           f"run yet? (`lems run --config FILE`)")
        info = load_run(metadata, config.pipeline_name)
    else:
        metadata = find_metadata(run_root)
        if metadata is None:
            raise CliError(f"no pipeline run at or near {os.path.abspath(run_root)} (no metadata.sqlite): pass the "
                           f"run's root, the `root` of its config (e.g. runs/demo), or --config FILE")
        info = load_run(metadata)
    if info is None:
        raise CliError(f"the ML Metadata store {metadata} records no pipeline run")
    return info


def run(args) -> int:
    config = None
    if args.config:
        from lems_cli.errors import load_config
        config = load_config(args.config)
    if config is None and not args.run:
        raise CliError("lems push: name the run: --run ROOT (the `root` of its config, e.g. runs/demo) or "
                       "--config FILE")
    info = locate_run(args.run, config)
    base = args.model_base_path or (config.push_base_directory if config else None) or info.push_destination
    if not base:
        raise CliError(f"lems push: cannot tell where {info.describe()} pushes (no Pusher record); pass "
                       f"--model-base-path <serving_dir>/<model_name>")
    base = os.path.abspath(base)
    verdict = info.verdict()
    if info.summary.pushed_model_dir:
        print(f"lems push: nothing to do: the latest {info.describe()} is {verdict}.\n"
              f"  serve it: lems serve --model-base-path {os.path.dirname(info.summary.pushed_model_dir)}")
        return 0
    model = info.trained_model
    if model is None:
        raise CliError(f"lems push: the latest {info.describe()} has no trained model on disk ({verdict}); "
                       f"nothing to push")
    if not args.unblessed:
        raise CliError(f"lems push: the latest {info.describe()} is {verdict}. Its trained model {model} can be "
                       f"pushed for development only, marked unblessed: add --unblessed")
    done = already_pushed(base, model)
    if done:
        print(f"lems push: {model} is already pushed, UNBLESSED, as {done}; serve it: "
              f"lems serve --model-base-path {base}")
        return 0
    marker = {"state": "unblessed", "pushed_by": "lems push --unblessed",
              "reason": f"pushed by `lems push --unblessed`: {info.describe()} was {verdict}",
              "source_model": model, "run_id": info.summary.run_id, "pipeline_name": info.pipeline_name,
              "metadata": info.metadata, "evaluator_blessed": info.blessed, "infra_blessed": info.infra_blessed,
              "verdict": verdict, "vwap_curve_profile": info.vwap_curve_profile,
              "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    final = push_model(model, base, marker)
    print(f"lems push: WARNING: pushed an UNBLESSED model, for development only (the run was {verdict})",
          file=sys.stderr)
    print(f"lems push: pushed {model}\n"
          f"  to       {final}  (UNBLESSED: marked in {os.path.join('assets.extra', 'lems_blessing.json')})\n"
          f"  from     {info.describe()}\n"
          f"  serve:   lems serve --model-base-path {base}   (it warns while it serves this version)\n"
          f"  backfill records model_blessing=unblessed in every row; a later BLESSED push (a higher version) "
          f"replaces it in `lems serve` and TF Serving", flush=True)
    return 0
