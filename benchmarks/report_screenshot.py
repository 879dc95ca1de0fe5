"""Screenshot an execution report (index.html) in headless Chromium, to look at it as a reader would.

    .venv/bin/python benchmarks/report_screenshot.py REPORT_DIR_OR_INDEX_HTML [--out report.png]
        [--width 1400] [--height 4000]
    .venv/bin/python benchmarks/report_screenshot.py --sample [--out report.png]   # renders a tiny report first

Needs a `chromium` (Debian: `apt-get install -y chromium`) or `google-chrome` on PATH; it is a check for people,
not a unit test (tests/test_report_render.py checks the HTML structure without a browser). Figures are also
written one by one (`--figures DIR`) at full size so that clipped labels are visible.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(f"no headless browser found (tried {', '.join(BROWSERS)}); install one, "
                     "e.g. `apt-get install -y chromium`")


def screenshot(index_html: str, out_png: str, width: int = 1400, height: int = 4000) -> str:
    """Render `index_html` in headless Chromium into `out_png`; returns the PNG path."""
    profile = tempfile.mkdtemp(prefix="lems-chromium-")
    try:
        cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--hide-scrollbars", f"--screenshot={os.path.abspath(out_png)}", f"--window-size={width},{height}",
               "file://" + os.path.abspath(index_html)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0 or not os.path.exists(out_png):
            raise SystemExit(f"chromium failed (rc {res.returncode}): {res.stderr[-2000:]}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out_png


def sample_report(out_dir: str) -> str:
    """A tiny report from generated orders (render function only; no pipeline)."""
    import numpy as np

    from components.evaluator import order_slippage as osl
    from components.report import render
    rng = np.random.default_rng(0)
    b, n = 400, 12
    alloc = rng.random((b, n, n + 1, 4, 2)) ** 3
    alloc /= alloc.sum(axis=1, keepdims=True)
    labels = np.stack([rng.lognormal(0, 0.5, (b, n)), np.exp(np.cumsum(rng.normal(0, 0.003, (b, n)), axis=1))], -1)
    curve = rng.random((b, n)) + 0.5
    result = osl.order_slippage(alloc, labels, curve / curve.sum(axis=1, keepdims=True))
    freq = np.where(np.arange(b) % 3 == 0, 90, 15)
    asset = np.array(["BTCUSDT", "ETHUSDT"])[np.arange(b) % 2]
    gates = [{"slice": "overall", "orders": b, "gated": True, "ratio": 0.9, "lo": 0.8, "hi": 1.0, "nonfinite": 0,
              "result": "pass"},
             {"slice": "frequency_minutes=90", "orders": 134, "gated": False, "ratio": 1.1, "lo": 0.9, "hi": 1.3,
              "nonfinite": 0, "result": "reported, not gated"}]
    render.render_report(out_dir, alloc, result, freq, asset, title="sample", max_curves=100,
                         header={"blessed": True, "test period": "sample"}, validation=["validation_ok = True"],
                         blocks=np.arange(b) // 16, gates=gates,
                         history={"history": {"loss": [3, 2, 1.5], "val_loss": [3.2, 2.5, 2.0],
                                              "learning_rate": [1e-3, 1e-3, 5e-4]}})
    return os.path.join(out_dir, "index.html")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", help="report directory or its index.html")
    parser.add_argument("--sample", action="store_true", help="render a tiny sample report first")
    parser.add_argument("--out", default="report.png")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args(argv)
    if args.sample:
        index = sample_report(tempfile.mkdtemp(prefix="lems-report-"))
    elif args.report:
        index = args.report if args.report.endswith(".html") else os.path.join(args.report, "index.html")
    else:
        parser.error("give a report directory or --sample")
    if not os.path.exists(index):
        raise SystemExit(f"no such report: {index}")
    print(screenshot(index, args.out, args.width, args.height))
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
