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
    curve = rng.random((b, N)) + 0.5
    return alloc, osl.order_slippage(alloc, labels, curve / curve.sum(axis=1, keepdims=True))


def test_featured_heads_follow_the_paper_for_n12():
    assert render.featured_heads(12) == [6, 9, 11, 12]   # min 7, 10, 12 periods and the match head
    assert render.featured_heads(4) == [1, 2, 3, 4]


def test_tables_use_the_one_evaluator():
    alloc, result = _result()
    rows = render.table1_rows(result)
    assert [r["order_type"] for r in rows[:3]] == ["TWAP (notional)", "TWAP (volume)", "VWAP curve (volume)"]
    assert rows[1]["std"] == pytest.approx(slippage.table_statistics(result.baseline_bps["twap_volume_vs_vwap"])["std"])
    assert rows[2]["mean"] == pytest.approx(np.mean(result.baseline_bps["vwap_curve_volume_vs_vwap"]))
    assert {r["order_type"] for r in rows[3:]} == {"LEM (volume) BUY", "LEM (volume) SELL"}
    sell_match = [r for r in rows if r["order_type"] == "LEM (volume) SELL" and r["min_period"] == "Match VWAP"][0]
    expect = slippage.table_statistics(result.lem_bps[:, N, layout.path_index("sell", "vwap"), 0])
    assert sell_match["median"] == pytest.approx(expect["median"]) and sell_match["p95"] == pytest.approx(expect["p95"])
    detailed = render.detailed_rows(result, 2)
    assert [r["min_period"] for r in detailed[:4]] == [s[0] for s in render.DETAILED_STRATEGIES]
    twap_notional_buy = slippage.table_statistics(result.lem_bps[:, 2, layout.path_index("buy", "twap"), 1])
    assert detailed[1]["mean"] == pytest.approx(twap_notional_buy["mean"])


def test_render_report_writes_every_section(tmp_path):
    alloc, result = _result()
    freq = np.where(np.arange(len(alloc)) % 2 == 0, 15, 90)
    asset = np.array(["BTCUSDT", "ETHUSDT"] * (len(alloc) // 2))
    blocks = np.arange(len(alloc)) // 10
    from components.evaluator import gate
    verdict = gate.evaluate_slice(result.lem_bps, result.baseline_bps, blocks, n_boot=100)
    checks = [dict(c) for c in verdict["checks"]]
    # colours follow the verdict, not the point estimate: a ratio below 1 marked FAIL, one above 1 marked pass
    checks[0].update(value=0.9, lo=0.8, hi=1.0, verdict="FAIL")
    checks[1].update(value=1.05, lo=0.95, hi=1.15, verdict="pass")
    gates = [{"slice": "overall", "orders": 120, "gated": True, "ratio": 0.8, "lo": 0.7, "hi": 0.9, "nonfinite": 0,
              "better": False, "level": 0.95, "margin": 0.1, "checks": checks, "champion_checks": [],
              "result": "FAILED: match buy std_ratio 0.900 [0.800, 1.000] FAIL (x)"},
             {"slice": "asset=BTCUSDT", "orders": 60, "gated": False, "ratio": 1.2, "lo": 1.0, "hi": 1.4,
              "nonfinite": 0, "better": False, "checks": verdict["checks"], "champion_checks": [],
              "result": "reported, not gated"}]
    champion = [{"slice": "overall", "side": "buy", "metric": "match_vwap_std_bps (buy)", "challenger": 9.5,
                 "champion": 10.0, "ratio": 0.95, "lo": 0.9, "hi": 1.01, "verdict": "pass", "gated": True}]
    history = {"history": {"loss": [3.0, 2.0], "val_loss": [3.1, 2.4], "learning_rate": [1e-3, 5e-4]}}
    summary = render.render_report(str(tmp_path), alloc, result, freq, asset, title="T",
                                   header={"blessed": True, "test period": "2025-01-06 .. 2025-01-30"},
                                   validation=["validation_ok = True"], max_curves=20, blocks=blocks,
                                   history=history, gates=gates, champion=champion)
    page = open(tmp_path / "index.html", encoding="utf-8").read()
    for section in ("id='header'", "id='blessing'", "id='gates'", "id='champion'", "id='orders'",
                    "id='comparison'", "id='tables'", "id='per-frequency'", "id='per-asset'", "id='training'",
                    "id='figures'"):
        assert section in page, section
    for text in ("Table 1", "Table 2", "Table 5", "for frequency 15 minutes", "for asset ETHUSDT", "BLESSED",
                 "2025-01-06 .. 2025-01-30", "reported, not gated", "Mean 95% CI", "VWAP curve (volume)",
                 "LEM (volume) BUY", "LEM (notional) vs TWAP", "p-value", "figures/training.png"):
        assert text in page, text
    assert "TWAP Volume vs TWAP" not in page  # model rows never read as the baseline
    assert "<td class='vfail'>0.900 FAIL</td>" in page and "<td class='vpass'>1.050 pass</td>" in page
    assert "<td class='vnot'>" in page and "NOT significantly better than TWAP (volume)" in page
    assert "min period N (no flexibility)" in page and "<td class='vpass'>0.950</td>" in page  # champion ratio
    assert set(summary["tables"]) >= {"table1", "table2", "table5", "table1_freq15", "table1_freq90",
                                      "table1_asset_BTCUSDT", "table1_asset_ETHUSDT", "comparison"}
    assert summary["counts"] == {"BTCUSDT / 15 min": 60, "ETHUSDT / 90 min": 60}
    # per-frequency Table 1 = Table 1 on that frequency's orders; intervals bracket the estimates
    sub = render.table1_rows(result, freq == 90)
    assert summary["tables"]["table1_freq90"][5]["mean"] == pytest.approx(sub[5]["mean"])
    for r in summary["tables"]["table1"]:
        assert r["mean_lo"] <= r["mean"] <= r["mean_hi"] and r["std_lo"] <= r["std"] <= r["std_hi"]
    comp = summary["tables"]["comparison"]
    # slices: overall, 2 assets, 2 frequencies and the 2 asset x frequency cells present; 2 sides x 3 baselines
    assert len(comp) == (1 + 2 + 2 + 2) * 2 * 3
    first = comp[0]
    lem = result.lem_bps[:, N, layout.path_index("buy", "vwap"), 0]
    assert first["diff_mean"] == pytest.approx(np.mean(np.abs(lem) - np.abs(result.baseline_bps["twap_notional_vs_vwap"])))
    # 4 featured heads x (all + 2 frequencies) x (distribution, curves) + training curves
    assert len(summary["figures"]) == 4 * 3 * 2 + 1
    for name in summary["figures"]:
        with open(tmp_path / "figures" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}" in page
    assert json.load(open(tmp_path / "summary.json"))["orders"] == len(alloc)
    assert open(tmp_path / "tables.txt").read().startswith("Table 1")
