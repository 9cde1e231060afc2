"""The keeper (`cove-zygote`): one per state root, the parent of the root's monitor and
the holder of a copy of everything the monitor holds.

The engine starts it on demand (cove/engine/monctl.py); it forks the monitor
(cove/engine/monitor.py) and is a child subreaper, the next one above the monitor. For
every running container the monitor sends it (SCM_RIGHTS, over their socket pair) the
read ends of the container's FIFOs and its init's pidfd (and, for a container with a
terminal, its pty master: the last close of a master hangs the terminal up, a SIGHUP
to the container). So, when the monitor is SIGKILLed:

- the inits, the monitor's children, become the keeper's: it reaps them as they exit
  and writes `exit.code` ("CODE PID"), which the next monitor records;
- the pipes keep what the containers write (a pipe nobody holds open loses its
  contents when its last writer exits): the keeper holds them open until a monitor has
  them again;
- the keeper forks a new monitor at once, which adopts every running container (the
  pty masters it holds stay open in that fork, and are the new monitor's).

When the keeper is SIGKILLed, the monitor (which holds a pidfd of it) starts a new one,
`--sibling`: not the monitor's parent, so it can't reap the inits if the monitor dies
too; it reads their exit status through the pidfds it holds (PIDFD_INFO_EXIT, Linux
6.15, once whoever reaps them has; before that, from /proc while they are zombies).

The keeper runs no container code and imports little: it only waits.

    python -I -S -c BOOT SEARCH_PATH ROOT READY_FD                       (cove/engine/spawn.py)
    python -I -S -c BOOT SEARCH_PATH ROOT -1 --sibling SOCK_FD MONITOR_PID   (from a monitor)
"""

from __future__ import annotations

import _signal as signal
import os
import select
import socket
import sys
import time

from cove.engine import monitor, procs, state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

COMM = "cove-zygote"
PID_FILE, LOCK = "zygote.pid", "zygote.lock"
RESPAWN = 1.0  # the longest wait before a new monitor, after quick deaths in a row
QUICK = 0.2  # a monitor that dies within this of its start died "quickly"


class Held:
    """A running container, as the keeper holds it."""

    __slots__ = ("fds", "master", "name", "pid", "pidfd", "start")

    def __init__(self, name: str, pid: int, start: int | None, fds: list[int],
                 tty: bool = False) -> None:
        self.name, self.pid, self.start = name, pid, start
        self.pidfd = fds[0] if fds and pid else -1
        self.fds = fds
        # a container with a terminal: its pty master (the last fd). Our copy keeps the
        # terminal from being hung up when the monitor dies, and goes to the next one.
        self.master = fds[-1] if tty and fds else -1

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


class Keeper(procs.Loop):
    def __init__(self, root: str) -> None:
        self.root = root
        self.paths = state.Paths(root)
        super().__init__()
        self.held: dict[str, Held] = {}
        self.by_pid: dict[int, Held] = {}
        self.mon_pid, self.mon_fd, self.mon_started = 0, -1, 0.0
        self.sock: socket.socket | None = None
        self.stopping = False
        self.respawn_at = 0.0
        self.quick = 0  # monitors in a row that died quickly
        self.lock = -1  # our flock: must not live on in the monitor

    # -- the monitor ----------------------------------------------------------------------

    def fork_monitor(self, ready: int = -1) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the monitor
            code = 1
            try:
                ours.close()
                self.ep.close()
                if self.lock >= 0:
                    os.close(self.lock)
                signal.set_wakeup_fd(-1)
                for s in (signal.SIGCHLD, signal.SIGTERM):
                    signal.signal(s, signal.SIG_DFL)
                ttys = {}
                for h in self.held.values():
                    if h.master >= 0:  # the next monitor's: the terminal stays held
                        ttys[h.name] = h.master
                        h.fds.remove(h.master)
                    h.close()
                os.setsid()
                code = monitor.serve(self.root, theirs.detach(), ready, ttys)
            except BaseException as e:
                print(f"cove-monitor: {e}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        theirs.close()
        self.use_monitor(pid, ours)

    def use_monitor(self, pid: int, sock: socket.socket) -> None:
        if self.sock is not None:
            self.off(self.sock.fileno())
            self.sock.close()
        self.sock = sock
        self.on(sock.fileno(), self.message)
        self.mon_pid, self.mon_started = pid, time.monotonic()
        self.mon_fd = procs.pidfd(pid)
        if self.mon_fd >= 0:
            self.on(self.mon_fd, self.monitor_gone)

    def monitor_gone(self, _fd: int) -> None:
        self.off(self.mon_fd)
        os.close(self.mon_fd)
        self.mon_fd = -1
        status = procs.child_status(self.mon_pid, block=False)
        clean = status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        self.mon_pid = 0
        soon = time.monotonic() - self.mon_started < QUICK
        if self.stopping or ((clean or soon) and not self.held):
            # idle, stopped, or unable to start with nothing to keep: we leave too
            self.stopping = True
            return
        print(f"{COMM}: the monitor died ({status}): starting a new one", file=sys.stderr,
              flush=True)
        # a crash loop backs off (0.1 s, doubling, up to RESPAWN); the first quick death
        # (a SIGKILL just after a restart) gets a new monitor at once
        self.quick = self.quick + 1 if soon else 0
        self.respawn_at = time.monotonic() + (
            min(RESPAWN, 0.025 * 2 ** self.quick) if self.quick > 1 else 0.0)

    def message(self, fd: int) -> None:
        assert self.sock is not None
        try:
            msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 8, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            msg, fds = b"", []
        if not msg:
            self.off(fd)  # the monitor closed its end (it is gone)
            return
        op, name, *rest = msg.decode("utf-8", "surrogateescape").split("\0")
        old = self.held.pop(name, None)
        if old is not None:
            self.by_pid.pop(old.pid, None)
            self.off(old.pidfd)
            old.close()
        if op == "watch":
            pid, start = int(rest[0]), int(rest[1]) or None
            h = Held(name, pid, start, fds, len(rest) > 2 and rest[2] == "tty")
            self.held[name] = h
            self.by_pid[pid] = h
            if h.pidfd >= 0:
                held = h
                self.on(h.pidfd, lambda _fd: self.init_fd(held))
        else:
            for f in fds:
                os.close(f)

    # -- the inits ------------------------------------------------------------------------

    def reap(self) -> None:
        """Inits orphaned by a killed monitor are ours: reap them, write exit.code."""
        procs.reap_others()
        for pid in [p for p in procs.REAPED if p in self.by_pid]:
            self.exited(self.by_pid[pid], procs.REAPED.pop(pid))
        for pid in [p for p in procs.REAPED if p != self.mon_pid]:
            # an init the monitor had not told us about yet (it died while starting it)
            status = procs.REAPED.pop(pid)
            for name in state.all_names(self.paths):
                rec: Mapping[str, Any] = state.load_record(self.paths.cdir(name)) or {}
                if int((rec.get("State") or {}).get("Pid") or 0) == pid:
                    self.exited(Held(name, pid, None, []), status)
                    break
        if self.mon_pid in procs.REAPED and self.mon_fd < 0:
            procs.REAPED.pop(self.mon_pid)

    def init_fd(self, h: Held) -> None:
        """An init exited. Ours to reap if its monitor died (reap() does); else its exit
        status shows through the pidfd (or /proc, while it is a zombie)."""
        self.off(h.pidfd)
        if self.mon_fd >= 0 and not select.select([self.mon_fd], [], [], 0)[0]:
            return  # its monitor lives: it records the exit (and a `rm -f` may follow)
        status = procs.child_status(h.pid, block=False)
        if status is None:
            status = procs.exit_status(h.pidfd, h.pid, h.start)
        if status is not None:
            self.exited(h, status)

    def exited(self, h: Held, status: int) -> None:
        """Keep the FIFOs (the next monitor reads what is left), record the code."""
        self.by_pid.pop(h.pid, None)
        if h.pidfd >= 0:
            self.off(h.pidfd)
            try:
                os.close(h.pidfd)
            except OSError:
                pass
            h.fds = [f for f in h.fds if f != h.pidfd]
            h.pidfd = -1
        state.write_atomic(os.path.join(self.paths.cdir(h.name), procs.EXIT_FILE),
                           f"{procs.shell_code(status)} {h.pid}\n".encode())

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for s in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(s, lambda _s, _f: None)
        self.on(wake_r, lambda _fd: None)  # read in the loop itself
        while True:
            if not self.mon_pid and not self.stopping and time.monotonic() >= self.respawn_at:
                self.fork_monitor()
            timeout = 1.0 if self.mon_pid or self.stopping else \
                max(0.0, self.respawn_at - time.monotonic())
            try:
                events = self.ep.poll(timeout)
            except InterruptedError:  # pragma: no cover
                continue
            for fd, _ in events:
                if fd == wake_r:
                    try:
                        got = os.read(wake_r, 512)
                    except BlockingIOError:
                        got = b""
                    if signal.SIGTERM in got:
                        self.stopping = True
                        if self.mon_pid:
                            try:
                                os.kill(self.mon_pid, signal.SIGTERM)
                            except OSError:
                                pass
                    continue
                self.dispatch([(fd, 0)], COMM)
            self.reap()
            if self.stopping and not self.mon_pid:
                break
        try:
            with open(os.path.join(self.root, PID_FILE)) as f:
                mine = int(f.read().strip() or 0) == os.getpid()
            if mine:
                os.unlink(os.path.join(self.root, PID_FILE))
        except (OSError, ValueError):
            pass
        return 0


def serve(root: str, ready: int, sibling: tuple[int, int] | None = None) -> int:
    import fcntl
    import resource

    procs.set_comm(COMM)
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    lock = os.open(os.path.join(root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if sibling else fcntl.LOCK_NB))
    except OSError:  # another one started at the same moment: it serves
        if ready >= 0:
            os.write(ready, b"ok\n")
        return 0
    procs.subreaper()
    state.write_atomic(os.path.join(root, PID_FILE), f"{os.getpid()}\n".encode())
    k = Keeper(root)
    k.lock = lock
    if sibling is not None:
        sock = socket.socket(fileno=sibling[0])
        sock.set_inheritable(False)
        k.use_monitor(sibling[1], sock)
    else:
        k.fork_monitor(ready)  # the monitor says "ok" on `ready` once it listens
        if ready >= 0:
            os.close(ready)
    return k.run()


def main(argv: list[str]) -> int:
    if "--sibling" in argv:
        i = argv.index("--sibling")
        return serve(argv[0], -1, (int(argv[i + 1]), int(argv[i + 2])))
    return serve(argv[0], int(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
