"""The benchmark tooling measures what it claims: the FLOP counter of benchmarks/_flops.py against hand counts,
the results page and the results files."""
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


def _count(fn, *args):
    from benchmarks._flops import graph_flops
    return graph_flops(tf.function(fn).get_concrete_function(*args).graph)


def test_matmul_and_einsum_flops_are_exact():
    a, b = tf.zeros((3, 5, 7)), tf.zeros((7, 11))
    c = _count(lambda a, b: tf.matmul(a, b) + tf.einsum("bij,jk->bik", a, b), a, b)
    assert c["matmul"] == 2 * (2 * 3 * 5 * 7 * 11)
    x, y = tf.zeros((4, 6)), tf.zeros((9, 6))
    assert _count(lambda x, y: tf.matmul(x, y, transpose_b=True), x, y)["matmul"] == 2 * 4 * 9 * 6
    p, q = tf.zeros((2, 1, 4, 6)), tf.zeros((3, 7, 6))     # broadcast batch dimensions, adjoint y
    assert _count(lambda p, q: tf.matmul(p, q, adjoint_b=True), p, q)["matmul"] == 2 * (2 * 3) * 4 * 7 * 6


def test_rnn_loop_counted_per_time_step_and_dead_code_pruned():
    batch, steps, dim, units = 4, 10, 16, 32
    inp = keras.Input((steps, dim), batch_size=batch)
    out = keras.layers.LSTM(units, return_sequences=True)(keras.layers.Dense(units, use_bias=False)(inp))
    model = keras.Model(inp, out)
    c = _count(lambda x: model(x), tf.zeros((batch, steps, dim)))
    dense = 2 * batch * steps * dim * units
    lstm = steps * 2 * (2 * batch * units * 4 * units)  # x@W and h@U per step; the shape-probing step is dead
    assert c["unknown_trip_loops"] == 0
    assert c["matmul"] == dense + lstm


def test_gradient_loops_are_counted_per_time_step():
    """The backward pass of a recurrent layer is a while loop too; its trip count comes from the forward loop."""
    batch, steps, dim, units = 4, 10, 16, 32
    inp = keras.Input((steps, dim), batch_size=batch)
    model = keras.Model(inp, keras.layers.GRU(units, return_sequences=True)(inp))

    def f(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x))
        return tape.gradient(loss, model.trainable_variables)
    forward = _count(lambda x: model(x), tf.zeros((batch, steps, dim)))
    c = _count(f, tf.zeros((batch, steps, dim)))
    assert c["unknown_trip_loops"] == 0
    assert c["matmul"] > 2 * forward["matmul"]   # the backward's products: h @ U's two gradients per step


def test_only_the_larger_branch_of_a_conditional_is_counted():
    x = tf.zeros((8, 8))

    def f(x, flag):
        return tf.cond(flag, lambda: tf.matmul(tf.matmul(x, x), x), lambda: tf.matmul(x, x))
    c = _count(f, x, tf.constant(True))
    assert c["matmul"] == 2 * (2 * 8 * 8 * 8)


def test_format_table_aligns_columns():
    from benchmarks._common import format_table
    lines = format_table(["a", "long header"], [[1, 2], ["wide cell", 3]]).splitlines()
    assert len({len(l) for l in lines}) == 1
    assert lines[0].startswith("| a ") and "long header" in lines[0]


def test_results_page_rows_come_from_the_targets_of_each_results_file(tmp_path):
    import json

    from benchmarks import results_page
    common = {"date": "2026-12-02T10:00:00+00:00", "commit": "abc1234", "machine": {"cpu": "CPU X", "cores": 2},
              "command": "python -m benchmarks.x --fast"}
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
                        "`python -m benchmarks.x --fast` |")
    assert lines[3].startswith("| ratio | 0.912 [0.800, 1.050] | < 1 | **no** |")
    assert lines[4].startswith("| zz: the 3 other targets (`results/zz.json`) | 1 of 2 met |")
    assert len(lines) == 5  # the file without targets adds no row
    page = f"intro\n{results_page.BEGIN}\nold\n{results_page.END}\nnotes\n"
    assert results_page.replace_table(page, "T") == f"intro\n{results_page.BEGIN}\nT\n{results_page.END}\nnotes\n"
    with pytest.raises(ValueError, match="marker"):
        results_page.replace_table("no markers", "T")


def test_results_page_is_current():
    from benchmarks import results_page
    assert results_page.main(["--check"]) == 0, "run `python -m benchmarks.results_page` after a benchmark writes"


def test_write_result_records_where_and_how_a_figure_was_measured(tmp_path):
    import json

    from benchmarks import _common
    path = _common.write_result("x", [_common.target("t", 1.5, "< 2", True)], {"extra": 3},
                                path=str(tmp_path / "x.json"))
    out = json.loads(open(path).read())
    assert out["targets"] == [{"target": "t", "value": 1.5, "goal": "< 2", "met": True, "page": True}]
    assert out["extra"] == 3 and out["name"] == "x"
    assert {"date", "commit", "machine", "command"} <= set(out) and out["machine"]["cores"] >= 1
    assert out["command"].startswith("python -m benchmarks.")   # as typed from the repository root


def test_git_commit_names_a_dirty_tree_but_not_fresh_results(tmp_path, monkeypatch):
    """A result written from uncommitted code says so ("+dirty"); the benchmark's own outputs and Markdown
    (notes, the results page) do not count."""
    import subprocess

    from benchmarks import _common
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    for name in ("code.py", "benchmarks/results/r.json", "benchmarks/RESULTS.md", "docs/experiments.md"):
        (tmp_path / name).write_text("1\n")
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(_common, "ROOT", str(tmp_path))
    assert _common.git_commit() == head
    (tmp_path / "benchmarks/results/r.json").write_text("2\n")
    (tmp_path / "benchmarks/RESULTS.md").write_text("2\n")
    (tmp_path / "docs/experiments.md").write_text("2\n")
    (tmp_path / "untracked.txt").write_text("new\n")
    assert _common.git_commit() == head
    (tmp_path / "code.py").write_text("2\n")
    assert _common.git_commit() == head + "+dirty"


def test_results_page_rows_of_a_backtest_json():
    from benchmarks import results_page
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
