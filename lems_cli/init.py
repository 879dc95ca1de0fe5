"""`lems init --config FILE`: write a documented starting pipeline configuration (YAML) with relative paths.

    lems init --config my.yaml                 # the defaults: the paper's sizes and recipe, data in ./data
    lems init --config my.yaml --preset demo   # the small demo configuration (what `lems demo` runs)
    lems run --config my.yaml

Each section is preceded by its documentation (the docstrings of `pipeline.configs`, the one place the fields
are defined); paths are relative to the directory `lems run` is started from. Nothing is run or imported
beyond the configuration module (no TensorFlow).
"""
from __future__ import annotations

import dataclasses
import inspect
import os

PRESETS = ("default", "demo")


def add_parser(parser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="file to write: .yaml/.yml (documented) "
                                                                        "or .json")
    parser.add_argument("--preset", choices=PRESETS, default="default",
                        help="default: the paper's sizes and training recipe on ./data; demo: the small "
                             "configuration of `lems demo` (root ./runs/demo)")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def starting_config(preset: str = "default"):
    """The PipelineConfig a preset starts from (relative paths)."""
    from pipeline.configs import PipelineConfig, demo_config
    if preset == "demo":
        return demo_config("./runs/demo")
    if preset == "default":
        return PipelineConfig()
    raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")


def _comment(text: str) -> str:
    lines = inspect.cleandoc(text or "").splitlines()
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def documented_yaml(config) -> str:
    """`config` as YAML, each section under its class documentation as comments."""
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
    out.append(yaml.safe_dump(top, sort_keys=False))
    rules = field_rules()
    for name, f in sections.items():
        out.append("\n" + _comment(f.default_factory.__doc__))
        choices = {k: r["choices"] for k, r in rules.get(f.default_factory.__name__, {}).items() if "choices" in r}
        for line in yaml.safe_dump({name: values[name]}, sort_keys=False).splitlines():
            key = line.strip().split(":", 1)[0] if line.startswith("  ") and not line.startswith("   ") else None
            if key in choices:
                line += "  # one of: " + ", ".join(c if isinstance(c, str) else yaml.safe_dump(c).split("\n")[0]
                                                  for c in choices[key])
            out.append(line + "\n")
    return "".join(out)


def write_config(config, path: str, *, force: bool = False) -> str:
    """Write `documented_yaml(config)` to `path` (refuses to overwrite unless `force`); returns the path."""
    if not path.endswith((".yaml", ".yml", ".json")):
        raise SystemExit(f"lems init: {path}: write a .yaml/.yml (documented) or .json file")
    if os.path.exists(path) and not force:
        raise SystemExit(f"lems init: {path} exists; pass --force to overwrite it")
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
    config = starting_config(args.preset).validate()
    write_config(config, args.config, force=args.force)
    print(f"wrote {args.config} (preset {args.preset}): root {config.root}, data.source {config.data.source}, "
          f"serving_dir {config.serving.serving_dir}; edit it, then `lems run --config {args.config}`")
    return 0
