"""The hijacked endpoints: container attach and exec (create, start, inspect, resize).

After `101 UPGRADED` the socket carries raw bytes: the client's stdin one way, the
process's output the other, in docker's 8-byte-header frames when there is no tty and
as is with one. The connection is closed when the process (or container) ends, which
is how clients know it ended; a client's half-close of its side is the end of the
process's stdin.

Attach follows the container's json-file log from the moment of the request (a `run`
attaches before it starts, so nothing is missed) until the container exits; stdin goes
through the container's stdin FIFO (cove/engine/monitor.py): for `run -i` (docker's
StdinOnce) the FIFO is made here before the start and its write end closed at the
client's EOF, so the container reads EOF; for OpenStdin without StdinOnce the container
holds it open itself and each attach writes to it.

Exec runs `cove-runtime exec` as a child of the server: pipes without a tty; with one,
the runtime hands us the pty's master over a console socket and resize sets its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import termios
from typing import Any

from cove.engine import containers, logs, state
from cove.engine.attach import LogTail
from cove.engine.dockerapi.common import STDERR, STDOUT, Ctx, call, frame, lookup, nap
from cove.engine.dockerapi.containers import entry_bytes
from cove.engine.dockerapi.server import (
    ApiError,
    Hijack,
    Request,
    Response,
    Result,
    Router,
    empty,
    jsonr,
)
from cove.engine.procs import STDIN_FIFO

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record


async def _write(writer: asyncio.StreamWriter, data: bytes) -> bool:
    try:
        writer.write(data)
        await writer.drain()
        return True
    except (ConnectionError, RuntimeError):
        return False


async def _pump_stdin(reader: asyncio.StreamReader, early: bytes, put: Any,
                      done: Any) -> None:
    """Client bytes to `put(data)` (a coroutine) until its EOF, then `done()`."""
    try:
        if early:
            await put(early)
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await put(data)
    except (ConnectionError, OSError):
        pass
    finally:
        await done()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- attach -----------------------------------------------------------------------------

def _make_stdin_fifo(cdir: str) -> tuple[str, int, int]:
    """`run -i`'s FIFO (as the engine's `cove run -i`): a placeholder read end lets our
    write end open at once; the container's monitor opens its own read end at start."""
    path = os.path.join(cdir, STDIN_FIFO)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.mkfifo(path, 0o600)
    placeholder = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    w = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    return path, placeholder, w


async def attach(ctx: Ctx, req: Request) -> Result:
    root = ctx.root
    name = lookup(root, req.params["id"])
    rec = await call(containers.refresh_record, state.Paths(root), name)
    if rec["Config"].get("Tty"):  # its terminal, from the monitor's attach socket
        from cove.engine.dockerapi import ttyhijack
        return await ttyhijack.attach(root, req, rec)
    status = rec["State"]["Status"]
    if status == "paused":
        raise ApiError(409, "You cannot attach to a paused container, unpause it first")
    cdir = state.Paths(root).cdir(name)
    a = _Attach(rec, cdir, req)
    # the log made now if it is not there yet (the monitor appends to it): we hold it
    # open from here on, so what a short-lived `--rm` container wrote is still ours
    # to read after it went with the container's directory
    os.close(os.open(logs.log_path(cdir), os.O_WRONLY | os.O_CREAT | os.O_APPEND |
                     os.O_CLOEXEC, 0o640))
    a.tail = LogTail(logs.log_path(cdir))
    if req.qbool("logs"):
        a.history = await call(logs.read_entries, logs.log_path(cdir))
    if a.use_stdin and a.api.get("StdinOnce") and status == "created":
        fifo = await call(_make_stdin_fifo, cdir)
        a.wfd, a.placeholder, a.fifo = fifo[2], fifo[1], True
    return Hijack(a.run)


class _Attach:
    """One attach to a container without a terminal: its log (history, then followed
    as it grows) to the client, the client's stdin to the container's FIFO, until the
    container is gone or stopped for good."""

    def __init__(self, rec: Record, cdir: str, req: Request) -> None:
        self.rec, self.cdir = rec, cdir
        self.want = {s for s in ("stdout", "stderr") if req.qbool(s)}
        self.use_stdin = req.qbool("stdin")
        self.stream = req.qbool("stream", True)
        self.api: dict[str, Any] = rec.get("Api") or {}
        self.status = rec["State"]["Status"]
        self.cid, self.fin0 = rec["Id"], rec["State"].get("FinishedAt")
        self.tail: LogTail | None = None
        self.history: list[dict[str, Any]] = []
        self.fifo = False        # a FIFO of our own for a StdinOnce container not started
        self.wfd = -1            # where stdin goes
        self.placeholder = -1    # our read end of that FIFO, until the container has its

    async def _put(self, data: bytes) -> None:
        if self.wfd < 0 and not self.fifo and self.rec["Config"].get("OpenStdin"):
            from cove.engine.attach import _open_fifo
            self.wfd = await call(_open_fifo, self.cdir)
        if self.wfd >= 0:
            try:
                await call(_write_all, self.wfd, data)
            except OSError:
                os.close(self.wfd)
                self.wfd = -1

    async def _done(self) -> None:
        if self.wfd >= 0 and (self.fifo or self.api.get("StdinOnce")):
            os.close(self.wfd)
            self.wfd = -1

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  early: bytes) -> None:
        feeder = asyncio.ensure_future(_pump_stdin(reader, early, self._put, self._done)) \
            if self.use_stdin else None
        try:
            for e in self.history:
                if e["stream"] in self.want:
                    await _write(writer, entry_bytes(e, False, False))
            if self.stream:
                await self._follow(writer)
        finally:
            if self.tail is not None:
                self.tail.close()
            if feeder is not None:
                feeder.cancel()
            for fd in (self.wfd, self.placeholder):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            with contextlib.suppress(Exception):
                writer.close()

    async def _follow(self, writer: asyncio.StreamWriter) -> None:
        """The log as it grows, until the container is gone, or stopped with no monitor
        left to write (one last read after that)."""
        assert self.tail is not None
        seen_active = self.status in containers.ACTIVE
        last_round = False
        while True:
            for e in self.tail.read():
                if e["stream"] in self.want and not await _write(
                        writer, entry_bytes(e, False, False)):
                    return
            if last_round:
                return
            cur = state.load_record(self.cdir)
            if cur is None or cur["Id"] != self.cid:
                last_round = True
                continue
            st = cur["State"]["Status"]
            active = st in containers.ACTIVE
            if active and self.placeholder >= 0:
                # the container holds its read end now: ours and the FIFO go
                os.close(self.placeholder)
                self.placeholder = -1
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.cdir, STDIN_FIFO))
            seen_active = seen_active or active
            if not active and st != "created" and (
                    seen_active or cur["State"].get("FinishedAt") != self.fin0):
                mon = int(cur.get("MonitorPid") or 0)
                if not (mon and state.pid_alive(mon)):
                    last_round = True
                    continue
            # output comes as the log grows: look at it every 50 ms at most
            await nap(cur, 0.05 if active else 0.01)


# -- exec -------------------------------------------------------------------------------

async def exec_create(ctx: Ctx, req: Request) -> Result:
    name = lookup(ctx.root, req.params["id"])
    body = req.obj()
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
        raise ApiError(400, "No exec command specified")
    if body.get("Privileged"):
        raise ApiError(400, "Privileged: not supported by cove's exec")
    rec = await call(containers.refresh_record, state.Paths(ctx.root), name)
    if rec["State"]["Status"] != "running":
        raise ApiError(409, f"Container {rec['Id']} is not running")
    eid = os.urandom(32).hex()
    env = body.get("Env") or []
    if not isinstance(env, list):
        raise ApiError(400, "Env: expected a list of strings")
    ctx.execs[eid] = {
        "ID": eid, "Running": False, "ExitCode": None, "Pid": 0, "ContainerID": rec["Id"],
        "Name": name, "OpenStdin": bool(body.get("AttachStdin")),
        "OpenStdout": bool(body.get("AttachStdout")),
        "OpenStderr": bool(body.get("AttachStderr")), "CanRemove": False,
        "DetachKeys": body.get("DetachKeys") or "",
        "ProcessConfig": {"tty": bool(body.get("Tty")), "entrypoint": cmd[0],
                          "arguments": cmd[1:], "privileged": False,
                          "user": body.get("User") or ""},
        "_env": env, "_workdir": body.get("WorkingDir") or "", "_master": -1,
        "_size": None,
    }
    return jsonr({"Id": eid}, 201)


def _exec_argv(ctx: Ctx, ex: dict[str, Any]) -> list[str]:
    args = [*containers.runtime(state.Paths(ctx.root)), "exec"]
    for e in ex["_env"]:
        args += ["-e", e]
    if ex["_workdir"]:
        args += ["--cwd", ex["_workdir"]]
    if ex["ProcessConfig"]["user"]:
        args += ["-u", ex["ProcessConfig"]["user"]]
    return args


def _exit_code(code: int, err: bytes) -> int:
    """docker's 126/127 for a command that could not be run (the runtime says why)."""
    if code == 0:
        return 0
    text = err.decode(errors="replace")
    if "cove-runtime: " in text:
        from cove.engine.hostconfig import exec_error
        from cove.errors import CoveError
        line = text[text.rfind("cove-runtime: "):].strip().removeprefix("cove-runtime: ")
        mapped = exec_error(CoveError("exec", line))
        if mapped is not None:
            return mapped.code
    return code


def _set_size(fd: int, size: tuple[int, int]) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


def _recv_master(srv: socket.socket) -> int:
    srv.settimeout(10)
    conn, _ = srv.accept()
    try:
        _msg, anc, _f, _a = conn.recvmsg(4096, socket.CMSG_SPACE(4))
    finally:
        conn.close()
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            return int.from_bytes(data[:4], "little")
    return -1


async def exec_start(ctx: Ctx, req: Request) -> Result:
    ex = ctx.execs.get(req.params["id"])
    if ex is None:
        raise ApiError(404, f"No such exec instance: {req.params['id']}")
    if ex["Running"] or ex["ExitCode"] is not None:
        raise ApiError(409, f"Exec {ex['ID']} has already run")
    body = req.obj()
    tty = bool(body.get("Tty", ex["ProcessConfig"]["tty"]))
    pc = ex["ProcessConfig"]
    argv = [pc["entrypoint"], *pc["arguments"]]
    base = _exec_argv(ctx, ex)
    name = ex["Name"]
    if body.get("Detach"):
        import subprocess
        ex["Running"] = True
        p = await asyncio.create_subprocess_exec(
            *base, "-d", name, *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        code = await p.wait()
        ex.update(Running=False, ExitCode=None if code == 0 else code)
        return empty(200)
    if tty:
        return Hijack(lambda r, w, e: _exec_tty(ctx, ex, base, name, argv, r, w, e))
    return Hijack(lambda r, w, e: _exec_pipes(ex, base, name, argv, r, w, e))


async def _exec_pipes(ex: dict[str, Any], base: list[str], name: str, argv: list[str],
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      early: bytes) -> None:
    import subprocess
    p = await asyncio.create_subprocess_exec(
        *base, name, *argv, stdin=subprocess.PIPE if ex["OpenStdin"] else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ex.update(Running=True, Pid=p.pid)
    errs = bytearray()

    async def out(src: asyncio.StreamReader | None, sid: int) -> None:
        assert src is not None
        while True:
            data = await src.read(65536)
            if not data:
                return
            if sid == STDERR:
                errs.extend(data[-4096:])
            if (ex["OpenStdout"] if sid == STDOUT else ex["OpenStderr"]):
                await _write(writer, frame(sid, data))

    async def put(data: bytes) -> None:
        assert p.stdin is not None
        p.stdin.write(data)
        await p.stdin.drain()

    async def done() -> None:
        if p.stdin is not None:
            with contextlib.suppress(Exception):
                p.stdin.close()
    feeder = asyncio.ensure_future(_pump_stdin(reader, early, put, done)) \
        if ex["OpenStdin"] else None
    try:
        await asyncio.gather(out(p.stdout, STDOUT), out(p.stderr, STDERR))
        code = await p.wait()
        ex.update(Running=False, ExitCode=_exit_code(code, bytes(errs)))
    finally:
        if feeder is not None:
            feeder.cancel()
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()
            ex.update(Running=False, ExitCode=p.returncode)
        with contextlib.suppress(Exception):
            writer.close()


async def _exec_tty(ctx: Ctx, ex: dict[str, Any], base: list[str], name: str,
                    argv: list[str], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, early: bytes) -> None:
    import subprocess
    cdir = state.Paths(ctx.root).cdir(name)
    path = os.path.join(cdir, f"console-{ex['ID'][:12]}.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    srv.bind(path)
    srv.listen(1)
    master = -1
    p = await asyncio.create_subprocess_exec(
        *base, "-t", "--console-socket", path, name, *argv, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ex.update(Running=True, Pid=p.pid)
    try:
        try:
            master = await asyncio.to_thread(_recv_master, srv)
        except OSError:
            master = -1
        if master < 0:
            code = await p.wait()
            err = await p.stderr.read() if p.stderr else b""
            await _write(writer, err)
            ex.update(Running=False, ExitCode=_exit_code(code or 1, err))
            return
        os.set_blocking(master, False)
        ex["_master"] = master
        await _relay_master(ex, master, p, reader, writer, early)
    finally:
        srv.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()
            ex.update(Running=False, ExitCode=p.returncode)
        if master >= 0:
            ex["_master"] = -1
            os.close(master)
        with contextlib.suppress(Exception):
            writer.close()


async def _relay_master(ex: dict[str, Any], master: int, p: asyncio.subprocess.Process,
                        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        early: bytes) -> None:
    """An exec's terminal to the client and the client's bytes to it, until the
    terminal closes; then the exec's exit code."""
    loop = asyncio.get_running_loop()
    if ex["_size"]:
        _set_size(master, ex["_size"])
    q: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(master)
        q.put_nowait(data)
    loop.add_reader(master, readable)

    async def put(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(master, view):]
            except BlockingIOError:
                await asyncio.sleep(0.01)

    async def done() -> None:
        pass
    feeder = asyncio.ensure_future(_pump_stdin(reader, early, put, done))
    try:
        while True:
            data = await q.get()
            if not data:
                break
            if not await _write(writer, data):
                break
        code = await p.wait()
        err = await p.stderr.read() if p.stderr else b""
        ex.update(Running=False, ExitCode=_exit_code(code, err))
    finally:
        feeder.cancel()
        loop.remove_reader(master)


def exec_doc(ex: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ex.items() if not k.startswith("_") and k != "Name"}


def register(r: Router, ctx: Ctx) -> None:
    async def a(req: Request) -> Result:
        return await attach(ctx, req)

    async def ec(req: Request) -> Result:
        return await exec_create(ctx, req)

    async def es(req: Request) -> Result:
        return await exec_start(ctx, req)

    async def ej(req: Request) -> Result:
        ex = ctx.execs.get(req.params["id"])
        if ex is None:
            raise ApiError(404, f"No such exec instance: {req.params['id']}")
        return jsonr(exec_doc(ex))

    async def er(req: Request) -> Result:
        ex = ctx.execs.get(req.params["id"])
        if ex is None:
            raise ApiError(404, f"No such exec instance: {req.params['id']}")
        h, w = req.qint("h", 0) or 0, req.qint("w", 0) or 0
        ex["_size"] = (h, w)
        if ex["_master"] >= 0:
            _set_size(ex["_master"], (h, w))
        return Response(200, b"", "text/plain")

    r.add("POST", "/containers/{id}/attach", a)
    r.add("POST", "/containers/{id}/exec", ec)
    r.add("POST", "/exec/{id}/start", es)
    r.add("GET", "/exec/{id}/json", ej)
    r.add("POST", "/exec/{id}/resize", er)
