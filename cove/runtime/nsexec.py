"""The fork sequence that puts a process into a container's namespaces.

    runtime (P) --fork--> stage 1 (C) --unshare/setns, fork--> container process (G)

P stays in the host's namespaces (it writes uid maps, cgroups and state). C joins
existing namespaces and unshares new ones; a new pid or time namespace only applies
to children, so C forks G and exits. G is then pid 1 of the new pid namespace (for
`create`) or a member of the container's (for `exec`). P, C and G talk over one pair
of pipes, a line per message: see `Sync`.

    P: fork (into the cgroup2 one)   C: wait "go"
    P: put C in the cgroup, "go" ->  C: join the v1 cgroups (cgroup_fds), setns(user),
                                        setns(...)
                                     C: unshare(user) -> "userns"
    P: write uid/gid maps, "ok" ->   C: unshare(rest), fork G, "pid N" -> exit
    P: "start" ->                    G: set up, then messages of its own
"""

from __future__ import annotations

import os

from cove.errors import CoveError, os_why
from cove.sys import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

NS_FLAGS = {
    "user": libc.CLONE_NEWUSER, "ipc": libc.CLONE_NEWIPC, "uts": libc.CLONE_NEWUTS,
    "network": libc.CLONE_NEWNET, "pid": libc.CLONE_NEWPID, "mount": libc.CLONE_NEWNS,
    "cgroup": libc.CLONE_NEWCGROUP, "time": libc.CLONE_NEWTIME,
}
# /proc/PID/ns names.
NS_PROC = {"user": "user", "ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid",
           "mount": "mnt", "cgroup": "cgroup", "time": "time"}
# Join order: the user namespace first (it grants the rights to join the others),
# mount late (it changes how paths resolve).
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


class Sync:
    """One end of the P <-> C/G channel: newline-terminated text messages."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self._buf = b""

    def send(self, msg: str) -> None:
        data = (msg.replace("\n", " ") + "\n").encode()
        while data:
            n = os.write(self.wfd, data)
            data = data[n:]

    def recv(self) -> str | None:
        """The next message, or None at EOF (every writer closed or exec'd)."""
        while b"\n" not in self._buf:
            chunk = os.read(self.rfd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def expect(self, what: str) -> str:
        msg = self.recv()
        if msg is None:
            raise CoveError("container init", "exited during setup")
        if msg.startswith("error "):
            raise CoveError(msg[6:])
        if msg.split(" ", 1)[0] != what:
            raise CoveError("container init", f"unexpected message {msg!r}")
        return msg

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class NsPlan:
    """Which namespaces the new process joins (by fd) and which it creates."""

    def __init__(self) -> None:
        self.join: list[tuple[str, int]] = []   # (type, open fd), in JOIN_ORDER
        self.new: list[str] = []
        self.time_offsets: dict[str, tuple[int, int]] = {}
        # `tasks` files of the container's v1 cgroups (Manager.join_fds): C writes "0"
        # to each before anything else, so G is born in the cgroup.
        self.cgroup_fds: list[int] = []
        # The container's cgroup2 directory (Manager.clone_fd): P forks C into it, so
        # that G is born there too; spawn() sets born_in_cgroup when that worked.
        self.cgroup_dirfd = -1
        self.born_in_cgroup = False

    def add_join(self, typ: str, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise CoveError(f"{typ} namespace {path}", e.strerror or str(e)) from None
        self.join.append((typ, fd))
        self.join.sort(key=lambda j: JOIN_ORDER.index(j[0]))

    def close(self) -> None:
        for _, fd in self.join:
            os.close(fd)
        self.join = []
        for fd in self.cgroup_fds:
            os.close(fd)
        self.cgroup_fds = []
        if self.cgroup_dirfd >= 0:
            os.close(self.cgroup_dirfd)
            self.cgroup_dirfd = -1


def spawn(plan: NsPlan, stage2: Callable[[Sync], None]) -> tuple[int, Sync]:
    """Fork C (which forks G running `stage2`); return (C's pid, P's end of the channel)."""
    p2c_r, p2c_w = os.pipe()
    c2p_r, c2p_w = os.pipe()
    pid = -1
    if plan.cgroup_dirfd >= 0 and _single_threaded():
        try:
            pid = libc.fork_into_cgroup(plan.cgroup_dirfd)
            plan.born_in_cgroup = True
        except OSError:
            pid = -1  # an old kernel, a seccomp filter: fork, and the caller moves C
    if pid < 0:
        pid = os.fork()
    if pid == 0:
        os.close(p2c_w)
        os.close(c2p_r)
        sync = Sync(p2c_r, c2p_w)
        code = 1
        try:
            _stage1(plan, sync, stage2)
            code = 0
        except CoveError as e:
            _report(sync, str(e))
        except OSError as e:
            _report(sync, os_why(e))
        except BaseException as e:  # never return into the caller's code in a child
            _report(sync, f"{type(e).__name__}: {e}")
        os._exit(code)
    os.close(p2c_r)
    os.close(c2p_w)
    plan.close()
    return pid, Sync(c2p_r, p2c_w)


def _single_threaded() -> bool:
    """Whether this process has one thread: the raw clone3 of libc.fork_into_cgroup
    skips Python's at-fork work, which only other threads make needed (their locks,
    their thread states); with more, spawn forks and the caller moves C. Counted in
    /proc (a forked child of a threaded engine process is single-threaded, though
    Python's own count of its threads is not reset by fork)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _report(sync: Sync, msg: str) -> None:
    try:
        sync.send(f"error {msg}")
    except OSError:
        # The runtime has gone (init failed after `create` returned): stderr is all
        # that is left, and it is the container's.
        try:
            os.write(2, f"cove-runtime: {msg}\n".encode(errors="replace"))
        except OSError:
            pass


def _stage1(plan: NsPlan, sync: Sync, stage2: Callable[[Sync], None]) -> None:
    if sync.recv() != "go":
        os._exit(1)
    if plan.cgroup_dirfd >= 0:
        os.close(plan.cgroup_dirfd)
        plan.cgroup_dirfd = -1
    for fd in plan.cgroup_fds:
        # Single-threaded, "0" moves us without the global lock (Manager.join_fds).
        try:
            os.write(fd, b"0")
        except OSError as e:
            raise CoveError("cgroup", f"join: {os_why(e)}") from None
        os.close(fd)
    plan.cgroup_fds = []
    for typ, fd in plan.join:
        libc.setns(fd, NS_FLAGS[typ], f"{typ} namespace")
        os.close(fd)
    flags = 0
    for typ in plan.new:
        if typ == "cgroup":
            continue  # G unshares it once the runtime has moved it into its cgroup
        if typ == "user":
            libc.unshare(libc.CLONE_NEWUSER)
            sync.send("userns")
            if sync.recv() != "ok":
                os._exit(1)
        else:
            flags |= NS_FLAGS[typ]
    if (plan.join and plan.join[0][0] == "user") or "user" in plan.new:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    if flags:
        libc.unshare(flags)
    if plan.time_offsets:
        with open("/proc/self/timens_offsets", "w") as f:
            for clock, (secs, nsecs) in plan.time_offsets.items():
                f.write(f"{clock} {secs} {nsecs}\n")
    try:
        pid = os.fork()
    except BlockingIOError as e:
        # `exec` into a container whose cgroup is at its pids limit: say so.
        raise CoveError("fork the container's process", f"{os_why(e)} (the container's "
                        "pids limit, or RLIMIT_NPROC, is reached)") from None
    if pid:
        sync.send(f"pid {pid}")
        os._exit(0)
    # G: wait until P knows our pid, then run the container-side setup.
    if sync.recv() != "start":
        os._exit(1)
    try:
        stage2(sync)
    except CoveError as e:
        _report(sync, str(e))
    except OSError as e:
        _report(sync, os_why(e))
    except BaseException as e:
        _report(sync, f"{type(e).__name__}: {e}")
    os._exit(1)
