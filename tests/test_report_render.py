"""The report renderer: the paper's table layouts from the ONE evaluator, figures written as PNG."""
import json
import os

import numpy as np
import pytest

from components.evaluator import order_slippage as osl
from components.report import render
from lem_model import layout, slippage

N = 4


def _result(b=120, seed=0):
    rng = np.random.default_rng(seed)
    alloc = rng.random((b, N, N + 1, 4, 2)) ** 3
    alloc /= alloc.sum(axis=1, keepdims=True)
    labels = np.stack([rng.lognormal(0, 0.5, (b, N)), np.exp(np.cumsum(rng.normal(0, 0.003, (b, N)), axis=1))], -1)
    return alloc, osl.order_slippage(alloc, labels)


def test_featured_heads_follow_the_paper_for_n12():
    assert render.featured_heads(12) == [6, 9, 11, 12]   # min 7, 10, 12 periods and the match head
    assert render.featured_heads(4) == [1, 2, 3, 4]


def test_tables_use_the_one_evaluator():
    alloc, result = _result()
    rows = render.table1_rows(result)
    assert [r["order_type"] for r in rows[:2]] == ["TWAP Notional", "TWAP Volume"]
    assert rows[1]["std"] == pytest.approx(slippage.table_statistics(result.baseline_bps["twap_volume_vs_vwap"])["std"])
    sell_match = [r for r in rows if r["order_type"] == "SELL" and r["min_period"] == "Match VWAP"][0]
    expect = slippage.table_statistics(result.lem_bps[:, N, layout.path_index("sell", "vwap"), 0])
    assert sell_match["median"] == pytest.approx(expect["median"]) and sell_match["p95"] == pytest.approx(expect["p95"])
    detailed = render.detailed_rows(result, 2)
    assert [r["min_period"] for r in detailed[:4]] == [s[0] for s in render.DETAILED_STRATEGIES]
    twap_notional_buy = slippage.table_statistics(result.lem_bps[:, 2, layout.path_index("buy", "twap"), 1])
    assert detailed[1]["mean"] == pytest.approx(twap_notional_buy["mean"])


def test_render_report_writes_html_tables_and_pngs(tmp_path):
    alloc, result = _result()
    freq = np.where(np.arange(len(alloc)) % 2 == 0, 15, 90)
    asset = np.array(["BTCUSDT", "ETHUSDT"] * (len(alloc) // 2))
    summary = render.render_report(str(tmp_path), alloc, result, freq, asset, title="T",
                                   header={"blessed": True}, validation=["validation_ok = True"], max_curves=20)
    html = open(tmp_path / "index.html", encoding="utf-8").read()
    for caption in ("Table 1", "Table 2", "Table 5", "Table 6", "Table 7", "Figure 5", "BLESSED"):
        assert caption in html
    assert set(summary["tables"]) == {"table1", "table2", "table3", "table4", "table5", "table1_freq15", "table1_freq90"}
    assert summary["counts"] == {"BTCUSDT / 15 min": 60, "ETHUSDT / 90 min": 60}
    # per-frequency Table 1 = Table 1 on that frequency's orders
    sub = render.table1_rows(result, freq == 90)
    assert summary["tables"]["table1_freq90"][5]["mean"] == pytest.approx(sub[5]["mean"])
    # 4 featured heads x (all + 2 frequencies) x (distribution, curves)
    assert len(summary["figures"]) == 4 * 3 * 2
    for name in summary["figures"]:
        with open(tmp_path / "figures" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}" in html
    assert json.load(open(tmp_path / "summary.json"))["orders"] == len(alloc)
    assert open(tmp_path / "tables.txt").read().startswith("Table 1")
