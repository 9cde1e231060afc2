"""The per-container monitor (`cove-monitor`, conmon's role).

A running container has one monitor. It is a child subreaper and runs `cove-runtime
create`, so the container's init becomes its child; it starts the container
(`cove-runtime start`), copies its stdout and stderr into the json-file log, waits for
the init, writes `<container>/exit.code` ("CODE PID\\n", atomically), records the code
and cleans up (runtime delete, rootfs unmount, network; removes a `--rm -d` container).

Monitors are forked by the state root's zygote (cove/engine/zygote.py), which is a child
subreaper too and so the next one up: if a monitor is SIGKILLed, its init becomes the
zygote's child, and the zygote reaps it and writes exit.code. The zygote also takes over
the dead monitor's FIFO read ends, so output of a container that exits while no monitor
runs is still in the pipe when the init exits: it copies it into the log first. Only
when both the monitor and the zygote are gone is an exit code lost (255, with an Error).

The container's stdout and stderr are FIFOs in its directory that the container holds
open read-write: it never sees EPIPE, and what it writes while no monitor reads stays in
the pipe (1 MiB) for the next one. A monitor started with `--adopt` (by the supervisor,
for a running container whose monitor died) re-opens those FIFOs, waits for the init's
exit through a pidfd and reads the code the zygote wrote.

The monitor imports only os, select, signal, ctypes (for prctl) and the engine's
state/log modules (which use `cove.oci.jsonio`, not `json`): it is the per-container
memory cost of the engine.

    python -m cove.engine.monitor ROOT NAME SYNC_FD [--adopt]

SYNC_FD gets "ok\\n" once the container runs, or "error: ...\\n".
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (6 ms, memory)
import os
import select
import sys

from cove.engine import events
from cove.engine import logs as L
from cove.engine import state as S

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

F_SETPIPE_SZ = 1031
PR_SET_CHILD_SUBREAPER = 36
EXIT_FILE = "exit.code"


def set_comm(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def subreaper() -> None:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def fifo_paths(cdir: str) -> tuple[str, str]:
    return os.path.join(cdir, "stdout.fifo"), os.path.join(cdir, "stderr.fifo")


# `run -i`: the attached client makes this FIFO and holds its write end (see
# containers._stdin_fifo); the container's stdin is its read end, so that the container
# reads what the client forwards and EOF when the client closes it. Absent: /dev/null.
# `run -d -i` and `create -i` (docker's OpenStdin without StdinOnce: the record's
# Config.OpenStdin) keep it: made here at each start, and `cove attach` writes to it.
STDIN_FIFO = "stdin.fifo"


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
        fd = os.open(os.path.join(cdir, STDIN_FIFO),
                     os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    os.set_blocking(fd, True)
    return fd


def runtime_cmd(paths: S.Paths) -> list[str]:
    rt = os.environ.get("COVE_RUNTIME") or os.path.join(os.path.dirname(sys.executable),
                                                       "cove-runtime")
    return [rt, "--root", paths.runtime_root]


# Every signal but KILL and STOP: reset to its default in what we spawn. A signal
# ignored at exec stays ignored, and the runtime's children inherit it down to the
# container's init: with the SIGINT and SIGHUP we ignore, a container's `trap ... INT`
# could never fire (a shell may not trap what it was started ignoring).
DEFAULT_SIGNALS = tuple(s for s in range(1, 32) if s not in (9, 19))


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    """fork+exec without the subprocess module (it costs a megabyte per monitor), with
    the signals' default dispositions (DEFAULT_SIGNALS)."""
    return os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2)], setsigdef=DEFAULT_SIGNALS)


# Exit statuses of children reaped while waiting for another (see reap_others).
REAPED: dict[int, int] = {}


def reap_others() -> None:
    """Reap whatever children have exited, keeping their statuses in REAPED. We are a
    subreaper: processes a runtime leaves behind become our children (runsc's sandbox
    and gofer), and a runtime call may wait for them to be reaped (`runsc delete`)."""
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if got == 0:
            return
        REAPED[got] = status


def wait_child(pid: int) -> int:
    """The wait status of our child `pid` (reaped now, or earlier by reap_others)."""
    while pid not in REAPED:
        try:
            got, status = os.waitpid(pid, 0)
        except InterruptedError:  # pragma: no cover
            continue
        REAPED[got] = status
    return REAPED.pop(pid)


def call(argv: list[str], stdout: int = -1, stderr: int = -1,
         stdin: int = -1) -> tuple[int, str]:
    """Run argv; its exit code and (unless redirected) its stderr. While it runs, other
    children that exit are reaped (reap_others)."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe()
    try:
        pid = spawn(argv, null if stdin < 0 else stdin, null if stdout < 0 else stdout,
                    w if stderr < 0 else stderr)
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


def read_exit(cdir: str, pid: int) -> int | None:
    """The code the shim recorded for init `pid`, or None."""
    try:
        with open(os.path.join(cdir, EXIT_FILE)) as f:
            parts = f.read().split()
        code, who = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        return code if who in (pid, 0) else None
    except (OSError, ValueError):
        return None


def pidfd(pid: int) -> int:
    """A pidfd (readable once `pid` exits), or -1 when it is gone already."""
    if pid <= 0:
        return -1
    try:
        return os.pidfd_open(pid)
    except OSError:
        return -1


class Monitor:
    def __init__(self, root: str, name: str) -> None:
        self.paths = S.Paths(root)
        self.name = name
        self.cdir = self.paths.cdir(name)
        rec = S.load(self.cdir)
        assert rec is not None
        self.rec: dict[str, Any] = rec
        self.rt = runtime_cmd(self.paths)
        lc = rec.get("HostConfig", {}).get("LogConfig", {}).get("Config", {})
        self.max_size = L.parse_size(lc["max-size"]) if lc.get("max-size") else 0
        self.max_file = int(lc.get("max-file", "1"))
        self.writer = L.JsonFileWriter(L.log_path(self.cdir), self.max_size, self.max_file)
        self.rfds: dict[int, str] = {}

    def open_fifos(self, create: bool) -> list[int]:
        """Open the read ends (ours); with `create`, also the read-write ends the
        container gets as stdout and stderr."""
        ends = []
        for path, stream in zip(fifo_paths(self.cdir), ("stdout", "stderr"), strict=True):
            if create and not os.path.exists(path):
                os.mkfifo(path, 0o600)
            r = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                import fcntl
                fcntl.fcntl(r, F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
            self.rfds[r] = stream
            if create:
                ends.append(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        return ends

    def drain(self, timeout: float | None, extra: list[int] = ()) -> list[int]:  # type: ignore[assignment]
        """Copy what is readable into the log (closing FIFOs at EOF); which of `extra`
        are readable."""
        fds = [*self.rfds, *extra]
        if not fds:
            return []
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover
            return []
        for fd in ready:
            if fd not in self.rfds:
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if data:
                self.writer.feed(self.rfds[fd], data)
            else:
                self.writer.flush(self.rfds[fd])
                os.close(fd)
                del self.rfds[fd]
        return [fd for fd in ready if fd in extra]

    def _fifo_text(self) -> str:
        out = b""
        for fd in list(self.rfds):
            try:
                out += os.read(fd, 65536)
            except OSError:
                pass
        return out.decode(errors="replace").strip()

    # -- the container -------------------------------------------------------------------

    def create(self, ends: list[int]) -> int:
        """`cove-runtime create`, with the FIFOs as the container's stdout and stderr (and
        its stdin FIFO, with `run -i`, as its stdin); the init's pid. We are a child
        subreaper: the init is our child once the runtime has exited."""
        for old in (EXIT_FILE, "init.pid"):
            try:
                os.unlink(os.path.join(self.cdir, old))
            except FileNotFoundError:
                pass
        pid_file = os.path.join(self.cdir, "init.pid")
        stdin = open_stdin(self.cdir, bool(self.rec.get("Config", {}).get("OpenStdin")))
        rc, _ = call([*self.rt, "create", "--bundle", self.cdir, "--pid-file", pid_file,
                      self.name], stdout=ends[0], stderr=ends[1], stdin=stdin)
        for fd in (*ends, stdin) if stdin >= 0 else ends:
            os.close(fd)
        if rc != 0:
            raise RuntimeError(self._fifo_text() or f"cove-runtime create: exit status {rc}")
        with open(pid_file) as f:
            return int(f.read().strip())

    def drain_all(self) -> None:
        """Copy whatever the FIFOs still hold into the log (the writers are gone)."""
        for _ in range(1024):
            if not self.rfds:
                break
            self.drain(0)
            if not select.select(list(self.rfds), [], [], 0)[0]:
                break

    # -- watching -------------------------------------------------------------------------

    def watch(self, init: int, init_start: int | None, parent: bool) -> tuple[int, str]:
        """Log until the init exits; its exit code (and an Error)."""
        ifd = pidfd(init) if parent or S.pid_alive(init, init_start) else -1
        if ifd >= 0:
            while not self.drain(None, [ifd]):
                pass
            os.close(ifd)
        if parent:
            try:
                status = wait_child(init)
            except ChildProcessError:
                pass
            else:
                code = shell_code(status)
                S.write_atomic(os.path.join(self.cdir, EXIT_FILE), f"{code} {init}\n".encode())
                return code, ""
        # adopted: the zygote (a subreaper) reaped the orphaned init and writes its code
        import time
        deadline = time.monotonic() + 3.0
        while (got := read_exit(self.cdir, init)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if got is not None:
            return got, ""
        return 255, "exit code lost: its monitor was killed while no zygote ran"

    def finish(self, code: int, error: str = "", finished: str = "") -> None:
        """Record the exit (`finished`: when the init exited; now by default), clean up,
        and wake the supervisor: a restart policy's delay counts from the exit."""
        finished = finished or S.now_rfc3339()
        import time
        deadline = time.monotonic() + 2.0
        while self.rfds and time.monotonic() < deadline:
            self.drain(0.1)
        self.writer.close()
        # `cove rename` while it ran: the runtime's state and the network know the new
        # name (cleanup settles the rest: cove/engine/ops.py)
        name = current_name(self.cdir, self.name)
        call([*self.rt, "delete", "--force", name])
        cleanup(self.paths, name, self.rec)
        self.cdir = self.paths.cdir(name)

        def done(r: dict[str, Any]) -> None:
            st = r["State"]
            st.update(Status="exited", Running=False, Pid=0, ExitCode=code,
                      FinishedAt=finished, Error=error)
            if st.get("Health"):
                st["Health"]["Status"] = "unhealthy" if st["Health"]["Status"] == "unhealthy" \
                    else "starting"
            r["MonitorPid"] = 0
        rec = S.update(self.cdir, done)
        events.emit(self.paths.root, "container", "die", rec, exitCode=code)
        if rec.get("HostConfig", {}).get("RestartPolicy", {}).get("Name", "no") != "no":
            wake_supervisor(self.paths)
        if rec.get("HostConfig", {}).get("AutoRemove"):
            try:
                from cove.engine import containers
                containers.remove(self.paths.root, name, force=True)
            except Exception:
                pass


def cleanup(paths: S.Paths, name: str, rec: dict[str, Any]) -> None:
    """After a run: the network torn down, the rootfs unmounted (kept for a restart).
    Without the image modules (60 ms to import): the overlay is one umount."""
    if rec.get("HostConfig", {}).get("NetworkMode") not in ("host", "none"):
        try:
            from cove.engine import network
            network.detach(paths, name)
        except Exception as e:
            print(f"network detach {name}: {e}", file=sys.stderr, flush=True)
    from cove.sys import libc
    merged = os.path.join(paths.cdir(name), "merged")
    for flags in (0, 2):  # then MNT_DETACH, if busy
        try:
            libc.umount2(merged, flags)
            break
        except OSError as e:
            if e.errno != 16:  # EBUSY; EINVAL: not mounted (a copied rootfs)
                break
    settle_rename(paths, name)


def current_name(cdir: str, name: str) -> str:
    """The container's name now: `cove rename` may have renamed it while it ran (its
    old directory is then a symlink to the new one)."""
    rec = S.load(cdir) or {}
    new = rec.get("Name")
    return new if isinstance(new, str) and new and new != name \
        and os.path.isdir(os.path.join(os.path.dirname(cdir), new)) else name


def settle_rename(paths: S.Paths, name: str) -> None:
    """Finish a rename done while the container ran (cove/engine/ops.py): its log file
    still has the old name (`NAME-json.log` is a symlink to it) and the old directory
    is a symlink to this one. Once the run is over, both take the new name."""
    cdir = paths.cdir(name)
    dst = os.path.join(cdir, name + "-json.log")
    try:
        target = os.readlink(dst)
    except OSError:
        return
    old = target[:-len("-json.log")] if target.endswith("-json.log") else ""
    os.unlink(dst)
    src = os.path.join(cdir, target)
    i = 0
    while os.path.lexists(f"{src}.{i}" if i else src):
        os.rename(f"{src}.{i}" if i else src, f"{dst}.{i}" if i else dst)
        i += 1
    alias = paths.cdir(old) if old and "/" not in old else ""
    try:
        if alias and os.readlink(alias) == name:
            os.unlink(alias)
    except OSError:
        pass


def wake_supervisor(paths: S.Paths) -> None:
    """SIGUSR1 to the root's supervisor, if one runs: it looks at the records now."""
    try:
        with open(paths.supervisor_pid) as f:
            pid = int(f.read().strip() or 0)
        if pid > 0 and _comm(pid) == "cove-supervisor":
            os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError):
        pass


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _monitor_running(cdir: str) -> bool:
    rec = S.load(cdir) or {}
    pid = int(rec.get("MonitorPid") or 0)
    try:
        with open(f"/proc/{pid}/comm") as f:
            return pid > 0 and f.read().strip() == "cove-monitor" and S.pid_alive(pid)
    except OSError:
        return False


def main(argv: list[str]) -> int:
    root, name, sync = argv[0], argv[1], int(argv[2])
    adopt = "--adopt" in argv
    os.set_inheritable(sync, False)
    set_comm("cove-monitor")
    for s in (signal.SIGPIPE, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    m: Monitor | None = None
    try:
        subreaper()
        m = Monitor(root, name)
        if adopt:
            m.open_fifos(create=False)
            st = m.rec["State"]
            pid, start = int(st.get("Pid") or 0), st.get("PidStart")
        else:
            ends = m.open_fifos(create=True)
            pid = m.create(ends)
            start = S.proc_start_time(pid)
            rc, err = call([*m.rt, "start", name])
            if rc != 0:
                call([*m.rt, "delete", "--force", name])
                try:
                    wait_child(pid)
                except ChildProcessError:
                    pass
                raise RuntimeError(err or "cove-runtime start failed")

        ppid = os.getppid()
        zygote = ppid if _comm(ppid) == "cove-zygote" else 0
        zstart = S.proc_start_time(zygote) if zygote else None

        def running(r: dict[str, Any]) -> None:
            st = r["State"]
            if not adopt:
                r["ZygotePid"], r["ZygoteStart"] = zygote, zstart
                st.update(Status="running", Running=True, Pid=pid, PidStart=start,
                          ExitCode=0, Error="", StartedAt=S.now_rfc3339(),
                          FinishedAt="0001-01-01T00:00:00Z")
                if r["Config"].get("Healthcheck"):
                    st["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
            r["MonitorPid"] = os.getpid()
        rec = S.update(m.cdir, running)
        if not adopt:
            events.emit(root, "container", "start", rec)
    except Exception as e:
        msg = str(e).replace("\n", " ") or type(e).__name__
        try:
            os.write(sync, f"error: {msg}\n".encode())
        except OSError:
            pass
        if m is not None:
            try:
                m.finish(127, msg)
            except Exception:
                pass
        return 1
    try:
        os.write(sync, b"ok\n")
        os.close(sync)
    except OSError:
        pass
    try:
        code, error = m.watch(pid, start, parent=not adopt)
        m.finish(code, error, S.now_rfc3339())
    except FileNotFoundError:
        pass  # removed under us
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
