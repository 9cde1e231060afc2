"""The per-container monitor (`cove-monitor`, conmon's role) and its shim (`cove-shim`).

One run of one container has two small processes:

- the **shim** is the container init's parent and does nothing else: forked by the
  monitor, it makes itself a child subreaper and runs `cove-runtime create`, so the init
  is reparented to it; it waits for the init, writes `<container>/exit.code`
  ("CODE PID\\n", atomically) and exits. It holds no pipe that matters and imports
  nothing after the fork, so killing the monitor (or the supervisor) costs no exit code.
- the **monitor** starts the container (`cove-runtime start`), copies its stdout and
  stderr into the json-file log, and when the shim exits reads exit.code, records it,
  and cleans up (runtime delete, rootfs unmount, network; removes a `--rm -d`
  container). It too is a child subreaper: if the shim is SIGKILLed, the init becomes
  the monitor's child and its exit status is still known.

The container's stdout and stderr are FIFOs in its directory that the container holds
open read-write: it never sees EPIPE, and what it writes while no monitor reads stays in
the pipe (1 MiB) for the next one. A monitor started with `--adopt` (by the supervisor,
for a running container whose monitor died) re-opens those FIFOs and waits for the
shim's exit through a pidfd. The shim keeps read ends of the FIFOs open, so output of a
container that exits while no monitor runs is still in the pipe when the shim sees the
exit: it copies it into the log itself before writing exit.code.

The monitor imports only os, select, signal, ctypes (for prctl) and the engine's
state/log modules (which use `cove.oci.jsonio`, not `json`): it is the per-container
memory cost of the engine.

    python -m cove.engine.monitor ROOT NAME SYNC_FD [--adopt]

SYNC_FD gets "ok\\n" once the container runs, or "error: ...\\n".
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (6 ms, memory)
import gc
import os
import select
import sys

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


def runtime_cmd(paths: S.Paths) -> list[str]:
    rt = os.environ.get("COVE_RUNTIME") or os.path.join(os.path.dirname(sys.executable),
                                                       "cove-runtime")
    return [rt, "--root", paths.runtime_root]


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    """fork+exec without the subprocess module (it costs a megabyte per monitor)."""
    return os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2)])


def call(argv: list[str], stdout: int = -1, stderr: int = -1) -> tuple[int, str]:
    """Run argv; its exit code and (unless redirected) its stderr."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe()
    try:
        pid = spawn(argv, null, null if stdout < 0 else stdout, w if stderr < 0 else stderr)
    finally:
        os.close(w)
        os.close(null)
    err = b""
    with os.fdopen(r, "rb") as f:
        err = f.read()
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:  # pragma: no cover
            continue
    return os.waitstatus_to_exitcode(status), err.decode(errors="replace").strip()


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

    # -- the shim -------------------------------------------------------------------------

    def fork_shim(self, ends: list[int], sync: int) -> tuple[int, int]:
        """Fork the shim, which creates the container; (shim pid, init pid)."""
        exit_file = os.path.join(self.cdir, EXIT_FILE)
        try:
            os.unlink(exit_file)
        except FileNotFoundError:
            pass
        r, w = os.pipe()
        monitor = os.getpid()
        # Copy-on-write keeps the shim cheap only while neither process writes to the
        # pages they share: the collector would (it links every tracked object), so
        # what exists now is frozen out of its reach in both, and the shim never runs it.
        gc.freeze()
        shim = os.fork()
        if shim == 0:  # pragma: no cover - the shim
            gc.disable()
            code = 1
            try:
                os.close(r)
                os.close(sync)
                os.close(self.writer.fd)
                code = self._shim(ends, w, monitor)
            finally:
                os._exit(code)
        os.close(w)
        for fd in ends:
            os.close(fd)
        with os.fdopen(r, "rb") as f:
            line = f.read().decode(errors="replace").strip()
        if not line.isdigit():
            os.waitpid(shim, 0)
            raise RuntimeError(self._fifo_text() or line or "the shim died")
        return shim, int(line)

    def _shim(self, ends: list[int], report: int, monitor: int) -> int:  # pragma: no cover
        set_comm("cove-shim")
        subreaper()
        for s in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(s, signal.SIG_IGN)
        pid_file = os.path.join(self.cdir, "init.pid")
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        rc, _ = call([*self.rt, "create", "--bundle", self.cdir, "--pid-file", pid_file,
                      self.name], stdout=ends[0], stderr=ends[1])
        for fd in ends:
            os.close(fd)
        if rc != 0:
            os.write(report, f"cove-runtime create: exit status {rc}\n".encode())
            return 1
        with open(pid_file) as f:
            pid = int(f.read().strip())
        os.write(report, f"{pid}\n".encode())
        os.close(report)
        code = 255
        while True:
            try:
                got, status = os.waitpid(-1, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                break
            if got == pid:
                code = shell_code(status)
                break
        if os.getppid() != monitor and not _monitor_running(self.cdir):
            # no monitor: what the container wrote last is only in the pipes we hold
            self.writer = L.JsonFileWriter(L.log_path(self.cdir), self.max_size,
                                           self.max_file)
            while self.drain(0):
                pass
            self.writer.close()
        S.write_atomic(os.path.join(self.cdir, EXIT_FILE), f"{code} {pid}\n".encode())
        return 0

    # -- watching -------------------------------------------------------------------------

    def watch(self, shim: int, init: int, init_start: int | None,
              parent: bool) -> tuple[int, str]:
        """Log until the shim exits; the init's exit code (and an Error)."""
        sfd = pidfd(shim)
        if sfd >= 0:
            while not self.drain(None, [sfd]):
                pass
            os.close(sfd)
        if parent:
            try:
                os.waitpid(shim, 0)
            except ChildProcessError:
                pass
        code = read_exit(self.cdir, init)
        if code is not None:
            return code, ""
        # the shim died without a word: the init is ours (we are a subreaper) or lost
        ifd = pidfd(init) if S.pid_alive(init, init_start) or parent else -1
        if ifd >= 0:
            while not self.drain(None, [ifd]):
                pass
            os.close(ifd)
        if parent:
            try:
                got, status = os.waitpid(init, os.WNOHANG)
                if got == init:
                    return shell_code(status), ""
            except ChildProcessError:
                pass
        return 255, "exit code lost: its shim was killed"

    def finish(self, code: int, error: str = "") -> None:
        import time
        deadline = time.monotonic() + 2.0
        while self.rfds and time.monotonic() < deadline:
            self.drain(0.1)
        self.writer.close()
        call([*self.rt, "delete", "--force", self.name])
        cleanup(self.paths, self.name, self.rec)

        def done(r: dict[str, Any]) -> None:
            st = r["State"]
            st.update(Status="exited", Running=False, Pid=0, ExitCode=code,
                      FinishedAt=S.now_rfc3339(), Error=error)
            if st.get("Health"):
                st["Health"]["Status"] = "unhealthy" if st["Health"]["Status"] == "unhealthy" \
                    else "starting"
            r["MonitorPid"] = 0
            r["ShimPid"] = 0
        rec = S.update(self.cdir, done)
        if rec.get("HostConfig", {}).get("AutoRemove"):
            try:
                from cove.engine import containers
                containers.remove(self.paths.root, self.name, force=True)
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
            shim = int(m.rec.get("ShimPid") or 0)
        else:
            ends = m.open_fifos(create=True)
            shim, pid = m.fork_shim(ends, sync)
            start = S.proc_start_time(pid)
            rc, err = call([*m.rt, "start", name])
            if rc != 0:
                call([*m.rt, "delete", "--force", name])
                os.waitpid(shim, 0)
                raise RuntimeError(err or "cove-runtime start failed")
        shim_start = S.proc_start_time(shim)

        def running(r: dict[str, Any]) -> None:
            st = r["State"]
            if not adopt:
                st.update(Status="running", Running=True, Pid=pid, PidStart=start,
                          ExitCode=0, Error="", StartedAt=S.now_rfc3339(),
                          FinishedAt="0001-01-01T00:00:00Z")
                if r["Config"].get("Healthcheck"):
                    st["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
                r["ShimPid"], r["ShimStart"] = shim, shim_start
            r["MonitorPid"] = os.getpid()
        S.update(m.cdir, running)
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
        code, error = m.watch(shim, pid, start, parent=not adopt)
        m.finish(code, error)
    except FileNotFoundError:
        pass  # removed under us
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
