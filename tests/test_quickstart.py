"""`lems quickstart` end to end on a tiny configuration: trains and prints the paper's Table 1 layout."""
from lems_cli.main import main


def test_quickstart_prints_slippage_table(capsys):
    rc = main(["quickstart", "--size", "tiny", "--recurrent", "lstm", "--bars", "700", "--norm-window", "48",
               "--lookback", "16", "--n-ahead", "4", "--stride", "3", "--epochs", "1", "--batch-size", "64"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("Order Type"))
    rows = [l.split() for l in lines[header + 2: header + 2 + 2 + 2 * 5]]
    assert rows[0][:3] == ["TWAP", "Notional", "All"] and rows[1][:3] == ["TWAP", "Volume", "All"]
    assert rows[2][:2] == ["BUY", "1"] and rows[5][0] == "4" and rows[6][:2] == ["Match", "VWAP"]
    assert rows[7][:2] == ["SELL", "1"] and rows[11][:2] == ["Match", "VWAP"]
    assert all(len(r) == 9 or len(r) == 8 for r in rows[2:])  # 7 statistics per row
    assert "train:" in out and "test:" in out and "time-ordered" in out
