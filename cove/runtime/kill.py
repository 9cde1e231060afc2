"""`kill`: signal the init process, or with --all every process in the cgroup."""

from __future__ import annotations

import posix

from cove.errors import CoveError
from cove.runtime import state as runtime_state


def kill(root: str, cid: str, sig: int, all_: bool = False) -> None:
    """Signal init, or with `all_` every process left in the container's cgroup.

    `--all` of a stopped container succeeds, as runc's does: containerd's shim sends it
    after init has exited (twice per pod), to reach what init left behind, e.g. the
    children of a container that shares the host's or a pod's pid namespace, which do
    not die with it. A plain `kill` of a stopped container is refused."""
    st = runtime_state.load(root, cid)
    # Only "stopped" matters here, which is "init is gone": alive() is that test alone.
    # status() would also tell running from paused through the freezer (importing the
    # cgroup code and reading its files): a cost on every `kill` containerd's shim makes.
    alive = st.alive()
    if not alive and not all_:
        # containerd matches this text to tell "already exited" from a real failure.
        raise CoveError(f"container {cid!r}", "container not running")
    if all_ and st.data.get("cgroup"):
        from cove.runtime.cgroups import open_manager_from_state

        mgr = open_manager_from_state(st.data["cgroup"])
        if mgr.exists():
            mgr.kill_all(sig)
            return
        # Rootless, with no cgroup it could write: the pid namespace is what holds the
        # container's processes together.
        pids = pidns_members(st.pid) if alive else []
        if pids:
            for pid in pids:
                try:
                    posix.kill(pid, sig)
                except ProcessLookupError:
                    pass
            return
    if not alive:
        return  # --all, and nothing of the container's is left to signal
    try:
        posix.kill(st.pid, sig)
    except ProcessLookupError:
        raise CoveError(f"container {cid!r}", "container not running") from None


def pidns_members(init: int) -> list[int]:
    """The processes in init's pid namespace when it is not ours (init first), else []."""
    try:
        ns = posix.stat(f"/proc/{init}/ns/pid")
        me = posix.stat("/proc/self/ns/pid")
        if (ns.st_dev, ns.st_ino) == (me.st_dev, me.st_ino):
            return []
    except OSError:
        return []
    out = [init]
    for name in posix.listdir("/proc"):
        if not name.isdigit() or int(name) == init:
            continue
        try:
            s = posix.stat(f"/proc/{name}/ns/pid")
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (ns.st_dev, ns.st_ino):
            out.append(int(name))
    return out
