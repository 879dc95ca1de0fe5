"""`lems serve`: the development PredictionService server over the Pusher's directory (serving/server.py), which
loads versions as TF Serving does (session + SignatureDef tensor names) and replays their warm-up file first.

Besides gRPC PredictionService (port 8500 by default) it answers ModelService.GetModelStatus and the gRPC
health check; `--rest-port 8501` adds TF Serving's REST API (`/v1/models/NAME`, `/v1/models/NAME:predict`) and
`--metrics` the Prometheus metrics on that port (`/monitoring/prometheus/metrics`, TF Serving's path).

An empty model base path (no `<version>/saved_model.pb`) is explained and the command exits with status 1:
what the last pipeline run decided (found from `--config`, `--run`, or the `metadata.sqlite` near the base
path), where its trained model is, and how to serve it anyway (`lems push --unblessed`). `--wait` keeps the
server up, polling for a version, and says so.

For development and tests only; production runs `tensorflow_model_server` (serving/README.md).
"""
import logging
import os
import signal
import sys
import threading


def add_parser(parser):
    parser.add_argument("--model-base-path", default=None,
                        help="directory holding <version>/saved_model.pb (the Pusher's <serving_dir>/<model_name>); "
                             "default: from --config, else ./runs/serving/<model-name>")
    parser.add_argument("--model-name", default=None, help="served model name (default: from --config, else 'lem')")
    parser.add_argument("--config", default=None, help="pipeline config (YAML/JSON) to read serving_dir/model_name from")
    parser.add_argument("--run", metavar="ROOT", default=None,
                        help="root of the pipeline run whose verdict explains an empty base path (default: the "
                             "config's, else found near the base path)")
    parser.add_argument("--wait", action="store_true",
                        help="with no version under the base path yet, keep serving and poll for one (default: "
                             "explain why it is empty and exit 1)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500, as tensorflow_model_server)")
    parser.add_argument("--rest-port", type=int, default=None,
                        help="also serve TF Serving's REST API on this port (TF Serving's is 8501; 0 = any free "
                             "port; default: off)")
    parser.add_argument("--metrics", action="store_true",
                        help="Prometheus metrics (request count by status, latency histogram, served version) on "
                             "the REST port at --metrics-path (needs --rest-port)")
    parser.add_argument("--metrics-path", default=None,
                        help="path of the metrics (default /monitoring/prometheus/metrics, TF Serving's)")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="how often to look for a new version")
    parser.add_argument("--max-workers", type=int, default=8, help="gRPC worker threads")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="most orders per request (default: the server's, 4096; capped to what fits in the "
                             "64 MiB message limit)")


def has_versions(base: str) -> bool:
    """Whether `base` holds a `<version>/saved_model.pb` (what the server can load)."""
    try:
        names = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(n.isdigit() and os.path.isfile(os.path.join(base, n, "saved_model.pb")) for n in names)


def explain_empty(base: str, *, config=None, run_root=None) -> list:
    """Lines saying why `base` has no version to serve and what to do, from the last pipeline run found."""
    from lems_cli.runs import find_metadata, load_run
    base = os.path.abspath(base)
    where = "does not exist" if not os.path.exists(base) else "holds no <version>/saved_model.pb"
    lines = [f"lems serve: nothing to serve: {base} {where}."]
    metadata = None
    if config is not None and os.path.isfile(config.metadata_sqlite):
        metadata = os.path.abspath(config.metadata_sqlite)
    elif run_root:
        metadata = find_metadata(run_root)
    elif config is None:
        metadata = find_metadata(base)
    info = None
    if metadata:
        try:
            info = load_run(metadata, config.pipeline_name if config is not None else None)
        except Exception as exc:  # noqa: BLE001 -- the explanation must not hide the message itself
            lines.append(f"  (could not read the pipeline run in {metadata}: {exc})")
    if info is None:
        lines.append("  No pipeline run was found for it (no metadata.sqlite at or near it): the Pusher writes "
                     "<serving_dir>/<model_name>/<version>/ at the end of a BLESSED run; run the pipeline first "
                     "(`lems demo`, or `lems run --config FILE`), or name the run with --run ROOT / --config FILE.")
    else:
        lines.append(f"  The last run ({info.describe()}) was {info.verdict()}.")
        if info.push_destination and os.path.abspath(info.push_destination) != base:
            lines.append(f"  (That run's Pusher writes to {os.path.abspath(info.push_destination)}, not here: pass "
                         f"--run ROOT or --config FILE if it is not the run you mean.)")
        pushed = info.summary.pushed_model_dir
        if pushed and os.path.abspath(os.path.dirname(pushed)) != base:
            lines.append(f"  It pushed elsewhere: lems serve --model-base-path {os.path.dirname(pushed)}")
        elif not pushed and info.trained_model:
            lines.append(f"  Its trained model: {info.trained_model}")
            lines.append(f"  To serve it anyway (development only; it is marked UNBLESSED and the server warns): "
                         f"lems push --unblessed --run {info.root} --model-base-path {base}, then run this "
                         f"command again.")
        elif not pushed:
            lines.append("  It left no trained model to push; fix the failure and run the pipeline again.")
    lines.append("  To keep the server up and wait for a version instead: add --wait.")
    return lines


def run(args):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lems.serving").setLevel(logging.INFO)   # version loads, swaps and warnings, by default
    config = None
    base, name = args.model_base_path, args.model_name
    if args.config:
        from lems_cli.errors import load_config
        config = load_config(args.config)
        name = name or config.serving.model_name
        base = base or os.path.join(config.serving.serving_dir, name)
    name = name or "lem"
    base = base or os.path.join("runs", "serving", name)
    from lems_cli.errors import CliError
    if args.metrics and args.rest_port is None:
        raise CliError("lems serve: --metrics serves the metrics on the REST port: add --rest-port PORT (TF "
                       "Serving's is 8501)")
    if not has_versions(base):
        lines = explain_empty(base, config=config, run_root=args.run)
        if not args.wait:
            print("\n".join(lines), file=sys.stderr, flush=True)
            return 1
        print("\n".join(lines[:-1]), file=sys.stderr)
        print(f"lems serve: --wait: serving with no model version yet; polling {os.path.abspath(base)} every "
              f"{args.poll_seconds:g} s (requests answer NOT_FOUND, health NOT_SERVING, until one is loaded)",
              file=sys.stderr, flush=True)

    from serving.metrics import DEFAULT_PATH
    from serving.server import DevServer
    extra = {} if args.max_batch is None else {"max_batch": args.max_batch}
    metrics_path = (args.metrics_path or DEFAULT_PATH) if args.metrics else None
    try:
        server = DevServer(base, name, host=args.host, port=args.port, poll_seconds=args.poll_seconds,
                           max_workers=args.max_workers, rest_port=args.rest_port, metrics_path=metrics_path, **extra)
    except ValueError as e:
        raise CliError(f"lems serve: {e}") from e
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except OSError as e:
        raise CliError(f"lems serve: {e}") from e
    rest = (f", REST http://{server.rest_address}" + (f" (metrics at {metrics_path})" if metrics_path else "")
            if server.rest_address else "")
    print(f"lems serve: model {name!r} from {os.path.abspath(base)} on {server.address} (gRPC){rest} "
          f"(DEVELOPMENT server; production: tensorflow_model_server, see serving/README.md)", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        print("lems serve: stopped", flush=True)
    return 0
