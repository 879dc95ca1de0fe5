"""`lems backfill`: historical LEM schedules and slippage for every order window of a date range (Parquet).

    lems backfill --source DATA --model runs/serving/lem --output runs/backfill \
        --start 2024-03-01 --end 2024-03-31 --assets BTCUSDT,ETHUSDT --frequencies 15,90 \
        [--heads match,12] [--constraints default,0:0.25] \
        [--beam-args "--direct_running_mode=multi_processing --direct_num_workers=4"]

Rerunning a range replaces the partitions it produces atomically (see backfill/commit.py); committed
partitions of the range it does not produce (assets absent from the source now) are kept unless
`--remove-absent` is given; the printed report ("partitions") lists what was replaced, added, kept and
removed. See kubeflow/README.md for distributed runners (and the output columns). A request that selects
nothing (no bars, no window in the range, every file or window skipped) exits with status 1 and the counts
that explain it; the output is left as it was.

`vwap_curve_slippage_bps` (the volume-curve VWAP baseline) needs the intraday volume profile estimated on the
training split of the run that trained the model (its VwapCurveBaseline output, `vwap_curve_profile.json`).
It is found, in this order: `--vwap-curve-profile FILE`; the marker of a version pushed by
`lems push --unblessed` (which records its run's profile); the ML Metadata store of the run whose Pusher
pushed the version (`--run ROOT` or `--config`, else the store found near `--model`, e.g. runs/demo for
runs/demo/serving/lem); with `--run`/`--config` given but the version unknown to that store, the latest
run's profile (said so). When none is found the column is NaN and a warning says how to fill it.

The model's blessing state (serving/blessing.py) goes into every row (`model_blessing`), the run record and
the manifest; a model that is not a blessed push is warned about.
"""
from __future__ import annotations

import json
import logging
import sys


def _csv(text):
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else None


def parse_constraints(text):
    out = []
    for item in _csv(text) or ("default",):
        if item == "default":
            out.append((None, 1.0))
        else:
            lo, _, hi = item.partition(":")
            out.append((None if lo in ("", "default") else float(lo), float(hi) if hi else 1.0))
    return tuple(out)


def add_parser(parser) -> None:
    parser.add_argument("--source", help="directory or file of raw bars (default: data.source of --config)")
    parser.add_argument("--model", required=True, help="pushed model: <serving_dir>/<model_name> (latest "
                                                       "version) or one version directory")
    parser.add_argument("--output", required=True, help="Parquet dataset root (date=/asset= partitions)")
    parser.add_argument("--start", required=True, help="first date (YYYY-MM-DD, UTC) of the orders' first bar")
    parser.add_argument("--end", required=True, help="last date (inclusive)")
    parser.add_argument("--assets", help="comma-separated symbols (default: every asset in the source)")
    parser.add_argument("--frequencies", help="bar lengths in minutes, comma-separated (default: from --config, "
                                              "else 15)")
    parser.add_argument("--stride", type=int, default=1, help="bars between consecutive order origins (default 1)")
    parser.add_argument("--heads", help="minimum periods (1..N) and/or 'match', comma-separated (default: all)")
    parser.add_argument("--paths", help="comma-separated of buy_vwap,buy_twap,sell_vwap,sell_twap (default: all)")
    parser.add_argument("--targets", help="volume,notional (default: both)")
    parser.add_argument("--constraints", help="order constraints 'min_rate:max_rate' (fractions per bar), "
                                              "comma-separated; 'default' = 1/N^2:1 (default)")
    parser.add_argument("--input-patterns", help="globs (relative to --source) selecting files")
    parser.add_argument("--bad-rows", choices=("error", "drop"), default="error")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per model call")
    parser.add_argument("--log-every", type=int, default=10_000, help="progress line every N windows per worker")
    parser.add_argument("--remove-absent", action="store_true",
                        help="also remove committed partitions of the range (and --assets) that this run does not "
                             "produce, e.g. of assets no longer in the source (default: keep them)")
    parser.add_argument("--config", help="pipeline config: defaults for --source, --frequencies, Beam args")
    parser.add_argument("--beam-args", help="Beam pipeline arguments as one string (default: the config's "
                                            "beam_pipeline_args, else DirectRunner in memory)")
    parser.add_argument("--vwap-curve-profile", metavar="FILE",
                        help="vwap_curve_profile.json of the run that trained the model (VwapCurveBaseline output), "
                             "for vwap_curve_slippage_bps (default: found from the run, see above)")
    parser.add_argument("--run", metavar="ROOT", help="root of the run that trained the model (holding "
                                                      "metadata.sqlite), to find its VWAP-curve profile")


def find_vwap_curve_profile(model_dir: str, *, explicit=None, run_root=None, config=None):
    """(path or None, how it was found) of the VWAP-curve profile for the model version `model_dir` (see the
    module docstring for the order)."""
    import os

    from lems_cli.errors import CliError
    if explicit:
        if not os.path.isfile(explicit):
            raise CliError(f"--vwap-curve-profile: {explicit} does not exist")
        return explicit, "given by --vwap-curve-profile"
    from serving.blessing import read_marker
    try:
        marker = read_marker(model_dir) or {}
    except ValueError:
        marker = {}
    if marker.get("vwap_curve_profile") and os.path.isfile(marker["vwap_curve_profile"]):
        return marker["vwap_curve_profile"], f"recorded by `lems push` from run {marker.get('run_id')}"
    from lems_cli.runs import find_metadata, load_run, profile_for_pushed_version
    if config is not None:
        metadata = os.path.abspath(config.metadata_sqlite) if os.path.isfile(config.metadata_sqlite) else None
    elif run_root:
        metadata = find_metadata(run_root)
    else:   # from the serving directory <serving_dir>/<model_name> of a version, as `lems serve` looks
        version_dir = os.path.basename(os.path.normpath(model_dir)).isdigit()
        metadata = find_metadata(os.path.dirname(os.path.normpath(model_dir)) if version_dir else model_dir)
    if metadata is None:
        return None, "no pipeline run found (no metadata.sqlite near the model; pass --run ROOT)"
    path = profile_for_pushed_version(metadata, model_dir)
    if path:
        return path, f"the run that pushed {model_dir} ({metadata})"
    if config is not None or run_root:
        info = load_run(metadata, config.pipeline_name if config is not None else None)
        if info is not None and info.vwap_curve_profile:
            return info.vwap_curve_profile, (f"the latest {info.describe()}: {model_dir} is not among its pushes, "
                                             f"so the profile is that run's")
    return None, f"{metadata} records no push of {model_dir} (pass --run ROOT or --vwap-curve-profile FILE)"


def run(args) -> int:
    import shlex

    from backfill.beam_pipeline import EmptySelectionError, run_backfill
    from backfill.spec import BackfillSpec
    from lem_model import layout

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("backfill").setLevel(logging.INFO)
    from backfill.spec import resolve_model_dir
    from lems_cli.errors import CliError, load_config
    config = load_config(args.config) if args.config else None
    source = args.source or (config.data.source if config else None)
    if not source:
        raise CliError("lems backfill: --source (or --config with data.source) is required")
    try:
        model_dir, _ = resolve_model_dir(args.model)
    except FileNotFoundError as e:
        raise CliError(f"lems backfill: --model: {e}") from e
    profile, how = find_vwap_curve_profile(model_dir, explicit=args.vwap_curve_profile, run_root=args.run,
                                           config=config)
    if profile:
        print(f"lems backfill: vwap_curve_slippage_bps from {profile} ({how})", file=sys.stderr, flush=True)
    else:
        print(f"lems backfill: warning: vwap_curve_slippage_bps will be NaN: {how}", file=sys.stderr, flush=True)
    freqs = _csv(args.frequencies) or (tuple(config.data.frequencies) if config else ("15",))
    beam_args = shlex.split(args.beam_args) if args.beam_args is not None else (
        list(config.beam_pipeline_args) if config else [])
    spec = BackfillSpec(
        source=source, model_dir=args.model, output_dir=args.output, start_date=args.start, end_date=args.end,
        assets=_csv(args.assets), frequencies=tuple(int(f) for f in freqs), stride=args.stride,
        heads=_csv(args.heads), paths=_csv(args.paths) or layout.PATHS, targets=_csv(args.targets) or layout.TARGETS,
        constraints=parse_constraints(args.constraints), input_patterns=_csv(args.input_patterns) or ("*",),
        bad_rows=args.bad_rows, batch_size=args.batch_size, log_every=args.log_every)
    try:
        record = run_backfill(spec, beam_args, remove_absent=args.remove_absent, vwap_curve_profile=profile)
    except EmptySelectionError as e:  # nothing to write: say why, exit non-zero, leave the output untouched
        print(f"lems backfill: {e}", file=sys.stderr)
        print(json.dumps({"error": "empty selection", "counts": e.counts}, indent=2))
        return 1
    if record["model_blessing"] != "blessed":
        print(f"lems backfill: WARNING: the model is {record['model_blessing'].upper()} "
              f"({record['model_blessing_reason']}); every row says model_blessing={record['model_blessing']}",
              file=sys.stderr, flush=True)
    print(json.dumps({k: record[k] for k in ("run_id", "model_version", "model_blessing", "vwap_curve_profile",
                                             "windows", "rows", "partitions_written", "beam_seconds", "counters",
                                             "partitions")}, indent=2))
    return 0
