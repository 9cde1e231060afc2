"""The HTTP side of `cove serve`: h11 (sans-IO HTTP/1.1) on asyncio unix-socket streams.

Why h11 rather than a framework: docker's attach and exec hijack the connection (`101
UPGRADED`, then raw bytes both ways on the same socket). ASGI servers can't hand the
socket over and aiohttp feeds the bytes after an upgrade back to its HTTP parser; with
h11 we own the socket, so after the 101 the handler gets the reader and writer (and any
bytes the client sent early) and speaks docker's framing itself.

A handler returns a `Response` (a body), a `Stream` (chunked; docker-py reads a JSON
stream only when it is chunked) or a `Hijack`. Blocking engine calls run in threads
(`asyncio.to_thread`): a stream never waits on one. Every response carries
`Api-Version: 1.41` (clients negotiate from it), errors are docker's `{"message": ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11

from cove.errors import CoveError

API_VERSION = "1.41"
MIN_API_VERSION = "1.24"
MAX_HEADERS = 64 * 1024          # h11's limit on an incomplete request head
MAX_BODY = 512 << 20             # archive PUT and image load carry tarballs
_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")


class ApiError(Exception):
    """A request that fails: docker's status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(what: str) -> ApiError:
    return ApiError(404, what)


# The engine's one-line errors, as docker's status codes (its "why" part decides).
def status_of(e: CoveError, default: int = 500) -> int:
    why = e.why.lower()
    if why.startswith("no such") or "not found" in why:
        return 404
    if any(w in why for w in ("already in use", "already exists", "is running",
                              "is not running", "in use", "conflict", "is paused",
                              "cannot start a paused")):
        return 409
    return default


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    version: str = API_VERSION
    params: dict[str, str] = field(default_factory=dict)

    def q(self, name: str, default: str | None = None) -> str | None:
        v = self.query.get(name)
        return v[-1] if v else default

    def qbool(self, name: str, default: bool = False) -> bool:
        v = self.q(name)
        if v is None or v == "":
            return default
        return v.lower() not in ("0", "false", "no")

    def qint(self, name: str, default: int | None = None) -> int | None:
        v = self.q(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise ApiError(400, f"invalid value for {name}: {v!r}: expected an integer"
                           ) from None

    def json(self, default: Any = None) -> Any:
        if not self.body.strip():
            return default
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"invalid JSON body: {e}") from None

    def obj(self) -> dict[str, Any]:
        """The body as a JSON object (docker's create bodies): 400 otherwise."""
        v = self.json({})
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ApiError(400, "invalid JSON body: expected an object")
        return v

    def filters(self) -> dict[str, list[str]]:
        """docker's `filters` query: {"key": ["v", ...]} or {"key": {"v": true}}."""
        raw = self.q("filters")
        if not raw:
            return {}
        try:
            f = json.loads(raw)
        except ValueError:
            raise ApiError(400, f"invalid filters: {raw!r}") from None
        if not isinstance(f, dict):
            raise ApiError(400, f"invalid filters: {raw!r}")
        out: dict[str, list[str]] = {}
        for k, v in f.items():
            if isinstance(v, dict):
                out[k] = [str(x) for x, on in v.items() if on]
            elif isinstance(v, list):
                out[k] = [str(x) for x in v]
            else:
                out[k] = [str(v)]
        return out


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    ctype: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def jsonr(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(obj).encode() + b"\n")


def empty(status: int = 204) -> Response:
    return Response(status, b"", "text/plain")


@dataclass
class Stream:
    """A chunked body: each item the iterator yields is written and flushed at once.
    `watch`: the client's going away (EOF on its side) ends the stream early."""
    chunks: AsyncIterator[bytes]
    ctype: str = "application/json"
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Hijack:
    """Take the connection over after `101 UPGRADED` (or a 200 when the client asked no
    upgrade): `run(reader, writer, early)` gets the raw socket, `early` the bytes the
    client sent after its request."""
    run: Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]
    ctype: str = "application/vnd.docker.raw-stream"


Result = Response | Stream | Hijack
Handler = Callable[[Request], Awaitable[Result]]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        rx = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", pattern)
        rx = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", rx)
        self.routes.append((method, re.compile("^" + rx + "$"), handler))

    def find(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for m, rx, h in self.routes:
            hit = rx.match(path)
            if hit:
                if m == method or (method == "HEAD" and m == "GET"):
                    return h, {k: urllib.parse.unquote(v) for k, v in hit.groupdict().items()}
                allowed = True
        if allowed:
            raise ApiError(405, f"method {method} not allowed for {path}")
        raise ApiError(404, f"page not found: {method} {path}")


def _headers(extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    return [("Api-Version", API_VERSION), ("Docker-Experimental", "false"),
            ("Ostype", "linux"), ("Server", "Cove (linux)"), *(extra or [])]


class Server:
    """One asyncio unix-socket server; `router` holds the endpoints."""

    def __init__(self, router: Router, log: Callable[[str], None] | None = None) -> None:
        self.router = router
        self.log = log or (lambda _s: None)
        self.conns: set[asyncio.Task[None]] = set()
        self.debug = bool(os.environ.get("COVE_API_DEBUG"))

    async def serve_conn(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.conns.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self.conns.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            return ev

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        while True:
            try:
                ev = await self._next(conn, reader)
            except h11.RemoteProtocolError as e:
                await self._fail_proto(conn, writer, e)
                return
            if isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                return
            if not isinstance(ev, h11.Request):
                return
            body = bytearray()
            try:
                while True:
                    part = await self._next(conn, reader)
                    if isinstance(part, h11.Data):
                        body += part.data
                        if len(body) > MAX_BODY:
                            raise ApiError(413, "request body too large")
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return
            except h11.RemoteProtocolError as e:
                await self._fail_proto(conn, writer, e)
                return
            except ApiError as e:
                await self._send(conn, writer, ev, _error(e.status, e.message))
                return
            req = self._request(ev, bytes(body))
            result = await self._dispatch(req)
            if isinstance(result, Hijack):
                await self._hijack(conn, reader, writer, ev, result)
                return
            if isinstance(result, Stream):
                ok = await self._stream(conn, reader, writer, ev, result)
                if not ok:
                    return
            else:
                await self._send(conn, writer, ev, result)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _fail_proto(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                          e: h11.RemoteProtocolError) -> None:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = e.error_status_hint
            msg = "request header fields too large" if status == 431 else f"bad request: {e}"
            r = _error(status, msg)
            with contextlib.suppress(Exception):
                writer.write(conn.send(h11.Response(status_code=status, headers=_headers(
                    [("Content-Type", r.ctype), ("Content-Length", str(len(r.body))),
                     ("Connection", "close")]))) or b"")
                writer.write(conn.send(h11.Data(data=r.body)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()

    def _request(self, ev: h11.Request, body: bytes) -> Request:
        target = ev.target.decode("latin-1")
        path, _, qs = target.partition("?")
        version = API_VERSION
        m = _VERSIONED.match(path)
        if m:
            version, path = m.group(1), m.group(2)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in ev.headers}
        return Request(ev.method.decode(), path, urllib.parse.parse_qs(
            qs, keep_blank_values=True), headers, body, version)

    async def _dispatch(self, req: Request) -> Result:
        if self.debug:
            import time
            t0 = time.perf_counter()
            try:
                return await self._dispatch_(req)
            finally:
                self.log(f"{req.method} {req.path} {req.query} "
                         f"{(time.perf_counter() - t0) * 1000:.1f} ms")
        return await self._dispatch_(req)

    async def _dispatch_(self, req: Request) -> Result:
        try:
            if _vtuple(req.version) > _vtuple(API_VERSION):
                raise ApiError(400, f"client version {req.version} is too new. Maximum "
                                    f"supported API version is {API_VERSION}")
            handler, req.params = self.router.find(req.method, req.path)
            return await handler(req)
        except ApiError as e:
            return _error(e.status, e.message)
        except CoveError as e:
            return _error(status_of(e), str(e))
        except Exception as e:   # a bug: still docker's shape, and the server goes on
            import traceback
            self.log("".join(traceback.format_exception(e)))
            return _error(500, f"{type(e).__name__}: {e}")

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    ev: h11.Request, r: Response) -> None:
        head = ev.method == b"HEAD"
        hdrs = _headers([("Content-Type", r.ctype), ("Content-Length", str(len(r.body))),
                         *r.headers])
        writer.write(conn.send(h11.Response(status_code=r.status, headers=hdrs)) or b"")
        if r.body and not head:
            writer.write(conn.send(h11.Data(data=r.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    async def _stream(self, conn: h11.Connection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, ev: h11.Request, s: Stream) -> bool:
        """Chunked; ends early (False: the connection is done) when the client goes."""
        writer.write(conn.send(h11.Response(status_code=s.status, headers=_headers(
            [("Content-Type", s.ctype), ("Transfer-Encoding", "chunked"), *s.headers]))
            ) or b"")
        await writer.drain()
        gone = asyncio.ensure_future(reader.read(1))   # EOF (or a stray byte): it left
        it = s.chunks.__aiter__()
        try:
            while True:
                nxt = asyncio.ensure_future(it.__anext__())
                done, _ = await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    with contextlib.suppress(BaseException):
                        await nxt
                    return False
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    break
                if chunk:
                    writer.write(conn.send(h11.Data(data=chunk)) or b"")
                    await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            return not gone.done()
        finally:
            if not gone.done():
                gone.cancel()
            with contextlib.suppress(BaseException):
                await gone
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()

    async def _hijack(self, conn: h11.Connection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, ev: h11.Request, h: Hijack) -> None:
        upgrade = any(k.lower() == b"upgrade" for k, _ in ev.headers)
        if upgrade:
            writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=_headers(
                [("Content-Type", h.ctype), ("Connection", "Upgrade"), ("Upgrade", "tcp")]))
                ) or b"")
            early = conn.trailing_data[0] if conn.our_state is h11.SWITCHED_PROTOCOL else b""
        else:
            # no upgrade asked: a 200 with a body that runs until we close
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(
                k.encode() + b": " + v.encode() + b"\r\n" for k, v in _headers(
                    [("Content-Type", h.ctype), ("Connection", "close")])) + b"\r\n")
            early = conn.trailing_data[0]
        await writer.drain()   # the 101 goes before any output of the process
        await h.run(reader, writer, bytes(early))


def _vtuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


def _error(status: int, message: str) -> Response:
    return Response(status, json.dumps({"message": message}).encode() + b"\n")


async def serve_unix(server: Server, path: str, ready: Callable[[], None] | None = None
                     ) -> None:
    """Serve on the unix socket `path` until cancelled."""
    old = os.umask(0o117)   # made 0660 from the start: never reachable by others
    try:
        # a deep backlog: hundreds of clients connect at once (a unix socket's connect
        # fails with EAGAIN, not a wait, when the backlog is full)
        srv = await asyncio.start_unix_server(server.serve_conn, path=path, limit=1 << 20,
                                              backlog=4096)
    finally:
        os.umask(old)
    if ready is not None:
        ready()
    async with srv:
        await srv.serve_forever()
