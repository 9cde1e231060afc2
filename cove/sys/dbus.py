"""A small D-Bus client: the wire protocol over a unix socket, for systemd's Manager API.

Why not a library: the runtime's hot path admits no third-party import, and what the
systemd cgroup driver needs is little (EXTERNAL auth, method calls, one signal). Only
the little-endian encoding is written; both encodings are read. Types handled: the
basic ones (y b n q i u x t d s o g), arrays, structs, dict entries and variants.
A variant is passed as a (signature, value) pair.

The wire format (D-Bus specification, "Message Protocol"): a fixed header (endianness,
type, flags, version, body length, serial), an array of (code, variant) header fields,
padding to 8, then the body. Every value is aligned to its type's size from the start
of the message.
"""

from __future__ import annotations

import os
import struct

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SYSTEMD_PRIVATE = "/run/systemd/private"
SYSTEM_BUS = "/run/dbus/system_bus_socket"

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
# Header field codes.
PATH, INTERFACE, MEMBER, ERROR_NAME, REPLY_SERIAL, DESTINATION, SENDER, SIGNATURE = range(1, 9)

_FIXED = {"y": ("B", 1), "b": ("I", 4), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4),
          "u": ("I", 4), "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8), "h": ("I", 4)}
_ALIGN = {"s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1}


class DBusError(CoveError):
    """An error reply: `name` is the D-Bus error name (org.freedesktop.systemd1.*)."""

    def __init__(self, what: str, name: str, message: str) -> None:
        super().__init__(what, message or name)
        self.name = name


def _one(sig: str, i: int = 0) -> int:
    """The end of the single complete type starting at sig[i]."""
    c = sig[i]
    if c == "a":
        return _one(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        i += 1
        while sig[i] != close:
            i = _one(sig, i)
        return i + 1
    return i + 1


def split(sig: str) -> list[str]:
    """A signature's complete types: "sa(sv)" -> ["s", "a(sv)"]."""
    out, i = [], 0
    while i < len(sig):
        j = _one(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _alignment(t: str) -> int:
    return _FIXED[t][1] if t in _FIXED else _ALIGN[t[0]]


class _Writer:
    def __init__(self, start: int = 0) -> None:
        self.buf = bytearray()
        self.start = start  # alignment is counted from the message's start

    def pad(self, n: int) -> None:
        self.buf.extend(b"\0" * (-(self.start + len(self.buf)) % n))

    def put(self, t: str, v: Any) -> None:
        c = t[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.pad(size)
            self.buf.extend(struct.pack("<" + fmt, int(v) if c != "d" else float(v)))
        elif c in "so":
            b = v.encode()
            self.pad(4)
            self.buf.extend(struct.pack("<I", len(b)) + b + b"\0")
        elif c == "g":
            b = v.encode()
            self.buf.extend(bytes([len(b)]) + b + b"\0")
        elif c == "v":
            vsig, val = v
            self.put("g", vsig)
            self.put(vsig, val)
        elif c == "a":
            el = t[1:]
            self.pad(4)
            at = len(self.buf)
            self.buf.extend(b"\0\0\0\0")
            self.pad(_alignment(el))
            begin = len(self.buf)
            if el == "y":
                self.buf.extend(bytes(v))
            else:
                items = v.items() if el[0] == "{" and isinstance(v, dict) else v
                for x in items:
                    self.put(el, x)
            struct.pack_into("<I", self.buf, at, len(self.buf) - begin)
        elif c in "({":
            self.pad(8)
            for sub, x in zip(split(t[1:-1]), v, strict=True):
                self.put(sub, x)
        else:
            raise ValueError(f"D-Bus type {t!r} not supported")

    def put_all(self, sig: str, args: tuple[Any, ...] | list[Any]) -> None:
        for t, v in zip(split(sig), args, strict=True):
            self.put(t, v)


class _Reader:
    def __init__(self, data: bytes, little: bool, pos: int = 0) -> None:
        self.data = data
        self.e = "<" if little else ">"
        self.pos = pos

    def pad(self, n: int) -> None:
        self.pos += -self.pos % n

    def get(self, t: str) -> Any:
        c = t[0]
        if c in _FIXED:
            fmt, size = _FIXED[c]
            self.pad(size)
            (v,) = struct.unpack_from(self.e + fmt, self.data, self.pos)
            self.pos += size
            return bool(v) if c == "b" else v
        if c in "so":
            self.pad(4)
            (n,) = struct.unpack_from(self.e + "I", self.data, self.pos)
            s = self.data[self.pos + 4 : self.pos + 4 + n].decode()
            self.pos += 4 + n + 1
            return s
        if c == "g":
            n = self.data[self.pos]
            s = self.data[self.pos + 1 : self.pos + 1 + n].decode()
            self.pos += n + 2
            return s
        if c == "v":
            vsig = self.get("g")
            return (vsig, self.get(vsig))
        if c == "a":
            self.pad(4)
            (n,) = struct.unpack_from(self.e + "I", self.data, self.pos)
            self.pos += 4
            el = t[1:]
            self.pad(_alignment(el))
            end = self.pos + n
            if el == "y":
                self.pos = end
                return self.data[end - n : end]
            out = []
            while self.pos < end:
                out.append(self.get(el))
            return dict(out) if el[0] == "{" else out
        if c in "({":
            self.pad(8)
            return tuple(self.get(sub) for sub in split(t[1:-1]))
        raise ValueError(f"D-Bus type {t!r} not supported")


class Message:
    """One message: its type, header fields by code, and its body's values."""

    def __init__(self, mtype: int, serial: int, fields: dict[int, Any], body: list[Any]):
        self.type = mtype
        self.serial = serial
        self.fields = fields
        self.body = body

    @property
    def member(self) -> str:
        return str(self.fields.get(MEMBER, ""))


def encode(mtype: int, serial: int, fields: dict[int, tuple[str, Any]], sig: str,
           args: tuple[Any, ...] | list[Any], flags: int = 0) -> bytes:
    """A whole little-endian message."""
    body = _Writer()
    body.put_all(sig, args)
    if sig:
        fields = {**fields, SIGNATURE: ("g", sig)}
    head = _Writer()
    head.buf.extend(struct.pack("<cBBBII", b"l", mtype, flags, 1, len(body.buf), serial))
    head.put("a(yv)", sorted(fields.items()))
    head.pad(8)
    return bytes(head.buf) + bytes(body.buf)


def decode(data: bytes) -> tuple[Message, int] | None:
    """(message, its length) from the front of data, or None when data is short."""
    if len(data) < 16:
        return None
    little = data[:1] == b"l"
    e = "<" if little else ">"
    mtype, _flags, _ver, blen, serial, flen = struct.unpack_from(e + "BBBIII", data, 1)
    hend = 16 + flen
    hend += -hend % 8
    if len(data) < hend + blen:
        return None
    r = _Reader(data, little, 12)
    fields = {code: val for code, (_s, val) in r.get("a(yv)")}
    sig = fields.get(SIGNATURE, "")
    br = _Reader(data[hend : hend + blen], little)
    body = [br.get(t) for t in split(sig)]
    return Message(mtype, serial, fields, body), hend + blen


class Connection:
    """A connection to a bus (or to systemd's private socket: peer to peer, no Hello)."""

    def __init__(self, path: str, *, bus: bool, timeout: float = 30.0) -> None:
        import _socket

        self.path = path
        self.bus = bus
        self.serial = 0
        self.buf = b""
        self.pending: list[Message] = []  # signals read while waiting for a reply
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self._auth()
            if bus:
                self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                          "org.freedesktop.DBus", "Hello")
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def _auth(self) -> None:
        """EXTERNAL with our uid; BEGIN sent with it, as sd-bus clients do: systemd's
        server (252) drops a message that arrives in the same read as a late BEGIN,
        so the first message goes only once the OK has come back."""
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\nBEGIN\r\n")
        data = b""
        # Up to the first line's end, wherever it falls: once BEGIN is read, systemd's
        # private socket sends the signals of the moment (a reload, units changing) to
        # every connection at once, and they may come in the same read as the OK. (A
        # read that had to end with the line's end waited on that stream: the hang seen
        # in a `delete --force` right after systemd's reload.)
        while b"\r\n" not in data:
            chunk = self.sock.recv(256)
            if not chunk:
                raise CoveError(f"D-Bus {self.path}", "connection closed during auth")
            data += chunk
        line, _, self.buf = data.partition(b"\r\n")  # the rest: the first messages
        if not line.startswith(b"OK "):
            raise CoveError(f"D-Bus {self.path}", f"EXTERNAL auth refused: "
                            f"{line.decode(errors='replace').strip()}")

    def _read(self) -> Message:
        while True:
            got = decode(self.buf)
            if got is not None:
                msg, n = got
                self.buf = self.buf[n:]
                return msg
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CoveError(f"D-Bus {self.path}", "connection closed by the peer")
            self.buf += chunk

    def send(self, dest: str | None, path: str, iface: str, member: str, sig: str = "",
             args: tuple[Any, ...] | list[Any] = ()) -> int:
        self.serial += 1
        fields: dict[int, tuple[str, Any]] = {PATH: ("o", path), INTERFACE: ("s", iface),
                                              MEMBER: ("s", member)}
        if dest and self.bus:
            fields[DESTINATION] = ("s", dest)
        self.sock.sendall(encode(METHOD_CALL, self.serial, fields, sig, args))
        return self.serial

    def call(self, dest: str | None, path: str, iface: str, member: str, sig: str = "",
             args: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        """A method call; its reply's body, or DBusError."""
        serial = self.send(dest, path, iface, member, sig, args)
        while True:
            msg = self._read()
            if msg.type == SIGNAL:
                self.pending.append(msg)
                continue
            if msg.fields.get(REPLY_SERIAL) != serial:
                continue
            if msg.type == ERROR:
                name = str(msg.fields.get(ERROR_NAME, "error"))
                text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
                raise DBusError(member, name, text)
            return msg.body

    def signal(self, member: str) -> Message:
        """The next signal named member (those read meanwhile by call() first)."""
        while True:
            msg = self.pending.pop(0) if self.pending else self._read()
            if msg.type == SIGNAL and msg.member == member:
                return msg
