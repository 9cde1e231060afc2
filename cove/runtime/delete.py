"""`delete`: remove a stopped container (or, with --force, stop it first).

A stopped container's delete is a short verb that engines call for every container
(the CRI shim twice per pod), so its common case stays off `os` and the cgroup code
(~3-4 ms of CPU of a ~20 ms call, as cove/runtime/lite.py says for start and kill): its
cgroup directories, empty once init is gone, go by one rmdir each (_rmdir_empty). The
cgroup manager does everything else (the systemd driver, a running or paused
container, a directory still busy or with children).
"""

from __future__ import annotations

import posix
import time

from cove.errors import CoveError, os_why
from cove.runtime import lite
from cove.runtime import state as runtime_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def wait_gone(st: runtime_state.State, timeout: float = 10.0) -> bool:
    """Wait until init is gone (exited or a zombie: its reaper is not us)."""
    deadline = time.monotonic() + timeout
    while st.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def delete(root: str, cid: str, force: bool = False) -> None:
    try:
        st = runtime_state.load(root, cid)
    except CoveError:
        if force:
            # An aborted create may leave a directory without state.json (as runc).
            runtime_state.check_id(cid)
            sdir = lite.join(root, cid)
            _aborted_create(sdir, cid)
            runtime_state.remove_dir(sdir)
            return
        raise
    status = st.status()
    if status in ("running", "paused") and not force:
        raise CoveError(f"container {cid!r}",
                        f"cannot delete container {cid} that is not stopped: {status}")
    mgr = None
    cg = st.data.get("cgroup")
    if cg and not (status == "stopped" and _rmdir_empty(cg)):
        from cove.runtime.cgroups import open_manager_from_state

        mgr = open_manager_from_state(cg)
    if status != "stopped":
        if mgr is not None:
            if status == "paused":
                mgr.thaw()
            mgr.kill_all(9)
        try:
            posix.kill(st.pid, 9)
        except ProcessLookupError:
            pass
        wait_gone(st)
    if mgr is not None:
        mgr.destroy()
    spec = None
    try:
        raw = st.config_bytes()
        if b'"poststop"' in raw:  # parse only when there can be hooks to run
            from cove.oci.spec import Spec

            spec = Spec.parse(raw)
    except (CoveError, OSError) as e:
        why = os_why(e) if isinstance(e, OSError) else str(e)
        posix.write(2, f"cove-runtime: warning: poststop hooks not run: {why}\n".encode())
    if spec is not None and spec.hooks.poststop:
        from cove.runtime.hooks import run_hooks_warning

        # The spec: a failing poststop hook is a warning; the next ones run, and
        # deletion goes on.
        run_hooks_warning("poststop", spec.hooks.poststop, st.hook_state("stopped"))
    runtime_state.remove_dir(st.dir)


def _rmdir_empty(cg: dict[str, Any]) -> bool:
    """A stopped container's cgroups (the cgroupfs driver's record, Manager.to_state())
    removed by one rmdir per directory, and each parent Cove made while it is empty, as
    Manager.destroy() would: rmdir removes only an empty cgroup (no process, no child),
    so nothing is skipped that destroy would kill or walk. False, with whatever is left
    for the manager, where that is not the case (EBUSY: a process or a child cgroup),
    for the systemd driver, or for a record this does not read."""
    if cg.get("systemd"):
        return False
    try:
        hs = cg["hierarchies"]
        dirs = [x["dir"] for x in hs if not x.get("skipped")]
    except (KeyError, TypeError, AttributeError):
        return False
    for d in dirs:
        if not isinstance(d, str):
            return False
        try:
            posix.rmdir(d)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if cg.get("prune_parent"):
            try:
                posix.rmdir(lite.dirname(d))
            except OSError:
                pass  # other containers still live there
    return True


def _aborted_create(sdir: str, cid: str) -> None:
    """What a create killed before its first state write leaves (a caller's timeout
    sends SIGKILL): the state dir with the bundle's config.json, and the cgroup create
    made, with its stage-1 child or init in it (both are born there). That cgroup is
    found as create named it (cgroupsPath, else /cove/<id>; the cgroupfs driver), what
    runs in it killed, and it removed. runc leaves such a cgroup and its processes."""
    try:
        fd = posix.open(lite.join(sdir, "config.json"), posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return  # killed before it wrote config.json, so before any cgroup
    try:
        raw = b"".join(iter(lambda: posix.read(fd, 1 << 16), b""))
    finally:
        posix.close(fd)
    from cove.oci.spec import Spec
    from cove.runtime.cgroups import open_manager

    try:
        mgr = open_manager(Spec.parse(raw).linux.cgroups_path or None, cid)
        mgr.destroy()
    except (CoveError, OSError) as e:
        why = os_why(e) if isinstance(e, OSError) else str(e)
        posix.write(2, f"cove-runtime: warning: {cid}: the cgroup of an aborted create: "
                       f"{why}\n".encode())
