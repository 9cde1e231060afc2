"""The guest agent: pid 1 of the micro-VM, talking to the host's monitor over virtio-serial.

It runs the container with Cove's own runtime inside the guest (as Kata runs its agent
and runtime in its VM): the host sends the bundle's config (paths already translated to
the guest's shares), the agent writes a guest-local bundle and runs `cove-runtime create`,
`start`, `exec --detach` and `ps` on it, relays the processes' stdio as frames (or, with a terminal,
the pty master the guest's runtime sends to the agent's console socket), forwards
signals and window sizes, and, being pid 1, reaps the container's init and reports its
wait status.
Stdlib only, plus cove.handlers.vm.proto.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

from cove.handlers.vm import proto

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    # What helper_done needs of a finished cove-runtime invocation (which one: by `what`).
    HelperContext: TypeAlias = "Proc | int | tuple[int, int] | None"

RUN = "/run/cove"
STATE = f"{RUN}/state"
LAUNCHER = f"{RUN}/cove-runtime"


def _find_port(name: str = "cove.0") -> str:
    base = "/sys/class/virtio-ports"
    for _ in range(200):
        try:
            for v in os.listdir(base):
                with open(f"{base}/{v}/name") as f:
                    if f.read().strip() == name:
                        return f"/dev/{v}"
        except OSError:
            pass
        select.select([], [], [], 0.02)
    raise SystemExit(f"cove-agent: no virtio-serial port {name}")


def _log(msg: str) -> None:
    os.write(2, f"cove-agent: {msg}\n".encode())


class Proc:
    """One relayed process: the container's init (chan 0) or an exec."""

    def __init__(self, chan: int) -> None:
        self.chan = chan
        self.pid = 0
        self.stdin = -1
        self.outs: dict[int, int] = {}  # fd -> frame kind
        self.status: int | None = None
        self.tty = -1  # the pty master, when the process has a terminal
        self.console: Any = None  # the listening console socket until the master comes


class Agent:
    def __init__(self) -> None:
        self.port = os.open(_find_port(), os.O_RDWR | os.O_CLOEXEC)
        self.reader = proto.Reader()
        self.cid = ""
        self.procs: dict[int, Proc] = {}
        self.orphans: dict[int, int] = {}
        # pid -> (what, context): the Proc of a create or exec, the channel of an update,
        # (channel, read end of its output pipe) of a ps
        self.helpers: dict[int, tuple[str, HelperContext]] = {}
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(self, chan: int, kind: int, data: bytes = b"") -> None:
        proto.write_all(self.port, proto.pack(chan, kind, data))

    def sendj(self, chan: int, kind: int, obj: object) -> None:
        self.send(chan, kind, json.dumps(obj).encode())

    # -- helpers: cove-runtime invocations, reaped by our own loop (we are pid 1)
    def spawn(self, argv: list[str], stdio: tuple[int, int, int], what: str,
              ctx: HelperContext = None) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                for i, fd in enumerate(stdio):
                    os.dup2(fd, i)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.helpers[pid] = (what, ctx)
        return pid

    def runtime(self, *args: str) -> list[str]:
        return [LAUNCHER, "--root", STATE, "--log", f"{RUN}/runtime.log", *args]

    def last_error(self) -> str:
        try:
            with open(f"{RUN}/runtime.log") as f:
                lines = [ln for ln in f if "level=error" in ln]
            if lines:
                return lines[-1].split('msg="', 1)[-1].rstrip().rstrip('"')
        except OSError:
            pass
        return "cove-runtime failed in the guest"

    def new_proc(self, chan: int, terminal: bool = False) -> tuple[Proc, tuple[int, int, int]]:
        p = Proc(chan)
        self.procs[chan] = p
        if terminal:  # the process's stdio is the pty; the helper's, the console
            import socket

            path = f"{RUN}/console-{chan}.sock"
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            p.console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            p.console.bind(path)
            p.console.listen(1)
            return p, (os.dup(0), os.dup(1), os.dup(2))
        in_r, p.stdin = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        p.outs = {out_r: proto.STDOUT, err_r: proto.STDERR}
        return p, (in_r, out_w, err_w)

    def take_console(self, p: Proc) -> None:
        """Receive the pty master the guest's runtime sent to p's console socket (it is
        queued there: the runtime connects and sends before it exits)."""
        import array
        import socket

        lsock, p.console = p.console, None
        try:
            lsock.settimeout(5)
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(5)
                fds = array.array("i")
                _, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        except OSError as e:
            raise RuntimeError(f"no terminal from the runtime: {e}") from None
        finally:
            lsock.close()
            os.unlink(f"{RUN}/console-{p.chan}.sock")
        if not fds:
            raise RuntimeError("no terminal from the runtime")
        for extra in fds[1:]:
            os.close(extra)
        p.tty = fds[0]
        os.set_inheritable(p.tty, False)
        p.stdin = os.dup(p.tty)
        p.outs = {p.tty: proto.STDOUT}

    # -- frames from the host
    def on_frame(self, chan: int, kind: int, data: bytes) -> None:
        if kind == proto.CONFIG:
            self.configure(json.loads(data))
        elif kind == proto.START:
            self.spawn(self.runtime("start", self.cid), (0, 1, 2), "start")
        elif kind == proto.STDIN:
            p = self.procs.get(chan)
            if p is None or p.stdin < 0:
                return
            if not data and p.tty >= 0:
                return  # a terminal's ^D is a byte; its end is a hang-up (SIGHUP)
            if not data:
                os.close(p.stdin)
                p.stdin = -1
                return
            try:
                proto.write_all(p.stdin, data)
            except OSError:
                pass
        elif kind == proto.SIGNAL:
            p = self.procs.get(chan)
            if p is not None and p.pid and p.status is None:
                try:
                    os.kill(p.pid, json.loads(data)["signal"])
                except ProcessLookupError:
                    pass
        elif kind == proto.RESIZE:
            p = self.procs.get(chan)
            if p is not None and p.tty >= 0:
                import fcntl
                import struct

                size = json.loads(data)
                try:
                    fcntl.ioctl(p.tty, 0x5414, struct.pack(  # TIOCSWINSZ
                        "HHHH", size["rows"], size["cols"], 0, 0))
                except OSError:
                    pass
        elif kind == proto.EXEC:
            path = f"{RUN}/exec-{chan}.json"
            with open(path, "wb") as f:
                f.write(data)
            p, stdio = self.new_proc(chan, bool(json.loads(data).get("terminal")))
            tty = ["--console-socket", f"{RUN}/console-{chan}.sock"] if p.console else []
            self.spawn(self.runtime("exec", "--process", path, "--detach", "--pid-file",
                                    f"{RUN}/exec-{chan}.pid", *tty, self.cid), stdio, "exec",
                       p)
            for fd in stdio:
                os.close(fd)
        elif kind == proto.UPDATE:
            path = f"{RUN}/update-{chan}.json"
            with open(path, "wb") as f:
                f.write(data)
            self.spawn(self.runtime("update", "--resources", path, self.cid), (0, 1, 2),
                       "update", chan)
        elif kind == proto.PS:
            r, w = os.pipe2(os.O_CLOEXEC)
            self.spawn(self.runtime("ps", "--format", "json", self.cid), (0, w, 2), "ps",
                       (chan, r))
            os.close(w)

    def configure(self, cfg: dict[str, Any]) -> None:
        self.cid = cfg["id"]
        os.makedirs(f"{RUN}/bundle", exist_ok=True)
        with open(f"{RUN}/bundle/config.json", "w") as f:
            json.dump(cfg["config"], f)
        with open(LAUNCHER, "w") as f:
            f.write(f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, "
                    f"{sys.path[0]!r})\nfrom cove.cli.runtime import main\nsys.exit(main())\n")
        os.chmod(LAUNCHER, 0o755)
        p, stdio = self.new_proc(0, bool((cfg["config"].get("process") or {}).get("terminal")))
        tty = ["--console-socket", f"{RUN}/console-0.sock"] if p.console else []
        self.spawn(self.runtime("create", "--bundle", f"{RUN}/bundle", "--pid-file",
                                f"{RUN}/init.pid", *tty, self.cid), stdio, "create", p)
        for fd in stdio:
            os.close(fd)

    # -- children
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.helpers:
                self.helper_done(pid, status)
                continue
            for p in self.procs.values():
                if p.pid == pid and p.status is None:
                    p.status = status
                    self.maybe_exit(p)
                    break
            else:  # an exec'd process reaped before its helper told us its pid
                self.orphans[pid] = status

    def helper_done(self, pid: int, status: int) -> None:
        what, ctx = self.helpers.pop(pid)
        ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if what == "create":
            assert isinstance(ctx, Proc)
            if not ok:
                self.sendj(0, proto.READY, {"error": self.last_error()})
                return
            ctx.pid = int(open(f"{RUN}/init.pid").read())
            if ctx.console is not None:
                try:
                    self.take_console(ctx)
                except RuntimeError as e:
                    self.sendj(0, proto.READY, {"error": str(e)})
                    return
            self.sendj(0, proto.READY, {"ok": True})
        elif what == "start" and not ok:
            self.sendj(0, proto.ERROR, {"error": self.last_error()})
        elif what == "exec":
            assert isinstance(ctx, Proc)
            err = "" if ok else self.last_error()
            if ok and ctx.console is not None:
                try:
                    self.take_console(ctx)
                except RuntimeError as e:
                    err = str(e)
            if err:
                if ctx.console is not None:
                    ctx.console.close()
                    os.unlink(f"{RUN}/console-{ctx.chan}.sock")
                self.sendj(ctx.chan, proto.ERROR, {"error": err})
                ctx.status = 255 << 8
                self.maybe_exit(ctx)
                return
            ctx.pid = int(open(f"{RUN}/exec-{ctx.chan}.pid").read())
            self.sendj(ctx.chan, proto.READY, {"pid": ctx.pid})
            if ctx.pid in self.orphans:
                ctx.status = self.orphans.pop(ctx.pid)
                self.maybe_exit(ctx)  # it may have exited already, before we knew its pid
        elif what == "update":
            assert isinstance(ctx, int)
            if ok:
                self.sendj(ctx, proto.READY, {})
            else:
                self.sendj(ctx, proto.ERROR, {"error": self.last_error()})
        elif what == "ps":
            assert isinstance(ctx, tuple)
            chan, r = ctx[0], ctx[1]
            out = b""
            while chunk := os.read(r, 65536):
                out += chunk
            os.close(r)
            try:
                pids = json.loads(out or b"[]")
            except ValueError:
                pids = []
            self.sendj(chan, proto.PS, {"pids": pids})

    def maybe_exit(self, p: Proc) -> None:
        """Report the exit once the process is reaped and its output drained."""
        if p.status is None:
            return
        for fd in list(p.outs):
            self.pump(p, fd, final=True)
        os.sync()
        self.sendj(p.chan, proto.EXIT, {"status": p.status})
        if p.stdin >= 0:
            os.close(p.stdin)
            p.stdin = -1
        del self.procs[p.chan]

    def pump(self, p: Proc, fd: int, final: bool = False) -> None:
        while True:
            if final and not select.select([fd], [], [], 0.2)[0]:
                data = b""  # output still held by another process: give it a moment, go
            else:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                except OSError:  # EIO: a pty whose slave side is closed
                    data = b""
            if not data:
                os.close(fd)
                del p.outs[fd]
                return
            self.send(p.chan, p.outs[fd], data)
            if not final:
                return

    def loop(self) -> None:
        with open("/proc/uptime") as f:
            _log(f"up {f.read().split()[0]}s")
        self.send(0, proto.HELLO)
        while True:
            fds = [self.port, self.wake_r]
            owners: dict[int, Proc] = {}
            for p in self.procs.values():
                for fd in p.outs:
                    owners[fd] = p
                    fds.append(fd)
            ready, _, _ = select.select(fds, [], [])
            for fd in ready:
                if fd == self.port:
                    data = os.read(self.port, 65536)
                    if not data:  # the host side is not connected (yet)
                        select.select([], [], [], 0.1)
                    for chan, kind, payload in self.reader.feed(data):
                        self.on_frame(chan, kind, payload)
                elif fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 512)
                    except BlockingIOError:
                        pass
                    self.reap()
                elif fd in owners and fd in owners[fd].outs:
                    self.pump(owners[fd], fd)


def main() -> None:
    try:
        Agent().loop()
    except BaseException as e:  # pid 1 must not just vanish: say why, power off
        _log(f"fatal: {e!r}")
    finally:
        try:
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("o")
        except OSError:
            pass
        while True:
            select.select([], [], [], 1)


if __name__ == "__main__":
    main()
