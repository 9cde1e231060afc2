"""The per-container monitor (`cove-monitor`, conmon's role): one small process per
running container that creates and starts it through cove-runtime, is its init's parent
(a child subreaper), copies its stdout and stderr into the json-file log, records its
exit code in the record, and cleans up (runtime delete, rootfs unmount, network) when
it exits.

The container's stdout and stderr are FIFOs in its directory that the container holds
open read-write: it never sees EPIPE, and what it writes while no monitor reads stays in
the pipe (1 MiB) for the next one. A monitor started with `--adopt` for a container
whose monitor died re-opens those FIFOs and watches the init by pid; it cannot learn
the exit code of a process that is not its child, and records 255 with an Error.

    python -m cove.engine.monitor ROOT NAME SYNC_FD [--adopt]

SYNC_FD gets "ok\\n" once the container runs, or "error: ...\\n".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from cove.engine import logs as L
from cove.engine import state as S

F_SETPIPE_SZ = 1031
PR_SET_CHILD_SUBREAPER = 36


def set_comm(name: str) -> None:
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as f:
        f.write(name[:15])


def fifo_paths(cdir: str) -> tuple[str, str]:
    return os.path.join(cdir, "stdout.fifo"), os.path.join(cdir, "stderr.fifo")


def runtime_cmd(paths: S.Paths) -> list[str]:
    rt = os.environ.get("COVE_RUNTIME") or os.path.join(os.path.dirname(sys.executable),
                                                       "cove-runtime")
    return [rt, "--root", paths.runtime_root]


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
        self.writer = L.JsonFileWriter(L.log_path(self.cdir),
                                       L.parse_size(lc["max-size"]) if lc.get("max-size") else 0,
                                       int(lc.get("max-file", "1")))
        self.rfds: dict[int, str] = {}

    def open_fifos(self, create: bool) -> list[int]:
        """Open the read ends (ours); with `create`, also the read-write ends the
        container gets as stdout and stderr."""
        ends = []
        for path, stream in zip(fifo_paths(self.cdir), ("stdout", "stderr"), strict=True):
            if create and not os.path.exists(path):
                os.mkfifo(path, 0o600)
            r = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with contextlib.suppress(OSError):
                fcntl.fcntl(r, F_SETPIPE_SZ, 1 << 20)
            self.rfds[r] = stream
            if create:
                ends.append(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        return ends

    def drain(self, timeout: float) -> bool:
        """Copy what is readable into the log; False once both FIFOs hit EOF."""
        if not self.rfds:
            return False
        try:
            ready, _, _ = select.select(list(self.rfds), [], [], timeout)
        except InterruptedError:
            return True
        for fd in ready:
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
        return bool(self.rfds)

    def create_and_start(self) -> int:
        stdout_w, stderr_w = self.open_fifos(create=True)
        pid_file = os.path.join(self.cdir, "init.pid")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pid_file)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            rc = subprocess.call([*self.rt, "create", "--bundle", self.cdir, "--pid-file",
                                  pid_file, self.name], stdin=devnull, stdout=stdout_w,
                                 stderr=stderr_w)
        finally:
            os.close(devnull)
            os.close(stdout_w)
            os.close(stderr_w)
        if rc != 0:
            raise RuntimeError(self._fifo_text() or f"cove-runtime create: exit status {rc}")
        with open(pid_file) as f:
            pid = int(f.read().strip())
        r = subprocess.run([*self.rt, "start", self.name], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.call([*self.rt, "delete", "--force", self.name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            raise RuntimeError(r.stderr.strip() or "cove-runtime start failed")
        return pid

    def _fifo_text(self) -> str:
        out = b""
        for fd in list(self.rfds):
            with contextlib.suppress(OSError):
                out += os.read(fd, 65536)
        return out.decode(errors="replace").strip()

    def wait_child(self, pid: int) -> int:
        """Log until the container's init (our child) exits; its shell-style code."""
        code: int | None = None
        while code is None:
            self.drain(0.25)
            while True:
                try:
                    got, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    got, status = 0, 0
                    if code is None and not S.pid_alive(pid):
                        code = 255
                if got == 0:
                    break
                if got == pid:
                    code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                        else 128 + os.WTERMSIG(status)
        return code

    def wait_adopted(self, pid: int, start: int | None) -> int:
        while S.pid_alive(pid, start):
            self.drain(0.25)
        return 255

    def finish(self, code: int, error: str = "") -> None:
        deadline = time.monotonic() + 2.0
        while self.drain(0.1) and time.monotonic() < deadline:
            pass
        self.writer.close()
        subprocess.call([*self.rt, "delete", "--force", self.name],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from cove.engine import containers
        from cove.image import snapshots
        from cove.image.store import Store
        with contextlib.suppress(Exception):
            containers.teardown(self.paths, self.name)
        with contextlib.suppress(Exception):
            snapshots.release(Store(self.paths.root), self.name, remove=False)

        def done(r: dict[str, Any]) -> None:
            st = r["State"]
            st.update(Status="exited", Running=False, Pid=0, ExitCode=code,
                      FinishedAt=S.now_rfc3339(), Error=error)
            if st.get("Health"):
                st["Health"]["Status"] = "unhealthy" if st["Health"]["Status"] == "unhealthy" \
                    else "starting"
            r["MonitorPid"] = 0
        rec = S.update(self.cdir, done)
        if rec.get("HostConfig", {}).get("AutoRemove"):
            with contextlib.suppress(Exception):
                containers.remove(self.paths.root, self.name, force=True)


def main(argv: list[str]) -> int:
    root, name, sync = argv[0], argv[1], int(argv[2])
    adopt = "--adopt" in argv
    set_comm("cove-monitor")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        m = Monitor(root, name)
        if adopt:
            m.open_fifos(create=False)
            pid = int(m.rec["State"].get("Pid") or 0)
            start = m.rec["State"].get("PidStart")
        else:
            pid = m.create_and_start()
            from cove.runtime.state import proc_start_time
            start = proc_start_time(pid)

        def running(r: dict[str, Any]) -> None:
            st = r["State"]
            if not adopt:
                st.update(Status="running", Running=True, Pid=pid, PidStart=start,
                          ExitCode=0, Error="", StartedAt=S.now_rfc3339(),
                          FinishedAt="0001-01-01T00:00:00Z")
                if r["Config"].get("Healthcheck"):
                    st["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
            r["MonitorPid"] = os.getpid()
        S.update(m.cdir, running)
    except Exception as e:
        msg = str(e).replace("\n", " ") or type(e).__name__
        with contextlib.suppress(OSError):
            os.write(sync, f"error: {msg}\n".encode())
        with contextlib.suppress(Exception):
            m.finish(127, msg)
        return 1
    with contextlib.suppress(OSError):
        os.write(sync, b"ok\n")
        os.close(sync)
    try:
        code = m.wait_adopted(pid, start) if adopt else m.wait_child(pid)
        m.finish(code, "exit code lost: its monitor was replaced" if adopt else "")
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
