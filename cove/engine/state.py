"""Containers' records: `<root>/containers/<name>/container.json`, written atomically
(temp file, fsync, rename) under an flock on `<name>/lock`, so that the CLI, the
per-container monitor and the supervisor can all update the same record.

The directory is the one `cove.image.snapshots.prepare` makes (its rootfs lives there
too); the record is the only thing that says whether a container exists as far as the
engine is concerned.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from cove.errors import CoveError
from cove.oci import jsonio  # not json: it imports re, and the monitor stays small
from cove.runtime.state import proc_start_time as proc_start_time  # the engine's too

TYPE_CHECKING = False
if TYPE_CHECKING:  # the monitor imports this module: no typing, no contextlib
    from collections.abc import Callable, Mapping
    from typing import Any

    from cove.engine.container.record import Record

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
    start, at tens of ms a sync; a lost host takes the processes they describe along.

    A write that fails leaves no temp file behind. On a full disk (ENOSPC, EDQUOT) the
    state root's reserve is given up (see `reserve`) and the write tried once more, so
    that `stop`, `rm -f` and a monitor recording an exit still work when a container
    has filled the disk the engine lives on."""
    for attempt in (0, 1):
        try:
            _write_replace(path, data, mode, sync)
            return
        except OSError as e:
            if attempt or e.errno not in (errno.ENOSPC, errno.EDQUOT) \
                    or not release_reserve(path):
                raise


def _write_replace(path: str, data: bytes, mode: int, sync: bool) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


RESERVE, RESERVE_SIZE = "space.reserve", 1 << 20


def reserve(root: str) -> None:
    """Keep RESERVE_SIZE bytes of the state root's disk set aside in `<root>/space.reserve`
    (made when missing, by `create`): what `write_atomic` frees when the disk is full,
    ~250 record writes' worth. Quietly nothing when there is no room for it."""
    path = os.path.join(root, RESERVE)
    if os.path.exists(path):
        return
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_SIZE)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def release_reserve(path: str) -> bool:
    """Free the reserve of the state root that `path` (a file under it) belongs to;
    whether there was one."""
    d = os.path.dirname(os.path.abspath(path))
    for _ in range(3):  # <root>/containers/<name>/container.json is the deepest
        if os.path.isdir(os.path.join(d, "containers")):  # a state root
            try:
                os.unlink(os.path.join(d, RESERVE))
                return True
            except OSError:
                return False
        d = os.path.dirname(d)
    return False


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


class CorruptRecord(CoveError):
    """A record that exists but can't be read (a disk error, a hand edit): reported as
    such, never as "no such container", so that `rm -f` can still remove it."""


def load_record(cdir: str, strict: bool = False) -> Record | None:
    """The record in `cdir`; None when there is none. A corrupt record is None too,
    unless `strict`: then CorruptRecord."""
    rec: Record | None = _load(cdir, strict)  # JSON this module wrote: not re-checked
    return rec


def _load(cdir: str, strict: bool) -> Any:
    try:
        with open(os.path.join(cdir, RECORD), "rb") as f:
            data = jsonio.loads(f.read())
            if not isinstance(data, dict) or not isinstance(data.get("State"), dict):
                raise ValueError("not a container record")
            return data
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as e:
        if not strict:
            return None
        name = os.path.basename(cdir)
        raise CorruptRecord(f"container {name}",
                            f"its record can't be read ({e}); `cove rm -f {name}` "
                            f"removes the container") from None


def save(cdir: str, rec: Mapping[str, Any]) -> None:
    """Write the record (a `Record`; `update` and tests pass a plain dict)."""
    write_atomic(os.path.join(cdir, RECORD), jsonio.dumps(rec, indent=1).encode())


def update_record(cdir: str, fn: Callable[[Record], None]) -> Record:
    """Read-modify-write a record under its lock; returns the new record."""
    rec: Record = _update(cdir, fn)
    return rec


def _update(cdir: str, fn: Callable[[Any], None]) -> Any:
    with locked(cdir):
        rec = _load(cdir, strict=True)
        if rec is None:
            raise CoveError(f"container {os.path.basename(cdir)}", "no such container")
        fn(rec)
        save(cdir, rec)
        return rec


# -- untyped twins ------------------------------------------------------------------------
# (issue 19: the engine moved to `Record` a module at a time, as mypy takes neither for
# the other; every module of cove/ has.) Left only for what reads or writes a record
# file whose keys are not a Record's: tests/engine/test_attach.py (its atomic-replace
# test writes "Pad" and "N") and bench/services/run.py (outside mypy's files).

def load(cdir: str, strict: bool = False) -> dict[str, Any] | None:
    """`load_record` as a plain dict."""
    rec: dict[str, Any] | None = _load(cdir, strict)
    return rec


def update(cdir: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """`update_record` with a plain dict."""
    rec: dict[str, Any] = _update(cdir, fn)
    return rec


def all_names(paths: Paths) -> list[str]:
    try:
        names = sorted(os.listdir(paths.containers))
    except FileNotFoundError:
        return []
    # (a symlink is a renamed container's old name while it runs: cove/engine/ops.py)
    return [n for n in names if os.path.exists(os.path.join(paths.containers, n, RECORD))
            and not os.path.islink(os.path.join(paths.containers, n))]


def lookup(paths: Paths, ref: str) -> str:
    """A container's name from its name, its id, or a unique prefix of its id."""
    if ref and "/" not in ref and ref not in (".", "..") and \
            os.path.exists(os.path.join(paths.containers, ref, RECORD)) and \
            not os.path.islink(os.path.join(paths.containers, ref)):
        return ref
    hits = []
    for n in all_names(paths):
        rec = load_record(paths.cdir(n))
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


def current_record(paths: Paths, name: str) -> Record:
    """The container's record as it stands: a running one whose init is gone reads as
    exited (the engine's `refresh_record` corrects the record itself; this only reads,
    for code below the lifecycle that needs to know whether it runs)."""
    rec: Record = _current(paths, name)
    return rec


def _current(paths: Paths, name: str) -> Any:
    rec = _load(paths.cdir(name), strict=True)
    if rec is None:
        raise CoveError(f"container {name}", "no such container")
    st = rec["State"]
    if st.get("Status") in ("running", "paused") and \
            not pid_alive(int(st.get("Pid") or 0), st.get("PidStart")):
        rec["State"] = {**st, "Status": "exited", "Running": False}
    return rec
