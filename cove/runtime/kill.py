"""`kill`: signal the init process, or with --all every process in the cgroup."""

from __future__ import annotations

import os

from cove.errors import CoveError
from cove.runtime import state as S


def kill(root: str, cid: str, sig: int, all_: bool = False) -> None:
    st = S.load(root, cid)
    status = st.status()
    if status == "stopped":
        # containerd matches this text to tell "already exited" from a real failure.
        raise CoveError(f"container {cid!r}", "container not running")
    if all_ and st.data.get("cgroup"):
        from cove.runtime.cgroups import open_manager_from_state

        open_manager_from_state(st.data["cgroup"]).kill_all(sig)
        return
    try:
        os.kill(st.pid, sig)
    except ProcessLookupError:
        raise CoveError(f"container {cid!r}", "container not running") from None
