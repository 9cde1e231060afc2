"""The monitor zygote (`cove-zygote`): one per state root, started on demand by the
engine, forks every container monitor of that root.

Why: a fresh Python process costs ~2.5 MiB of private memory (the interpreter's heap and
writable data), and each container has a monitor and a shim. Forked from one idle
parent that has already imported what they run, they share those pages copy-on-write;
a page stops being shared with the others only in the process that writes to it. So the
zygote imports the monitor's modules, moves every object out of the collector's reach
(`gc.freeze`: a collection writes to every object's header, which would unshare every
page), and then does as little as it can: it waits on its socket and reaps its children.

A request is one SOCK_SEQPACKET message on `<root>/zygote.sock`: the container's name,
"adopt" or "", and the caller's environment (the monitor runs the runtime with it),
NUL-separated, with two fds: the sync pipe the monitor answers on and its log file.
The zygote answers with the monitor's pid. Nothing depends on the zygote staying up:
monitors are separate processes (a SIGKILL of the zygote re-parents them), the engine
starts a new zygote on the next request, and execs a monitor as before when it can't
reach one. It leaves by itself once it has had no child for IDLE seconds, and with
`cove supervisor stop`.

    python -I -S -c ZYGOTE_MAIN SRC ROOT READY_FD   (see containers.py)
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

COMM = "cove-zygote"
SOCK, PID_FILE, LOCK = "zygote.sock", "zygote.pid", "zygote.lock"
IDLE = 120.0


def _fork_monitor(root: str, conn: socket.socket, listener: socket.socket, lock: int) -> int:
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 18, 2)
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return -1
    sync, logf = fds
    name, adopt, *env = msg.decode("utf-8", "surrogateescape").split("\0")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the monitor
        code = 1
        try:
            listener.close()
            conn.close()
            os.close(lock)  # the flock must die with the zygote, not live on in monitors
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
            code = monitor.main([root, name, str(sync), *(["--adopt"] if adopt else [])])
        finally:
            os._exit(code)
    os.close(sync)
    os.close(logf)
    return pid


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
    gc.freeze()  # everything so far: shared with the monitors, never collected
    children: set[int] = set()
    idle = 0.0
    while True:
        readable, _, _ = select.select([listener], [], [], 1.0)
        while children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
        if readable:
            idle = 0.0
            conn, _ = listener.accept()
            with conn:
                try:
                    pid = _fork_monitor(root, conn, listener, lock)
                    if pid > 0:
                        children.add(pid)
                    conn.send(str(pid).encode())
                except OSError:
                    pass
        elif not children:
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
