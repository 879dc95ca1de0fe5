"""`lems backtest --config FILE`: the walk-forward backtest (walkforward/): one pipeline run per fold, resumable,
then the per-fold and pooled figures with intervals (JSON, Markdown, plot). The test and final periods run only
when named (`--periods test`, `--periods final`), each scored once."""
from __future__ import annotations

import sys


def add_parser(parser):
    parser.add_argument("--config", help="backtest configuration: a pipeline config with a `backtest` section "
                                         "(walkforward/config.py; e.g. benchmarks/backtest/crypto.yaml)")
    parser.add_argument("--periods", default="folds",
                        help="comma-separated: folds (default), test, final. The final period is read once, "
                             "when the configuration is final")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one field of the pipeline part of the config, as `lems run --set`")
    parser.add_argument("--compile-kubeflow", metavar="DIR",
                        help="instead of running: write one Kubeflow Pipelines spec per period into DIR "
                             "(submit them together; kubeflow/README.md)")
    parser.add_argument("--image", help="with --compile-kubeflow: the pipeline image (default: kubeflow.image)")
    parser.add_argument("--allow-local", action="store_true",
                        help="with --compile-kubeflow: compile although the image is unqualified, Beam runs "
                             "DirectRunner or paths are local (`lems compile-kubeflow --allow-local`)")
    parser.add_argument("--render", metavar="JSON", help="rewrite the Markdown and plot of a written backtest JSON")


def run(args) -> int:
    if args.render:
        from walkforward import report
        for path in report.render(args.render):
            print(path)
        return 0
    import yaml

    from lems_cli.errors import CliError, one_line
    if not args.config:
        raise CliError("lems backtest: --config FILE is required (or --render JSON)")
    from walkforward import config as wf_config
    kinds = tuple(k.strip() for k in args.periods.split(",") if k.strip())
    try:  # every period's configuration checked before anything runs
        pipeline, backtest = wf_config.load(args.config, args.set)
        periods = wf_config.periods(backtest, kinds)
        for period in periods:
            wf_config.period_config(pipeline, backtest, period)
    except (ValueError, TypeError, FileNotFoundError, yaml.YAMLError) as e:
        message = one_line(e)
        raise CliError(message if args.config in message else f"{args.config}: {message}") from e
    from walkforward import runner
    if args.compile_kubeflow:
        if not args.allow_local:   # every period's spec checked for submission before anything is written
            from kubeflow.runner import SubmissionError, check_submittable
            for period in periods:
                config = wf_config.period_config(pipeline, backtest, period)
                try:
                    check_submittable(config.replace(kubeflow={"image": args.image}) if args.image else config)
                except SubmissionError as e:
                    raise CliError(f"{period.label}: {e}") from e
        runner.compile_kubeflow(pipeline, backtest, kinds, args.compile_kubeflow, image=args.image)
        return 0
    print(f"[backtest] {backtest.name}: {len(periods)} period(s): " + ", ".join(p.label for p in periods), flush=True)
    result = runner.run(pipeline, backtest, kinds, config_file=args.config,
                        command="lems backtest " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["backtest"] else sys.argv[1:]))
    for p in [*result["folds"], *(result[k] for k in ("pooled", "test", "final") if result.get(k))]:
        overall = p.get("slices", {}).get("overall", {}).get("match_vwap_std_ratio") or {}
        name = p.get("name", "pooled")
        print(f"[backtest] {name:8s} overall match-VWAP std / TWAP std {overall.get('value', float('nan')):.3f} "
              f"[{overall.get('lo') or float('nan'):.3f}, {overall.get('hi') or float('nan'):.3f}]  "
              f"{'BLESSED' if p.get('gate', {}).get('blessed') else 'NOT BLESSED'}")
    return 0
