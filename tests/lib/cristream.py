"""A minimal client for the CRI streaming server (Exec/Attach URLs), as kubectl's
websocket path speaks it: RFC 6455 with the `v4.channel.k8s.io` subprotocol, where each
binary message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize).

kubelet proxies the apiserver's SPDY or websocket stream to this URL; the runtime side
(containerd's streaming server, the shim's exec/attach) is the same either way, so the
websocket form, ~100 lines over a plain socket, exercises it. The socket is made in the
node's network namespace, where the streaming server listens on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

STDIN, STDOUT, STDERR, STATUS, RESIZE = range(5)


class Stream:
    def __init__(self, sock: socket.socket, url: str, timeout: float = 30) -> None:
        u = urlsplit(url)
        assert u.hostname is not None and u.port is not None, url
        sock.settimeout(timeout)
        sock.connect((u.hostname, u.port))
        self.sock = sock
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n")
        sock.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise AssertionError(f"streaming server closed the handshake: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise AssertionError(f"no websocket upgrade: {head!r}")
        self.out: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
        self.status: dict[str, Any] | None = None
        self.closed = False

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if b1 & 0x80 else b""
        data = self._read(n)
        if mask:
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        return b0 & 0x0F, data

    def send(self, channel: int, data: bytes, opcode: int = 2) -> None:
        payload = bytes([channel]) + data if opcode == 2 else data
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

    def pump(self) -> bool:
        """Read one message; False once the server closed the stream."""
        try:
            op, data = self._frame()
        except (EOFError, ConnectionResetError):
            self.closed = True
            return False
        if op == 8:  # close
            self.closed = True
            return False
        if op == 9:  # ping
            self.send(0, data, opcode=10)
        elif op in (1, 2) and data:
            ch, body = data[0], data[1:]
            if ch == STATUS and body:
                self.status = json.loads(body)
            elif ch in self.out:
                self.out[ch] += body
        return True

    def read_until(self, token: bytes, channel: int = STDOUT, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while token not in self.out[channel]:
            if time.monotonic() > deadline or not self.pump():
                raise AssertionError(f"no {token!r} on channel {channel}: {self.out}")
        return self.out[channel]

    def wait(self) -> dict[str, Any]:
        """Read to the end; the status message (kubectl's exit code comes from it)."""
        while self.pump():
            pass
        self.sock.close()
        return self.status or {}


def exit_code(status: dict[str, Any]) -> int:
    """The exit code a status message carries (kubectl's reading of it)."""
    if status.get("status") == "Success":
        return 0
    for cause in status.get("details", {}).get("causes", []):
        if cause.get("reason") == "ExitCode":
            return int(cause["message"])
    raise AssertionError(f"no exit code in {status}")
