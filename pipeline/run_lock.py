"""One run per root: an OS file lock on `<root>/_lems_run.lock` (used by `pipeline.local_runner.run`).

`with RunLock(root): ...` holds an exclusive, non-blocking `fcntl.flock` on the file for the whole run. A
second run on the same root, in this or another process, is refused at once with `RunInProgress` naming the
holder (pid, host, start time, command) that the holder wrote into the file. The OS releases the lock when
its holder dies, SIGKILL included; the holder's details stay in the file (a clean exit empties it), so a run
that finds the lock free but the file naming a holder logs a warning that it takes over the lock of that dead
run (`RunLock.took_over`). The lock file itself is never deleted (deleting it would let two runs lock two
different files). Processes forked by the holder inherit the lock, so it stays held while any of them runs.
`flock` is reliable on local file systems; on a network file system that does not support it across hosts,
runs on two hosts are not kept apart. Pure standard library (no TensorFlow): cheap to import.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from typing import Optional

RUN_LOCK_FILE = "_lems_run.lock"
log = logging.getLogger(__name__)


class RunInProgress(RuntimeError):
    """Another run holds the root's run lock (`RunLock`)."""


def _describe_holder(holder: dict) -> str:
    if not holder:
        return "a run that has not written its details yet"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
            f"{holder.get('started', '?')}" + (f" ({holder['command']})" if holder.get("command") else ""))


class RunLock:
    """Exclusive lock of a run root: `with RunLock(root): ...` (see the module docstring).

    Raises `RunInProgress` on entry when another open lock holds `<root>/_lems_run.lock`; takes over (with a
    warning, and `took_over` = the dead holder's details) a file left by a holder that died without
    releasing it. `holder` is what this lock wrote: pid, host, started (UTC ISO), command."""

    def __init__(self, root: str):
        self.root = root
        self.path = os.path.join(root, RUN_LOCK_FILE)
        self._fd: Optional[int] = None
        self.holder: dict = {}
        self.took_over: Optional[dict] = None

    @staticmethod
    def _read(fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace").strip()
        if not text:
            return {}
        try:
            data = json.loads(text)
            return data if isinstance(data, dict) else {"unreadable": text[:200]}
        except ValueError:
            return {"unreadable": text[:200]}

    def acquire(self) -> "RunLock":
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = {}
            for _ in range(20):   # the holder writes its details right after locking: give it a moment
                holder = self._read(fd)
                if holder:
                    break
                time.sleep(0.05)
            os.close(fd)
            raise RunInProgress(
                f"another run is in progress on {self.root}: {_describe_holder(holder)} holds {self.path}. "
                f"Only one run per root at a time (two would train and push twice and split the ML Metadata "
                f"store): wait for it to finish, or use another root.") from None
        except BaseException:
            os.close(fd)
            raise
        previous = self._read(fd)
        if previous:
            self.took_over = previous
            log.warning("taking over the run lock %s left by %s: that process is gone (killed?) and "
                        "released it without cleaning up", self.path, _describe_holder(previous))
            print(f"[pipeline] WARNING: taking over the run lock of a dead run ({_describe_holder(previous)})",
                  file=sys.stderr, flush=True)
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(self.holder).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)   # a clean exit: nothing to take over
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
