"""`events`: resource stats (once, or every interval) and OOM notifications."""

from __future__ import annotations

import os
import time

from cove.errors import CoveError
from cove.oci import jsonio
from cove.runtime import state as runtime_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.runtime.cgroups.base import Manager


def _emit(obj: dict[str, object]) -> None:
    os.write(1, (jsonio.dumps(obj) + "\n").encode())


def events(root: str, cid: str, stats_once: bool, interval: float) -> None:
    st = runtime_state.load(root, cid)
    if st.status() == "stopped":
        raise CoveError(f"container {cid!r}", "container not running")
    if not st.data.get("cgroup"):
        raise CoveError(f"container {cid!r}", "has no cgroup")
    from cove.runtime.cgroups import open_manager_from_state

    mgr = open_manager_from_state(st.data["cgroup"])
    if stats_once:
        _emit({"type": "stats", "id": cid, "data": mgr.stats()})
        return
    ooms = mgr.oom_count()
    next_stats = 0.0
    while st.alive():
        now = time.monotonic()
        ooms = _report_ooms(mgr, cid, ooms)
        if now >= next_stats:
            _emit({"type": "stats", "id": cid, "data": mgr.stats()})
            next_stats = now + interval
        time.sleep(min(0.2, interval))
    # The OOM killer may have ended the container's init itself: report that kill
    # too (the cgroup keeps its counter until delete) before the stream ends.
    _report_ooms(mgr, cid, ooms)


def _report_ooms(mgr: Manager, cid: str, seen: int) -> int:
    """One "oom" event per OOM kill since `seen`; returns the new count."""
    n = mgr.oom_count()
    for _ in range(n - seen):
        _emit({"type": "oom", "id": cid})
    return max(n, seen)
