"""Overlap the cost of the first cgroup migration with the runtime's own start-up.

Moving a process between cgroups takes a global lock whose first writer in a while
waits out an RCU grace period (12-17 ms on this host). `prewarm()` starts that wait
in a thread at once, by moving us into the cgroup we are already in (a no-op move);
imports and config parsing then run meanwhile, and the real moves find it paid.

Only the systemd driver uses it (cove/cli/runtime.py), for systemd's move of init into
the unit. With cgroupfs no move waits: the container joins its v1 cgroups through
`tasks`, which skips that lock (Manager.join_fds), and is born in its cgroup2 one
(Manager.clone_fd); a prewarm would then only hold cgroup_mutex through the grace
period, stalling create's own cgroup mkdirs (4-8 ms of a create on this host).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _thread


def _own_procs_file() -> str:
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:  # prefer a v1 hierarchy: the lock is global either way
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(","):
            if c and not c.startswith("name="):
                return f"/sys/fs/cgroup/{c}{path.rstrip('/')}/cgroup.procs"
    for line in lines:
        if line.startswith("0::"):
            return f"/sys/fs/cgroup{line[3:].rstrip('/')}/cgroup.procs"
    return ""


def _has_v2() -> bool:
    """Whether a cgroup2 hierarchy is mounted where hosts mount it (v2 or hybrid); the
    manager reads mountinfo later, this is only whether to start the wait early."""
    return any(os.path.exists(f"/sys/fs/cgroup/{d}cgroup.controllers")
               for d in ("", "unified/"))


def prewarm() -> _thread.LockType:
    """Start the no-op move in a thread; acquire the returned lock before fork()."""
    import _thread

    done = _thread.allocate_lock()
    done.acquire()
    # Not root: the move would be refused (EACCES), and rootless containers are
    # rarely moved into cgroups at all.
    target = _own_procs_file() if os.geteuid() == 0 and _has_v2() else ""

    def run() -> None:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")  # "0": the writer's own process
            finally:
                os.close(fd)
        except OSError:
            pass  # only an optimisation
        finally:
            done.release()

    if target:
        _thread.start_new_thread(run, ())
    else:
        done.release()
    return done
