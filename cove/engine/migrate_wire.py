"""`cove migrate`'s stream: one TCP connection, framed, token-authenticated.

Every frame is a kind byte, a 4-byte big-endian length and that many bytes:

    H  hello (source -> target): JSON {"token", "name", "format"}
    D  a piece of the tar stream being sent
    E  the end of one tar stream: JSON {"kind": "pre", "round": N} or {"kind": "final"}
    O  ok (target -> source): an acknowledgement, JSON details
    X  refused or failed (either way): one line, the reason
    R  running (target -> source): the restored container runs, JSON details

The source waits for an answer after the hello and after each stream, so that a
failure on the target is known before the source goes on (and before it removes
anything). A vanished peer is an error on read or write (with a timeout: a target
that stops answering is gone too). The token is compared in constant time; the
stream is not encrypted (a private network's tool, as CRIU's page server).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

from cove.errors import CoveError

HEADER = struct.Struct("!cI")
CHUNK = 1 << 20
MAX_FRAME = 16 << 20
TIMEOUT = 120.0


class PeerError(CoveError):
    """The other side went away or broke the protocol."""


class Conn:
    """A framed connection (either side)."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        sock.settimeout(TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        try:
            self.sock.sendall(HEADER.pack(kind, len(payload)) + payload)
        except OSError as e:
            raise PeerError(self.peer, f"connection lost ({e.strerror or e})") from None

    def send_json(self, kind: bytes, obj: Any) -> None:
        self.send(kind, json.dumps(obj).encode())

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                got = self.sock.recv(n - len(buf))
            except OSError as e:
                raise PeerError(self.peer, f"connection lost ({e.strerror or e})") from None
            if not got:
                raise PeerError(self.peer, "connection closed")
            buf += got
        return bytes(buf)

    def recv(self) -> tuple[bytes, bytes]:
        kind, n = HEADER.unpack(self._read(HEADER.size))
        if n > MAX_FRAME:
            raise PeerError(self.peer, f"a frame of {n} bytes: not a cove migrate peer")
        return kind, self._read(n)

    def answer(self) -> dict[str, Any]:
        """The peer's O or R (its JSON); its X as an error."""
        kind, data = self.recv()
        if kind == b"X":
            raise CoveError(self.peer, data.decode(errors="replace"))
        if kind not in (b"O", b"R"):
            raise PeerError(self.peer, f"unexpected frame {kind!r}")
        try:
            out = json.loads(data or b"{}")
        except ValueError:
            raise PeerError(self.peer, "not a cove migrate peer") from None
        return out if isinstance(out, dict) else {}

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Sender:
    """A write-only file object whose writes go out as D frames (tarfile's stream
    mode, `w|`, writes into it); counts the bytes."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.sent = 0
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        self.sent += len(data)
        while len(self._buf) >= CHUNK:
            self.conn.send(b"D", bytes(self._buf[:CHUNK]))
            del self._buf[:CHUNK]
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self.conn.send(b"D", bytes(self._buf))
            self._buf.clear()

    def end(self, meta: dict[str, Any]) -> None:
        self.flush()
        self.conn.send_json(b"E", meta)


def receive_stream(conn: Conn, dest: str) -> tuple[dict[str, Any], int]:
    """D frames into the file `dest` up to the E frame: (its JSON, bytes)."""
    n = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while True:
            kind, data = conn.recv()
            if kind == b"D":
                os.write(fd, data)
                n += len(data)
            elif kind == b"E":
                meta = json.loads(data or b"{}")
                return (meta if isinstance(meta, dict) else {}), n
            elif kind == b"X":
                raise CoveError(conn.peer, data.decode(errors="replace"))
            else:
                raise PeerError(conn.peer, f"unexpected frame {kind!r}")
    finally:
        os.close(fd)


def parse_addr(text: str, default_port: int, what: str) -> tuple[str, int]:
    """HOST[:PORT] (an IPv6 address in brackets) as (host, port)."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], what)
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = _port(p, what)
    if not host:
        raise CoveError(f"{what} {text}", "expected HOST[:PORT]")
    return host, port


def _port(p: str, what: str) -> int:
    if not p.isdigit() or int(p) > 65535:
        raise CoveError(f"{what} {p}", "not a port number")
    return int(p)
