"""`lems predict`: the remaining schedule of one order from a PredictionService (TF Serving or `lems serve`).

Bars come from a CSV or Parquet file with columns timestamp (bar open: Unix seconds or a date-time, UTC),
volume, quote_volume (and optionally asset, to filter). Re-plan after each bar by running it again with the
new bars, `--start-time` = the first plan's origin time and `--executed` = the quantity filled so far.
"""
import json
import sys

import numpy as np


def add_parser(parser):
    parser.add_argument("--server", default="localhost:8500", help="gRPC host:port (default localhost:8500)")
    parser.add_argument("--model-name", default="lem")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per gRPC call")
    parser.add_argument("--bars", required=True, help="CSV or Parquet of realized bars (timestamp, volume, quote_volume)")
    parser.add_argument("--asset", default="", help="symbol; keeps only its rows when the file has an 'asset' column")
    parser.add_argument("--frequency", type=int, required=True, help="bar length in minutes")
    parser.add_argument("--side", choices=["buy", "sell"], required=True)
    parser.add_argument("--target", choices=["volume", "notional"], default="volume",
                        help="size in shares/coins (volume) or quote currency (notional)")
    parser.add_argument("--size", type=float, required=True, help="order size in target units")
    parser.add_argument("--benchmark", choices=["vwap", "twap"], default="vwap")
    parser.add_argument("--min-duration", type=int, default=1, help="T_min in bars")
    parser.add_argument("--max-duration", type=int, default=None, help="T_max in bars (default N)")
    parser.add_argument("--min-rate", type=float, default=None, help="min fraction of the order per bar (default 1/N^2)")
    parser.add_argument("--max-rate", type=float, default=None, help="max fraction of the order per bar (default 1)")
    parser.add_argument("--objective", choices=["auto", "beat", "match"], default="auto")
    parser.add_argument("--start-time", default=None,
                        help="open time of the order's first execution bar (Unix s or ISO); default: a new order "
                             "starting after the last bar")
    parser.add_argument("--executed", type=float, default=0.0, help="quantity already executed (target units)")
    parser.add_argument("--json", action="store_true", help="print the schedule as JSON")


def _unix_seconds(values) -> np.ndarray:
    import pandas as pd
    s = pd.Series(values)
    if pd.api.types.is_integer_dtype(s):
        return s.to_numpy(np.int64)
    return (pd.to_datetime(s, utc=True).astype("int64") // 10**9).to_numpy(np.int64)


def read_bars(path: str, asset: str = "") -> dict:
    import pandas as pd
    frame = pd.read_parquet(path) if path.endswith((".parquet", ".pq")) else pd.read_csv(path)
    missing = [c for c in ("timestamp", "volume", "quote_volume") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    if asset and "asset" in frame.columns:
        frame = frame[frame["asset"].astype(str) == asset]
        if frame.empty:
            raise ValueError(f"{path}: no rows for asset {asset!r}")
    frame = frame.sort_values("timestamp")
    return {"timestamp": _unix_seconds(frame["timestamp"]), "volume": frame["volume"].to_numpy(np.float64),
            "quote_volume": frame["quote_volume"].to_numpy(np.float64)}


def run(args):
    import grpc

    from serving.client import LemClient
    from serving.scheduling import Order

    start = None
    if args.start_time is not None:
        start = int(args.start_time) if args.start_time.lstrip("-").isdigit() else int(_unix_seconds([args.start_time])[0])
    try:
        bars = read_bars(args.bars, args.asset)
        order = Order(side=args.side, target=args.target, size=args.size, benchmark=args.benchmark,
                      min_duration=args.min_duration, max_duration=args.max_duration, min_rate=args.min_rate,
                      max_rate=args.max_rate, asset=args.asset, frequency_minutes=args.frequency,
                      start_time=start, objective=args.objective)
        with LemClient(args.server, args.model_name, timeout=args.timeout) as client:
            plan = client.plan(order, bars, executed=args.executed)
    except (ValueError, OSError) as exc:
        print(f"lems predict: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"lems predict: server {args.server}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    import pandas as pd
    d = plan.to_dict()
    sc = d["scenario"]
    print(f"order {args.side} {args.size:g} {plan.units} vs {args.benchmark.upper()} on {args.asset or '?'} "
          f"({args.frequency} min bars); model version {plan.model_version}; scenario m={sc['min_period_index']} "
          f"{sc['path']}/{sc['target']}")
    print(f"origin {pd.Timestamp(plan.origin_time, unit='s', tz='UTC')}  elapsed {plan.elapsed} bars  executed "
          f"{plan.executed:g}  remaining {plan.remaining:g}")
    print(f"{'step':>4}  {'bar open (UTC)':<25} {'quantity':>16}")
    for row in d["schedule"]:
        print(f"{row['step']:>4}  {str(pd.Timestamp(row['time'], unit='s', tz='UTC')):<25} {row['quantity']:>16.6f}")
    if plan.completion_step is None:
        print("nothing left to trade")
    else:
        print(f"expected completion: step {plan.completion_step} "
              f"({pd.Timestamp(plan.completion_time, unit='s', tz='UTC')})")
    for w in plan.warnings:
        print(f"warning: {w}")
    return 0
