"""Attach (hijacked) and resize for containers with a terminal (docker's Tty).

The container runs under the monitor, which serves its terminal on
`<container>/attach.sock` (cove/engine/ttywatch.py); the server is one more client of
it, on the event loop. The stream is raw both ways (no frame headers with a tty): the
terminal's output to the client, the client's bytes to the terminal, less the detach
keys (`detachKeys`, docker's default ctrl-p,ctrl-q), which end the attach and leave the
container running, as dockerd does. An attach made before the start (`docker run -it`
attaches, then starts) waits for the start and asks the monitor for the output since
it (`s`), so the first prompt is not lost. The connection is closed when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from cove.engine import containers, state, ttyattach
from cove.engine.attach import DEFAULT_DETACH_KEYS, LogTail, parse_detach_keys
from cove.engine.dockerapi.common import call, lookup, nap
from cove.engine.dockerapi.server import ApiError, Hijack, Request, Response, Result
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record


async def _started(cdir: str, cid: str) -> bool:
    """Wait (while the client is there) until the created container runs: whether it
    does."""
    while True:
        rec = state.load_record(cdir)
        if rec is None or rec.get("Id") != cid:
            return False
        st = rec["State"]["Status"]
        if st in ("running", "paused"):
            return True
        if st not in ("created", "restarting"):
            return False
        await nap(rec, 0.02)


async def attach(root: str, req: Request, rec: Record) -> Result:
    name = rec["Name"]
    cdir = state.Paths(root).cdir(name)
    status = rec["State"]["Status"]
    if status == "paused":
        raise ApiError(409, "You cannot attach to a paused container, unpause it first")
    try:
        keys = parse_detach_keys(req.q("detachKeys") or DEFAULT_DETACH_KEYS)
    except CoveError as e:
        raise ApiError(400, str(e)) from None
    a = _TtyAttach(cdir, rec["Id"], keys, req)
    a.use_stdin = req.qbool("stdin") and bool(rec["Config"].get("OpenStdin") or
                                              (rec.get("Api") or {}).get("OpenStdin"))
    if req.qbool("logs"):
        from cove.engine import logs
        a.history = b"".join(e["log"].encode("utf-8", "surrogateescape") for e in
                             await call(logs.read_entries, logs.log_path(cdir)))
    a.from_start = status != "running"
    if a.from_start:
        # a short run may be over before we connect: its log has what it wrote (held
        # open from now: a --rm container's directory goes at its exit)
        from cove.engine import logs
        os.close(os.open(logs.log_path(cdir), os.O_WRONLY | os.O_CREAT | os.O_APPEND |
                         os.O_CLOEXEC, 0o640))
        a.tail = LogTail(logs.log_path(cdir))
    return Hijack(a.run)


class _TtyAttach:
    """One attach to a container's terminal: the monitor's attach socket (one
    connection per run of the container, a restart's included) to the client, the
    client's bytes to it until the detach keys."""

    def __init__(self, cdir: str, cid: str, keys: bytes, req: Request) -> None:
        self.cdir, self.cid, self.keys = cdir, cid, keys
        self.want_out = req.qbool("stdout") or req.qbool("stderr")
        self.stream = req.qbool("stream", True)
        self.use_stdin = False
        self.history = b""
        self.from_start = False      # attached before the start: ask for all output
        self.tail: LogTail | None = None
        self.conn: ttyattach.Conn | None = None
        self.detached = asyncio.Event()

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  early: bytes) -> None:
        feeder = asyncio.ensure_future(self._feed(reader, early))
        detach_wait = asyncio.ensure_future(self.detached.wait())
        try:
            if self.history and self.want_out:
                writer.write(self.history)
                await writer.drain()
            if self.stream is False:
                return
            if self.from_start and not await _started(self.cdir, self.cid):
                await self._from_log(writer)
                return
            while True:
                c = await call(ttyattach.connect, self.cdir, self.cid, self.from_start)
                if c is None:
                    await self._from_log(writer)
                    return
                self.conn = c
                self.from_start = False
                if not await self._relay(c, writer, detach_wait):
                    return
                c.close()
                self.conn = None
                # the run ended, or its monitor was killed: the next one adopts it
                if not await call(ttyattach._still_running, self.cdir, self.cid):
                    return
        except (ConnectionError, RuntimeError):
            pass
        finally:
            if self.tail is not None:
                self.tail.close()
            feeder.cancel()
            detach_wait.cancel()
            if self.conn is not None:
                self.conn.close()
            with contextlib.suppress(Exception):
                writer.close()

    async def _relay(self, c: ttyattach.Conn, writer: asyncio.StreamWriter,
                     detach_wait: asyncio.Future[Any]) -> bool:
        """One run's terminal output to the client until it ends (True) or the client
        detaches (False)."""
        loop = asyncio.get_running_loop()
        got = False
        c.sock.setblocking(False)
        while True:
            recv = asyncio.ensure_future(loop.sock_recv(c.sock, 1 << 16))
            done, _ = await asyncio.wait({recv, detach_wait},
                                         return_when=asyncio.FIRST_COMPLETED)
            if detach_wait in done:
                recv.cancel()
                return False
            try:
                data = recv.result()
            except OSError:
                data = b""
            if not data:
                if not got:  # over before the monitor sent a byte
                    await self._from_log(writer)
                return True
            got = True
            if self.want_out:
                writer.write(data)
                await writer.drain()

    async def _from_log(self, writer: asyncio.StreamWriter) -> None:
        """What a run that ended before we connected wrote, from its log."""
        if self.tail is not None and self.want_out:
            writer.write(await call(ttyattach.log_since, self.tail))
            await writer.drain()
        self.tail = None

    async def _feed(self, reader: asyncio.StreamReader, early: bytes) -> None:
        """The client's bytes to the terminal, less the detach keys (which set
        `detached`); until the client's half-close."""
        keys = self.keys
        held = b""
        data = early
        try:
            while True:
                if data:
                    out = bytearray()
                    for b in data:
                        if b == keys[len(held)]:
                            held += bytes([b])
                            if held == keys:
                                await self._put(bytes(out))
                                self.detached.set()
                                return
                            continue
                        out += held
                        held = b""
                        if b == keys[0]:
                            held = bytes([b])
                        else:
                            out.append(b)
                    await self._put(bytes(out))
                data = await reader.read(65536)
                if not data:
                    return  # the client's half-close: no more input
        except (ConnectionError, OSError):
            return

    async def _put(self, data: bytes) -> None:
        c = self.conn
        if data and self.use_stdin and c is not None:
            await call(c.input, data)


def _resize(cdir: str, h: int, w: int) -> None:
    c = ttyattach.Conn(cdir, timeout=2.0)
    try:
        c.resize(h, w)
    finally:
        c.close()


async def resize(root: str, req: Request) -> Result:
    """POST /containers/{id}/resize: the terminal's size (the container gets SIGWINCH)."""
    name = lookup(root, req.params["id"])
    rec = await call(containers.refresh_record, state.Paths(root), name)
    h, w = req.qint("h", 0) or 0, req.qint("w", 0) or 0
    if not rec["Config"].get("Tty"):
        return Response(200, b"", "text/plain")  # docker: nothing to resize
    if rec["State"]["Status"] not in ("running", "paused"):
        raise ApiError(409, f"Container {rec['Id']} is not running")
    if not (0 < h < 65536 and 0 < w < 65536):
        raise ApiError(400, f"bad terminal size {h}x{w}")
    try:
        await call(_resize, state.Paths(root).cdir(name), h, w)
    except (CoveError, OSError) as e:  # the client tries again (docker's CLI does)
        raise ApiError(500, f"cannot resize the terminal of {name}: {e}") from None
    return Response(200, b"", "text/plain")
