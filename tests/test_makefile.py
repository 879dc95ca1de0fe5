"""The Makefile's preflight: a missing Python 3.10 or a full disk stops with a clear message before pip."""
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _preflight(*overrides):
    return subprocess.run(["make", "--no-print-directory", "-s", "preflight", *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_preflight_passes_with_a_python310_and_room():
    result = _preflight(f"PYTHON310={sys.executable}", "VENV_FREE_GB=0")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_preflight_refuses_a_full_disk_with_the_space_it_needs():
    result = _preflight(f"PYTHON310={sys.executable}", "VENV_FREE_GB=1000000")
    assert result.returncode != 0
    assert "MB free on" in result.stderr and "needs about 1000000 GB" in result.stderr
    assert "make clean" in result.stderr


@pytest.mark.parametrize("python", ["", "/nonexistent/python3.10", "/bin/sh"])
def test_preflight_refuses_a_missing_or_wrong_python(python):
    result = _preflight(f"PYTHON310={python}", "VENV_FREE_GB=0")
    assert result.returncode != 0
    assert "no Python 3.10 found" in result.stderr and "PYTHON310=" in result.stderr
    if python:
        assert python in result.stderr
