"""TFMA custom metric: the paper's slippage statistics (bps) of every head, path and target, plus baselines.

TFMA 0.47 loads the Trainer's Keras 3 SavedModel as a generic TF model (signature `serve_tf_examples`), so
Keras-side metrics never reach it; this `tfma.metrics.Metric` computes everything in a Beam `CombineFn` from
the model's `allocations` and the raw bars of each example (labels through the ONE feature builder, slippage
through the ONE evaluator `lem_model.slippage`, via `components.evaluator.order_slippage`).

Metric names (all in bps unless stated; `{stat}` in mean, std, median, p5, p95, q25, q75):
  - `slippage/{path}/{target}/{head}/{stat}`: path buy_vwap..sell_twap, target volume|notional, head
    min01..minNN (minimum period in bars) or match;
  - `baseline/{twap_volume|twap_notional}_vs_{vwap|twap}/{stat}`: TWAP schedules (window = all N bars);
  - `order_count` (orders), `nonfinite_count` (undefined slippage values + non-finite allocations);
  - `match_vwap_std_bps`: max over sides of the std of the match-VWAP head (volume target);
  - `match_vwap_std_ratio`: that std / the std of TWAP-volume vs VWAP (reported; the worst side), with its
    block-bootstrap interval `match_vwap_std_ratio/lo|hi` (`lem_model.bootstrap`, blocks = order start dates);
  - `compare/{baseline}/{side}/{k}`: the match-VWAP head (volume) vs each baseline of `COMPARED` on the same
    orders: std_ratio (+ _lo/_hi), paired difference of |slippage| diff_mean (+ diff_lo/diff_hi) and p_value;
  - `ci/{series}/{mean|std}_{lo|hi}`: 95 % intervals of the mean and std of the baselines and match heads;
  - the blessing gate (`components.evaluator.gate`, ONE definition; `level` and `margin` of the metric config),
    on every slice: `check/{head}/{side}/{figure}` with `/lo`, `/hi` and `/fail` (1 = FAIL) for head match|min_n
    (figure std_ratio vs TWAP volume) and min_1 (figure mean_diff_bps), side buy|sell, and
    `check/all/both/nonfinite_count`; `gate/better` (1 = the match head's std ratio interval lies below 1 on both
    sides) and `gate_config/interval_level|max_std_ratio_margin` (what the gate ran with);
  - champion vs challenger (only when TFX evaluates a baseline model: the latest blessed one; NaN / 0 otherwise):
    the candidate's combiner also reads the baseline model's predictions of the same example
    (`element.get_predictions(baseline)`) and emits `champion/{side}/std_ratio` (+ `/lo`, `/hi`, `/fail`), the
    challenger's match-VWAP std / the champion's on the same orders (`gate.compare_with_champion`);
  - per-slice gate (`min_slice_orders`): `gated` = 1 when the slice has at least that many orders, else 0, and
    the metrics the blessing thresholds read (`components.evaluator.eval_config`):
      `gate/failures`: the number of failing checks of the gate on a gated slice, 0 on a smaller slice;
      `gate/champion_failures`: the same for the champion checks (0 without a champion);
      `gate/overall_match_std_ratio_hi`: the higher of the two sides' upper interval bounds of the match-VWAP
      std ratio on a gated slice, 0 on a smaller one (the threshold < 1 is set on the overall slice only:
      "significantly better than TWAP");
      `gate/nonfinite_count`: on a gated slice the plain metric; on a smaller slice (reported, not gated) only
      non-finite allocations and undefined slippage values (bad outputs fail every slice; statistics of too
      few orders do not).
    TFMA 0.47 has no "threshold only where the slice has >= k examples": `Options.min_slice_size` removes the
    metrics of smaller slices and its validator then fails them as "Metric not found", so the count condition
    lives in these metrics and the thresholds stay TFMA's own per-slice thresholds.
Statistics need every value (percentiles), so the accumulator keeps per-order slippage ([N+1, 4, 2] + 4
baselines per order: ~110 floats for N = 12); raw inputs are buffered and evaluated in batches.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from components.evaluator import gate
from components.evaluator import order_slippage as osl
from lem_model import bootstrap, layout, slippage
from lem_model.presets import PAPER_SIZES

SLIPPAGE_METRIC_NAME = "lem_slippage"
RAW_FEATURES = ("volume", "quote_volume", "timestamp", "frequency_minutes", osl.VWAP_CURVE_FEATURE)
#: Default of `EvaluationConfig.min_slice_orders` is defined there; this is only the metric's fallback.
DEFAULT_MIN_SLICE_ORDERS = 0
#: Baselines the match-VWAP head is compared with (std ratio, paired difference, p-value).
COMPARED = ("twap_volume_vs_vwap", "twap_notional_vs_vwap", "vwap_curve_volume_vs_vwap")
COMPARE_KEYS = ("std_ratio", "std_ratio_lo", "std_ratio_hi", "diff_mean", "diff_lo", "diff_hi", "p_value")
#: The metrics the blessing thresholds read (`components.evaluator.eval_config`).
GATED_METRICS = ("nonfinite_count", "failures", "champion_failures", "overall_match_std_ratio_hi")
#: The gate's checks as metric-name parts (head, side, figure), in `gate.evaluate_slice`'s order.
CHECKS = tuple([(h, side, "std_ratio") for h in ("match", "min_n") for side in layout.SIDES]
               + [("min_1", side, "mean_diff_bps") for side in layout.SIDES] + [("all", "both", "nonfinite_count")])
CHECK_KEYS = ("", "/lo", "/hi", "/fail")
#: Bootstrap replicates of the Evaluator's intervals (seeded: the same data give the same intervals).
N_BOOT = bootstrap.N_BOOT


def ci_series(n_ahead: int) -> list:
    """Series with mean/std intervals: every baseline and the match-VWAP head (volume) of each side."""
    return list(osl.BASELINES) + [f"{side}_vwap/volume/match" for side in layout.SIDES]
_FLUSH_EVERY = 256


def metric_names(n_ahead: int) -> List[str]:
    """Every metric name the metric emits for N = n_ahead (see module docstring)."""
    names = ["order_count", "nonfinite_count", "match_vwap_std_bps", "match_vwap_std_ratio",
             "match_vwap_std_ratio/lo", "match_vwap_std_ratio/hi", "gated"] + [f"gate/{g}" for g in GATED_METRICS]
    names += ["gate/better", "gate_config/interval_level", "gate_config/max_std_ratio_margin"]
    names += [f"check/{h}/{side}/{fig}{k}" for h, side, fig in CHECKS for k in CHECK_KEYS]
    names += [f"champion/{side}/std_ratio{k}" for side in layout.SIDES for k in CHECK_KEYS]
    names += [f"compare/{b}/{side}/{k}" for b in COMPARED for side in layout.SIDES for k in COMPARE_KEYS]
    names += [f"ci/{series}/{k}" for series in ci_series(n_ahead) for k in ("mean_lo", "mean_hi", "std_lo", "std_hi")]
    for path in layout.PATHS:
        for target in layout.TARGETS:
            for m in range(n_ahead + 1):
                names += [f"slippage/{path}/{target}/{osl.head_name(m, n_ahead)}/{s}" for s in slippage.STAT_COLUMNS]
    for base in osl.BASELINES:
        names += [f"baseline/{base}/{s}" for s in slippage.STAT_COLUMNS]
    return names


def metric_values(lem_bps: np.ndarray, baseline_bps: Dict[str, np.ndarray], nonfinite_alloc: int = 0, *,
                  blocks=None, min_slice_orders: int = DEFAULT_MIN_SLICE_ORDERS, n_boot: int = N_BOOT,
                  level: float = gate.DEFAULT_LEVEL, margin: float = gate.DEFAULT_MARGIN,
                  max_nonfinite: int = gate.DEFAULT_MAX_NONFINITE, champion_bps: Optional[np.ndarray] = None
                  ) -> Dict[str, float]:
    """Name -> value of every metric from per-order slippage (lem_bps [B, N+1, 4, 2], baselines name -> [B]).

    blocks: [B] bootstrap block of each order (`lem_model.bootstrap.day_blocks` of its first execution bar;
    None = every order its own block); min_slice_orders, level, margin, max_nonfinite: the gate (module
    docstring, `components.evaluator.gate`); champion_bps: [B, N+1, 4, 2] of the champion (latest blessed model)
    on the same orders, None = no champion."""
    n = lem_bps.shape[1] - 1
    b = lem_bps.shape[0]
    out = {"order_count": float(b)}
    nonfinite = int(nonfinite_alloc)
    for p, path in enumerate(layout.PATHS):
        for t, target in enumerate(layout.TARGETS):
            for m in range(n + 1):
                stats = slippage.table_statistics(lem_bps[:, m, p, t])
                nonfinite += stats["n_invalid"]
                for s in slippage.STAT_COLUMNS:
                    out[f"slippage/{path}/{target}/{osl.head_name(m, n)}/{s}"] = stats[s]
    for base in osl.BASELINES:
        if base not in baseline_bps:
            raise ValueError(f"baseline series '{base}' missing (have {sorted(baseline_bps)}); the evaluation "
                             f"examples need the '{osl.VWAP_CURVE_FEATURE}' feature (VwapCurveBaseline component)")
        stats = slippage.table_statistics(baseline_bps[base])
        nonfinite += stats["n_invalid"]
        for s in slippage.STAT_COLUMNS:
            out[f"baseline/{base}/{s}"] = stats[s]
    invalid_values = nonfinite  # non-finite allocations and undefined slippage values
    t = layout.target_index("volume")
    match = {side: lem_bps[:, n, layout.path_index(side, "vwap"), t] for side in layout.SIDES}
    out["match_vwap_std_bps"] = float(max(slippage.table_statistics(v)["std"] for v in match.values())) if b \
        else float("nan")
    out["match_vwap_std_ratio"] = osl.match_std_ratio(lem_bps, baseline_bps) if b else float("nan")
    # NaN statistics (e.g. an empty slice) count as non-finite too, so "all metrics finite" means what it says.
    nonfinite += sum(1 for v in out.values() if not np.isfinite(v))
    out["nonfinite_count"] = float(nonfinite)
    gated = b >= int(min_slice_orders)
    out["gated"] = float(gated)
    out["gate/nonfinite_count"] = float(nonfinite if gated else invalid_values)
    # The gate (intervals: NaN where a slice is too small to resample; a NaN figure fails its check).
    blocks = np.arange(b) if blocks is None else np.asarray(blocks).reshape(-1)
    verdict = gate.evaluate_slice(lem_bps, baseline_bps, blocks, level=level, margin=margin, n_boot=n_boot,
                                  min_orders=min_slice_orders, max_nonfinite=max_nonfinite)
    for (h, side, fig), check in zip(CHECKS, verdict["checks"]):
        assert (check["head"], check["side"], check["figure"]) == (h, side, fig), check
        _put_check(out, f"check/{h}/{side}/{fig}", check)
    out["gate/failures"] = float(verdict["n_failures"] if gated else 0)
    out["gate/better"] = float(verdict["better"])
    match_hi = [c["hi"] for c in verdict["checks"] if c["head"] == "match"]
    out["gate/overall_match_std_ratio_hi"] = ((float(max(match_hi)) if np.all(np.isfinite(match_hi)) else float("nan"))
                                              if gated else 0.0)
    out["gate_config/interval_level"] = float(level)
    out["gate_config/max_std_ratio_margin"] = float(margin)
    if champion_bps is not None and b:
        champ = gate.compare_with_champion(lem_bps, champion_bps, blocks, level=level, margin=margin, n_boot=n_boot,
                                           min_orders=min_slice_orders)
        for side, check in zip(layout.SIDES, champ["checks"]):
            _put_check(out, f"champion/{side}/std_ratio", check)
        out["gate/champion_failures"] = float(champ["n_failures"] if gated else 0)
    else:
        for side in layout.SIDES:
            for k in CHECK_KEYS:
                out[f"champion/{side}/std_ratio{k}"] = float("nan")
        out["gate/champion_failures"] = 0.0
    # Intervals of the comparisons with every baseline (reported, not gated).
    boot = dict(n_boot=n_boot, seed=0)
    worst = None
    for base in COMPARED:
        for side, values in match.items():
            c = bootstrap.compare(values, baseline_bps[base], blocks, **boot)
            for k in COMPARE_KEYS:
                out[f"compare/{base}/{side}/{k}"] = float(c[k])
            if base == "twap_volume_vs_vwap" and (worst is None or c["std_ratio"] > worst["std_ratio"]):
                worst = c
    out["match_vwap_std_ratio/lo"] = float(worst["std_ratio_lo"]) if worst else float("nan")
    out["match_vwap_std_ratio/hi"] = float(worst["std_ratio_hi"]) if worst else float("nan")
    series = dict(baseline_bps)
    series.update({f"{side}_vwap/volume/match": v for side, v in match.items()})
    for name in ci_series(n):
        st = bootstrap.sample_statistics(series[name], blocks, **boot)
        for k in ("mean_lo", "mean_hi", "std_lo", "std_hi"):
            out[f"ci/{name}/{k}"] = float(st[k])
    return out


def _put_check(out: dict, name: str, check: dict) -> None:
    out[name] = float(check["value"])
    out[f"{name}/lo"], out[f"{name}/hi"] = float(check["lo"]), float(check["hi"])
    out[f"{name}/fail"] = float(check["verdict"] == gate.FAIL)


class LemSlippage(tfma.metrics.Metric):
    """Slippage statistics of a LEM (see module docstring). Configure in an EvalConfig with
    `tfma.MetricConfig(class_name="LemSlippage", module="components.evaluator.metrics",
    config='{"n_ahead": N, "lookback": L, "norm_window": W, "min_slice_orders": K, "level": 0.95,
    "margin": 0.1, "max_nonfinite": 0}')` (the last four: the gate, `components.evaluator.gate`)."""

    def __init__(self, n_ahead: int = PAPER_SIZES["n_ahead"], lookback: int = PAPER_SIZES["lookback"],
                 norm_window: int = PAPER_SIZES["norm_window"], prediction_key: str = "allocations",
                 min_slice_orders: int = DEFAULT_MIN_SLICE_ORDERS, level: float = gate.DEFAULT_LEVEL,
                 margin: float = gate.DEFAULT_MARGIN, max_nonfinite: int = gate.DEFAULT_MAX_NONFINITE,
                 name: str = SLIPPAGE_METRIC_NAME):
        super().__init__(slippage_computations, n_ahead=n_ahead, lookback=lookback, norm_window=norm_window,
                         prediction_key=prediction_key, min_slice_orders=min_slice_orders, level=level,
                         margin=margin, max_nonfinite=max_nonfinite, name=name)

    @property
    def compute_confidence_interval(self) -> bool:
        return False


def slippage_computations(n_ahead: int, lookback: int, norm_window: int, prediction_key: str,
                          min_slice_orders: int = DEFAULT_MIN_SLICE_ORDERS, level: float = gate.DEFAULT_LEVEL,
                          margin: float = gate.DEFAULT_MARGIN, max_nonfinite: int = gate.DEFAULT_MAX_NONFINITE,
                          name: str = SLIPPAGE_METRIC_NAME, eval_config=None, model_names: Optional[List[str]] = None,
                          output_names: Optional[List[str]] = None,
                          example_weighted: bool = False) -> metric_types.MetricComputations:
    """One computation per model (and output). With a baseline model in `eval_config` (TFX's latest blessed
    model), each other model's combiner also reads the baseline's predictions of the same example (the
    champion's, for the paired champion checks)."""
    # Orders are unweighted; keys carry example_weighted=None, as TFMA keys MetricsSpec.thresholds.
    del example_weighted
    champion = None
    if eval_config is not None:
        from tensorflow_model_analysis.utils import model_util
        spec = model_util.get_baseline_model_spec(eval_config)
        champion = spec.name if spec is not None and spec.name in (model_names or []) else None
    gate_args = dict(min_slice_orders=min_slice_orders, level=level, margin=margin, max_nonfinite=max_nonfinite)
    computations = []
    for model_name in model_names or [""]:
        champion_name = champion if champion and model_name != champion else None
        for output_name in output_names or [""]:
            keys = {n: metric_types.MetricKey(name=n, model_name=model_name, output_name=output_name,
                                              example_weighted=None)
                    for n in metric_names(n_ahead)}
            computations.append(metric_types.MetricComputation(
                keys=list(keys.values()),
                preprocessors=[metric_types.FeaturePreprocessor(
                    feature_keys=list(RAW_FEATURES), include_default_inputs=True,
                    model_names=([model_name] + ([champion_name] if champion_name else [])) if model_name else None)],
                combiner=_SlippageCombiner(keys, model_name, output_name, prediction_key,
                                           dict(n_ahead=n_ahead, lookback=lookback, norm_window=norm_window),
                                           champion_model=champion_name, **gate_args)))
    return computations


class _Accumulator:
    __slots__ = ("pending", "lem", "champion", "base", "blocks", "nonfinite_alloc")

    def __init__(self):
        self.pending: list = []            # (alloc, {feature: [b, ...]}, champion alloc or None) not yet evaluated
        self.lem: list = []                # [b, N+1, 4, 2] arrays
        self.champion: list = []           # [b, N+1, 4, 2] arrays of the champion (when one is compared)
        self.base: Dict[str, list] = {k: [] for k in osl.BASELINES}
        self.blocks: list = []             # [b] bootstrap blocks (start dates)
        self.nonfinite_alloc = 0


class _SlippageCombiner(beam.CombineFn):
    """Buffers (allocations, raw bars) per order and evaluates them in batches with the ONE evaluator."""

    def __init__(self, keys: Dict[str, metric_types.MetricKey], model_name: str, output_name: str,
                 prediction_key: str, sizes: Dict[str, int], min_slice_orders: int = DEFAULT_MIN_SLICE_ORDERS,
                 level: float = gate.DEFAULT_LEVEL, margin: float = gate.DEFAULT_MARGIN,
                 max_nonfinite: int = gate.DEFAULT_MAX_NONFINITE, champion_model: Optional[str] = None):
        self._keys, self._model_name, self._output_name = keys, model_name, output_name
        self._prediction_key, self._sizes = prediction_key, sizes
        self._gate = dict(min_slice_orders=int(min_slice_orders), level=float(level), margin=float(margin),
                          max_nonfinite=int(max_nonfinite))
        self._champion_model = champion_model

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def _allocations(self, element, model_name: Optional[str] = None) -> np.ndarray:
        model_name = self._model_name if model_name is None else model_name
        pred = element.get_predictions(model_name or None, self._output_name or None)
        if isinstance(pred, dict):
            if self._prediction_key not in pred:
                raise ValueError(f"model '{model_name}': predictions have keys {sorted(pred)}, "
                                 f"expected '{self._prediction_key}' (signature serve_tf_examples)")
            pred = pred[self._prediction_key]
        n = self._sizes["n_ahead"]
        alloc = np.asarray(pred, np.float64)
        return alloc.reshape((-1, n, n + 1, layout.NUM_PATHS, layout.NUM_TARGETS))

    def add_input(self, acc: _Accumulator, element) -> _Accumulator:
        alloc = self._allocations(element)
        feats = element.get_features() or {}
        missing = [k for k in RAW_FEATURES if k not in feats]
        if missing:
            raise ValueError(f"evaluation examples lack raw feature(s) {missing}; have {sorted(feats)}"
                             + (f" ('{osl.VWAP_CURVE_FEATURE}' is added by the VwapCurveBaseline component)"
                                if osl.VWAP_CURVE_FEATURE in missing else ""))
        total = sum(self._sizes[k] for k in ("norm_window", "lookback", "n_ahead"))
        raw = {k: np.asarray(feats[k]) for k in RAW_FEATURES}
        n = self._sizes["n_ahead"]
        width = {"frequency_minutes": None, osl.VWAP_CURVE_FEATURE: n}
        raw = {k: (v.reshape(-1) if width.get(k, total) is None else v.reshape(-1, width.get(k, total)))
               for k, v in raw.items()}
        champion = self._allocations(element, self._champion_model) if self._champion_model else None
        acc.pending.append((alloc, raw, champion))
        if len(acc.pending) >= _FLUSH_EVERY:
            self._flush(acc)
        return acc

    def _flush(self, acc: _Accumulator) -> None:
        if not acc.pending:
            return
        alloc = np.concatenate([a for a, _, _ in acc.pending])
        raw = {k: np.concatenate([r[k] for _, r, _ in acc.pending]) for k in RAW_FEATURES}
        champion = (np.concatenate([c for _, _, c in acc.pending]) if self._champion_model else None)
        acc.pending = []
        bad = ~np.isfinite(alloc).reshape(alloc.shape[0], -1).all(axis=1)
        acc.nonfinite_alloc += int(bad.sum())
        labels = osl.labels_from_raw(raw["volume"], raw["quote_volume"], raw["timestamp"],
                                     raw["frequency_minutes"], **self._sizes)
        # Orders with non-finite allocations count as non-finite; their slippage is NaN (not dropped).
        alloc = np.where(bad[:, None, None, None, None], 1.0 / alloc.shape[1], alloc)
        result = osl.order_slippage(alloc, labels, raw[osl.VWAP_CURVE_FEATURE])
        lem = result.lem_bps
        lem[bad] = np.nan
        acc.lem.append(lem)
        if champion is not None:  # the champion's slippage on the same orders (non-finite orders: NaN)
            bad_c = ~np.isfinite(champion).reshape(champion.shape[0], -1).all(axis=1)
            champion = np.where(bad_c[:, None, None, None, None], 1.0 / champion.shape[1], champion)
            champ = slippage.evaluate_allocations(champion, labels)
            champ[bad_c] = np.nan
            acc.champion.append(champ)
        o = self._sizes["norm_window"] + self._sizes["lookback"]
        acc.blocks.append(bootstrap.day_blocks(raw["timestamp"][:, o]))
        for k, v in result.baseline_bps.items():
            acc.base[k].append(v)

    def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
        out = _Accumulator()
        for acc in accumulators:
            out.pending += acc.pending
            out.lem += acc.lem
            out.champion += acc.champion
            out.blocks += acc.blocks
            for k in osl.BASELINES:
                out.base[k] += acc.base[k]
            out.nonfinite_alloc += acc.nonfinite_alloc
        return out

    def compact(self, acc: _Accumulator) -> _Accumulator:
        self._flush(acc)
        return acc

    def extract_output(self, acc: _Accumulator) -> Dict[metric_types.MetricKey, float]:
        self._flush(acc)
        n = self._sizes["n_ahead"]
        lem = np.concatenate(acc.lem) if acc.lem else np.zeros((0, n + 1, layout.NUM_PATHS, layout.NUM_TARGETS))
        base = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in acc.base.items()}
        blocks = np.concatenate(acc.blocks) if acc.blocks else np.zeros((0,), np.int64)
        champion = np.concatenate(acc.champion) if self._champion_model and acc.champion else None
        values = metric_values(lem, base, acc.nonfinite_alloc, blocks=blocks, champion_bps=champion, **self._gate)
        return {self._keys[name]: float(v) for name, v in values.items()}


metric_types.register_metric(LemSlippage)
