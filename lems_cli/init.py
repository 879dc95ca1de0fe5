"""`lems init --config FILE`: write a documented starting pipeline configuration (YAML) with relative paths.

    lems init --config my.yaml                 # the defaults: the paper's sizes and recipe, data in ./data
    lems init --config my.yaml --preset demo   # the small demo configuration (what `lems demo` runs)
    lems run --config my.yaml

Each section is preceded by its documentation (the docstrings of `pipeline.configs`, the one place the fields
are defined), and every field that documentation does not name carries its own comment (`FIELD_NOTES`), so
each field written is explained; paths are relative to the directory `lems run` is started from. Nothing is
run or imported beyond the configuration module (no TensorFlow).

Frequencies: the default preset writes the paper's bar lengths (15, 90, 250 minutes) rounded down to whole
multiples of the source bar length `--bar-minutes` (default 15): 15, 90, 240. A frequency is built by
resampling the source bars, so it must be a multiple of their length (250 minutes cannot be built from 15-minute
bars; such a frequency is skipped for that asset, `frequency_not_derivable`).
"""
from __future__ import annotations

import dataclasses
import inspect
import os

PRESETS = ("default", "demo")
#: The paper's crypto bar lengths (minutes), the default preset's wish list before `derivable_frequencies`.
PAPER_FREQUENCIES = (15, 90, 250)

#: One line for each field that its section's documentation does not name (section -> field -> text).
#: `documented_yaml` writes it as the field's end-of-line comment; tests/test_cli.py checks that every field
#: written is explained one way or the other and that no entry names a field that does not exist.
FIELD_NOTES = {
    None: {
        "pipeline_name": "name of the pipeline in ML Metadata (runs of one name share its cache and its "
                         "latest blessed model)",
        "metadata_path": "ML Metadata SQLite file (null = <root>/metadata.sqlite)",
        "enable_cache": "reuse a component's outputs when its inputs and settings are unchanged",
    },
    "data": {
        "start": "first bar used (ISO date/time, UTC; null = from the first bar of the files)",
        "eval_start": "start of the eval split (ISO date, UTC)",
        "test_start": "start of the test split (ISO date, UTC)",
        "end": "end of the test split, exclusive (null = up to the last bar)",
        "embargo_bars": "bars between a split's start and its first execution bar",
        "stride_by_frequency": "per-frequency stride, {minutes: bars} (overrides stride)",
        "missing_bar_rule": "a missing bar: zero_fill (a bar of zero volume) or skip (the series runs on)",
        "missing_bar_rule_by_frequency": "per-frequency rule, {minutes: rule} (daily bars skip non-trading days)",
        "max_gap_bars": "a gap of more missing bars than this splits the series",
        "bad_rows": "bad values in a file: error (stop, naming them) or drop (counted)",
        "min_examples_per_split": "the run fails when a split gets fewer examples",
        "source_bar_minutes_by_asset": "per-asset source bar length, {asset: minutes}",
    },
    "sizes": {
        "n_ahead": "N: execution bars of an order",
        "lookback": "L: history bars the model reads before the first execution bar",
        "norm_window": "W: bars the features are normalised over (before the lookback)",
    },
    "model": {
        "hidden_size": "H: width of the recurrent and attention layers (divisible by num_heads)",
        "num_embedding": "E: embedding width of each bar feature (and of the variable selection)",
        "num_heads": "attention heads",
        "fused_mlp_hidden_dim": "hidden width of each step's fused MLP",
        "fused_mlp_layers": "hidden layers of each step's fused MLP",
        "recurrent": "recurrent block (tkan: CC BY-NC-SA dependencies, see README Licence)",
        "dropout": "dropout rate in [0, 1)",
        "implementation": "how the same function is computed (same allocations to float32 rounding)",
        "xla_max_batch": "largest batch the exported model runs XLA-compiled (0 = no XLA in serving)",
        "input_clip": "bar features clipped to +-this before the model reads them",
        "volume_clip": "the linear volume feature clipped to at most this",
        "tilt_bound": "bound of each order's tilt of the per-step rates (0 = none, the paper's form)",
    },
    "training": {
        "learning_rate": "Adam's initial learning rate",
        "batch_size": "examples per training step",
        "epochs": "most passes over the training split",
        "shuffle_buffer": "examples in the shuffle buffer",
        "early_stopping_patience": "epochs without a better val_loss before training stops",
        "reduce_lr_patience": "epochs without a better val_loss before the learning rate is cut",
        "reduce_lr_factor": "what the learning rate is multiplied by when cut",
        "mixed_precision": "train in float16 (GPU) / bfloat16 (CPU)",
        "use_gpu": "use a GPU when TensorFlow sees one (false = CPU only)",
        "jit_compile": "XLA-compile the training step (auto = where Keras enables it)",
        "seed": "random seed of initialisation and shuffling",
        "verbose": "0 silent, 1 Keras progress bar, 2 one line per epoch",
    },
    "evaluation": {
        "split": "the split the gate is computed on",
    },
    "serving": {
        "serving_dir": "where the Pusher writes <model_name>/<version>/ (what lems serve / TF Serving read)",
        "model_name": "served model name",
    },
    "report": {
        "enabled": "write the HTML execution report",
        "max_curves": "execution curves drawn per figure panel (all orders enter the mean curve)",
    },
    "kubeflow": {
        "trainer_cpu": "CPU limit of the Trainer pod (null = cluster default)",
        "trainer_memory_gb": "memory limit of the Trainer pod in GB (null = cluster default)",
    },
}


def derivable_frequencies(bar_minutes: int, wanted=PAPER_FREQUENCIES) -> list:
    """`wanted` bar lengths rounded down to whole multiples of `bar_minutes` (at least one bar), without
    repeats: 15-minute bars -> [15, 90, 240]; 60 -> [60, 240]; 1440 -> [1440]."""
    bar = int(bar_minutes)
    if bar < 1:
        raise ValueError(f"bar length must be >= 1 minute, got {bar_minutes}")
    out = []
    for f in wanted:
        m = max(bar, (int(f) // bar) * bar)
        if m not in out:
            out.append(m)
    return out


def add_parser(parser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="file to write: .yaml/.yml (documented) "
                                                                        "or .json")
    parser.add_argument("--preset", choices=PRESETS, default="default",
                        help="default: the paper's sizes and training recipe on ./data; demo: the small "
                             "configuration of `lems demo` (root ./runs/demo)")
    parser.add_argument("--bar-minutes", type=int, default=15,
                        help="length of your source bars in minutes (default 15): the frequencies written are the "
                             "paper's 15, 90, 250 rounded down to multiples of it (15 -> 15, 90, 240); default "
                             "preset only")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def starting_config(preset: str = "default", bar_minutes: int = 15):
    """The PipelineConfig a preset starts from (relative paths). default: the paper's sizes and recipe, with
    the frequencies that can be built from `bar_minutes`-minute source bars (`derivable_frequencies`)."""
    from pipeline.configs import PipelineConfig, demo_config
    if preset == "demo":
        return demo_config("./runs/demo")
    if preset == "default":
        return PipelineConfig().replace(data={"frequencies": derivable_frequencies(bar_minutes)})
    raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")


def _comment(text: str) -> str:
    lines = inspect.cleandoc(text or "").splitlines()
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def _ingestion_sentence(field: str, limit: int = 160):
    """The sentence of `IngestionConfig`'s documentation (components/example_gen/config.py, where the data
    fields are defined) that names `field`, shortened to `limit` characters; None when it names it nowhere."""
    import re

    from components.example_gen.config import IngestionConfig
    doc = " ".join(inspect.cleandoc(IngestionConfig.__doc__ or "").split())
    m = re.search(rf"`{re.escape(field)}`", doc)
    if m is None:
        return None
    ends = [e.end() for e in re.finditer(r"(?<!e\.g)(?<!i\.e)\.\s", doc)]   # sentence ends (not "e.g. ")
    start = max([e for e in ends if e <= m.start()], default=0)
    end = min([e for e in ends if e > m.end()], default=len(doc))
    sentence = doc[start:end].strip().replace("`", "")
    if len(sentence) > limit:       # a window around the field's name
        at = sentence.find(field)
        lo = sentence.find(" ", max(0, at - 60)) + 1 if at > 60 else 0
        sentence = ("..." if lo else "") + sentence[lo:lo + limit - 6].rstrip() + "..."
    return sentence


def _note(section, key: str, choices: dict, documented: str = "") -> str:
    """End-of-line comment of one field: its FIELD_NOTES line (or, for a data field the section's text does not
    name, the sentence of IngestionConfig's documentation that does) and/or its allowed values."""
    import re

    import yaml
    parts = []
    if key in FIELD_NOTES.get(section, {}):
        parts.append(FIELD_NOTES[section][key])
    elif section == "data" and not re.search(rf"\b{re.escape(key)}\b", documented):
        sentence = _ingestion_sentence(key)
        if sentence:
            parts.append(sentence)
    if key in choices:
        parts.append("one of: " + ", ".join(c if isinstance(c, str) else yaml.safe_dump(c).split("\n")[0]
                                            for c in choices[key]))
    return "  # " + "; ".join(parts) if parts else ""


def _frequencies_comment(frequencies) -> str:
    return ("# frequencies " + ", ".join(str(f) for f in frequencies) + " min: each a whole multiple of the source "
            "bar length (resampled from it;\n# `lems init --bar-minutes M` writes the paper's 15, 90, 250 rounded "
            "down to multiples of M, e.g. 15 -> 15, 90, 240).\n")


def documented_yaml(config) -> str:
    """`config` as YAML, each section under its class documentation as comments, and each field its
    section's documentation does not name with its own end-of-line comment (FIELD_NOTES)."""
    import yaml
    from pipeline.configs import PipelineConfig, field_rules
    values = config.to_dict()
    sections = {f.name: f for f in dataclasses.fields(PipelineConfig)
                if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)}
    out = [f"# lems-tfx pipeline configuration (`lems run --config FILE`), written by `lems init`.\n"
           "# Every field is optional (missing = the default of pipeline/configs.py); unknown keys, wrong types and\n"
           "# values outside the allowed choices are errors naming the field. Numbers like 1e-5 are accepted.\n"
           "# Relative paths are relative to the directory `lems run` is started from.\n#\n",
           _comment(PipelineConfig.__doc__), "\n"]
    top = {k: v for k, v in values.items() if k not in sections}
    for line in yaml.safe_dump(top, sort_keys=False).splitlines():
        key = line.split(":", 1)[0] if line and not line.startswith((" ", "-")) else None
        out.append(line + (_note(None, key, {}) if key else "") + "\n")
    rules = field_rules()
    for name, f in sections.items():
        documented = _comment(f.default_factory.__doc__)
        out.append("\n" + documented)
        if name == "data":
            out.append(_frequencies_comment(values["data"]["frequencies"]))
        choices = {k: r["choices"] for k, r in rules.get(f.default_factory.__name__, {}).items() if "choices" in r}
        for line in yaml.safe_dump({name: values[name]}, sort_keys=False).splitlines():
            key = line.strip().split(":", 1)[0] if line.startswith("  ") and not line.startswith("   ") \
                and not line.strip().startswith("-") else None
            if key is not None:
                line += _note(name, key, choices, documented)
            out.append(line + "\n")
    return "".join(out)


def write_config(config, path: str, *, force: bool = False) -> str:
    """Write `documented_yaml(config)` to `path` (refuses to overwrite unless `force`); returns the path."""
    from lems_cli.errors import CliError
    if not path.endswith((".yaml", ".yml", ".json")):
        raise CliError(f"{path}: write a .yaml/.yml (documented) or .json file")
    if os.path.exists(path) and not force:
        raise CliError(f"{path} exists; pass --force to overwrite it")
    if path.endswith(".json"):  # JSON has no comments: the plain values
        config.save(path)
        return path
    text = documented_yaml(config)
    from pipeline.configs import PipelineConfig
    import yaml
    if PipelineConfig.from_dict(yaml.safe_load(text)) != config:  # what we write reads back as the same config
        raise RuntimeError("lems init: the written configuration does not read back identically")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def run(args) -> int:
    from lems_cli.errors import CliError
    try:
        config = starting_config(args.preset, args.bar_minutes).validate()
    except ValueError as e:
        raise CliError(f"lems init: {e}") from e
    write_config(config, args.config, force=args.force)
    print(f"wrote {args.config} (preset {args.preset}): root {config.root}, data.source {config.data.source}, "
          f"frequencies {config.data.frequencies} min, serving_dir {config.serving.serving_dir}; edit it, then "
          f"`lems run --config {args.config}`")
    return 0
