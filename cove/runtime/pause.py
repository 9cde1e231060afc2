"""`pause` and `resume`: the cgroup freezer."""

from __future__ import annotations

from cove.errors import CoveError
from cove.runtime import state as runtime_state


def _manager(st: runtime_state.State):  # type: ignore[no-untyped-def]
    if not st.data.get("cgroup"):
        raise CoveError(f"container {st.id!r}", "has no cgroup to freeze")
    from cove.runtime.cgroups import open_manager_from_state

    return open_manager_from_state(st.data["cgroup"])


def pause(root: str, cid: str) -> None:
    st = runtime_state.load(root, cid)
    status = st.status()
    if status not in ("running", "created"):
        raise CoveError(f"container {cid!r}", f"cannot pause a {status} container")
    _manager(st).freeze()


def resume(root: str, cid: str) -> None:
    st = runtime_state.load(root, cid)
    if st.status() != "paused":
        raise CoveError(f"container {cid!r}", "container not paused")
    _manager(st).thaw()
