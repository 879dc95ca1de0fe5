"""The benchmark tooling measures what it claims: the FLOP counter of benchmarks/flops.py against hand counts,
and the benchmark table formatter."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


def _count(fn, *args, model_name=None):
    from flops import FlopCounter
    c = FlopCounter(model_name)
    c.walk(tf.function(fn).get_concrete_function(*args).graph)
    return c


def test_matmul_and_einsum_flops_are_exact():
    a, b = tf.zeros((3, 5, 7)), tf.zeros((7, 11))
    c = _count(lambda a, b: tf.matmul(a, b) + tf.einsum("bij,jk->bik", a, b), a, b)
    assert c.matmul_flops == 2 * (2 * 3 * 5 * 7 * 11)
    x, y = tf.zeros((4, 6)), tf.zeros((9, 6))
    assert _count(lambda x, y: tf.matmul(x, y, transpose_b=True), x, y).matmul_flops == 2 * 4 * 9 * 6


def test_rnn_loop_counted_per_time_step_and_dead_code_pruned():
    batch, steps, dim, units = 4, 10, 16, 32
    inp = keras.Input((steps, dim), batch_size=batch)
    out = keras.layers.LSTM(units, return_sequences=True)(keras.layers.Dense(units, use_bias=False)(inp))
    model = keras.Model(inp, out)
    c = _count(lambda x: model(x), tf.zeros((batch, steps, dim)), model_name=model.name)
    dense = 2 * batch * steps * dim * units
    lstm = steps * 2 * (2 * batch * units * 4 * units)  # x@W and h@U per step; the shape-probing step is dead
    assert c.unknown_trip_loops == 0
    assert c.matmul_flops == dense + lstm


def test_matmul_floor_inventory_lists_every_product_with_its_executions():
    """The matmul floor (flops.matmul_floor) times each recorded (op, shapes, flags) once and multiplies by its
    executions per step: a product inside a recurrent loop must be listed once per time step."""
    batch, steps, dim, units = 4, 10, 16, 32
    inp = keras.Input((steps, dim), batch_size=batch)
    out = keras.layers.GRU(units, return_sequences=True)(inp)
    model = keras.Model(inp, out)
    x = tf.zeros((batch, steps, dim))

    def f(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x))
        return tape.gradient(loss, model.trainable_variables)
    c = _count(f, x, model_name=model.name)
    assert c.unknown_trip_loops == 0 and c.matmuls
    recurrent = ("MatMul", ((batch, units), (units, 3 * units)), (False, False))  # h @ U, once per time step
    assert c.matmuls[recurrent] == steps


def test_only_the_larger_branch_of_a_conditional_is_counted():
    x = tf.zeros((8, 8))

    def f(x, flag):
        return tf.cond(flag, lambda: tf.matmul(tf.matmul(x, x), x), lambda: tf.matmul(x, x))
    c = _count(f, x, tf.constant(True))
    assert c.matmul_flops == 2 * (2 * 8 * 8 * 8)


def test_format_table_aligns_columns():
    from _common import format_table
    lines = format_table(["a", "long header"], [[1, 2], ["wide cell", 3]]).splitlines()
    assert len({len(l) for l in lines}) == 1
    assert lines[0].startswith("| a ") and "long header" in lines[0]


def test_step_ab_settings_are_model_options_applied_to_that_variant_only():
    """benchmarks/step_ab.py: `NAME=VALUE` settings are `build_lem` options (or the optimizer), given to one
    variant's model; malformed ones are refused with a message."""
    import argparse

    import keras
    import step_ab
    from lem_model.optim import LemAdam
    from lem_model_testutils import NUM_FEATURES, TINY

    assert step_ab.parse_setting("implementation=reference") == ("implementation", "reference")
    assert step_ab.parse_setting("xla_max_batch=0") == ("xla_max_batch", 0)
    a = step_ab.build_variant(dict([step_ab.parse_setting("implementation=reference")]), TINY, NUM_FEATURES)
    b = step_ab.build_variant(dict([step_ab.parse_setting("optimizer=adam")]), TINY, NUM_FEATURES)
    assert a.implementation == "reference" and isinstance(a.optimizer, LemAdam)
    assert b.implementation == "auto" and type(b.optimizer) is keras.optimizers.Adam
    for bad in ("implementation", "no_such_option=1", "optimizer=sgd", "lem_model.model.TRAIN_CONTEXT_CHUNKS=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            step_ab.parse_setting(bad)


def test_results_page_rows_come_from_the_targets_of_each_results_file(tmp_path):
    import json
    import results_page
    common = {"date": "2026-12-02T10:00:00+00:00", "commit": "abc1234", "machine": {"cpu": "CPU X", "cores": 2},
              "command": "benchmarks/x.py --fast"}
    (tmp_path / "demo.json").write_text(json.dumps({**common, "targets": [
        {"target": "blessed", "value": "BLESSED", "goal": "every slice", "met": True, "page": True}]}))
    (tmp_path / "zz.json").write_text(json.dumps({**common, "targets": [
        {"target": "ratio", "value": [0.91234, 0.8, 1.05], "goal": "< 1", "met": False, "page": True},
        {"target": "hidden a", "value": 1.0, "goal": "g", "met": True, "page": False},
        {"target": "hidden b", "value": 2.0, "goal": "g", "met": False, "page": False},
        {"target": "hidden c", "value": None, "goal": "g", "met": None, "page": False}]}))
    (tmp_path / "no_targets.json").write_text(json.dumps(common))
    table = results_page.render_table(results_page.load_results(str(tmp_path)))
    lines = table.splitlines()
    assert lines[0].startswith("| target | value | goal | met |")
    assert lines[2] == ("| blessed | BLESSED | every slice | yes | 2026-12-02, abc1234 | CPU X, 2 cores | "
                        "`benchmarks/x.py --fast` |")
    assert lines[3].startswith("| ratio | 0.912 [0.800, 1.050] | < 1 | **no** |")
    assert lines[4].startswith("| zz: the 3 other targets (`results/zz.json`) | 1 of 2 met |")
    assert len(lines) == 5  # the file without targets adds no row
    page = f"intro\n{results_page.BEGIN}\nold\n{results_page.END}\nnotes\n"
    assert results_page.replace_table(page, "T") == f"intro\n{results_page.BEGIN}\nT\n{results_page.END}\nnotes\n"
    with pytest.raises(ValueError, match="marker"):
        results_page.replace_table("no markers", "T")


def test_results_page_is_current():
    import results_page
    assert results_page.main(["--check"]) == 0, "run benchmarks/results_page.py after a benchmark writes its JSON"


def test_write_result_records_where_and_how_a_figure_was_measured(tmp_path):
    import json
    import _common
    path = _common.write_result("x", [_common.target("t", 1.5, "< 2", True)], {"extra": 3},
                                path=str(tmp_path / "x.json"))
    out = json.loads(open(path).read())
    assert out["targets"] == [{"target": "t", "value": 1.5, "goal": "< 2", "met": True, "page": True}]
    assert out["extra"] == 3 and out["name"] == "x"
    assert {"date", "commit", "machine", "command"} <= set(out) and out["machine"]["cores"] >= 1


def test_git_commit_names_a_dirty_tree_but_not_fresh_results(tmp_path, monkeypatch):
    """A result written from uncommitted code says so ("+dirty"); the benchmark's own outputs and Markdown
    (notes, the results page) do not count."""
    import subprocess

    import _common
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("code.py", "benchmarks/results/r.json", "benchmarks/RESULTS.md", "benchmarks/HISTORY.md"):
        (tmp_path / name).write_text("1\n")
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(_common, "ROOT", str(tmp_path))
    assert _common.git_commit() == head
    (tmp_path / "benchmarks/results/r.json").write_text("2\n")
    (tmp_path / "benchmarks/RESULTS.md").write_text("2\n")
    (tmp_path / "benchmarks/HISTORY.md").write_text("2\n")
    (tmp_path / "untracked.txt").write_text("new\n")
    assert _common.git_commit() == head
    (tmp_path / "code.py").write_text("2\n")
    assert _common.git_commit() == head + "+dirty"


def test_benchmarks_take_config_overrides_as_lems_run_does(tmp_path):
    import rate_cap
    import reproduce
    import reproduce_tails
    from _common import load_config
    crypto = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "reproduce",
                          "crypto.yaml")
    config = load_config(crypto, ["model.input_clip=5", "root=./runs/crypto-v6"])
    assert config.model.input_clip == 5.0 and config.root == "./runs/crypto-v6"
    assert config.sizes == load_config(crypto).sizes            # everything else as the file says
    out, empty = str(tmp_path / "x.json"), str(tmp_path / "empty.yaml")   # a root with no run: nothing to read
    load_config(crypto, [f"root={tmp_path / 'root'}"]).save(empty)
    for main, args in ((reproduce.main, ["--experiment", "crypto", "--config", empty, "--split", "eval"]),
                       (reproduce_tails.main, ["--config", empty, "--output", out]),
                       (rate_cap.main, ["--config", empty, "--split", "eval", "--output", out])):
        with pytest.raises(SystemExit) as err:   # before anything runs or is written
            main(args + ["--set", "model.input_clp=5"])
        assert "input_clp" in str(err.value) and "config.model" in str(err.value)
    assert not os.path.exists(out) and not (tmp_path / "root").exists()


def test_results_page_rows_of_a_backtest_json():
    import results_page
    fig = lambda v, lo, hi: {"match_vwap_std_ratio": {"value": v, "lo": lo, "hi": hi}}  # noqa: E731
    content = {"name": "crypto", "date": "2026-12-07", "commit": "abc", "machine": {"cpu": "X", "cores": 2},
               "command": "lems backtest --config c.yaml",
               "folds": [{"name": "fold-1", "slices": {"15 min": fig(0.9, 0.8, 1.0), "overall": fig(0.9, 0.8, 1.0)}},
                         {"name": "fold-2", "slices": {"15 min": fig(1.05, 0.9, 1.2), "overall": fig(1, 0.9, 1.1)}}],
               "pooled": {"slices": {"15 min": fig(0.77, 0.70, 0.95), "90 min": fig(0.75, 0.6, 0.9)},
                          "gate": {"blessed": True}},
               "test": {"slices": {"15 min": fig(0.77, 0.70, 1.02)}, "gate": {"blessed": False,
                                                                             "failed_slices": ["BTCUSDT / 15 min"]}}}
    rows = {t["target"]: t for t in results_page.backtest_targets(content)}
    assert rows["backtest crypto (2 folds pooled) 15 min: match-VWAP std / TWAP (volume) std"]["met"] is True
    assert rows["backtest crypto (2 folds pooled) 90 min: match-VWAP std / TWAP (volume) std"]["met"] is False  # > 0.72
    assert rows["backtest crypto (test) 15 min: match-VWAP std / TWAP (volume) std"]["met"] is False  # hi >= 1
    assert rows["backtest crypto (test): blessing gate (intervals)"]["value"] == "NOT BLESSED: BTCUSDT / 15 min"
    folds = rows["backtest crypto: folds x frequencies with the match-VWAP std ratio below 1"]
    assert folds["value"].startswith("1 of 2 (highest fold-2 15 min: 1.050") and folds["met"] is False
    table = results_page.render_table([("backtest-crypto", content)])
    assert "| backtest crypto (test) 15 min: match-VWAP std / TWAP (volume) std | 0.770 [0.700, 1.020] |" in table
