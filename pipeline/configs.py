"""The ONE pipeline configuration: a dataclass with nested sections, loadable from YAML or JSON.

Everything a run depends on lives here and flows from here into `create_pipeline(config)`: data sources and
time splits, bar frequencies, the sizes N/L/W (bars), model hyperparameters, the training recipe, evaluation
thresholds, the serving directory and the Beam arguments. Sections a component reads are defined next to it
(`components.trainer.config.ModelConfig` and `TrainingConfig`, `components.evaluator.config.EvaluationConfig`,
`components.report.config.ReportConfig`) and assembled here. Unknown keys in a file are an error (naming the
key and the section), so a typo never silently falls back to a default.

    config = PipelineConfig.from_file("my_run.yaml")          # or .json
    config = PipelineConfig.from_dict({"sizes": {"n_ahead": 4}})
    config.replace(training={"epochs": 1})                    # copy with some fields changed
    config.with_overrides(["training.epochs=1"])              # the same, as `lems run --set` takes it
"""
from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from components.evaluator.config import EvaluationConfig
from components.report.config import ReportConfig
from components.trainer.config import ModelConfig, TrainingConfig  # noqa: F401 - ModelConfig: the model section
from lem_model.presets import IMPLEMENTATIONS, PAPER_SIZES, paper_min_rate


_DATA_CONFIG_DOC = """Where the bars come from and how examples are cut and split: the ExampleGen's `IngestionConfig`
    (`components.example_gen.config`, which documents every field and defines every default) plus `source`;
    sizes come from `sizes`.

    source: directory of market-data files (Binance klines, Yahoo daily CSVs, tidy Parquet/CSV; searched
    recursively, filtered by `input_patterns`). frequencies: bar lengths in minutes to resample to (one example
    = one asset at one frequency). Splits by time, never hashed: train [start, eval_start), eval
    [eval_start, test_start), test [test_start, end); an example belongs to the split of its execution bars
    (its lookback and normalisation bars may reach back into earlier splits), its first execution bar at least
    `embargo_bars` bars after the split's start. stride: bars between consecutive example origins.
    input_patterns: substrings of the files' relative paths (or globs) selecting them. source_bar_minutes
    (or source_bar_minutes_by_asset): the ONE source bar length to read per asset where a file holds two
    (otherwise refused). outliers: "flag" | "drop" | "off" for causal outlier bars (outlier_window,
    outlier_volume_z, outlier_return_z). quote_volume: "file" (each file's own) | "volume_x_adj_close"
    (volume x adjusted close, the paper's equity notional).
    """


def _data_config_class():
    """`DataConfig`: `source` plus every field of the ExampleGen's `IngestionConfig` but the sizes (from `sizes`)
    and `chunk_rows` (an execution detail), with IngestionConfig's defaults: each default is defined there only.
    Tuples become lists and mappings dicts, as YAML and JSON read them."""
    from components.example_gen.config import IngestionConfig
    hints = typing.get_type_hints(IngestionConfig)
    fields = [("source", str, field(default="./data"))]
    for f in dataclasses.fields(IngestionConfig):
        if f.name in ("norm_window", "lookback", "n_ahead", "chunk_rows"):
            continue
        origin = typing.get_origin(hints[f.name])
        if origin in (collections.abc.Sequence, list, tuple):
            fields.append((f.name, list, field(default_factory=lambda d=f.default: list(d))))
        elif origin in (collections.abc.Mapping, dict):
            fields.append((f.name, dict, field(default_factory=lambda d=f.default_factory: dict(d()))))
        else:
            fields.append((f.name, hints[f.name], field(default=f.default)))

    def __post_init__(self):
        # JSON object keys are strings: per-frequency maps are keyed by minutes (int).
        self.stride_by_frequency = {int(k): v for k, v in (self.stride_by_frequency or {}).items()}
        self.missing_bar_rule_by_frequency = {int(k): v for k, v in (self.missing_bar_rule_by_frequency or {}).items()}

    return dataclasses.make_dataclass("DataConfig", fields, namespace={
        "__doc__": _DATA_CONFIG_DOC, "__module__": __name__, "__post_init__": __post_init__})


DataConfig = _data_config_class()
#: The `data` fields that are `IngestionConfig` fields of the same name and meaning (all but `source`).
INGESTION_DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name != "source")


@dataclass
class SizesConfig:
    """Sizes of one example in bars of its own frequency (docs/example-contract.md)."""
    n_ahead: int = PAPER_SIZES["n_ahead"]          # N: execution bars of an order
    lookback: int = PAPER_SIZES["lookback"]        # L: history bars read before the first execution bar
    norm_window: int = PAPER_SIZES["norm_window"]  # W: normalisation bars

    @property
    def window_bars(self) -> int:
        """W + L + N: bars per example."""
        return self.norm_window + self.lookback + self.n_ahead


@dataclass
class ServingConfig:
    """Pusher destination: `<serving_dir>/<model_name>/<version>/` (TF Serving's layout)."""
    serving_dir: str = "./runs/serving"
    model_name: str = "lem"


@dataclass
class KubeflowConfig:
    """Kubeflow Pipelines (V2 spec) compilation: `lems compile-kubeflow` (see kubeflow/README.md).

    image: the pipeline image (kubeflow/Dockerfile: TFX 1.16 base + this package) every component runs in;
    trainer_gpus / gpu_type: accelerator request of the Trainer (KFP open source: "nvidia.com/gpu"; Vertex AI:
    e.g. "NVIDIA_TESLA_T4"; 0 = CPU only); trainer_cpu / trainer_memory_gb: its CPU and memory limits (None =
    cluster default); beam_pipeline_args: Beam arguments of the Beam components on the cluster (None = the
    top-level `beam_pipeline_args`), e.g. `--runner=DataflowRunner ...` (kubeflow/README.md).
    """
    image: str = "lems-tfx:0.1.0"
    trainer_gpus: int = 1
    gpu_type: str = "nvidia.com/gpu"
    trainer_cpu: Optional[float] = 8.0
    trainer_memory_gb: Optional[float] = 32.0
    beam_pipeline_args: Optional[list] = None


@dataclass
class PipelineConfig:
    """Top-level configuration: pipeline identity and locations plus the nested sections.

    root: directory of the pipeline root (artifacts) and, for the local runner, the ML Metadata SQLite file
    (`metadata_path`, default `<root>/metadata.sqlite`). beam_pipeline_args: passed to every Beam-based
    component (DirectRunner locally; Dataflow/Flink on Kubeflow).
    """
    pipeline_name: str = "lems"
    root: str = "./runs/lems"
    metadata_path: Optional[str] = None
    enable_cache: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    sizes: SizesConfig = field(default_factory=SizesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    kubeflow: KubeflowConfig = field(default_factory=KubeflowConfig)
    beam_pipeline_args: list = field(
        default_factory=lambda: ["--direct_running_mode=in_memory", "--direct_num_workers=1"])

    # ---- derived locations ----------------------------------------------------------------------------
    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.root, "pipeline_root")

    @property
    def metadata_sqlite(self) -> str:
        return self.metadata_path or os.path.join(self.root, "metadata.sqlite")

    @property
    def push_base_directory(self) -> str:
        """Directory the Pusher writes versions into: `<serving_dir>/<model_name>`."""
        return os.path.join(self.serving.serving_dir, self.serving.model_name)

    # ---- (de)serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "PipelineConfig":
        return _build(cls, values or {}, "config")

    @classmethod
    def from_file(cls, path: str) -> "PipelineConfig":
        """Load a YAML (.yaml/.yml) or JSON (.json) file; relative paths in it stay relative to the CWD."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            if path.endswith((".yaml", ".yml")):
                import yaml
                values = yaml.safe_load(text)
            else:
                values = json.loads(text)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"{path}: cannot parse config: {e}") from e
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"{path}: top level must be a mapping of sections, got {type(values).__name__}")
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def save(self, path: str) -> None:
        """Write as YAML or JSON (by extension)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            if path.endswith((".yaml", ".yml")):
                import yaml
                yaml.safe_dump(self.to_dict(), f, sort_keys=False)
            else:
                json.dump(self.to_dict(), f, indent=2)

    def resolved(self) -> "PipelineConfig":
        """Copy with local paths made absolute (root, metadata, data source, serving dir); URLs untouched."""
        def absolute(path):
            return path if path is None or "://" in path else os.path.abspath(os.path.expanduser(path))
        return self.replace(root=absolute(self.root), metadata_path=absolute(self.metadata_path),
                            data={"source": absolute(self.data.source)},
                            serving={"serving_dir": absolute(self.serving.serving_dir)})

    def replace(self, **sections) -> "PipelineConfig":
        """Copy with fields changed; nested sections take dicts of their fields, e.g.
        `config.replace(root="/tmp/x", training={"epochs": 1})`."""
        values = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, Mapping) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return PipelineConfig.from_dict(values)

    def with_overrides(self, assignments) -> "PipelineConfig":
        """Copy with `SECTION.FIELD=VALUE` (or top-level `FIELD=VALUE`) assignments applied in order, as
        `lems run --set` takes them: `["model.input_clip=5", "training.epochs=3", "root=./runs/x"]`. VALUE is read
        as JSON where it parses (numbers, true/false, null, lists, objects), else kept as text; the result is
        type-checked like a file, so an unknown section or field is an error naming it."""
        values = self.to_dict()
        for text in assignments or ():
            key, sep, raw = str(text).partition("=")
            path = key.strip().split(".")
            if not sep or not all(path) or len(path) > 2:
                raise ValueError(f"override {text!r}: expected SECTION.FIELD=VALUE or FIELD=VALUE")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if len(path) == 1:
                if isinstance(values.get(path[0]), dict):
                    raise ValueError(f"override {text!r}: {path[0]!r} is a section; name one of its fields, "
                                     f"e.g. {path[0]}.{next(iter(values[path[0]]), 'FIELD')}=VALUE")
                values[path[0]] = value
            else:
                if not isinstance(values.get(path[0]), dict):
                    raise ValueError(f"override {text!r}: {path[0]!r} is not a section; sections: "
                                     f"{sorted(k for k, v in values.items() if isinstance(v, dict))}")
                values[path[0]] = {**values[path[0]], path[1]: value}
        return PipelineConfig.from_dict(values)

    def ingestion_config(self):
        """The ExampleGen's `IngestionConfig` for this config: sizes from `sizes`, every other field of the
        same name from `data` (`data.source` is the ExampleGen's input base, not part of it)."""
        from components.example_gen.config import IngestionConfig
        values = {name: getattr(self.data, name) for name in INGESTION_DATA_FIELDS}
        values.update(norm_window=self.sizes.norm_window, lookback=self.sizes.lookback, n_ahead=self.sizes.n_ahead)
        return IngestionConfig.from_json(values)

    def validate(self) -> "PipelineConfig":
        """Raise ValueError on inconsistent values; returns self."""
        s, t, e = self.sizes, self.training, self.evaluation
        for name in ("n_ahead", "lookback", "norm_window"):
            if int(getattr(s, name)) < 1:
                raise ValueError(f"sizes.{name} must be >= 1 bar, got {getattr(s, name)}")
        if len(t.min_rates) != len(t.max_rates) or not t.min_rates:
            raise ValueError("training.min_rates and training.max_rates must be non-empty lists of equal "
                             f"length, got {t.min_rates} and {t.max_rates}")
        for lo, hi in zip(t.min_rates, t.max_rates):
            lo = paper_min_rate(s.n_ahead) if lo is None else lo
            if not 0.0 <= lo <= 1.0 / s.n_ahead or not 1.0 / s.n_ahead <= hi <= 1.0:
                raise ValueError(f"training constraint (min_rate={lo}, max_rate={hi}) is infeasible for "
                                 f"N={s.n_ahead}: need 0 <= min_rate <= 1/N <= max_rate <= 1")
        if t.batch_size < 1 or t.epochs < 1 or t.learning_rate <= 0:
            raise ValueError("training.batch_size and epochs must be >= 1 and learning_rate > 0")
        if not self.training.fixed_horizon_pnl and not self.training.fixed_horizon_risk:
            raise ValueError("training.fixed_horizon_pnl: false needs training.fixed_horizon_risk: true (otherwise "
                             "the minimum-period-N head has no term in the loss)")
        if e.max_nonfinite is None or e.max_nonfinite < 0:
            raise ValueError(f"evaluation.max_nonfinite must be an integer >= 0, got {e.max_nonfinite}")
        if e.interval_level is None or not 0.0 < e.interval_level < 1.0:
            raise ValueError(f"evaluation.interval_level must be in (0, 1), got {e.interval_level}")
        if e.max_std_ratio_margin is None or not e.max_std_ratio_margin >= 0.0:
            raise ValueError(f"evaluation.max_std_ratio_margin must be >= 0, got {e.max_std_ratio_margin}")
        if e.min_slice_orders is None or e.min_slice_orders < 0:
            raise ValueError(f"evaluation.min_slice_orders must be >= 0, got {e.min_slice_orders}")
        if int(self.model.num_heads) < 1:
            raise ValueError(f"model.num_heads must be >= 1, got {self.model.num_heads}")
        if not 0.0 <= float(self.model.dropout) < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.model.dropout}")
        if self.model.hidden_size % self.model.num_heads:
            raise ValueError(f"model.hidden_size {self.model.hidden_size} must be divisible by "
                             f"model.num_heads {self.model.num_heads}")
        if not self.data.frequencies:
            raise ValueError("data.frequencies must list at least one frequency")
        self.ingestion_config()  # validates the data section (dates increasing, rules known, ...)
        return self


def _build(cls, values: Mapping[str, Any], where: str):
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}: {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        import difflib
        hints = {k: difflib.get_close_matches(str(k), list(fields), n=1) for k in unknown}
        hint = "; ".join(f"did you mean {where}.{h[0]} for {k!r}?" for k, h in hints.items() if h)
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(fields)}"
                         + (f" ({hint})" if hint else ""))
    hints = typing.get_type_hints(cls)
    rules = field_rules().get(cls.__name__, {})
    kwargs = {}
    for name, value in values.items():
        f = fields[name]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            kwargs[name] = _build(sub, value or {}, f"{where}.{name}")
        else:
            kwargs[name] = _check_field(f"{where}.{name}", value, hints.get(name, Any), rules.get(name, {}))
    return cls(**kwargs)


# ---- field types and allowed values, checked when a file or dict is read (before TensorFlow is imported) ----

#: A number in scientific notation without a dot (`1e-5`): YAML 1.1 (PyYAML) reads it as a string.
_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def field_rules() -> dict:
    """Checks beyond each field's annotation, by section class and field: "choices" (allowed values),
    "items" (element type of a list), "keys"/"values" (of a mapping), "min" (smallest number allowed).
    The allowed values come from the code that uses them (one definition each)."""
    from components.example_gen.config import SPLIT_NAMES
    from components.market_data.outliers import OUTLIER_MODES
    from components.market_data.readers import BAD_ROW_POLICIES, QUOTE_VOLUME_RULES
    from components.market_data.resample import MISSING_RULES
    from lem_model.presets import FREQUENCY_WEIGHTINGS, RECURRENT_CHOICES, RISK_TERMS
    strings = {"items": str}
    return {
        "DataConfig": {"frequencies": {"items": int, "min": 1}, "stride": {"min": 1},
                       "stride_by_frequency": {"keys": int, "values": int, "min": 1},
                       "missing_bar_rule": {"choices": tuple(MISSING_RULES)},
                       "missing_bar_rule_by_frequency": {"keys": int, "values": str, "choices": tuple(MISSING_RULES)},
                       "bad_rows": {"choices": tuple(BAD_ROW_POLICIES)}, "input_patterns": strings,
                       "quote_volume": {"choices": tuple(QUOTE_VOLUME_RULES)},
                       "outliers": {"choices": tuple(OUTLIER_MODES)},
                       "source_bar_minutes_by_asset": {"keys": str, "values": int, "min": 1}},
        "ModelConfig": {"recurrent": {"choices": tuple(RECURRENT_CHOICES)},
                        "implementation": {"choices": IMPLEMENTATIONS}, "xla_max_batch": {"min": 0},
                        "input_clip": {"min": 1e-6}, "volume_clip": {"min": 1e-6},
                        "tilt_bound": {"min": 0.0}, "context_chunks": {"min": 1}},
        "TrainingConfig": {"min_rates": {"items": Optional[float]}, "max_rates": {"items": float},
                           "jit_compile": {"choices": ("auto", True, False)}, "verbose": {"choices": (0, 1, 2)},
                           "frequency_weighting": {"choices": FREQUENCY_WEIGHTINGS},
                           "pnl_sharpness": {"min": 1e-6}, "risk_term": {"choices": RISK_TERMS}},
        "EvaluationConfig": {"split": {"choices": SPLIT_NAMES}, "slice_features": strings,
                             "max_std_ratio_margin": {"min": 0.0}},
        "ReportConfig": {"split": {"choices": SPLIT_NAMES}},
        "KubeflowConfig": {"beam_pipeline_args": strings},
        "PipelineConfig": {"beam_pipeline_args": strings},
    }


def _type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(a) for a in args) + (" or null" if type(None) in typing.get_args(tp) else "")
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(where: str, value, tp):
    """`value` as type `tp` (int, float, str, bool, list, dict, Optional[...], Any); ValueError naming `where`."""
    if tp is Any:
        return value
    if typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(where, value, a)
            except ValueError as e:
                errors.append(e)
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    origin = typing.get_origin(tp) or tp
    quoted = isinstance(value, str) and origin in (int, float) and not _SCIENTIFIC.match(value.strip())
    bad = ValueError(f"{where}: expected {_type_name(origin)}, got {value!r} ({type(value).__name__})"
                     + (" (quoted in the file? write numbers without quotes)" if quoted else ""))
    if origin in (int, float):
        if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if origin is int:
            if isinstance(value, float) and not value.is_integer():
                raise bad
            return int(value)
        return float(value)
    if origin is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if origin is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    return value


def _check_field(where: str, value, tp, rule: Mapping):
    """Type (annotation), element types and allowed values of one field."""
    value = _coerce(where, value, tp)

    def check(w, v, item_type=None):
        if item_type is not None:
            v = _coerce(w, v, item_type)
        if "choices" in rule and not any(v == c and type(v) is type(c) for c in rule["choices"]):
            allowed = ", ".join(json.dumps(c) if not isinstance(c, str) else c for c in rule["choices"])
            raise ValueError(f"{w}: {v!r} is not allowed; choose one of {allowed}")
        if "min" in rule and isinstance(v, (int, float)) and not isinstance(v, bool) and v < rule["min"]:
            raise ValueError(f"{w}: must be >= {rule['min']}, got {v!r}")
        return v

    if isinstance(value, list) and ("items" in rule or "choices" in rule):
        return [check(f"{where}[{i}]", v, rule.get("items")) for i, v in enumerate(value)]
    if isinstance(value, dict) and ("keys" in rule or "values" in rule):
        out = {}
        for k, v in value.items():
            if "keys" in rule and isinstance(k, str) and k.strip().lstrip("-").isdigit():
                k = int(k)  # JSON object keys are strings
            k = _coerce(f"{where} key {k!r}", k, rule["keys"]) if "keys" in rule else k
            out[k] = check(f"{where}[{k!r}]", v, rule.get("values"))
        return out
    if value is None:
        return None
    return check(where, value)


#: The embedded default data of `lems demo` (`components.market_data.synthetic.write_default_dataset`):
#: BTCUSDT/ETHUSDT 5-minute klines 2024-11-01 + 90 days and XRPUSDT 15-minute bars 2024-11-01 + 60 days.
DEMO_DATA_PATTERNS = ["binance", "tidy"]


def demo_config(root: str = "./runs/demo") -> PipelineConfig:
    """Small but real configuration for `lems demo` on the embedded synthetic data (minutes on 2 CPU cores):
    crypto at 15 and 90 minutes, N = 12 execution bars (the paper's), L = 32, W = 96, a small LSTM LEM."""
    return PipelineConfig(
        pipeline_name="lems-demo",
        root=root,
        data=DataConfig(source=os.path.join(root, "data"), frequencies=[15, 90], stride=4,
                        stride_by_frequency={90: 1}, eval_start="2024-12-20", test_start="2025-01-06",
                        embargo_bars=12, input_patterns=list(DEMO_DATA_PATTERNS)),
        sizes=SizesConfig(n_ahead=12, lookback=32, norm_window=96),
        model=ModelConfig(hidden_size=16, num_embedding=4, num_heads=2, fused_mlp_hidden_dim=16,
                          recurrent="lstm"),
        # frequency_weighting and 16 epochs (session 10: better than 6 epochs unweighted). On the embedded data with
        # volume bursts (2026-12-02) the match-VWAP std / TWAP-volume std on the test split was 0.91-0.93 overall and
        # below 1 on every gated slice, the closest BTCUSDT at 15 min, 0.99 (benchmarks/RESULTS.md, "The demo").
        # The gate also checks the minimum-period-N head: its sell std was 2.8x TWAP's with the paper's loss, 1.05
        # overall but 1.20 at 15 min (one crash day) with fixed_horizon_risk added (2026-12-07, NOT BLESSED). With
        # fixed_horizon_pnl=False (the head trained on the risk term alone, adopted by the rule written before its
        # run, benchmarks/RESULTS.md) its ratio on the eval split was 0.88-0.94 on every frequency and side.
        training=TrainingConfig(learning_rate=1e-3, batch_size=256, epochs=16, min_learning_rate=1e-5,
                                jit_compile=False, frequency_weighting="inverse_sqrt", fixed_horizon_pnl=False),
        serving=ServingConfig(serving_dir=os.path.join(root, "serving")),
    )
