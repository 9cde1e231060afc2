"""`start`: release a created container's init by opening the exec fifo."""

from __future__ import annotations

import posix
import select

from cove.errors import CoveError
from cove.runtime import state as runtime_state


def start(root: str, cid: str) -> runtime_state.State:
    st = runtime_state.load(root, cid)
    status = st.status()
    if status != "created":
        if status == "stopped":
            raise CoveError(f"container {cid!r}", "cannot start a container that has stopped")
        raise CoveError(f"container {cid!r}", f"cannot start a container that is {status}")
    try:
        fd = posix.open(st.fifo, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    except FileNotFoundError:
        raise CoveError(f"container {cid!r}", "already started") from None
    try:
        # Opening the read end unblocks init's open for writing; then wait for its
        # byte, checking that init is still there (it may die before opening its end).
        p = select.poll()
        p.register(fd, select.POLLIN)
        while True:
            if p.poll(100) and posix.read(fd, 1):
                break
            if not st.alive():
                raise CoveError(f"container {cid!r}", "init exited before start")
    finally:
        posix.close(fd)
    try:
        posix.unlink(st.fifo)
    except FileNotFoundError:
        pass
    raw = st.config_bytes()
    if b'"poststart"' not in raw:
        return st  # skip parsing the spec: most containers have no hooks
    from cove.oci.spec import Spec

    spec = Spec.parse(raw)
    if spec.hooks.poststart:
        from cove.runtime.hooks import run_hooks_warning

        # The spec: a failing poststart hook is a warning; the next ones run, and the
        # container runs on.
        run_hooks_warning("poststart", spec.hooks.poststart, st.hook_state("running"))
    return st
