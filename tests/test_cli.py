"""The `lems` command line around the pipeline: `--version`, `lems init` / `lems demo --save-config`, quiet
third-party logs by default (`--verbose` keeps them), one progress line per component, short epoch lines."""
import logging
import os
import sys
import time
import warnings
from importlib import metadata

import pytest
import yaml

from lems_cli.main import main
from pipeline.configs import PipelineConfig, demo_config


def test_run_rejects_a_bad_override_before_running(tmp_path, capsys):
    path = str(tmp_path / "c.yaml")
    demo_config(str(tmp_path / "root")).save(path)
    assert main(["run", "--config", path, "--set", "model.input_clp=5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and "input_clp" in err and "config.model" in err
    assert not (tmp_path / "root").exists()   # nothing ran


def _config_errors(tmp_path):
    """(argv, words the one-line message must hold) of configuration mistakes a user makes."""
    bad_type, typo, bad_value, bad_yaml = (str(tmp_path / n) for n in ("t.yaml", "k.yaml", "v.yaml", "y.yaml"))
    open(bad_type, "w").write('training: {epochs: "three"}\n')
    open(typo, "w").write("trainig: {epochs: 3}\n")
    open(bad_value, "w").write("sizes: {n_ahead: 0}\n")
    open(bad_yaml, "w").write("training: {epochs: [\n")
    no_backtest = str(tmp_path / "b.yaml")
    open(no_backtest, "w").write("training: {epochs: 3}\n")
    bad_fold = str(tmp_path / "f.yaml")
    open(bad_fold, "w").write("backtest: {name: x, bogus: 1}\n")
    return [
        (["run", "--config", bad_type], [bad_type, "config.training.epochs: expected an integer, got 'three'",
                                         "write numbers without quotes"]),
        (["run", "--config", typo], [typo, "unknown key(s) ['trainig']", "did you mean config.training"]),
        (["run", "--config", bad_value], [bad_value, "sizes.n_ahead must be >= 1 bar, got 0"]),
        (["run", "--config", bad_yaml], [bad_yaml, "cannot parse config"]),
        (["run", "--config", str(tmp_path / "missing.yaml")], ["config file not found", "missing.yaml"]),
        (["run", "--config", bad_value, "--set", "training.epochs=0"], [bad_value]),
        (["backtest", "--config", no_backtest], [no_backtest, "needs a `backtest` section"]),
        (["backtest", "--config", bad_fold], [bad_fold, "unknown key(s) ['bogus'] in backtest"]),
        (["backtest", "--config", bad_yaml], [bad_yaml]),
        (["demo", "--save-config", str(tmp_path / "demo.txt")], ["demo.txt", "write a .yaml/.yml"]),
    ]


def test_config_errors_are_one_line_and_exit_2(tmp_path, capsys):
    """Each mistake: exit status 2 and exactly one line `error: ...` on stderr naming the file and the field,
    no traceback; with --verbose the traceback comes first and the same line last."""
    for argv, words in _config_errors(tmp_path):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, (argv, lines)
        assert all(w in lines[0] for w in words), (argv, lines[0], words)
    argv, _ = _config_errors(tmp_path)[0]
    assert main(argv + ["--verbose"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Traceback (most recent call last):" and err[-1].startswith("error: ") and len(err) > 3


def test_config_error_of_the_command_as_a_user_runs_it(tmp_path):
    """The process itself: exit status 2, one stderr line, nothing on stdout."""
    import subprocess
    path = tmp_path / "bad.yaml"
    path.write_text('training: {epochs: "three"}\n')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "lems_cli.main", "run", "--config", str(path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {path}: config.training.epochs: expected an integer, got 'three' "
                                        "(str) (quoted in the file? write numbers without quotes)"]


def test_version_from_package_metadata(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lems {metadata.version('lems-tfx')}"


@pytest.mark.parametrize("preset", ["default", "demo"])
def test_init_writes_a_documented_config_that_loads_and_validates(tmp_path, capsys, preset):
    path = str(tmp_path / "my.yaml")
    assert main(["init", "--config", path, "--preset", preset]) == 0
    assert path in capsys.readouterr().out
    text = open(path, encoding="utf-8").read()
    loaded = PipelineConfig.from_file(path).validate()
    assert loaded == (demo_config("./runs/demo") if preset == "demo" else
                      PipelineConfig().replace(data={"frequencies": [15, 90, 240]}))
    for p in (loaded.root, loaded.data.source, loaded.serving.serving_dir):  # relative, so the file travels
        assert not os.path.isabs(p) and "://" not in p, p
    # each section under its documentation; fields with a fixed set of values list them
    assert "# Hyperparameters of `lem_model.model.build_lem`" in text and "\nmodel:\n" in text
    assert [ln for ln in text.splitlines() if ln.strip().startswith("recurrent:")][0].endswith(
        "; one of: tkan, lstm, gru")
    # the blessing gate's settings, documented (components.evaluator.config)
    assert "interval_level: 0.95" in text and "max_std_ratio_margin: 0.1" in text and "max_match_std_ratio" not in text
    assert "# interval_level: level of the block-bootstrap intervals" in text
    assert main(["init", "--config", path]) == 2
    assert capsys.readouterr().err.strip() == f"error: {path} exists; pass --force to overwrite it"
    assert main(["init", "--config", path, "--force", "--verbose"]) == 0  # --verbose anywhere on the line
    _assert_every_field_explained(text)


def _assert_every_field_explained(text: str) -> None:
    """Each field written is named in its section's comment block (the comments right above the section; for
    the top-level fields, the file's opening comments) or carries its own end-of-line comment."""
    import re
    sections = {k for k, v in PipelineConfig().to_dict().items() if isinstance(v, dict)}
    block, comments, section, unexplained = [], None, None, []
    for line in text.splitlines():
        if line.startswith("#"):
            block.append(line)
            continue
        if not line.strip() or line.strip().startswith("-") or line.startswith("    "):
            continue                                   # blank, list items, entries of a mapping field
        key = line.strip().split(":", 1)[0]
        if not line.startswith(" "):
            if comments is None:                       # the opening comments document the top-level fields
                comments = " ".join(block)
            if key in sections:
                section, comments, block = key, " ".join(block), []
                continue
            section = None
        if re.search(rf"\b{re.escape(key)}\b", comments or "") is None and "  # " not in line:
            unexplained.append(f"{section or '<top>'}.{key}")
    assert not unexplained, unexplained


def test_init_frequencies_are_derivable_from_the_bar_length(tmp_path, capsys):
    from lems_cli.init import FIELD_NOTES, derivable_frequencies
    assert derivable_frequencies(15) == [15, 90, 240]
    assert derivable_frequencies(1) == derivable_frequencies(5) == [15, 90, 250]
    assert derivable_frequencies(60) == [60, 240] and derivable_frequencies(1440) == [1440]
    path = str(tmp_path / "h.yaml")
    assert main(["init", "--config", path, "--bar-minutes", "60"]) == 0
    assert "frequencies [60, 240] min" in capsys.readouterr().out
    config = PipelineConfig.from_file(path)
    assert config.data.frequencies == [60, 240]
    text = open(path, encoding="utf-8").read()
    assert "# frequencies 60, 240 min: each a whole multiple of the source bar length" in text
    _assert_every_field_explained(text)
    # no note names a field that does not exist (they would rot silently)
    values = PipelineConfig().to_dict()
    for section, notes in FIELD_NOTES.items():
        fields = {k for k, v in values.items() if not isinstance(v, dict)} if section is None else set(values[section])
        assert set(notes) <= fields, (section, set(notes) - fields)


def test_demo_save_config_writes_without_running(tmp_path):
    root = tmp_path / "demo-root"
    path = str(tmp_path / "demo.yaml")
    assert main(["demo", "--root", str(root), "--save-config", path]) == 0
    assert not root.exists()  # nothing generated, nothing run
    assert PipelineConfig.from_file(path) == demo_config(str(root))


@pytest.fixture
def restore_logging(monkeypatch):
    """Undo what `logs.setup` changes in this process (env, logger levels, absl verbosity, warning filters)."""
    from absl import logging as absl_logging

    from lems_cli import logs
    for name in logs.QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    names = logs.THIRD_PARTY_LOGGERS + logs.PROJECT_LOGGERS
    levels = {n: logging.getLogger(n).level for n in names}
    verbosity = absl_logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.resetwarnings()  # only what setup adds (pytest.ini ignores FutureWarning for the suite)
        yield logs
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    absl_logging.set_verbosity(verbosity)


def _api_core_warning_shown() -> bool:
    """Whether the google.api_core Python-version FutureWarning (as it issues it) gets through the filters."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("You are using a non-supported Python version", FutureWarning, "support.py", 1,
                               module="google.api_core._python_version_support")
    return bool(seen)


def test_quiet_by_default(restore_logging):
    logs = restore_logging
    done = logs.setup(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and os.environ["GRPC_VERBOSITY"] == "ERROR"
    assert done["env"] == logs.QUIET_ENV
    for name in ("absl", "tensorflow", "apache_beam", "tensorflow_model_analysis"):
        assert logging.getLogger(name).level == logging.ERROR, name
        assert not logging.getLogger(f"{name}.sub").isEnabledFor(logging.WARNING)
    from absl import logging as absl_logging
    assert absl_logging.get_verbosity() == absl_logging.ERROR
    assert not _api_core_warning_shown()
    assert logging.getLogger("backfill").isEnabledFor(logging.INFO)  # our own progress stays
    with warnings.catch_warnings(record=True) as seen:  # our own warnings are not filtered
        warnings.warn_explicit("local path", UserWarning, "runner.py", 1, module="kubeflow.runner")
    assert len(seen) == 1


def test_verbose_keeps_third_party_logs(restore_logging, monkeypatch):
    logs = restore_logging
    logging.getLogger("tensorflow").setLevel(logging.NOTSET)
    done = logs.setup(verbose=True)
    assert done == {"env": {}, "loggers": {}, "warning_filters": 0}
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and "GRPC_VERBOSITY" not in os.environ
    assert logging.getLogger("tensorflow").level == logging.NOTSET
    assert _api_core_warning_shown()
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # a value the user set is kept when quiet too
    assert "TF_CPP_MIN_LOG_LEVEL" not in logs.setup(verbose=False)["env"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_component_progress_lines(restore_logging, capsys):
    """One line per component from TFX's launcher announcements on the absl logger; other absl INFO records
    stay hidden when quiet; a failing component is named."""
    from absl import logging as absl_logging

    from pipeline.local_runner import ComponentProgress
    restore_logging.setup(verbose=False)
    absl_logger = logging.getLogger("absl")
    records = []
    sink = logging.Handler()
    sink.emit = records.append
    absl_logger.addHandler(sink)
    try:
        with ComponentProgress(3, stream=sys.stdout) as progress:
            for node in ("ExampleGen", "Trainer"):
                absl_logging.info("Component %s is running.", node)
                absl_logging.info("some third-party detail")
                previous = absl_logging.get_verbosity()  # what TensorFlow's SavedModel export does
                absl_logging.set_verbosity(absl_logging.FATAL)
                absl_logging.set_verbosity(previous)
                absl_logging.info("Component %s is finished.", node)
        with pytest.raises(RuntimeError):
            with ComponentProgress(1, stream=sys.stdout):
                absl_logging.info("Component %s is running.", "Pusher")
                raise RuntimeError("boom")
    finally:
        absl_logger.removeHandler(sink)
    out = [line for line in capsys.readouterr().out.splitlines() if "still running" not in line]
    assert [n for n, _ in progress.finished] == ["ExampleGen", "Trainer"]
    assert out[0] == "[pipeline] 1/3 ExampleGen: running"
    assert out[1].startswith("[pipeline] 1/3 ExampleGen finished in ")
    assert out[2].startswith("[pipeline] 2/3 Trainer: training the LEM") and out[3].startswith("[pipeline] 2/3 Trainer")
    assert out[4] == ("[pipeline] 1/1 Pusher: copying the model to the serving directory if it was blessed")
    assert out[5].startswith("[pipeline] Pusher FAILED after ") and out[5].endswith("RuntimeError")
    assert records == []  # quiet: no absl INFO record reached a handler
    assert absl_logger.level == logging.ERROR and absl_logging.get_verbosity() == absl_logging.ERROR  # restored


def test_a_quiet_step_says_what_it_does(restore_logging, capsys):
    """While a component runs and nothing is printed for `quiet_seconds`, a line names it, its elapsed time and
    what it does; any output (an epoch line) resets the wait; sys.stdout is restored after the run."""
    from absl import logging as absl_logging

    from pipeline.local_runner import ComponentProgress
    restore_logging.setup(verbose=False)
    stdout = sys.stdout
    with ComponentProgress(2, quiet_seconds=0.4):
        absl_logging.info("Component %s is running.", "ServingCheck")
        time.sleep(1.3)
        print("[trainer] something", flush=True)
        time.sleep(0.2)
        absl_logging.info("Component %s is finished.", "ServingCheck")
    assert sys.stdout is stdout
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[pipeline] 1/2 ServingCheck: loading the SavedModel as TF Serving does")
    beats = [line for line in out if "still running" in line]
    assert 1 <= len(beats) <= 4 and beats[0].startswith("[pipeline] ServingCheck still running (")
    assert beats[0].endswith("s): loading the SavedModel as TF Serving does, replaying its warm-up requests, "
                             "comparing with the Python path")
    assert out.index("[trainer] something") == len(out) - 2 and out[-1].startswith("[pipeline] 1/2 ServingCheck "
                                                                                   "finished in ")


def test_epoch_line_is_short_and_has_the_figures_that_matter(capsys):
    from components.trainer.module import EpochLine
    logs = {"loss": 1.2345678, "val_loss": 1.3456789, "learning_rate": 1e-3}
    for prefix in ("", "val_"):
        for side in ("buy", "sell"):
            for bench in ("vwap", "twap"):
                for target in ("volume", "notional"):
                    logs[f"{prefix}{side}_{bench}_{target}_bps"] = -1.5
        for bench in ("vwap", "twap"):
            logs[f"{prefix}match_{bench}_abs_bps"] = 3.25
    line = EpochLine(epochs=6)
    line.on_epoch_begin(2)
    line.on_epoch_end(2, logs)
    out = capsys.readouterr().out.strip()
    assert out.startswith("[trainer] epoch 3/6 ") and len(out) < 160, out
    assert "loss 1.235" in out and "val_loss 1.346" in out and "val match|vwap| bps 3.25" in out
    assert "val buy vwap bps -1.5" in out and "twap" not in out and "notional" not in out


def test_config_with_scientific_numbers_reads_without_tensorflow(tmp_path):
    """`lems run` checks the file before TensorFlow is imported: a subprocess that reads and validates a
    YAML config (with 1e-5, a string to PyYAML) must not have imported TensorFlow."""
    import subprocess
    path = tmp_path / "c.yaml"
    path.write_text("training: {learning_rate: 1e-5, min_learning_rate: 1E-7}\nmodel: {recurrent: gru}\n")
    code = ("import sys; from pipeline.configs import PipelineConfig; "
            f"c = PipelineConfig.from_file({str(path)!r}).validate(); "
            "assert c.training.learning_rate == 1e-5 and c.training.min_learning_rate == 1e-7; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(sys.modules); print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert yaml.safe_load(path.read_text())["training"]["learning_rate"] == "1e-5"  # the case being fixed


def test_run_prints_the_gate_lines_and_the_verdict(monkeypatch, capsys):
    """`lems run`'s summary: the verdict, then the gate's lines (one per gated slice and head) as the Evaluator
    output gives them (`components.evaluator.eval_config.gate_summary_lines`)."""
    from components.evaluator import eval_config
    from lems_cli.run import print_summary
    from pipeline.local_runner import NodeRun, RunSummary
    lines = ["9 of 9 slices gated. ...", "  overall (2400 orders)   match   std ratio vs TWAP   buy 0.912 [0.851, 0.973] "
             "pass   sell 0.905 [0.840, 0.970] pass"]
    monkeypatch.setattr(eval_config, "gate_summary_lines", lambda uri: lines if uri == "EVAL" else [])
    monkeypatch.setattr(eval_config, "validation_lines", lambda uri: ["validation_ok = False", "FAILED [x] y"])
    nodes = {"Evaluator": NodeRun("Evaluator", "COMPLETE", {"evaluation": ["EVAL"]}, 1, 2.0)}
    for blessed, verdict in ((True, "BLESSED (no gated slice significantly worse"), (False, "NOT BLESSED")):
        print_summary(demo_config("/tmp/x"), RunSummary("r", nodes, 3.0, blessed=blessed))
        out = capsys.readouterr().out
        assert f"Blessing:        {verdict}" in out and all(line in out for line in lines)
        assert ("FAILED [x] y" in out) == (not blessed)
    # the way to a served model, whatever the verdict
    print_summary(demo_config("/tmp/x"), RunSummary("r", nodes, 3.0, blessed=False, model_dir="/tmp/x/m"))
    out = capsys.readouterr().out
    assert ("lems push --unblessed --run /tmp/x && lems serve --model-base-path /tmp/x/serving/lem" in out
            and "marked UNBLESSED" in out)
    print_summary(demo_config("/tmp/x"), RunSummary("r", nodes, 3.0, blessed=True, model_dir="/tmp/x/m",
                                                    pushed_model_dir="/tmp/x/serving/lem/1"))
    assert "Next:            lems serve --model-base-path /tmp/x/serving/lem" in capsys.readouterr().out
