"""One run per root (issue 36 item 1): a second run on a root whose run lock another process holds is
refused at once naming the holder; the lock of a SIGKILLed holder is taken over with a warning."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline.run_lock import RUN_LOCK_FILE, RunInProgress, RunLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = """
import sys, time
from pipeline.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
if sys.argv[2] == "release":
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
time.sleep(600)
"""


def _holder(root, mode="hold"):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_second_run_is_refused_at_once_naming_the_holder(tmp_path):
    root = tmp_path / "run"
    proc = _holder(root)
    try:
        t0 = time.time()
        with pytest.raises(RunInProgress) as err:
            RunLock(str(root)).acquire()
        assert time.time() - t0 < 5
        text = str(err.value)
        assert f"pid {proc.pid}" in text and f"host {socket.gethostname()}" in text
        assert "started 20" in text and str(root) in text
        # the pipeline runner itself is refused before anything runs (no metadata store, no pipeline root)
        from pipeline import local_runner
        from pipeline.configs import demo_config
        with pytest.raises(RunInProgress, match=f"pid {proc.pid}"):
            local_runner.run(demo_config(str(root)), progress=False)
        assert sorted(os.listdir(root)) == [RUN_LOCK_FILE]
    finally:
        _kill(proc)


def test_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    root = tmp_path / "run"
    proc = _holder(root)
    _kill(proc)  # SIGKILL: no cleanup; the OS releases the lock, the file still names the dead holder
    assert json.load(open(root / RUN_LOCK_FILE))["pid"] == proc.pid
    with caplog.at_level(logging.WARNING, logger="pipeline.run_lock"):
        with RunLock(str(root)) as lock:
            assert lock.took_over["pid"] == proc.pid
            assert json.load(open(root / RUN_LOCK_FILE))["pid"] == os.getpid()
            with pytest.raises(RunInProgress, match=f"pid {os.getpid()}"):  # held: refused, same process too
                RunLock(str(root)).acquire()
    assert any("taking over" in r.getMessage() and f"pid {proc.pid}" in r.getMessage() for r in caplog.records)
    assert open(root / RUN_LOCK_FILE).read() == ""  # a clean release leaves nothing to take over
    with RunLock(str(root)) as lock:
        assert lock.took_over is None


def test_cleanly_released_lock_is_free_for_the_next_run(tmp_path):
    root = tmp_path / "run"
    proc = _holder(root, "release")
    try:
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        with RunLock(str(root)) as lock:  # the holder process is still alive, but let go
            assert lock.took_over is None
    finally:
        _kill(proc)
