"""Containers' records: `<root>/containers/<name>/container.json`, written atomically
(temp file, fsync, rename) under an flock on `<name>/lock`, so that the CLI, the
per-container monitor and the supervisor can all update the same record.

The directory is the one `cove.image.snapshots.prepare` makes (its rootfs lives there
too); the record is the only thing that says whether a container exists as far as the
engine is concerned.
"""

from __future__ import annotations

import fcntl
import os
import time

from cove.errors import CoveError
from cove.oci import jsonio  # not json: it imports re, and the monitor stays small
from cove.runtime.state import proc_start_time

TYPE_CHECKING = False
if TYPE_CHECKING:  # the monitor imports this module: no typing, no contextlib
    from collections.abc import Callable
    from typing import Any

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


def write_atomic(path: str, data: bytes, mode: int = 0o600, sync: bool = False) -> None:
    """Write-then-rename: a reader (or a process killed mid-write) never sees half a
    file. No fsync unless asked: records are rewritten several times per container
    start, at tens of ms a sync; a lost host takes the processes they describe along."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if sync:
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


class locked:
    """`with locked(cdir):` holds the flock on `<cdir>/lock`."""

    def __init__(self, cdir: str) -> None:
        self.path = os.path.join(cdir, "lock")
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def load(cdir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(cdir, RECORD), "rb") as f:
            data: dict[str, Any] = jsonio.loads(f.read())
            return data
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def save(cdir: str, rec: dict[str, Any]) -> None:
    write_atomic(os.path.join(cdir, RECORD), jsonio.dumps(rec, indent=1).encode())


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
    if pid <= 0:
        return False
    st = proc_start_time(pid)
    if st is None:
        return False
    return start_time is None or st == start_time
