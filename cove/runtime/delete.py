"""`delete`: remove a stopped container (or, with --force, stop it first)."""

from __future__ import annotations

import os
import time

from cove.errors import CoveError, os_why
from cove.runtime import state as runtime_state


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
            runtime_state.remove_dir(os.path.join(root, cid))
            return
        raise
    status = st.status()
    if status in ("running", "paused") and not force:
        raise CoveError(f"container {cid!r}",
                        f"cannot delete container {cid} that is not stopped: {status}")
    mgr = None
    if st.data.get("cgroup"):
        from cove.runtime.cgroups import open_manager_from_state

        mgr = open_manager_from_state(st.data["cgroup"])
    if status != "stopped":
        if mgr is not None:
            if status == "paused":
                mgr.thaw()
            mgr.kill_all(9)
        try:
            os.kill(st.pid, 9)
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
        os.write(2, f"cove-runtime: warning: poststop hooks not run: {why}\n".encode())
    if spec is not None and spec.hooks.poststop:
        from cove.runtime.hooks import run_hooks_warning

        # The spec: a failing poststop hook is a warning; the next ones run, and
        # deletion goes on.
        run_hooks_warning("poststop", spec.hooks.poststop, st.hook_state("stopped"))
    runtime_state.remove_dir(st.dir)
