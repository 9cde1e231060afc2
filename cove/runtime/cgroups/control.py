"""Process control of a container's cgroup: freeze, thaw, kill every process, count
OOMs and read the stats. Apart from base.py because `run` (create, start, delete of a
container whose processes are gone) needs none of it: these load on first use.
"""

from __future__ import annotations

import os

from cove.errors import CoveError
from cove.runtime.cgroups import fs, v1, v2
from cove.runtime.cgroups.base import SIGKILL, Manager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any



def freeze(m: Manager) -> None:
    fz = m._freezer()
    if fz is None:
        raise CoveError("pause", "no freezer: neither the v1 freezer nor cgroup v2 is mounted")
    (v1 if fz[1] == 1 else v2).freeze(fz[0])


def thaw(m: Manager) -> None:
    fz = m._freezer()
    if fz is None:
        raise CoveError("resume", "no freezer: neither the v1 freezer nor cgroup v2 is mounted")
    (v1 if fz[1] == 1 else v2).thaw(fz[0])


def kill_all(m: Manager, sig: int) -> None:
    """Signal every process; frozen meanwhile so none can fork away."""
    if not m.pids():
        return
    v2i = m._v2()
    if sig == SIGKILL and m.layout == "v2" and v2i is not None:
        d = m.dirs[v2i]
        if fs.has(d, "cgroup.kill"):
            fs.write(d, "cgroup.kill", "1", "kill")
            return
    fz = m._freezer()
    # A freezer cgroup that is gone (removed by hand, or by a destroy cut short)
    # holds no task to freeze or thaw: signal without it, and quietly, so that a
    # half-destroyed container stays removable.
    gone = fz is not None and not os.path.isdir(fz[0])
    froze = False
    if not gone and not m.frozen():
        try:
            m.freeze()
            froze = True
        except CoveError as e:
            fs.warn(f"{e.what}: {e.why}; signalling without freezing")
    try:
        for pid in m.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    finally:
        # SIGKILL thaws a paused container too (as runc): a task stopped
        # in the v1 freezer would otherwise never die. Without a freezer (none
        # mounted, or the cgroup gone meanwhile) there is nothing to thaw.
        if fz is not None and not gone and (froze or sig == SIGKILL):
            try:
                m.thaw()
            except CoveError:
                if os.path.isdir(fz[0]):
                    raise


def oom_count(m: Manager) -> int:
    i = m._find("memory")
    if i is None or i in m.skipped:
        return 0
    count: int = (v1 if m.hierarchies[i].version == 1 else v2).oom_count(m.dirs[i])
    return count


def stats(m: Manager) -> dict[str, Any]:
    """runc's `events --stats` data object."""
    entry = {"limit": 0, "usage": 0, "max": 0, "failcnt": 0}
    out: dict[str, Any] = {
        "cpu": {
            "usage": {"total": 0, "percpu": [], "kernel": 0, "user": 0},
            "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0},
        },
        "memory": {"cache": 0, "usage": dict(entry), "swap": dict(entry),
                   "kernel": dict(entry), "kernelTCP": dict(entry), "raw": {}},
        "pids": {"current": 0, "limit": 0},
        "blkio": {},
        "hugetlb": {},
    }
    for h, d in m._live():
        if not os.path.isdir(d):
            continue
        table = v1.STATS if h.version == 1 else v2.STATS
        for ctrl in h.controllers:
            fn = table.get(ctrl)
            if fn is not None:
                fn(d, out)
    out["memory"].pop("use_hierarchy", None)
    return out
