"""OUR LEM against the reference `lems==0.1.1`, as published and made causal, trained and evaluated on ONE
stated common subset: the same training windows, sizes, epochs, batch and learning rate for all three, the same
test orders, OUR one evaluator.

    .venv/bin/python benchmarks/reference_compare.py --pipeline-root runs/reproduce-crypto/pipeline_root \
        --frequency 15 --train-windows 4096 --test-windows 2048 --hidden 32 --embedding 8 --heads 4 --fused 32 \
        --epochs 12 --batch 256 --lr 1e-3

1. Subset: the raw windows of a finished run's ExampleGen output (`<root>/MarketDataExampleGen/examples/<newest
   id>/Split-<train|test>`, read by `components.report.component.read_raw_examples`; W, L, N from its
   `ingestion_report.json`) at `--frequency`, all assets pooled (neither model has an asset input). Windows the
   reference's data preparation would reject (zero volume sums: `reference_valid`) are left out first; then
   `select_windows` orders them by first execution bar (then asset) and keeps K evenly spaced ones
   (deterministic). Written to `<work-dir>/subset.npz` (`--subset` reuses one). `--score-split eval` scores the
   eval split's windows instead of the test split's (they fill the subset's `test_*` slots), to choose settings
   without reading test; `--ours-input-clip` / `--ours-volume-clip` build ours with those model bounds.
2. Ours: benchmarks/reference_compare_ours.py in the project venv (lem_model only: the feature builder, build_lem,
   compile_lem; min rate 1/N^2, max rate 1). The paper's objective, as the reference trains, unless
   `--fixed-horizon-risk` (the committed crypto config's loss: the risk term on the minimum-period-N head too).
3. Reference: benchmarks/reference_compare_driver.py in benchmarks/.venv-ref (setup_reference_venv.sh), once
   `--variant published` and once `--variant causal` (its docstring: how X and y are built with the package's
   own data preparation, and the one-bar shift). Each worker also runs a perturbation check (move execution bar
   o+k, compare the allocations of steps <= k).
4. Evaluation, here: labels of the test windows from `build_features_numpy`, slippage of every head by
   `lem_model.slippage.evaluate_allocations`, TWAP (volume) by `order_slippage.baseline_slippage`, 95 % intervals
   by `lem_model.bootstrap` (blocks = UTC day of the first execution bar, 1000 replicates): per implementation
   the match-VWAP std ratio vs TWAP (volume) per side (and the max over sides, the blessing statistic), BUY/SELL
   mean (VWAP benchmark, volume target) at minimum period 1 and N; and paired comparisons ours vs each
   reference variant: the match-VWAP std ratio, the signed mean difference at minimum period 1 and the std ratio
   at minimum period N, per side (`ahead_figures`: which of them ours wins with its interval).
Output: `--output` JSON (default benchmarks/results/reference-compare.json): `subset` (source, windows, dates,
frequency, W/L/N, what was left out), `model`, `training`, `implementations.<name>` (parameters, train seconds,
samples/s, loss per epoch, the perturbation check, `match_vwap_vs_twap_volume`, `mean_bps`), `baseline`,
`pairs`, commit, date, machine, command; and a table on stdout.

All workers get the same pinned TensorFlow threads (`_common.pinned_env`) and no XLA; train seconds are
`model.fit` only (no data preparation or model build; the first step's tracing is included, which dominates
runs of one epoch), samples/s = train windows x epochs / train seconds. Sizes differ by design of the two
implementations at the same hyperparameters: the reference stacks two TKAN layers (`hidden_rnn_layer=2`, its
default) and one fused MLP per step; the JSON has both parameter counts.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)
from _common import OURS_PYTHON, REF_PYTHON, format_table, git_commit, latest_artifact, machine_info, pinned_env, run_worker  # noqa: E402

IMPLEMENTATIONS = ("ours", "reference_published", "reference_causal")
DEFAULT_OUTPUT = os.path.join(BENCH_DIR, "results", "reference-compare.json")
RAW_FIELDS = ("volume", "quote_volume", "timestamp", "frequency_minutes", "asset")


# ------------------------------------------------------------------------------------------- subset
def window_sizes(examples_dir: str) -> dict:
    """W, L, N of the run, from the ExampleGen's ingestion_report.json."""
    with open(os.path.join(examples_dir, "ingestion_report.json"), encoding="utf-8") as f:
        config = json.load(f)["config"]
    return {k: int(config[k]) for k in ("norm_window", "lookback", "n_ahead")}


def reference_valid(volume, quote_volume, *, norm_window: int, lookback: int, n_ahead: int) -> np.ndarray:
    """[B] bool: windows the reference's `prepare_data_with_ahead_inputs` keeps in both variants (a volume sum
    > 0 over bars 0..o-3, over the lookback and over the execution bars; a priced bar before o)."""
    v = np.nan_to_num(np.asarray(volume, np.float64), nan=0.0, posinf=0.0).clip(0.0, None)
    q = np.nan_to_num(np.asarray(quote_volume, np.float64), nan=0.0, posinf=0.0).clip(0.0, None)
    o = norm_window + lookback
    return ((v[:, :o - 2].sum(1) > 0) & (v[:, o - lookback:o].sum(1) > 0) & (v[:, o:o + n_ahead].sum(1) > 0)
            & ((v[:, :o] > 0) & (q[:, :o] > 0)).any(1))


def select_windows(first_bar, asset, frequency_minutes, frequency: int, k: int | None, keep=None) -> np.ndarray:
    """Indices of `k` windows at `frequency`, evenly spaced over the windows ordered by first execution bar
    (seconds) then asset, in that order; all of them when k is None/0 or not smaller. `keep`: [B] bool filter."""
    first_bar, asset = np.asarray(first_bar).reshape(-1), np.asarray(asset).reshape(-1)
    ok = np.asarray(frequency_minutes).reshape(-1) == frequency
    if keep is not None:
        ok &= np.asarray(keep, bool)
    idx = np.flatnonzero(ok)
    idx = idx[np.lexsort((asset[idx], first_bar[idx]))]
    if k and k < len(idx):
        idx = idx[np.unique(np.round(np.linspace(0, len(idx) - 1, k)).astype(np.int64))]
    return idx


def _date(seconds) -> str:
    return np.datetime_as_string(np.datetime64(int(seconds), "s"), unit="m")


def build_subset(pipeline_root: str, frequency: int, train_windows: int, test_windows: int, path: str,
                 score_split: str = "test") -> dict:
    """Read the train split and the scored split (`score_split`: "test", or "eval" to choose settings without
    reading test; its windows fill the subset's `test_*` slots), select the subset, write it to `path` (.npz);
    returns its definition."""
    from components.report.component import read_raw_examples
    examples = latest_artifact(pipeline_root, "MarketDataExampleGen", "examples")
    sizes = window_sizes(examples)
    o = sizes["norm_window"] + sizes["lookback"]
    arrays, definition = {}, {"examples": os.path.relpath(examples, ROOT), "frequency_minutes": frequency,
                              "selection": "windows the reference keeps, ordered by first execution bar then asset, "
                                           "K evenly spaced (np.linspace, rounded)", "scored_split": score_split,
                              **sizes}
    for split, k in (("train", train_windows), ("test", test_windows)):
        raw = read_raw_examples(os.path.join(examples, f"Split-{score_split if split == 'test' else 'train'}"))
        at_freq = raw["frequency_minutes"] == frequency
        valid = reference_valid(raw["volume"], raw["quote_volume"], **sizes)
        idx = select_windows(raw["timestamp"][:, o], raw["asset"], raw["frequency_minutes"], frequency, k, valid)
        if len(idx) == 0:
            raise ValueError(f"no {split} windows at {frequency} minutes under {examples}")
        arrays.update({f"{split}_{f}": raw[f][idx] for f in RAW_FIELDS})
        definition[split] = describe_split(raw["timestamp"][idx], raw["asset"][idx], o)
        definition[split].update(available=int(at_freq.sum()), left_out_invalid=int((at_freq & ~valid).sum()))
    write_subset(path, arrays, sizes)
    return definition


def describe_split(timestamp, asset, origin: int) -> dict:
    first = np.asarray(timestamp)[:, origin]
    return {"windows": int(len(first)), "first_execution_bar": _date(first.min()),
            "last_execution_bar": _date(first.max()), "days": int(len(np.unique(first // 86_400))),
            "per_asset": {str(a): int((np.asarray(asset) == a).sum()) for a in sorted(set(np.asarray(asset)))}}


def write_subset(path: str, arrays: dict, sizes: dict) -> None:
    """The subset file the workers read: `<split>_<field>` arrays plus the sizes."""
    np.savez_compressed(path, **{k: (v.astype("U") if k.endswith("_asset") else v) for k, v in arrays.items()},
                        **{k: np.int64(v) for k, v in sizes.items()})


def load_subset(path: str) -> dict:
    z = np.load(path, allow_pickle=False)
    return {k: z[k] for k in z.files}


# ------------------------------------------------------------------------------------------- evaluation
def evaluate(subset: dict, allocations: dict, n_boot: int = 1000) -> dict:
    """Our one evaluator on the test windows for each implementation (name -> allocations [B, N, N+1, 4, 2]),
    with block-bootstrap intervals; plus ours vs each other implementation. Returns {"baseline", "impls",
    "pairs"}."""
    from components.evaluator.order_slippage import baseline_slippage
    from lem_model import bootstrap, layout, slippage
    from lem_model.features import build_features_numpy
    w, lookback, n = (int(subset[k]) for k in ("norm_window", "lookback", "n_ahead"))
    labels = build_features_numpy(subset["test_volume"], subset["test_quote_volume"], subset["test_timestamp"],
                                  subset["test_frequency_minutes"], norm_window=w, lookback=lookback,
                                  n_ahead=n)["labels"]
    blocks = bootstrap.day_blocks(subset["test_timestamp"][:, w + lookback])
    twap = baseline_slippage(labels)["twap_volume_vs_vwap"]
    t = layout.target_index("volume")
    head = lambda bps, m, side: bps[:, m, layout.path_index(side, "vwap"), t]  # noqa: E731
    bps = {name: slippage.evaluate_allocations(a, labels) for name, a in allocations.items()}
    out = {"baseline": {"twap_volume_vs_vwap": bootstrap.sample_statistics(twap, blocks, n_boot=n_boot)},
           "impls": {}, "pairs": {}}
    for name, b in bps.items():
        ratio = {side: bootstrap.compare(head(b, n, side), twap, blocks, n_boot=n_boot) for side in layout.SIDES}
        worst = max(layout.SIDES, key=lambda s: ratio[s]["std_ratio"])
        means = {f"{side}_min{mp}": bootstrap.sample_statistics(head(b, mp - 1, side), blocks, n_boot=n_boot)
                 for side in layout.SIDES for mp in (1, n)}
        out["impls"][name] = {"match_vwap_vs_twap_volume": {**ratio, "max_side": worst,
                                                            "max": ratio[worst]["std_ratio"],
                                                            "max_lo": ratio[worst]["std_ratio_lo"],
                                                            "max_hi": ratio[worst]["std_ratio_hi"]},
                              "mean_bps": means}
    if "ours" in bps:
        for name in bps:
            if name == "ours":
                continue
            pair = lambda m, side, **kw: bootstrap.compare(  # noqa: E731
                head(bps["ours"], m, side), head(bps[name], m, side), blocks, n_boot=n_boot, **kw)
            out["pairs"][f"ours_vs_{name}"] = {
                **{side: pair(n, side) for side in layout.SIDES},
                # signed per-order difference ours - theirs at minimum period 1 (BUY ahead below 0, SELL above)
                # and the std ratio ours / theirs at minimum period N: the other figures
                **{f"{side}_min1": pair(0, side, absolute=False) for side in layout.SIDES},
                **{f"{side}_min{n}": pair(n - 1, side) for side in layout.SIDES}}
    return out


def ahead_figures(pair: dict, n: int) -> list:
    """Ours against one other implementation on the issue's figures, each decided by its 95 % interval: the
    match-VWAP std (ratio ours / theirs below 1), the BUY mean at minimum period 1 (ours - theirs below 0), the
    SELL mean there (above 0) and the std at minimum period N (ratio below 1), per side. Returns
    [(figure, value, lo, hi, ahead)]."""
    rows = []
    for side in ("buy", "sell"):
        r = pair[side]
        rows.append((f"match-VWAP std ({side}), ours / theirs", r["std_ratio"], r["std_ratio_lo"],
                     r["std_ratio_hi"], r["std_ratio_hi"] < 1))
    for side in ("buy", "sell"):
        d = pair.get(f"{side}_min1")
        if d:
            ahead = d["diff_hi"] < 0 if side == "buy" else d["diff_lo"] > 0
            rows.append((f"{side.upper()} mean at min period 1, ours - theirs (bps)", d["diff_mean"], d["diff_lo"],
                         d["diff_hi"], ahead))
    for side in ("buy", "sell"):
        r = pair.get(f"{side}_min{n}")
        if r:
            rows.append((f"{side.upper()} std at min period N={n}, ours / theirs", r["std_ratio"],
                         r["std_ratio_lo"], r["std_ratio_hi"], r["std_ratio_hi"] < 1))
    return rows


def _ci(v, lo, hi) -> str:
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if abs(v) < 10 else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def summary_table(result: dict) -> str:
    n = result["subset"]["n_ahead"]
    rows = []
    for name, w in result["implementations"].items():
        r, m = w["match_vwap_vs_twap_volume"], w["mean_bps"]
        rows.append([name, _ci(r["max"], r["max_lo"], r["max_hi"]) + f" ({r['max_side']})",
                     *[_ci(m[k]["mean"], m[k]["mean_lo"], m[k]["mean_hi"])
                       for k in ("buy_min1", "sell_min1", f"buy_min{n}", f"sell_min{n}")],
                     f"{w['train_s']:.1f}", f"{w['samples_per_s']:.1f}",
                     "yes" if w["causality"]["causal"] else f"no (steps {w['causality']['steps_that_see_own_bar']})"])
    return format_table(["implementation", "match-VWAP std / TWAP vol", "BUY min1 bps", "SELL min1 bps",
                         f"BUY min{n} bps", f"SELL min{n} bps", "train s", "samples/s", "causal"], rows)


# ------------------------------------------------------------------------------------------- main
def page_targets(result: dict) -> list:
    """The results file's `targets`: ours against the reference made causal, buy match-VWAP std, per order on the
    same test windows (the evaluator's paired block bootstrap)."""
    pairs = result.get("pairs", {}).get("ours_vs_reference_causal", {})
    if not pairs.get("buy"):
        return []
    pair = pairs["buy"]
    value = [pair["std_ratio"], pair["std_ratio_lo"], pair["std_ratio_hi"]]
    ours = " (ours: fixed-horizon risk)" if result.get("training", {}).get("ours_fixed_horizon_risk") else ""
    targets = [{"target": f"common subset{ours}: ours / reference lems 0.1.1 made causal, match-VWAP std (buy)",
                "value": value, "goal": "< 1 with its interval", "met": bool(value[2] < 1), "page": True}]
    figures = ahead_figures(pairs, int(result["subset"]["n_ahead"]))
    if len(figures) > 2:
        targets += [{"target": f"common subset{ours} vs reference made causal: {name}", "value": [v, lo, hi],
                     "goal": "ahead with its interval", "met": bool(ok), "page": False}
                    for name, v, lo, hi, ok in figures]
        met = sum(ok for *_, ok in figures)
        targets.append({"target": f"common subset{ours}: ahead of the reference lems 0.1.1 made causal on every figure "
                                  "(match std, BUY/SELL min 1 mean, min N std; per side)",
                        "value": f"{met} of {len(figures)}", "goal": "all, each with its interval",
                        "met": met == len(figures), "page": True})
    return targets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pipeline-root", help="a finished run's pipeline root (its ExampleGen output is read)")
    p.add_argument("--subset", help="reuse this subset .npz instead of reading --pipeline-root")
    p.add_argument("--frequency", type=int, default=15, help="bar length in minutes of the subset")
    p.add_argument("--train-windows", type=int, default=4096, help="0 = all")
    p.add_argument("--test-windows", type=int, default=2048, help="0 = all")
    p.add_argument("--score-split", choices=("test", "eval"), default="test",
                   help="the split whose windows are scored (eval: to choose settings without reading test)")
    for name, default in [("hidden", 32), ("embedding", 8), ("heads", 4), ("fused", 32), ("epochs", 12),
                          ("batch", 256), ("threads", 2), ("seed", 0)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fixed-horizon-risk", action="store_true",
                   help="ours: the risk term on the minimum-period-N head too, as benchmarks/reproduce/crypto.yaml "
                        "trains (off: the paper's objective, the reference's)")
    p.add_argument("--ours-input-clip", type=float, help="ours: LargeExecutionModel(input_clip=) (default: the model's)")
    p.add_argument("--ours-volume-clip", type=float, help="ours: LargeExecutionModel(volume_clip=) (default: the model's)")
    p.add_argument("--ours-tilt-bound", type=float,
                   help="ours: LargeExecutionModel(tilt_bound=) (default: the model's, no bound)")
    p.add_argument("--impls", default=",".join(IMPLEMENTATIONS), help="comma-separated subset of " +
                   ", ".join(IMPLEMENTATIONS))
    p.add_argument("--work-dir", help="subset and allocations (default: a new temporary folder)")
    p.add_argument("--output", default=DEFAULT_OUTPUT)
    p.add_argument("--timeout", type=float, default=48 * 3600, help="seconds per worker")
    a = p.parse_args(argv)
    impls = [s.strip() for s in a.impls.split(",") if s.strip()]
    unknown = sorted(set(impls) - set(IMPLEMENTATIONS))
    if unknown or not impls:
        p.error(f"--impls: unknown {unknown}; choose from {IMPLEMENTATIONS}")
    if any(i.startswith("reference") for i in impls) and not os.path.exists(REF_PYTHON):
        p.error(f"{REF_PYTHON} is missing: run benchmarks/setup_reference_venv.sh first")
    work = a.work_dir or tempfile.mkdtemp(prefix="reference-compare-")
    os.makedirs(work, exist_ok=True)

    if a.subset:
        subset_path, definition = a.subset, {"subset_file": a.subset}
    elif a.pipeline_root:
        subset_path = os.path.join(work, "subset.npz")
        definition = build_subset(a.pipeline_root, a.frequency, a.train_windows, a.test_windows, subset_path,
                                  a.score_split)
    else:
        p.error("give --pipeline-root or --subset")
    subset = load_subset(subset_path)
    sizes = {k: int(subset[k]) for k in ("norm_window", "lookback", "n_ahead")}
    o = sizes["norm_window"] + sizes["lookback"]
    for split in ("train", "test"):
        definition.setdefault(split, describe_split(subset[f"{split}_timestamp"], subset[f"{split}_asset"], o))
    definition.update(sizes)
    definition.setdefault("frequency_minutes", int(subset["test_frequency_minutes"][0]))
    model = {"hidden": a.hidden, "embedding": a.embedding, "heads": a.heads, "fused": a.fused}
    training = {"epochs": a.epochs, "batch": a.batch, "lr": a.lr, "seed": a.seed, "threads": a.threads,
                "min_rate": 1.0 / sizes["n_ahead"] ** 2, "max_rate": 1.0, "optimizer": "Adam",
                "callbacks": "none (fixed epochs)", "jit_compile": False,
                "ours_fixed_horizon_risk": a.fixed_horizon_risk, "ours_input_clip": a.ours_input_clip,
                "ours_volume_clip": a.ours_volume_clip, "ours_tilt_bound": a.ours_tilt_bound}
    print(f"[reference-compare] subset: {definition['train']['windows']} train / {definition['test']['windows']} "
          f"test windows at {definition['frequency_minutes']} min, W/L/N {sizes['norm_window']}/"
          f"{sizes['lookback']}/{sizes['n_ahead']}; model {model}; {a.epochs} epochs, batch {a.batch}, lr {a.lr}",
          flush=True)

    common = [f"--{k}={v}" for k, v in {**model, "epochs": a.epochs, "batch": a.batch, "lr": a.lr,
                                         "threads": a.threads, "seed": a.seed}.items()]
    env = pinned_env(a.threads, a.threads)
    workers, allocations = {}, {}
    for name in impls:
        out = os.path.join(work, f"{name}.npz")
        if name == "ours":
            extra = ["--fixed-horizon-risk"] if a.fixed_horizon_risk else []
            options = (("input-clip", a.ours_input_clip), ("volume-clip", a.ours_volume_clip),
                       ("tilt-bound", a.ours_tilt_bound))
            extra += [f"--{k}={v}" for k, v in options if v is not None]
            res = run_worker(OURS_PYTHON, "reference_compare_ours.py", ["--subset", subset_path, "--output", out,
                                                                        *common, *extra], env, a.timeout)
        else:
            res = run_worker(REF_PYTHON, "reference_compare_driver.py",
                             ["--subset", subset_path, "--output", out, "--variant", name.split("_", 1)[1], *common],
                             env, a.timeout)
        workers[name] = res
        allocations[name] = np.load(out)["allocations"]
        if not np.isfinite(allocations[name]).all():
            raise RuntimeError(f"{name}: {int((~np.isfinite(allocations[name])).any(axis=(1, 2, 3, 4)).sum())} "
                               f"test windows with non-finite allocations ({out})")
        c = res["causality"]
        print(f"[reference-compare] {name}: {res['params']:,} parameters, train {res['train_s']:.1f} s "
              f"({res['samples_per_s']:.1f} samples/s); perturbation check: steps seeing their own bar "
              f"{c['steps_that_see_own_bar']}, max |change| at or before step k {c['max_change_at_or_before']:.3g}",
              flush=True)

    result = {"command": "benchmarks/reference_compare.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": git_commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"host": f"{platform.node()} {platform.machine()}", **machine_info()},
              "subset": definition, "model": model, "training": training,
              "implementations": {}}
    ev = evaluate(subset, allocations)
    for name in impls:
        result["implementations"][name] = {**workers[name], **ev["impls"][name]}
    result.update(baseline=ev["baseline"], pairs=ev["pairs"])
    result["targets"] = page_targets(result)
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    with open(a.output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=str)
    print(summary_table(result))
    for name, pair in result["pairs"].items():
        print(f"[reference-compare] {name}, paired on the same test orders:")
        print(format_table(["figure", "value [95 %]", "ours ahead"],
                           [[f, _ci(v, lo, hi), "yes" if ok else "no"]
                            for f, v, lo, hi, ok in ahead_figures(pair, sizes["n_ahead"])]))
    print(f"[reference-compare] wrote {a.output} (work dir {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
