"""Per-order slippage of a scored period -> the backtest's figures per slice, with block-bootstrap intervals.

Pure NumPy (no TensorFlow). An `Orders` holds, for every order of a period, its asset, bar length, first execution
bar and the slippage (bps) of every head, path and target of the LEM (`lem` [B, N+1, 4, 2], the layout of
`components.evaluator.order_slippage`) and of each baseline schedule on the same order. Orders of several
periods concatenate (`Orders.concat`): the pooled figures resample them together, by order start day.

Figures of a slice (`slice_figures`), all against TWAP (volume) vs VWAP on the same orders:
  - `match_vwap_std_ratio`: std(match-VWAP head, volume) / std(TWAP volume), the worse side, {value, lo, hi};
    per side under `match_vwap_std_ratio_by_side`;
  - `min_n_std_ratio`: the same for the no-flexibility head (minimum period N), per side;
  - `min1_mean_bps`: the minimum-period-1 head's mean per side {value, lo, hi}, and `min1_mean_twap_std_units`:
    that mean divided by TWAP (volume)'s std (the paper's numbers are quoted in the same units);
  - `baselines`: mean and std (bps) of TWAP (volume), TWAP (notional) and the VWAP curve (volume);
  - `table`: the paper's table figures, mean and std per side and minimum period (VWAP path, volume target; not
    in the per-asset slices);
  - `gate`: the blessing gate's verdict on the slice (`components.evaluator.gate`, the same function the
    Evaluator uses).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from lem_model import bootstrap, layout

#: The baselines the backtest reports (names of `components.evaluator.order_slippage.BASELINES`).
REPORTED_BASELINES = {"twap_volume": "twap_volume_vs_vwap", "twap_notional": "twap_notional_vs_vwap",
                      "vwap_curve": "vwap_curve_volume_vs_vwap"}
TWAP = "twap_volume_vs_vwap"


@dataclass
class Orders:
    asset: np.ndarray        # [B] str
    frequency: np.ndarray    # [B] int, minutes
    start: np.ndarray        # [B] int64, Unix seconds of the first execution bar
    lem: np.ndarray          # [B, N+1, 4, 2] float32 bps
    baselines: Dict[str, np.ndarray]  # name -> [B] bps

    def __len__(self) -> int:
        return int(self.asset.shape[0])

    @property
    def n_ahead(self) -> int:
        return int(self.lem.shape[1] - 1)

    def subset(self, mask) -> "Orders":
        mask = np.asarray(mask)
        return Orders(self.asset[mask], self.frequency[mask], self.start[mask], self.lem[mask],
                      {k: v[mask] for k, v in self.baselines.items()})

    @staticmethod
    def concat(parts) -> "Orders":
        parts = [p for p in parts if p is not None]
        if not parts:
            raise ValueError("no orders to concatenate")
        if len({p.n_ahead for p in parts}) != 1:
            raise ValueError(f"periods have different N: {sorted({p.n_ahead for p in parts})}")
        names = set.intersection(*(set(p.baselines) for p in parts))
        return Orders(np.concatenate([p.asset for p in parts]), np.concatenate([p.frequency for p in parts]),
                      np.concatenate([p.start for p in parts]), np.concatenate([p.lem for p in parts]),
                      {k: np.concatenate([p.baselines[k] for p in parts]) for k in sorted(names)})

    def save(self, path: str) -> None:
        arrays = {"asset": self.asset.astype(str), "frequency": self.frequency.astype(np.int32),
                  "start": self.start.astype(np.int64), "lem": self.lem.astype(np.float32)}
        arrays.update({f"base__{k}": v.astype(np.float32) for k, v in self.baselines.items()})
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    @staticmethod
    def load(path: str) -> "Orders":
        with np.load(path, allow_pickle=False) as z:
            return Orders(z["asset"], z["frequency"].astype(np.int64), z["start"], z["lem"],
                          {k[len("base__"):]: z[k] for k in z.files if k.startswith("base__")})

    @staticmethod
    def from_order_slippage(asset, frequency, start, result) -> "Orders":
        """From a period's raw examples and `order_slippage.OrderSlippage`."""
        return Orders(np.asarray(asset).astype(str), np.asarray(frequency, np.int64).reshape(-1),
                      np.asarray(start, np.int64).reshape(-1), np.asarray(result.lem_bps, np.float32),
                      {k: np.asarray(v, np.float32) for k, v in result.baseline_bps.items()})


def _interval(value, lo, hi) -> dict:
    return {"value": _num(value), "lo": _num(lo), "hi": _num(hi)}


def _num(x) -> Optional[float]:
    x = float(x)
    return x if np.isfinite(x) else None


def frequency_key(minutes: int) -> str:
    return f"{int(minutes)} min"


def slice_figures(orders: Orders, *, level: float, margin: float, n_boot: int = bootstrap.N_BOOT,
                  table: bool = True) -> dict:
    """The figures of one slice of orders (module docstring); JSON-serialisable (NaN -> None). table: include the
    paper's table figures (per side and minimum period)."""
    b, n = len(orders), orders.n_ahead
    out = {"orders": b, "days": int(len(np.unique(bootstrap.day_blocks(orders.start)))) if b else 0}
    if b < 2:
        return out
    blocks = bootstrap.day_blocks(orders.start)
    boot = dict(n_boot=n_boot, level=level)
    t = layout.target_index("volume")
    twap = np.asarray(orders.baselines[TWAP], np.float64)
    twap_std = float(np.nanstd(twap, ddof=1))
    by_side, min_n, min1, units, tables = {}, {}, {}, {}, {}
    for side in layout.SIDES:
        path = layout.path_index(side, "vwap")
        head = lambda m: np.asarray(orders.lem[:, m, path, t], np.float64)  # noqa: E731
        r = bootstrap.std_ratio(head(n), twap, blocks, **boot)
        by_side[side] = _interval(r["ratio"], r["lo"], r["hi"])
        r = bootstrap.std_ratio(head(n - 1), twap, blocks, **boot)
        min_n[side] = _interval(r["ratio"], r["lo"], r["hi"])
        s = bootstrap.sample_statistics(head(0), blocks, **boot)
        min1[side] = _interval(s["mean"], s["mean_lo"], s["mean_hi"])
        units[side] = _num(s["mean"] / twap_std) if twap_std > 0 else None
        tables[side] = [{"min_period": "match" if m == n else layout.min_period_of_index(m, n),
                        "mean": _num(np.nanmean(head(m))), "std": _num(np.nanstd(head(m), ddof=1))}
                       for m in range(n + 1)]
    worst = max(layout.SIDES, key=lambda sd: -np.inf if by_side[sd]["value"] is None else by_side[sd]["value"])
    out.update({
        "match_vwap_std_ratio": by_side[worst],
        "match_vwap_std_ratio_by_side": by_side,
        "min_n_std_ratio": min_n,
        "min1_mean_bps": min1,
        "min1_mean_twap_std_units": units,
        "baselines": {name: {"mean_bps": _num(np.nanmean(orders.baselines[key])),
                             "std_bps": _num(np.nanstd(orders.baselines[key], ddof=1))}
                      for name, key in REPORTED_BASELINES.items() if key in orders.baselines},
    })
    if table:
        out["table"] = tables
    from components.evaluator import gate
    out["gate"] = gate.evaluate_slice(orders.lem, orders.baselines, blocks, level=level, margin=margin,
                                      n_boot=n_boot)
    return out


def period_slices(orders: Orders, *, level: float, margin: float, n_boot: int = bootstrap.N_BOOT) -> dict:
    """{"slices": {"15 min": .., "90 min": .., "overall": ..}, "asset_slices": {asset: {"15 min": .., "overall": ..}}}."""
    def by_frequency(o: Orders, table: bool) -> dict:
        kw = dict(level=level, margin=margin, n_boot=n_boot, table=table)
        out = {frequency_key(f): slice_figures(o.subset(o.frequency == f), **kw) for f in sorted(set(o.frequency.tolist()))}
        out["overall"] = slice_figures(o, **kw)
        return out
    return {"slices": by_frequency(orders, True),
            "asset_slices": {a: by_frequency(orders.subset(orders.asset == a), False)
                             for a in sorted(set(orders.asset.tolist()))}}


def gate_verdict(slices: dict, asset_slices: dict, *, min_slice_orders: int) -> dict:
    """The blessing gate over a period's slices (frequency, asset, asset x frequency, overall), as the Evaluator
    applies it: FAIL when any gated slice (>= min_slice_orders orders) fails; BLESSED only if, in addition,
    the overall slice is significantly better than TWAP (volume)."""
    failed = []
    every = [(k, v) for k, v in slices.items()]
    for asset, per in asset_slices.items():
        every += [(f"{asset} / {k}", v) for k, v in per.items()]
    for name, fig in every:
        if fig.get("orders", 0) >= min_slice_orders and fig.get("gate", {}).get("failed"):
            failed.append(name)
    better = bool(slices.get("overall", {}).get("gate", {}).get("better"))
    return {"blessed": (not failed) and better, "failed_slices": failed, "overall_significantly_better": better}
