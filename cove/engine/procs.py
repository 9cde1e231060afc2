"""Processes, as the engine's long-lived processes (the monitor, the keeper, the
supervisor) handle them: names, spawning without `subprocess`, reaping as a subreaper,
and a container init's exit status, however the init was reaped.

Kept to os, select and `_signal` (plus ctypes and fcntl when called): the monitor and
the keeper import it, and every module they import is memory they keep for as long as
containers run.
"""

from __future__ import annotations

import os
import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

F_SETPIPE_SZ = 1031
PR_SET_CHILD_SUBREAPER = 36
EXIT_FILE = "exit.code"

# `run -i`: the attached client makes this FIFO and holds its write end (see
# _stdin_fifo in cove/engine/container/run.py); the container's stdin is its read end,
# so that the container reads what the client forwards and EOF when the client closes
# it. Absent: /dev/null.
# `run -d -i` and `create -i` (docker's OpenStdin without StdinOnce: the record's
# Config.OpenStdin) keep it: made at each start, and `cove attach` writes to it.
STDIN_FIFO = "stdin.fifo"


def set_comm(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def subreaper() -> None:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def fifo_paths(cdir: str) -> tuple[str, str]:
    return os.path.join(cdir, "stdout.fifo"), os.path.join(cdir, "stderr.fifo")


def open_fifo_reader(path: str) -> int:
    """A non-blocking read end of a container's output FIFO, its pipe raised to 1 MiB
    (what the container may write while nobody reads)."""
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        import fcntl
        fcntl.fcntl(r, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    return r


def open_stdin(cdir: str, keep_open: bool = False) -> int:
    """The read end of the container's stdin FIFO (blocking, for the container), or -1
    when there is none. With `keep_open` (OpenStdin) the FIFO is made when missing and
    opened read-write: the container then holds a writer itself, as it does its stdout
    and stderr, so its stdin stays open (no EOF) between attaches, across a killed
    monitor, until it exits; `attach` opens the write end and leaves."""
    path = os.path.join(cdir, STDIN_FIFO)
    if keep_open:
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            pass
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    os.set_blocking(fd, True)
    return fd


# Every signal but KILL and STOP: reset to its default in what we spawn. A signal
# ignored at exec stays ignored, and the runtime's children inherit it down to the
# container's init: with the SIGINT and SIGHUP we ignore, a container's `trap ... INT`
# could never fire (a shell may not trap what it was started ignoring).
DEFAULT_SIGNALS = tuple(s for s in range(1, 32) if s not in (9, 19))


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int,
          env: dict[str, str] | None = None) -> int:
    """fork+exec without the subprocess module (it costs a megabyte per process), with
    the signals' default dispositions (DEFAULT_SIGNALS)."""
    return os.posix_spawnp(argv[0], argv, os.environ if env is None else env,
                           file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0),
                                         (os.POSIX_SPAWN_DUP2, stdout, 1),
                                         (os.POSIX_SPAWN_DUP2, stderr, 2)],
                           setsigdef=DEFAULT_SIGNALS)


# Exit statuses of children reaped while waiting for another (see reap_others).
REAPED: dict[int, int] = {}


def reap_others() -> None:
    """Reap whatever children have exited, keeping their statuses in REAPED. We are a
    subreaper: processes a runtime leaves behind become our children (runsc's sandbox
    and gofer), and a runtime call may wait for them to be reaped (`runsc delete`)."""
    if len(REAPED) > 4096:  # pragma: no cover - orphans nobody asked about
        for pid in list(REAPED)[:2048]:
            del REAPED[pid]
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if got == 0:
            return
        REAPED[got] = status


def child_status(pid: int, block: bool = True) -> int | None:
    """The wait status of our child `pid` (reaped now, or earlier by reap_others);
    None when it is not our child (or, without `block`, still runs)."""
    while pid not in REAPED:
        try:
            got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except InterruptedError:  # pragma: no cover
            continue
        except ChildProcessError:
            return REAPED.pop(pid, None)
        if got == 0:
            return None
        REAPED[got] = status
    return REAPED.pop(pid)


def wait_child(pid: int) -> int:
    status = child_status(pid)
    if status is None:
        raise ChildProcessError(pid)
    return status


def call(argv: list[str], stdout: int = -1, stderr: int = -1,
         stdin: int = -1, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run argv; its exit code and (unless redirected) its stderr. While it runs, other
    children that exit are reaped (reap_others)."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe()
    try:
        pid = spawn(argv, null if stdin < 0 else stdin, null if stdout < 0 else stdout,
                    w if stderr < 0 else stderr, env)
    finally:
        os.close(w)
        os.close(null)
    chunks = []
    try:
        while True:
            if not select.select([r], [], [], 0.2)[0]:
                reap_others()
                continue
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(r)
    status = wait_child(pid)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace").strip()


def shell_code(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def pidfd(pid: int) -> int:
    """A pidfd (readable once `pid` exits), or -1 when it is gone already."""
    if pid <= 0:
        return -1
    try:
        return os.pidfd_open(pid)
    except OSError:
        return -1


# ioctl(pidfd, PIDFD_GET_INFO) with PIDFD_INFO_EXIT (Linux 6.15): the wait status of a
# process that has exited and been reaped, by whoever reaped it, for any holder of a
# pidfd opened while it lived. struct pidfd_info is 64 bytes; exit_code at offset 60.
PIDFD_GET_INFO = 0xC040FF0B
PIDFD_INFO_EXIT = 1 << 3


def exit_status(fd: int, pid: int, start: int | None) -> int | None:
    """The wait status of an exited process we are not the parent of: from the pidfd
    (PIDFD_INFO_EXIT, once it is reaped), else from /proc while it is a zombie nobody
    has reaped yet (the `exit_code` field of its stat, checked to be the same process
    by its start time); None when neither can tell."""
    if fd >= 0:
        import fcntl
        import struct
        buf = bytearray(struct.pack("Q", PIDFD_INFO_EXIT) + bytes(56))
        try:
            fcntl.ioctl(fd, PIDFD_GET_INFO, buf)
            if struct.unpack_from("Q", buf, 0)[0] & PIDFD_INFO_EXIT:
                return int(struct.unpack_from("i", buf, 60)[0])
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] == b"Z" and (start is None or int(fields[19]) == start):
            return int(fields[49])
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_exit(cdir: str, pid: int) -> int | None:
    """The exit code recorded in `<cdir>/exit.code` for init `pid`, or None."""
    try:
        with open(os.path.join(cdir, EXIT_FILE)) as f:
            parts = f.read().split()
        code, who = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        return code if who in (pid, 0) else None
    except (OSError, ValueError):
        return None


class Loop:
    """The fd -> handler registry of an epoll loop (the monitor's and the keeper's)."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.mask = 0  # the events of the fd whose handler runs

    def on(self, fd: int, fn: Callable[[int], None], edge: bool = False) -> None:
        """Call `fn(fd)` when `fd` is readable; with `edge`, once each time it gets new
        data (EPOLLET: a handler that leaves a partial line in a pipe is not called again
        until more comes)."""
        self.handlers[fd] = fn
        self.ep.register(fd, select.EPOLLIN | (select.EPOLLET if edge else 0))

    def off(self, fd: int, close: bool = False) -> None:
        """Stop watching `fd` (and close it, with `close`)."""
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)
        if close:
            os.close(fd)

    def dispatch(self, events: list[tuple[int, int]], who: str) -> None:
        """Each ready fd's handler; one that raises is logged, and the loop goes on."""
        for fd, mask in events:
            fn = self.handlers.get(fd)
            if fn is not None:
                self.mask = mask
                try:
                    fn(fd)
                except Exception as e:
                    print(f"{who}: {e!r}", file=sys.stderr, flush=True)
