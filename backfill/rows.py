"""Order windows + model allocations -> backfill rows (one per window and scenario), and their Parquet schema.

Prices come from the ONE feature builder (`lem_model.features`: labels = execution-bar volume and VWAP,
scale-free; the forward-filled VWAP of bar o-1 = the labels' price reference) and slippage from the ONE
evaluator (`lem_model.slippage.slippage`), called on the labels exactly as `evaluate_allocations` does, so
`slippage_bps` equals the evaluator's value; achieved and benchmark prices are reported in quote currency
(the label ratios times the reference price; bps are invariant to that scale).

Beside the LEM's slippage every row carries the baselines' slippage of the same order against the scenario's
benchmark, by the same evaluator (`components.evaluator.order_slippage.baseline_slippage`, volume target,
window = all N bars): `twap_volume_slippage_bps` and `vwap_curve_slippage_bps` (the volume-curve VWAP schedule
of the profile estimated on a pipeline run's training split, `components.evaluator.vwap_curve`; NaN when the
backfill is given no profile: `lems backfill` finds the profile of the run that produced the model, see
lems_cli/backfill.py), and the model's blessing state (`model_blessing`, `serving.blessing`).

The columns, in order, are `COLUMNS`; kubeflow/README.md ("Backfill output columns") documents each.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lem_model import layout, slippage

#: The Parquet columns of a partition file, in order (plus the partition keys `date` and `asset` of the path).
COLUMNS = ("origin_time", "frequency_minutes", "side", "benchmark", "target", "min_period", "match_head", "min_rate",
           "max_rate", "schedule", "achieved_price", "benchmark_price", "reference_price", "slippage_bps",
           "improvement_bps", "window_bars", "twap_volume_slippage_bps", "vwap_curve_slippage_bps", "model_version",
           "model_blessing")
RAW_KEYS = ("volume", "quote_volume", "timestamp", "frequency_minutes", "asset", "origin_time")
#: Columns carried between Beam stages (NumPy arrays, one entry per row).
CARRIED = ("origin_time", "frequency_minutes", "scenario", "schedule", "achieved_price", "benchmark_price",
           "reference_price", "slippage_bps", "improvement_bps", "window_bars", "twap_volume_slippage_bps",
           "vwap_curve_slippage_bps")
#: Baseline column -> series name of `order_slippage.BASELINES` per benchmark.
BASELINE_COLUMNS = {"twap_volume_slippage_bps": {"vwap": "twap_volume_vs_vwap", "twap": "twap_volume_vs_twap"},
                    "vwap_curve_slippage_bps": {"vwap": "vwap_curve_volume_vs_vwap",
                                                "twap": "vwap_curve_volume_vs_twap"}}


def vwap_curve_schedules(raw: dict, profiles, *, norm_window: int, lookback: int, n_ahead: int):
    """[B, N] volume-curve schedules of the windows from profiles {"ASSET/FREQ": [bars_per_day]} (the
    `profiles` of a `vwap_curve_profile.json`); an asset/frequency without a profile gets TWAP, as in the
    Evaluator. None when `profiles` is None."""
    if profiles is None:
        return None
    from lem_model import baselines
    o = norm_window + lookback
    out = np.empty((len(raw["frequency_minutes"]), n_ahead))
    for i, (asset, freq) in enumerate(zip(raw["asset"], raw["frequency_minutes"])):
        asset = asset.decode() if isinstance(asset, bytes) else str(asset)
        profile = profiles.get(f"{asset}/{int(freq)}")
        profile = np.ones(baselines.bars_per_day(int(freq))) if profile is None else np.asarray(profile)
        out[i] = baselines.volume_curve_schedule(profile, baselines.time_of_bar(raw["timestamp"][i:i + 1, o],
                                                                               int(freq)), n_ahead)[0]
    return out


def stack_windows(windows: Sequence[dict]) -> dict:
    """Raw-field dicts (one per window) -> batched arrays ([B, W+L+N] bars, [B] scalars)."""
    return {"volume": np.stack([w["volume"] for w in windows]).astype(np.float32),
            "quote_volume": np.stack([w["quote_volume"] for w in windows]).astype(np.float32),
            "timestamp": np.stack([w["timestamp"] for w in windows]).astype(np.int64),
            "frequency_minutes": np.array([w["frequency_minutes"] for w in windows], np.int64),
            "origin_time": np.array([w["origin_time"] for w in windows], np.int64),
            "asset": np.array([w["asset"] for w in windows], dtype=object)}


def valid_allocations(allocations: Sequence[np.ndarray]) -> np.ndarray:
    """[B] bool: every allocation of the window is finite, >= -tol and sums to 1 over steps (within tol)."""
    ok = None
    for a in allocations:
        a = np.asarray(a, np.float64)
        flat = a.reshape(a.shape[0], -1)
        good = np.isfinite(flat).all(axis=1) & (flat >= -slippage.ALLOC_TOL).all(axis=1)
        sums = np.where(np.isfinite(a), a, 0.0).sum(axis=1)
        good &= (np.abs(sums - 1.0) <= slippage.ALLOC_TOL).reshape(a.shape[0], -1).all(axis=1)
        ok = good if ok is None else ok & good
    return ok


def reference_price(raw: dict, *, norm_window: int, lookback: int) -> np.ndarray:
    """[B] forward-filled VWAP of bar o-1 (the price the labels are divided by), quote currency per unit."""
    import keras
    from lem_model.features import forward_filled_vwap
    o = norm_window + lookback
    filled, _ = forward_filled_vwap(raw["volume"], raw["quote_volume"], first_ref_bar=o)
    return keras.ops.convert_to_numpy(filled)[:, o - 1].astype(np.float64)


def window_rows(raw: dict, allocations: Sequence[np.ndarray], scenarios, *, norm_window: int, lookback: int,
                n_ahead: int, vwap_curve_profiles=None) -> dict:
    """Rows of B windows x S scenarios (window-major), as the `CARRIED` arrays.

    raw: batched raw fields (`stack_windows`); allocations: one [B, N, N+1, 4, 2] array per constraint of
    `scenarios` (in the order of `constraint_index(scenarios)`); scenarios: `spec.Scenario` list;
    vwap_curve_profiles: {"ASSET/FREQ": profile} for the VWAP-curve baseline (None: that column is NaN).
    """
    from components.evaluator.order_slippage import baseline_slippage, labels_from_raw
    labels = labels_from_raw(raw["volume"], raw["quote_volume"], raw["timestamp"], raw["frequency_minutes"],
                             norm_window=norm_window, lookback=lookback, n_ahead=n_ahead).astype(np.float64)
    curve = vwap_curve_schedules(raw, vwap_curve_profiles, norm_window=norm_window, lookback=lookback,
                                 n_ahead=n_ahead)
    base = baseline_slippage(labels, curve)
    ref = reference_price(raw, norm_window=norm_window, lookback=lookback)
    vol, price = labels[..., layout.LABEL_VOLUME], labels[..., layout.LABEL_VWAP]
    cidx = constraint_index(scenarios)
    b, s = len(ref), len(scenarios)
    schedule = np.empty((b, s, n_ahead), np.float32)
    cols = {k: np.empty((b, s), np.float64) for k in ("achieved_price", "benchmark_price", "slippage_bps",
                                                      "improvement_bps", *BASELINE_COLUMNS)}
    window_bars = np.empty((b, s), np.int64)
    for j, sc in enumerate(scenarios):
        a = np.asarray(allocations[cidx[(sc.min_rate, sc.max_rate)]])[:, :, sc.head, sc.path, sc.target]
        res = slippage.slippage(a, vol, price, layout.min_period_of_index(sc.head, n_ahead),
                                layout.PATH_SIDE[sc.path], layout.PATH_BENCHMARK[sc.path],
                                layout.TARGETS[sc.target])
        schedule[:, j] = a
        cols["achieved_price"][:, j] = res.achieved * ref
        cols["benchmark_price"][:, j] = res.benchmark * ref
        cols["slippage_bps"][:, j] = res.bps
        cols["improvement_bps"][:, j] = res.improvement_bps
        for col, by_bench in BASELINE_COLUMNS.items():
            series = by_bench[layout.PATH_BENCHMARK[sc.path]]
            cols[col][:, j] = base[series] if series in base else np.nan
        window_bars[:, j] = res.window_bars
    rep = lambda x: np.repeat(np.asarray(x), s)  # noqa: E731 - per-window value on every scenario row
    return {"origin_time": rep(raw["origin_time"]), "frequency_minutes": rep(raw["frequency_minutes"]),
            "scenario": np.tile(np.arange(s, dtype=np.int32), b), "schedule": schedule.reshape(b * s, n_ahead),
            "reference_price": rep(ref), "window_bars": window_bars.reshape(-1),
            **{k: v.reshape(-1) for k, v in cols.items()}}


def constraint_index(scenarios) -> dict:
    """(min_rate, max_rate) -> index of its allocations array, in first-seen order."""
    out = {}
    for sc in scenarios:
        out.setdefault((sc.min_rate, sc.max_rate), len(out))
    return out


def take(rows: dict, index) -> dict:
    return {k: v[index] for k, v in rows.items()}


def concat(parts: Sequence[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def to_arrow(rows: dict, scenarios, *, n_ahead: int, model_version: str, model_blessing: str = "blessed"):
    """Rows (sorted by frequency, origin time, scenario) -> pyarrow Table with the backfill schema
    (`COLUMNS`; model_blessing: `serving.blessing` state of the model, on every row)."""
    import pyarrow as pa
    order = np.lexsort((rows["scenario"], rows["origin_time"], rows["frequency_minutes"]))
    r = take(rows, order)
    sc = [scenarios[i] for i in r["scenario"]]
    n = len(order)
    schedule = pa.FixedSizeListArray.from_arrays(pa.array(r["schedule"].reshape(-1), pa.float32()), n_ahead)
    return pa.table({
        "origin_time": pa.array(r["origin_time"].astype("datetime64[s]"), pa.timestamp("s", tz="UTC")),
        "frequency_minutes": pa.array(r["frequency_minutes"], pa.int32()),
        "side": pa.array([layout.PATH_SIDE[x.path] for x in sc], pa.string()),
        "benchmark": pa.array([layout.PATH_BENCHMARK[x.path] for x in sc], pa.string()),
        "target": pa.array([layout.TARGETS[x.target] for x in sc], pa.string()),
        "min_period": pa.array([layout.min_period_of_index(x.head, n_ahead) for x in sc], pa.int32()),
        "match_head": pa.array([x.head == n_ahead for x in sc], pa.bool_()),
        "min_rate": pa.array([x.min_rate for x in sc], pa.float64()),
        "max_rate": pa.array([x.max_rate for x in sc], pa.float64()),
        "schedule": schedule,
        "achieved_price": pa.array(r["achieved_price"], pa.float64()),
        "benchmark_price": pa.array(r["benchmark_price"], pa.float64()),
        "reference_price": pa.array(r["reference_price"], pa.float64()),
        "slippage_bps": pa.array(r["slippage_bps"], pa.float64()),
        "improvement_bps": pa.array(r["improvement_bps"], pa.float64()),
        "window_bars": pa.array(r["window_bars"], pa.int32()),
        "twap_volume_slippage_bps": pa.array(r["twap_volume_slippage_bps"], pa.float64()),
        "vwap_curve_slippage_bps": pa.array(r["vwap_curve_slippage_bps"], pa.float64()),
        "model_version": pa.array([model_version] * n, pa.string()),
        "model_blessing": pa.array([model_blessing] * n, pa.string()),
    })
