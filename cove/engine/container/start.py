"""`start` and `restart`: a created or exited container started under the root's
monitor (cove/engine/monitor.py), and a running one whose monitor died adopted."""

from __future__ import annotations

import os

from cove.engine import events, monctl, state
from cove.engine.container.refresh import refresh_record, teardown
from cove.engine.container.rtcmd import rt_delete
from cove.engine.container.stop import stop
from cove.engine.spawn import runtime_binary
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:  # (record.py imports the flags' parsers: not at run time)
    from cove.engine.container.record import Record


def start(root: str, name: str, *, policy_restart: bool = False) -> Record:
    """Start a created or exited container under a new monitor."""
    from cove.image import snapshots
    from cove.image.store import Store
    paths = state.Paths(root)
    name = state.lookup(paths, name)
    cdir = paths.cdir(name)
    rec = refresh_record(paths, name)
    if rec["State"]["Status"] == "running":
        return rec
    if rec["State"]["Status"] == "paused":
        raise CoveError(f"container {name}", "cannot start a paused container, try "
                                             "unpause instead")

    networked = rec["HostConfig"]["NetworkMode"] not in ("host", "none")
    monctl.check_namespaces(root, name, networked)

    def prep(r: Record) -> None:
        r["ManuallyStopped"] = False
        r["State"]["Status"] = "restarting" if policy_restart else r["State"]["Status"]
    if networked:
        from cove.engine import network
        network.check_ports(paths, rec["HostConfig"]["PortBindings"], name)
    state.update_record(cdir, prep)
    rt_delete(paths, name)
    snapshots.remount(Store(root), name)
    if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
        from cove.engine import network
        try:
            network.attach(paths, name)
        except BaseException:
            teardown(paths, name)
            snapshots.release(Store(root), name, remove=False)
            state.update_record(cdir, lambda r: r["State"].update({"Status": "exited"}))
            raise
    try:
        spawn_monitor(root, name)
    except BaseException:
        if rec["HostConfig"]["NetworkMode"] not in ("host", "none"):
            teardown(paths, name)
        snapshots.release(Store(root), name, remove=False)
        raise
    # (a policy's restart is counted by the monitor once it ran: cove/engine/policy.py)
    return refresh_record(paths, name)


def spawn_monitor(root: str, name: str, adopt: bool = False) -> None:
    """Have the root's monitor (cove/engine/monitor.py; started with its keeper when
    none runs) start the container, or with `adopt` watch a running one whose monitor
    died, and wait for its word."""
    rt = runtime_binary()
    env = {**os.environ, "COVE_RUNTIME": os.path.abspath(rt) if os.sep in rt else rt}
    line = monctl.request(root, "adopt" if adopt else "start", name, env)
    if line != "ok" and not adopt:
        raise CoveError(f"container {name}", line.removeprefix("error: ") or
                        "its monitor died while starting it")


def adopt(root: str, name: str) -> None:
    """Have the monitor watch a running container whose monitor died: the log flows
    again."""
    spawn_monitor(root, name, adopt=True)


def restart(root: str, name: str, timeout: float | None = None) -> Record:
    stop(root, name, timeout)
    rec = start(root, name)
    events.emit(root, "container", "restart", rec)
    return rec
