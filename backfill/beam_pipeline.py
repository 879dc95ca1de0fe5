"""The backfill Beam graph and its driver `run_backfill(spec, beam_pipeline_args)`.

    files ─MarketDataToExamples (the ExampleGen's Beam logic: readers, resampling, missing-bar rule, the ONE
           window cutter)─> serialized tf.Examples of all splits
      ─SelectWindows (assets, origin dates of the request)─> raw-field windows
      ─BatchElements─> ─Infer (pushed SavedModel, `serving_default` signature with the transform graph
           inside; loaded once per worker in `setup`; one call per batch and order constraint)
           + rows (`backfill.rows`: ONE feature builder labels, ONE slippage evaluator)─> ((date, asset), rows)
      ─GroupByKey─> WritePartition (one Parquet file per partition under `_staging/<run_id>/`)
      ─> partition list (JSON in the staging directory)
    then, in the driver, `backfill.commit.commit`: atomic replacement of the request's partitions.

Progress: Beam counters in namespace `lems_backfill` (windows_selected, windows_inferred, rows, partitions
written, drops) and a log line every `spec.log_every` windows per worker.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np

from backfill import commit as commit_lib
from backfill import rows as rows_lib
from backfill.spec import BackfillSpec, resolve_model_dir

NAMESPACE = "lems_backfill"
PARTITIONS_FILE = "_partitions.json"
log = logging.getLogger(__name__)


def _counter(name: str, n: int = 1) -> None:
    if n:
        beam.metrics.Metrics.counter(NAMESPACE, name).inc(int(n))


def utc_date(seconds: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(int(seconds)))


def model_sizes(model_dir: str) -> dict:
    """W, L, N of a pushed model (its `assets.extra/lem_model.json`, written by the Trainer's exporter)."""
    from components.trainer.export import read_metadata
    meta = read_metadata(model_dir)
    return {k: int(meta[k]) for k in ("norm_window", "lookback", "n_ahead")}


def ingestion_config(spec: BackfillSpec, sizes: dict):
    """The ExampleGen's config for this request: no splits; a coarse time range (a superset of the windows
    whose origin lies in the requested dates; the exact selection is `_SelectWindowsFn`)."""
    from components.example_gen.config import IngestionConfig
    start, end = spec.date_bounds()
    f_max = max(int(f) for f in spec.frequencies)
    default = IngestionConfig()
    rules = {f: default.missing_rule_for(f) for f in spec.frequencies}
    # "skip" makes consecutive bars span up to max_gap_bars + 1 bar lengths of calendar time.
    stretch = (spec.max_gap_bars + 1) if "skip" in rules.values() else 1
    before = (sizes["norm_window"] + sizes["lookback"]) * f_max * 60 * stretch
    after = (sizes["n_ahead"] + 1) * f_max * 60 * stretch
    iso = lambda s: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))  # noqa: E731
    return IngestionConfig(frequencies=tuple(int(f) for f in spec.frequencies), stride=int(spec.stride),
                           start=iso(start - before), eval_start=None, test_start=None, end=iso(end + after),
                           min_examples_per_split=0, input_patterns=tuple(spec.input_patterns),
                           bad_rows=spec.bad_rows, max_gap_bars=spec.max_gap_bars, **sizes)


class _SelectWindowsFn(beam.DoFn):
    """Serialized tf.Example -> raw-field dict, for the requested assets and origin dates only."""

    def __init__(self, assets: Optional[Sequence[str]], start: int, end: int):
        self._assets = None if assets is None else set(assets)
        self._start, self._end = start, end

    def process(self, serialized: bytes):
        import tensorflow as tf
        f = tf.train.Example.FromString(serialized).features.feature
        asset = f["asset"].bytes_list.value[0].decode()
        origin = int(f["origin_time"].int64_list.value[0])
        if self._assets is not None and asset not in self._assets:
            _counter("windows_other_assets")
            return
        if not self._start <= origin < self._end:
            _counter("windows_outside_dates")
            return
        _counter("windows_selected")
        yield {"volume": np.asarray(f["volume"].float_list.value, np.float32),
               "quote_volume": np.asarray(f["quote_volume"].float_list.value, np.float32),
               "timestamp": np.asarray(f["timestamp"].int64_list.value, np.int64),
               "frequency_minutes": int(f["frequency_minutes"].int64_list.value[0]),
               "origin_time": origin, "asset": asset}


class _InferFn(beam.DoFn):
    """Batch of windows -> ((date, asset), rows) with the pushed SavedModel (loaded once per worker)."""

    def __init__(self, model_dir: str, sizes: dict, scenarios, log_every: int, vwap_curve_profiles=None):
        self._model_dir, self._sizes = model_dir, sizes
        self._scenarios, self._log_every = scenarios, log_every
        self._profiles = vwap_curve_profiles

    def setup(self):
        import tensorflow as tf
        t0 = time.time()
        self._model = tf.saved_model.load(self._model_dir)
        self._predict = self._model.signatures["serving_default"]
        self._constraints = list(rows_lib.constraint_index(self._scenarios))
        self._seen, self._next_log, self._t0 = 0, self._log_every, time.time()
        log.info("backfill worker %d: loaded %s in %.1f s", os.getpid(), self._model_dir, time.time() - t0)

    def process(self, batch):
        import tensorflow as tf
        raw = rows_lib.stack_windows(batch)
        b = len(batch)
        allocations = []
        for lo, hi in self._constraints:
            out = self._predict(volume=tf.constant(raw["volume"]), quote_volume=tf.constant(raw["quote_volume"]),
                                timestamp=tf.constant(raw["timestamp"]),
                                frequency_minutes=tf.constant(raw["frequency_minutes"]),
                                min_rate=tf.constant(np.full(b, lo, np.float32)),
                                max_rate=tf.constant(np.full(b, hi, np.float32)))
            allocations.append(out["allocations"].numpy())
        ok = rows_lib.valid_allocations(allocations)
        if not ok.all():  # counted, and named in the log: never silently dropped
            bad = np.flatnonzero(~ok)
            _counter("windows_invalid_allocations", len(bad))
            log.error("backfill: %d window(s) with non-finite or invalid allocations dropped, first: asset %s "
                      "origin_time %d", len(bad), raw["asset"][bad[0]], raw["origin_time"][bad[0]])
            raw = {k: v[ok] for k, v in raw.items()}
            allocations = [a[ok] for a in allocations]
        if len(raw["origin_time"]):
            rows = rows_lib.window_rows(raw, allocations, self._scenarios, **self._sizes,
                                        vwap_curve_profiles=self._profiles)
            s = len(self._scenarios)
            dates = np.array([utc_date(t) for t in raw["origin_time"]], dtype=object)
            keys = list(zip(dates, raw["asset"]))
            for key in sorted(set(keys)):
                w = np.array([k == key for k in keys])
                yield key, rows_lib.take(rows, np.repeat(w, s))
            _counter("rows", len(rows["scenario"]))
        _counter("windows_inferred", int(ok.sum()))
        self._seen += b
        if self._seen >= self._next_log:
            dt = time.time() - self._t0
            log.info("backfill worker %d: %d windows inferred (%.0f windows/s)", os.getpid(), self._seen,
                     self._seen / max(dt, 1e-9))
            self._next_log += self._log_every


class _WritePartitionFn(beam.DoFn):
    """((date, asset), [rows]) -> one Parquet file `_staging/<run_id>/date=.../asset=.../part-00000.parquet`."""

    def __init__(self, stage: str, scenarios, n_ahead: int, model_version: str, n_scenarios: int,
                 model_blessing: str = "blessed"):
        self._stage, self._scenarios, self._n = stage, scenarios, n_ahead
        self._version, self._s, self._blessing = model_version, n_scenarios, model_blessing

    def process(self, element):
        import pyarrow.parquet as pq
        (date, asset), parts = element
        rows = rows_lib.concat(list(parts))
        table = rows_lib.to_arrow(rows, self._scenarios, n_ahead=self._n, model_version=self._version,
                                  model_blessing=self._blessing)
        d = os.path.join(self._stage, commit_lib.partition_relpath(date, asset))
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, f".{commit_lib.PART_FILE}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, os.path.join(d, commit_lib.PART_FILE))
        _counter("partitions_written")
        yield {"date": date, "asset": asset, "rows": table.num_rows, "windows": table.num_rows // self._s}


def _write_partition_list(items, path: str) -> None:
    commit_lib.write_json_atomic(path, sorted(items, key=lambda x: (x["date"], x["asset"])))


def build_pipeline(p: beam.Pipeline, spec: BackfillSpec, *, model_dir: str, model_version: str, sizes: dict,
                   stage: str, vwap_curve_profiles=None, model_blessing: str = "blessed") -> int:
    """Add the backfill graph to `p` (writes partitions and their list under `stage`); returns the number of
    input files. vwap_curve_profiles: {"ASSET/FREQ": profile} for the VWAP-curve baseline column (or None);
    model_blessing: the model's `serving.blessing` state, written into every row."""
    from components.example_gen.ingest import MarketDataToExamples
    from components.market_data import readers
    if os.path.isfile(spec.source):
        files = [spec.source]
    else:
        files = readers.list_input_files(spec.source, spec.input_patterns)
    start, end = spec.date_bounds()
    scenarios = spec.scenarios(sizes["n_ahead"])
    examples = p | "Ingest" >> MarketDataToExamples(files, ingestion_config(spec, sizes))
    windows = ((examples["train"], examples["eval"], examples["test"])
               | "AllSplits" >> beam.Flatten()
               | "SelectWindows" >> beam.ParDo(_SelectWindowsFn(spec.assets, start, end)))
    _ = (windows
         | "Batch" >> beam.BatchElements(min_batch_size=min(32, spec.batch_size), max_batch_size=spec.batch_size)
         | "Infer" >> beam.ParDo(_InferFn(model_dir, sizes, scenarios, spec.log_every, vwap_curve_profiles))
         | "GroupByPartition" >> beam.GroupByKey()
         | "WritePartition" >> beam.ParDo(_WritePartitionFn(stage, scenarios, sizes["n_ahead"], model_version,
                                                            len(scenarios), model_blessing))
         | "ListPartitions" >> beam.combiners.ToList()
         | "WriteList" >> beam.Map(_write_partition_list, os.path.join(stage, PARTITIONS_FILE)))
    return len(files)


def make_pipeline(beam_pipeline_args: Sequence[str] | None) -> beam.Pipeline:
    """A Beam pipeline for these arguments. Without `--runner` (or with `--runner=DirectRunner`) it runs on
    the DirectRunner's FnApiRunner engine directly (honouring `--direct_running_mode` in_memory /
    multi_processing and `--direct_num_workers`), skipping Beam 2.74's first attempt at the Prism runner
    (which downloads a binary and ignores those options); any other `--runner` is used as given."""
    options = beam.options.pipeline_options.PipelineOptions(list(beam_pipeline_args or []))
    runner = options.view_as(beam.options.pipeline_options.StandardOptions).runner
    if runner in (None, "DirectRunner", "direct"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


class EmptySelectionError(RuntimeError):
    """A backfill whose request selected nothing to write (no bars, no window in the range, every file or
    window skipped); nothing is committed. `counts` holds the numbers that explain it."""

    def __init__(self, message: str, counts: dict):
        super().__init__(message)
        self.counts = counts


def _explain_empty(spec: BackfillSpec, run_id: str, counters: dict, n_files: int) -> EmptySelectionError:
    def c(name):
        return int(counters.get(name, 0))
    if c("ingestion.rows_read") == 0:
        why = "no bars were read from the input files"
    elif c("ingestion.examples_emitted") == 0:
        why = "no order window could be cut from the bars read (series too short for W+L+N bars, or no bar near the dates)"
    elif c("windows_selected") == 0:
        why = "no window has its first execution bar in the requested dates/assets"
    else:
        why = "every selected window was dropped (see windows_invalid_allocations)"
    counts = {"input_files": n_files, "rows_read": c("ingestion.rows_read"), "files_read": c("ingestion.files_read"),
              "windows_cut": c("ingestion.examples_emitted"), "windows_selected": c("windows_selected"),
              "windows_other_assets": c("windows_other_assets"), "windows_outside_dates": c("windows_outside_dates"),
              "windows_inferred": c("windows_inferred"),
              "windows_invalid_allocations": c("windows_invalid_allocations")}
    counts.update({k: int(v) for k, v in sorted(counters.items())  # drops and skips of the ingestion, if any
                   if k.startswith("ingestion.") and v and k[len("ingestion."):] not in ("rows_read", "files_read",
                                                                                        "examples_emitted")})
    detail = ", ".join(f"{k}={v}" for k, v in counts.items())
    return EmptySelectionError(
        f"backfill {run_id}: empty selection, nothing written or committed: {why}. Request: {spec.start_date}.."
        f"{spec.end_date}, assets={list(spec.assets) if spec.assets else 'all'}, frequencies="
        f"{list(spec.frequencies)}, source={spec.source}. Counts: {detail}", counts)


def run_backfill(spec: BackfillSpec, beam_pipeline_args: Sequence[str] | None = None, *,
                 remove_absent: bool = False,
                 vwap_curve_profile: Optional[str] = None) -> dict:
    """Run one backfill end to end (Beam, then the atomic commit). Returns the run record.

    beam_pipeline_args: e.g. ["--direct_running_mode=multi_processing", "--direct_num_workers=2"] or a
    distributed runner's arguments (the staging and output directories must then be on a shared POSIX
    filesystem visible to the workers and to this driver). remove_absent: also remove the committed
    partitions of the request's dates (and assets, when given) that this run did not produce (default: they
    are kept; the record's "partitions" lists replaced / added / kept / removed). vwap_curve_profile: the
    `vwap_curve_profile.json` of the pipeline run that trained the model (its VwapCurveBaseline output: profiles
    from that run's training split), for the rows' `vwap_curve_slippage_bps` (None: NaN).

    The model's blessing state (`serving.blessing.blessing_of`: "blessed" for a version the Pusher pushed,
    "unblessed" for one pushed by `lems push --unblessed`, "unknown" for a directory that is not a pushed
    version) is written into every row (`model_blessing`), the run record and each manifest entry; anything
    but "blessed" is logged as a warning.
    """
    from serving.blessing import BLESSED, blessing_of
    model_dir, version = resolve_model_dir(spec.model_dir)
    blessing = blessing_of(model_dir)
    if blessing["state"] != BLESSED:
        log.warning("backfill: the model %s is %s: %s. Its rows are marked model_blessing=%s.", model_dir,
                    blessing["state"].upper(), blessing["reason"], blessing["state"])
    sizes = model_sizes(model_dir)
    scenarios = spec.scenarios(sizes["n_ahead"])
    root = os.path.abspath(spec.output_dir)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    commit_lib.acquire_lock(root, run_id)
    try:
        commit_lib.recover(root)
        stage = commit_lib.staging_dir(root, run_id)
        os.makedirs(stage)
        t0 = time.time()
        log.info("backfill %s: %s..%s assets=%s frequencies=%s model=%s (W=%d L=%d N=%d), %d scenarios per window",
                 run_id, spec.start_date, spec.end_date, spec.assets or "all", list(spec.frequencies), model_dir,
                 sizes["norm_window"], sizes["lookback"], sizes["n_ahead"], len(scenarios))
        p = make_pipeline(beam_pipeline_args)
        profiles = None
        if vwap_curve_profile:
            with open(vwap_curve_profile, encoding="utf-8") as f:
                profiles = json.load(f).get("profiles")
            if not isinstance(profiles, dict):
                raise ValueError(f"{vwap_curve_profile}: no 'profiles' mapping (expected a vwap_curve_profile.json)")
        n_files = build_pipeline(p, spec, model_dir=model_dir, model_version=version, sizes=sizes, stage=stage,
                                 vwap_curve_profiles=profiles, model_blessing=blessing["state"])
        result = p.run()
        result.wait_until_finish()
        counters = {}  # ours, plus the ExampleGen's reading/cutting counts and drops (prefixed "ingestion.")
        for m in result.metrics().query(beam.metrics.MetricsFilter())["counters"]:
            prefix = {NAMESPACE: "", "lems_ingestion": "ingestion."}.get(m.key.metric.namespace)
            if prefix is not None:
                name = prefix + m.key.metric.name
                counters[name] = counters.get(name, 0) + int(m.committed if m.committed is not None else m.attempted)
        beam_seconds = time.time() - t0
        written = commit_lib.read_json(os.path.join(stage, PARTITIONS_FILE))
        if written is None:
            raise RuntimeError(f"backfill {run_id}: the Beam pipeline finished without its partition list")
        if not written:  # committing nothing would delete the range's existing partitions: refuse instead
            shutil.rmtree(stage, ignore_errors=True)
            raise _explain_empty(spec, run_id, counters, n_files)
        staged = {(w["date"], w["asset"]): {"rows": w["rows"], "windows": w["windows"], "model_version": version,
                                            "model_blessing": blessing["state"]}
                  for w in written}
        # a run replaces exactly what it produced; other committed partitions of its request (dates, and the
        # assets asked for, or all) are kept unless their removal is asked for explicitly
        dates = set(spec.dates())
        in_range = {(d, a) for d, a in commit_lib.list_partitions(root)
                    if d in dates and (spec.assets is None or a in spec.assets)}
        changes = commit_lib.partition_changes(root, staged, in_range, remove_absent=remove_absent)
        owned = set(staged) | {tuple(k) for k in changes["removed"]}
        record = {"run_id": run_id, "spec": json.loads(spec.to_json()), "model_dir": model_dir,
                  "model_version": version, "model_blessing": blessing["state"],
                  "model_blessing_reason": blessing["reason"], "vwap_curve_profile": vwap_curve_profile,
                  "sizes": sizes, "scenarios": len(scenarios),
                  "beam_pipeline_args": list(beam_pipeline_args or []), "counters": counters,
                  "partitions_written": len(staged), "rows": int(sum(v["rows"] for v in staged.values())),
                  "windows": int(sum(v["windows"] for v in staged.values())),
                  "beam_seconds": round(beam_seconds, 2), "partitions": changes}
        commit_lib.commit(root, run_id, staged, owned, record)
        log.info("backfill %s: committed %d partitions (%d replaced, %d added), %d windows, %d rows in %.1f s; "
                 "%d kept, %d removed", run_id, len(staged), len(changes["replaced"]), len(changes["added"]),
                 record["windows"], record["rows"], time.time() - t0, len(changes["kept"]), len(changes["removed"]))
        if changes["kept"]:
            log.warning("backfill %s: kept %d committed partition(s) of the range this run did not produce "
                        "(e.g. assets absent from its source), first %s; rerun with --remove-absent to remove them",
                        run_id, len(changes["kept"]), "/".join(changes["kept"][0]))
        if changes["removed"]:
            log.warning("backfill %s: removed %d partition(s) it did not produce (--remove-absent), first %s",
                        run_id, len(changes["removed"]), "/".join(changes["removed"][0]))
        return record
    finally:
        commit_lib.release_lock(root)
