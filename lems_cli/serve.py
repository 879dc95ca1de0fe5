"""`lems serve`: the development PredictionService server over the Pusher's directory (serving/server.py), which
loads versions as TF Serving does (session + SignatureDef tensor names) and replays their warm-up file first.

For development and tests only; production runs `tensorflow_model_server` (serving/README.md).
"""
import logging
import os
import signal
import threading


def add_parser(parser):
    parser.add_argument("--model-base-path", default=None,
                        help="directory holding <version>/saved_model.pb (the Pusher's <serving_dir>/<model_name>); "
                             "default: from --config, else ./runs/serving/<model-name>")
    parser.add_argument("--model-name", default=None, help="served model name (default: from --config, else 'lem')")
    parser.add_argument("--config", default=None, help="pipeline config (YAML/JSON) to read serving_dir/model_name from")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500, as tensorflow_model_server)")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="how often to look for a new version")
    parser.add_argument("--max-workers", type=int, default=8, help="gRPC worker threads")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="most orders per request (default: the server's, 4096; capped to what fits in the "
                             "64 MiB message limit)")


def run(args):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base, name = args.model_base_path, args.model_name
    if args.config:
        from pipeline.configs import PipelineConfig
        config = PipelineConfig.from_file(args.config)
        name = name or config.serving.model_name
        base = base or os.path.join(config.serving.serving_dir, name)
    name = name or "lem"
    base = base or os.path.join("runs", "serving", name)

    from serving.server import DevServer
    extra = {} if args.max_batch is None else {"max_batch": args.max_batch}
    server = DevServer(base, name, host=args.host, port=args.port, poll_seconds=args.poll_seconds,
                       max_workers=args.max_workers, **extra)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"lems serve: model {name!r} from {os.path.abspath(base)} on {server.address} "
          f"(DEVELOPMENT server; production: tensorflow_model_server, see serving/README.md)", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        print("lems serve: stopped", flush=True)
    return 0
