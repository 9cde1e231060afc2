"""`events`: resource stats (once, or every interval) and OOM notifications."""

from __future__ import annotations

import os
import time

from cove.errors import CoveError
from cove.oci import jsonio
from cove.runtime import state as S


def _emit(obj: dict[str, object]) -> None:
    os.write(1, (jsonio.dumps(obj) + "\n").encode())


def events(root: str, cid: str, stats_once: bool, interval: float) -> None:
    st = S.load(root, cid)
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
        n = mgr.oom_count()
        if n > ooms:
            ooms = n
            _emit({"type": "oom", "id": cid})
        if now >= next_stats:
            _emit({"type": "stats", "id": cid, "data": mgr.stats()})
            next_stats = now + interval
        time.sleep(min(0.2, interval))
