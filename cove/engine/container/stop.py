"""Ending containers: kill, stop, wait and rm (and stop_all, for tests and `cove
system reset`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from cove.engine import events, state
from cove.engine.container.queries import ps_records
from cove.engine.container.record import ACTIVE, Record
from cove.engine.container.refresh import dispose, refresh_record
from cove.engine.container.rtcmd import rt_delete, rt_quiet, runtime
from cove.engine.options import _signal_name
from cove.errors import CoveError


def wait_status(paths: state.Paths, name: str, timeout: float | None) -> bool:
    """Wait until the container is no longer active; whether it got there in time. A
    record that is gone counts as stopped: a `--rm -d` container is removed by its
    monitor the moment it exits, which `stop` must not report as "no such container"."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            rec = refresh_record(paths, name)
        except state.CorruptRecord:
            raise
        except CoveError:
            if not os.path.exists(os.path.join(paths.cdir(name), state.RECORD)):
                return True
            raise
        if rec["State"]["Status"] not in ACTIVE:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        nap(rec, None if deadline is None else deadline - time.monotonic())


def nap(rec: Mapping[str, Any], left: float | None) -> None:
    """Wait until the record may have changed: while its init runs, on the init's pidfd
    (readable the moment it exits; up to 0.5 s, since a restart or an adoption may
    change the pid); after that in 5 ms steps while the monitor records the exit. A
    fixed 50 ms poll cost `cove.run()` ~25 ms on average for a short command."""
    import select
    st = rec["State"]
    pid = int(st.get("Pid") or 0)
    limit = 0.5 if left is None else max(0.0, min(0.5, left))
    if st["Status"] == "running" and state.pid_alive(pid, st.get("PidStart")):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                select.select([fd], [], [], limit)
            finally:
                os.close(fd)
            return
    time.sleep(min(0.005, limit))


def _manual(r: Record) -> None:
    r["ManuallyStopped"] = True  # a restart policy leaves it stopped


def kill(root: str, name: str, sig: str | int = "KILL", *, manual: bool = True) -> None:
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    rec = refresh_record(paths, name)
    if rec["State"]["Status"] not in ("running", "paused"):
        raise CoveError(f"container {name}", "is not running")
    if manual:
        state.update_record(paths.cdir(name), _manual)
    r = subprocess.run([*runtime(paths), "kill", name, _signal_name(sig)],
                       capture_output=True, text=True)
    if rec["State"]["Status"] == "paused":  # frozen, it would not act on it
        _after_signal(paths, name, rec, sig)
    if r.returncode != 0 and state.pid_alive(int(rec["State"]["Pid"]), rec["State"]["PidStart"]):
        raise CoveError(f"kill {name}", r.stderr.strip())
    events.emit(root, "container", "kill", rec, signal=_signal_name(sig))


def _after_signal(paths: state.Paths, name: str, rec: Record, sig: str | int) -> None:
    """A signal was sent to a paused container: frozen, it would not act on it. As
    docker, SIGKILL and the stop signal thaw it (so `stop`, `kill` and `rm -f` work);
    another signal waits, pending, for `unpause`."""
    if rec["State"]["Status"] != "paused":
        return
    want = {"KILL", "9", _signal_name(rec["Config"].get("StopSignal") or "TERM")}
    if _signal_name(sig) in want:
        if rt_quiet(paths, "resume", name) == 0:
            def thawed(r: Record) -> None:
                r["State"]["Paused"] = False  # (also when it exited meanwhile: a SIGKILL)
                if r["State"]["Status"] == "paused":
                    r["State"]["Status"] = "running"
            state.update_record(paths.cdir(name), thawed)


def stop(root: str, name: str, timeout: float | None = None) -> None:
    """The stop signal, then SIGKILL after `timeout` seconds (None: the container's
    --stop-timeout, else 10; -1 waits for ever, as docker); waits for the exit."""
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    state.update_record(paths.cdir(name), _manual)
    rec = refresh_record(paths, name)
    if timeout is None:
        own = rec["Config"].get("StopTimeout")
        timeout = 10.0 if own is None else float(own)
    if timeout < 0:
        timeout = None
    if rec["State"]["Status"] == "restarting":
        state.update_record(paths.cdir(name), lambda r: r["State"].update({"Status": "exited"}))
    if rec["State"]["Status"] not in ("running", "paused"):
        return
    with contextlib.suppress(CoveError):
        kill(root, name, rec["Config"].get("StopSignal") or "TERM")
    if not wait_status(paths, name, timeout):
        with contextlib.suppress(CoveError):
            kill(root, name, "KILL")
        wait_status(paths, name, 10)
    events.emit(root, "container", "stop", rec)


def wait(root: str, name: str, timeout: float | None = None) -> int:
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    if not wait_status(paths, name, timeout):
        raise CoveError(f"wait {name}", "timed out")
    return int(refresh_record(paths, name)["State"]["ExitCode"])


def remove(root: str, name: str, force: bool = False) -> str:
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    try:
        rec = refresh_record(paths, name)
    except state.CorruptRecord:
        if not force:
            raise
        _remove_unreadable(paths, name)
        return name
    if rec["State"]["Status"] in ACTIVE:
        if not force:
            raise CoveError(f"container {name}", "is running: stop it first or use -f")
        state.update_record(paths.cdir(name), _manual)
        with contextlib.suppress(CoveError):
            kill(root, name, "KILL")
        wait_status(paths, name, 10)
    dispose(paths, name, rec)
    return name


def _remove_unreadable(paths: state.Paths, name: str) -> None:
    """`rm -f` of a container whose record can't be read: what the runtime, the
    network and the snapshot know is enough to stop and remove it."""
    from cove.image import snapshots
    from cove.image.store import Store
    cdir = paths.cdir(name)
    rt_delete(paths, name)  # kills the init (the runtime's state has its pid)
    try:
        with open(os.path.join(cdir, state.RECORD), "rb") as f:
            text = f.read().decode(errors="replace")
        at = text.find('"Id"')
        cid = text[at:at + 90].split('"')[3] if at >= 0 else ""
    except (OSError, IndexError):
        cid = ""
    if len(cid) == 64 and all(c in "0123456789abcdef" for c in cid):
        from cove.engine import network
        network.drop_port_table(cid)
    with contextlib.suppress(Exception):
        from cove.engine import network
        network.detach(paths, name)
    snapshots.release(Store(paths.root), name, remove=True)


def stop_all(root: str) -> None:
    """Stop every running container (tests, `cove system reset`)."""
    for rec in ps_records(root):
        with contextlib.suppress(CoveError):
            stop(root, rec["Name"], 2)
