"""The monitor zygote (`cove-zygote`): one per state root, started on demand by the
engine, forks every container monitor of that root and is their fallback reaper.

Why fork: a fresh Python process costs ~2.5 MiB of private memory (the interpreter's
heap and writable data). Forked from one idle parent that has already imported what they
run, monitors share those pages copy-on-write; a page stops being shared only in the
process that writes to it. So the zygote imports the monitor's modules, moves every
object out of the collector's reach (`gc.freeze`: a collection writes to every object's
header, which would unshare every page), and then does as little as it can.

Why reap: the zygote is a child subreaper, the next one above each monitor (itself the
init's parent). If a monitor is SIGKILLed, its container's init becomes the zygote's
child: the zygote holds that container's FIFOs open (a pipe nobody holds loses its
contents when the writer exits), and when the init exits it copies what is left into
the log (unless an adopting monitor reads them) and writes exit.code. Only a SIGKILL of
both the monitor and the zygote loses an exit code.

A request is one SOCK_SEQPACKET message on `<root>/zygote.sock`: the container's name,
"adopt" or "", and the caller's environment (the monitor runs the runtime with it),
NUL-separated, with two fds: the sync pipe the monitor answers on and its log file.
The zygote answers with the monitor's pid. Monitors are separate processes: killing the
zygote stops none of them, the engine starts a new zygote on the next request, and
execs a monitor as before when it can't reach one. The zygote leaves by itself after
IDLE seconds with nothing to watch, and with `cove supervisor stop`.

    python -I -S -c BOOT SEARCH_PATH ROOT READY_FD   (cove/engine/spawn.py)
"""

from __future__ import annotations

import _signal as signal
import gc
import os
import select
import socket
import sys

from cove.engine import monitor  # imported here so that the monitors share it


def _preload() -> None:
    """What monitors and shims import or build lazily: done once, here, it is shared;
    done after the fork, it would be private to each of them."""
    import ctypes
    import fcntl  # noqa: F401
    import time  # noqa: F401

    from cove.sys import libc  # noqa: F401

    ctypes.CDLL(None, use_errno=True).prctl  # noqa: B018

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COMM = "cove-zygote"
SOCK, PID_FILE, LOCK = "zygote.sock", "zygote.pid", "zygote.lock"
IDLE = 120.0


def _fork_monitor(root: str, conn: socket.socket, listener: socket.socket, lock: int,
                  *wake: int) -> tuple[int, str]:
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 18, 2)
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return -1, ""
    sync, logf = fds
    name, role, *env = msg.decode("utf-8", "surrogateescape").split("\0")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the monitor
        code = 1
        try:
            listener.close()
            conn.close()
            os.close(lock)  # the flock must die with the zygote, not live on in monitors
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in wake:
                os.close(fd)
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(logf, 1)
            os.dup2(logf, 2)
            os.close(null)
            os.close(logf)
            os.environ.clear()
            for kv in env:
                k, sep, v = kv.partition("=")
                if sep:
                    os.environ[k] = v
            code = monitor.main([root, name, str(sync), *(["--adopt"] if role else [])])
        finally:
            os._exit(code)
    os.close(sync)
    os.close(logf)
    return pid, name


class Reaper:
    """The zygote's second job: it is a child subreaper, so the init of a container whose
    monitor died becomes its child. It then keeps that container's output alive (read
    ends of its FIFOs: a pipe nobody holds open loses its contents when the container
    exits) and, when the init exits, copies what is left into the log (unless an adopting
    monitor reads them) and writes exit.code for whoever records it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths = monitor.S.Paths(root)
        self.monitors: dict[int, str] = {}  # monitor pid -> container name
        self.held: dict[str, list[int]] = {}  # container -> FIFO read ends we hold

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            name = self.monitors.pop(pid, None)
            try:
                if name:
                    self._monitor_gone(name)
                elif name is None:
                    self._orphan_gone(pid, monitor.shell_code(status))
            except Exception as e:  # a record we can't read: nothing to keep for it
                print(f"cove-zygote: child {pid}: {e}", file=sys.stderr, flush=True)

    def _monitor_gone(self, name: str) -> None:
        rec = monitor.S.load(self.paths.cdir(name)) or {}
        st = rec.get("State") or {}
        if st.get("Status") not in ("running", "paused") or name in self.held:
            return
        if not monitor.S.pid_alive(int(st.get("Pid") or 0), st.get("PidStart")):
            return
        fds = []
        for path in monitor.fifo_paths(self.paths.cdir(name)):
            try:
                fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError:
                pass
        self.held[name] = fds

    def _orphan_gone(self, pid: int, code: int) -> None:
        for name in monitor.S.all_names(self.paths):
            cdir = self.paths.cdir(name)
            rec = monitor.S.load(cdir) or {}
            if int((rec.get("State") or {}).get("Pid") or 0) != pid:
                continue
            fds = self.held.pop(name, [])
            if fds and not monitor._monitor_running(cdir):
                m = monitor.Monitor(self.root, name)
                m.rfds = dict(zip(fds, ("stdout", "stderr"), strict=False))
                m.drain_all()
                m.writer.close()
                fds = list(m.rfds)
            for fd in fds:
                os.close(fd)
            monitor.S.write_atomic(os.path.join(cdir, monitor.EXIT_FILE),
                                   f"{code} {pid}\n".encode())
            return


def serve(root: str, ready: int) -> int:
    import fcntl

    monitor.set_comm(COMM)
    _preload()
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    lock = os.open(os.path.join(root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another one started at the same moment: it serves
        os.write(ready, b"ok\n")
        return 0
    monitor.subreaper()
    # SIGCHLD wakes the select below (through the wakeup fd) to reap at once
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    path = os.path.join(root, SOCK)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    monitor.S.write_atomic(os.path.join(root, PID_FILE), f"{os.getpid()}\n".encode())
    os.write(ready, b"ok\n")
    os.close(ready)
    reaper = Reaper(root)
    gc.freeze()  # everything so far: shared with the monitors, never collected
    idle = 0.0
    while True:
        watched: list[Any] = [listener, wake_r]
        readable, _, _ = select.select(watched, [], [], 1.0)
        if wake_r in readable:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        reaper.reap()
        if listener in readable:
            idle = 0.0
            conn, _ = listener.accept()
            with conn:
                try:
                    pid, name = _fork_monitor(root, conn, listener, lock, wake_r, wake_w)
                    if pid > 0:
                        reaper.monitors[pid] = name
                    conn.send(str(pid).encode())
                except OSError:
                    pass
        elif not reaper.monitors and not reaper.held and not readable:
            idle += 1.0
            if idle >= IDLE or not os.path.exists(path):
                break
    try:
        os.unlink(os.path.join(root, PID_FILE))
        os.unlink(path)
    except OSError:
        pass
    return 0


def main(argv: list[str]) -> int:
    return serve(argv[0], int(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
