"""Atomic replacement of a backfill's partitions: staging, a commit journal, a manifest (local/POSIX paths).

Layout under the output root:

    date=YYYY-MM-DD/asset=SYMBOL/part-00000.parquet   committed partitions (Hive style)
    _manifest.json        every committed partition: rows, windows, run id, model version, file checksum
    _runs/<run_id>.json   one record per committed run (request, counts, timings)
    _staging/<run_id>/    partitions being written by a running (or killed) run; never read
    _journal.json         present only while a commit is in progress (the list of partition moves)
    _trash/<run_id>/      replaced partitions, deleted at the end of a commit
    _lock                 pid of the running backfill

A run replaces exactly the partitions (date, asset) it produced (`partition_changes`): committed partitions
of its date range that it did not produce (e.g. of assets absent from this run's source) are kept, unless
the run asks for their removal explicitly (`remove_absent`, `lems backfill --remove-absent`); the run record
(`_runs/<run_id>.json`, key "partitions"), the manifest ("last_run_partitions") and the CLI report what was
replaced, added, kept and removed. Beam writes only under `_staging/<run_id>/`
(each file via a temp name + rename), so a run killed before its commit leaves the committed data
untouched; its staging is removed by the next run. The commit writes the journal (atomically), then per
partition renames the old directory into `_trash/` and the staged one into place, updates the manifest,
and deletes the journal: a run killed during the commit is rolled forward by the next run (`recover`),
so every partition is always either the complete old one or the complete new one, and a rerun of the same
range leaves exactly one copy of each row.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from typing import Iterable, Optional
from urllib.parse import quote, unquote

MANIFEST = "_manifest.json"
JOURNAL = "_journal.json"
STAGING = "_staging"
TRASH = "_trash"
RUNS = "_runs"
LOCK = "_lock"
PART_FILE = "part-00000.parquet"
log = logging.getLogger(__name__)


def partition_relpath(date: str, asset: str) -> str:
    return os.path.join(f"date={date}", f"asset={quote(asset, safe='')}")


def parse_partition(relpath: str) -> tuple[str, str]:
    d, a = relpath.split(os.sep)[-2:]
    return d[len("date="):], unquote(a[len("asset="):])


def list_partitions(root: str) -> set:
    """Committed (date, asset) partitions under `root`."""
    out = set()
    if not os.path.isdir(root):
        return out
    for d in os.listdir(root):
        if d.startswith("date=") and os.path.isdir(os.path.join(root, d)):
            for a in os.listdir(os.path.join(root, d)):
                if a.startswith("asset="):
                    out.add(parse_partition(os.path.join(d, a)))
    return out


def staging_dir(root: str, run_id: str) -> str:
    return os.path.join(root, STAGING, run_id)


def write_json_atomic(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str, default=None):
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- lock
def acquire_lock(root: str, run_id: str) -> None:
    """Create `_lock` (pid, host, run id); a lock of a dead process on this host is taken over."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, LOCK)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            held = read_json(path, {}) or {}
            if held.get("host") == me["host"] and not _alive(int(held.get("pid", -1))):
                log.warning("backfill: taking over the stale lock of run %s (pid %s is gone)",
                            held.get("run_id"), held.get("pid"))
                os.remove(path)
                continue
            raise RuntimeError(f"{root}: another backfill holds {path} ({held}); wait for it or remove the "
                               f"lock if that process is gone")
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return
    raise RuntimeError(f"{root}: could not acquire {path}")


def release_lock(root: str) -> None:
    try:
        os.remove(os.path.join(root, LOCK))
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------- commit
def recover(root: str, keep_run: Optional[str] = None) -> Optional[str]:
    """Roll forward an interrupted commit (if `_journal.json` exists) and delete staging directories of other
    runs (killed before their commit). Returns the run id that was rolled forward, or None."""
    journal = read_json(os.path.join(root, JOURNAL))
    done = None
    if journal is not None:
        log.warning("backfill: completing the interrupted commit of run %s", journal["run_id"])
        _apply(root, journal)
        done = journal["run_id"]
    staging = os.path.join(root, STAGING)
    if os.path.isdir(staging):
        for run in os.listdir(staging):
            if run != keep_run:
                log.warning("backfill: removing staging of unfinished run %s", run)
                shutil.rmtree(os.path.join(staging, run), ignore_errors=True)
    return done


def partition_changes(root: str, staged: Iterable[tuple], in_range: Iterable[tuple], *,
                      remove_absent: bool = False) -> dict:
    """What a commit of `staged` does to the committed partitions of `root`: "replaced" (committed and
    produced again), "added" (new), and, of the committed partitions `in_range` (the run's request: its dates
    and assets) that it did not produce, "removed" when `remove_absent`, else "kept". Lists of
    [date, asset], sorted."""
    staged, committed = set(staged), list_partitions(root)
    absent = (set(in_range) & committed) - staged
    pairs = lambda keys: [list(k) for k in sorted(keys)]  # noqa: E731
    return {"replaced": pairs(staged & committed), "added": pairs(staged - committed),
            "kept": pairs(set() if remove_absent else absent), "removed": pairs(absent if remove_absent else set()),
            "remove_absent": bool(remove_absent)}


def commit(root: str, run_id: str, staged: dict, owned: Iterable[tuple], run_record: dict) -> dict:
    """Replace the partitions `owned` by this run with its staged ones (see the module docstring).

    staged: {(date, asset): {"rows": int, "windows": int, ...}} written under `_staging/<run_id>/`;
    owned: the (date, asset) partitions this run replaces (committed ones without a staged replacement are
    removed: only pass those the user asked to remove, see `partition_changes`).
    Returns the new manifest; its "last_run_partitions" counts the run record's "partitions" when it has them.
    """
    owned = set(owned) | set(staged)
    manifest = read_json(os.path.join(root, MANIFEST), {"partitions": {}})
    entries = {}
    for key in sorted(owned):
        rel = partition_relpath(*key)
        if key in staged:
            path = os.path.join(staging_dir(root, run_id), rel, PART_FILE)
            entries[rel] = {"date": key[0], "asset": key[1], "run_id": run_id, "file": PART_FILE,
                            "sha256": file_sha256(path), **staged[key]}
        else:
            entries[rel] = None  # removed: nothing in the new run for this partition
    journal = {"run_id": run_id, "moves": sorted(entries), "staged": sorted(partition_relpath(*k) for k in staged),
               "manifest": _merged_manifest(manifest, entries, run_id, run_record.get("partitions")),
               "run_record": run_record}
    write_json_atomic(os.path.join(root, JOURNAL), journal)
    _apply(root, journal)
    return journal["manifest"]


def _merged_manifest(manifest: dict, entries: dict, run_id: str, changes: Optional[dict] = None) -> dict:
    parts = dict(manifest.get("partitions", {}))
    for rel, entry in entries.items():
        if entry is None:
            parts.pop(rel, None)
        else:
            parts[rel] = entry
    out = {"partitions": dict(sorted(parts.items())), "last_run": run_id,
           "total_rows": int(sum(p["rows"] for p in parts.values()))}
    if changes is not None:
        out["last_run_partitions"] = {k: len(changes[k]) for k in ("replaced", "added", "kept", "removed")}
    return out


def _apply(root: str, journal: dict) -> None:
    """Idempotent: staged dir present <=> its move is not done yet, so any committed dir is the old one."""
    run_id = journal["run_id"]
    stage, trash = staging_dir(root, run_id), os.path.join(root, TRASH, run_id)
    staged = set(journal["staged"])
    for rel in journal["moves"]:
        final, new = os.path.join(root, rel), os.path.join(stage, rel)
        if rel in staged and not os.path.isdir(new):
            continue  # already in place
        if os.path.isdir(final):
            os.makedirs(os.path.dirname(os.path.join(trash, rel)), exist_ok=True)
            os.rename(final, os.path.join(trash, rel))
        if rel in staged:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(new, final)
    write_json_atomic(os.path.join(root, MANIFEST), journal["manifest"])
    write_json_atomic(os.path.join(root, RUNS, f"{run_id}.json"), journal["run_record"])
    os.remove(os.path.join(root, JOURNAL))
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)
    for d in os.listdir(root):  # date directories left empty by removed partitions
        p = os.path.join(root, d)
        if d.startswith("date=") and os.path.isdir(p) and not os.listdir(p):
            os.rmdir(p)
