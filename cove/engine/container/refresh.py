"""A container's record checked against its processes: its monitor killed while the
container ran on or exited, the host's process tree restarted. And the disposal of a
container that is not running (what `rm` does last, and what a `--rm` container whose
exit nobody saw gets from the first `ps` or `inspect` to find it)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

from cove.engine import events, monctl, procs, state
from cove.engine import logs as logfile
from cove.engine.container.mounts import drop_volumes
from cove.engine.container.rtcmd import rt_delete
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:  # (record.py imports the flags' parsers: not at run time)
    from cove.engine.container.record import Record


def refresh_record(paths: state.Paths, name: str) -> Record:
    """The record, corrected where its processes are gone without a word (its monitor
    killed while the container exited; the host's process tree restarted): the exit code
    is the one the zygote wrote (it reaps the init of a dead monitor), else 255."""
    cdir = paths.cdir(name)
    rec = state.load_record(cdir, strict=True)
    if rec is None:
        raise CoveError(f"container {name}", "no such container")
    st = rec["State"]
    if st["Status"] in ("running", "paused") and not monitor_alive(rec) \
            and state.pid_alive(int(st.get("Pid") or 0), st.get("PidStart")):
        # nobody copies its output (its monitor and keeper were killed, or stopped with
        # `supervisor stop`): once the pipe is full the container would block writing
        with contextlib.suppress(CoveError, OSError):
            if os.path.exists(os.path.join(cdir, "stdout.fifo")):
                monctl.request(paths.root, "adopt", name)
                rec = state.load_record(cdir, strict=True) or rec
    elif st["Status"] in ("running", "paused") and not monitor_alive(rec):
        # (a `run -it` has no monitor and no Pid: its foreground `cove run` watches it)
        code = procs.read_exit(cdir, int(st.get("Pid") or 0))
        if code is None and _zygote_alive(rec):
            # it reaps the orphaned init and writes the code: a moment
            import time
            deadline = time.monotonic() + 2.0
            while code is None and time.monotonic() < deadline:
                time.sleep(0.05)
                code = procs.read_exit(cdir, int(st.get("Pid") or 0))

        corrected = False

        def lost(r: Record) -> None:
            # checked again under the lock: its watcher may have recorded the exit (or a
            # new one started it) since we read the record
            nonlocal corrected
            if r["State"]["Status"] not in ("running", "paused") or monitor_alive(r):
                return
            corrected = True
            r["State"].update({"Status": "exited", "Running": False, "Pid": 0,
                               "ExitCode": 255 if code is None else code,
                               "FinishedAt": state.now_rfc3339(),
                               "Error": "exited while no monitor watched it; exit code "
                                        "lost" if code is None else ""})
            r["MonitorPid"] = 0
        rec = state.update_record(cdir, lost)
        if not corrected:
            rec["LogPath"] = logfile.log_path(cdir)
            return rec
        rt_delete(paths, name)
        cleanup(paths, name)
        events.emit(paths.root, "container", "die", rec, exitCode=rec["State"]["ExitCode"])
        if rec["HostConfig"].get("AutoRemove"):
            with contextlib.suppress(CoveError, OSError):  # (gone meanwhile)
                dispose(paths, name, rec)
            rec["State"]["Status"] = "removed"
    rec["LogPath"] = logfile.log_path(cdir)
    return rec


def cleanup(paths: state.Paths, name: str) -> None:
    """After a run: the network torn down, the rootfs unmounted (kept for a restart)."""
    from cove.engine.teardown import cleanup as after_run
    after_run(paths, name, state.load_record(paths.cdir(name)) or {})


def _zygote_alive(rec: Mapping[str, Any]) -> bool:
    pid = int(rec.get("ZygotePid") or 0)
    return pid > 0 and state.pid_alive(pid, rec.get("ZygoteStart"))


def monitor_alive(rec: Mapping[str, Any]) -> bool:
    """Whether its monitor lives and will record its exit (every container runs under
    one, a terminal too: cove/engine/ttywatch.py). While it lives the record is its to
    finish: `ps` and `inspect` must not correct it."""
    pid = int(rec.get("MonitorPid") or 0)
    if pid <= 0 or not state.pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "cove-monitor"
    except OSError:
        return False


def teardown(paths: state.Paths, name: str) -> None:
    """Undo what start set up outside the runtime (the container's network)."""
    rec = state.load_record(paths.cdir(name))
    if rec and rec["HostConfig"].get("NetworkMode") in ("host", "none"):
        return
    from cove.engine import network
    network.detach(paths, name)


def dispose(paths: state.Paths, name: str, rec: Mapping[str, Any]) -> None:
    """Remove a container that no longer runs (`rec`, its last record): once its
    monitor finished (the log drained, the teardown done), the runtime's state, the
    network, the rootfs and the container's directory, and its anonymous volumes.
    `rm`'s last step, and refresh's for a --rm container whose exit nobody saw."""
    from cove.image import snapshots
    from cove.image.store import Store
    deadline = time.monotonic() + 5
    while monitor_alive(state.load_record(paths.cdir(name)) or {}) and time.monotonic() < deadline:
        time.sleep(0.05)
    rt_delete(paths, name)
    with contextlib.suppress(Exception):
        teardown(paths, name)
    snapshots.release(Store(paths.root), name, remove=True)
    drop_volumes(paths.root, rec.get("AnonymousVolumes") or [])
    events.emit(paths.root, "container", "destroy", rec)
