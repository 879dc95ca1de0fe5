"""Worker that times the REFERENCE data preparation `lems.data_formater.full_generate` (lems 0.1.1, CC BY-NC-SA
4.0) on one asset's bars, for ingest_throughput.py. Runs ONLY under benchmarks/.venv-ref/bin/python.

It reads the (asset, frequency) bars from a Parquet file of /work/shared/data's schema, builds the one-column
volume and notional DataFrames `full_generate` takes (as in the reference README), and times the call
(`lookback`, `n_ahead`, `freq_min` = the bar length, so its resample is a no-op regrid; split by date).
Usage: benchmarks/.venv-ref/bin/python -m benchmarks.reference_ingest_driver PARQUET ASSET FREQ [--lookback 120]
       [--n-ahead 12] [--split-date 2022-01-01]
"""
import argparse
import resource
import time

from benchmarks._common import emit


def main():
    p = argparse.ArgumentParser()
    p.add_argument("parquet")
    p.add_argument("asset")
    p.add_argument("frequency", help="e.g. 15m")
    p.add_argument("--lookback", type=int, default=120)
    p.add_argument("--n-ahead", type=int, default=12)
    p.add_argument("--split-date", default="2022-01-01")
    a = p.parse_args()
    import pandas as pd
    from lems.data_formater import full_generate

    t0 = time.perf_counter()
    df = pd.read_parquet(a.parquet, columns=["timestamp", "asset", "frequency", "volume", "quote_volume"],
                         filters=[("asset", "==", a.asset), ("frequency", "==", a.frequency)])
    df = df.set_index("timestamp").sort_index()
    volumes = df[["volume"]].rename(columns={"volume": a.asset})
    notionals = df[["quote_volume"]].rename(columns={"quote_volume": a.asset})
    read_s = time.perf_counter() - t0
    freq_min = int(pd.Timedelta(a.frequency.replace("m", "min")).total_seconds() // 60)
    t0 = time.perf_counter()
    x_tr, x_te, y_tr, y_te, dates = full_generate(volumes, notionals, a.asset, lookback=a.lookback,
                                                  n_ahead=a.n_ahead, split_date=a.split_date, freq_min=freq_min)
    gen_s = time.perf_counter() - t0
    n = len(x_tr) + len(x_te)
    emit({"impl": "reference full_generate", "bars": len(df), "examples": n, "read_s": read_s,
          "generate_s": gen_s, "examples_per_s": n / gen_s,
          "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "x_shape": list(x_tr.shape), "y_shape": list(y_tr.shape)})


if __name__ == "__main__":
    main()
