"""Containers' records: `<root>/containers/<name>/container.json`, written atomically
(temp file, fsync, rename) under an flock on `<name>/lock`, so that the CLI, the
per-container monitor and the supervisor can all update the same record.

The directory is the one `cove.image.snapshots.prepare` makes (its rootfs lives there
too); the record is the only thing that says whether a container exists as far as the
engine is concerned.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from cove.errors import CoveError

RECORD = "container.json"


def now_rfc3339() -> str:
    ns = time.time_ns()
    s, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"


def parse_rfc3339(s: str) -> float:
    """Seconds since the epoch of our own timestamps (and docker's, in UTC)."""
    if not s or s.startswith("0001-"):
        return 0.0
    base, _, frac = s.rstrip("Z").partition(".")
    t = time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return t + (float("0." + frac) if frac else 0.0)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


class Paths:
    """Where a state root keeps the engine's things."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.containers = os.path.join(root, "containers")
        self.volumes = os.path.join(root, "volumes")
        self.networks = os.path.join(root, "networks")
        self.runtime_root = os.path.join(root, "runtime")
        self.supervisor_pid = os.path.join(root, "supervisor.pid")
        self.supervisor_log = os.path.join(root, "supervisor.log")

    def cdir(self, name: str) -> str:
        return os.path.join(self.containers, name)


@contextlib.contextmanager
def locked(cdir: str) -> Iterator[None]:
    fd = os.open(os.path.join(cdir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load(cdir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(cdir, RECORD), "rb") as f:
            data: dict[str, Any] = json.loads(f.read())
            return data
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def save(cdir: str, rec: dict[str, Any]) -> None:
    write_atomic(os.path.join(cdir, RECORD), json.dumps(rec, indent=1).encode())


def update(cdir: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read-modify-write a record under its lock; returns the new record."""
    with locked(cdir):
        rec = load(cdir)
        if rec is None:
            raise CoveError(f"container {os.path.basename(cdir)}", "no such container")
        fn(rec)
        save(cdir, rec)
        return rec


def all_names(paths: Paths) -> list[str]:
    try:
        names = sorted(os.listdir(paths.containers))
    except FileNotFoundError:
        return []
    return [n for n in names if os.path.exists(os.path.join(paths.containers, n, RECORD))]


def lookup(paths: Paths, ref: str) -> str:
    """A container's name from its name, its id, or a unique prefix of its id."""
    if ref and "/" not in ref and ref not in (".", "..") and \
            os.path.exists(os.path.join(paths.containers, ref, RECORD)):
        return ref
    hits = []
    for n in all_names(paths):
        rec = load(paths.cdir(n))
        if rec and ref and str(rec.get("Id", "")).startswith(ref):
            hits.append(n)
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise CoveError(f"container {ref}", "ambiguous id prefix")
    raise CoveError(f"container {ref}", "no such container")


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether `pid` runs (not a zombie), and is the process that started at `start_time`."""
    from cove.runtime.state import proc_start_time
    if pid <= 0:
        return False
    st = proc_start_time(pid)
    if st is None:
        return False
    return start_time is None or st == start_time
