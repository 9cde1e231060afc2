"""Container logs in docker's json-file format: one JSON object a line,
`{"log": "text\\n", "stream": "stdout", "time": "RFC3339Nano"}`, in
`<container>/<name>-json.log`, rotated to `.1`, `.2`, ... by max-size and max-file.

Lines longer than 16 KiB are split as docker splits them (no trailing newline on the
parts); a partial last line is written when its stream ends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from cove.engine.state import now_rfc3339, parse_rfc3339
from cove.errors import CoveError

MAX_LINE = 16 * 1024
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30}


def parse_size(s: str) -> int:
    v = s.strip().lower()
    num = v.rstrip("kmgb")
    unit = v[len(num):]
    if not num or unit not in _UNITS:
        raise CoveError(f"size {s!r}", "expected a number with an optional k, m or g")
    return int(float(num) * _UNITS[unit])


def log_path(cdir: str) -> str:
    return os.path.join(cdir, os.path.basename(cdir) + "-json.log")


class JsonFileWriter:
    """Appends entries; rotates when the file would pass `max_size` (0: never)."""

    def __init__(self, path: str, max_size: int = 0, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self.buf: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        os.close(self.fd)
        if self.max_file > 1:
            for i in range(self.max_file - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.rename(src, f"{self.path}.{i}")
        else:
            os.truncate(self.path, 0)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o640)
        self.size = os.fstat(self.fd).st_size

    def _emit(self, stream: str, data: bytes) -> None:
        line = (json.dumps({"log": data.decode(errors="replace"), "stream": stream,
                            "time": now_rfc3339()}) + "\n").encode()
        if self.max_size and self.size and self.size + len(line) > self.max_size:
            self._rotate()
        os.write(self.fd, line)
        self.size += len(line)

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.buf[stream] + data
        while True:
            nl = buf.find(b"\n")
            if nl < 0 or nl >= MAX_LINE:
                if len(buf) >= MAX_LINE:
                    self._emit(stream, buf[:MAX_LINE])
                    buf = buf[MAX_LINE:]
                    continue
                break
            self._emit(stream, buf[:nl + 1])
            buf = buf[nl + 1:]
        self.buf[stream] = buf

    def flush(self, stream: str) -> None:
        if self.buf[stream]:
            self._emit(stream, self.buf[stream])
            self.buf[stream] = b""

    def close(self) -> None:
        for s in self.buf:
            self.flush(s)
        os.close(self.fd)


def parse_since(s: str) -> float:
    """--since: RFC3339, a unix timestamp, or a duration before now (10s, 5m, 2h)."""
    v = s.strip()
    if v and v[-1] in "smh" and v[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(v[:-1]) * {"s": 1, "m": 60, "h": 3600}[v[-1]]
    if v.replace(".", "", 1).isdigit():
        return float(v)
    try:
        return parse_rfc3339(v if "T" in v else v + "T00:00:00")
    except ValueError:
        raise CoveError(f"--since {s}", "expected RFC3339, a unix time or a duration") \
            from None


def _files(path: str) -> list[str]:
    """The rotated files, oldest first, then the live one."""
    out = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        out.append(f"{path}.{i}")
        i += 1
    return [*reversed(out), path]


def read_entries(path: str) -> list[dict[str, Any]]:
    out = []
    for p in _files(path):
        try:
            with open(p, "rb") as f:
                for line in f:
                    if line.endswith(b"\n"):
                        out.append(json.loads(line))
        except FileNotFoundError:
            continue
    return out


def follow(path: str, alive: Any, since: float = 0.0, tail: int = -1) -> Iterator[dict[str, Any]]:
    """Entries (after `since`, the last `tail`), then, while `alive()`, new ones as they
    are written, across rotations."""
    entries = [e for e in read_entries(path) if not since or parse_rfc3339(e["time"]) >= since]
    if tail >= 0:
        entries = entries[len(entries) - tail:] if tail else []
    yield from entries
    if alive is None:
        return
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    f.seek(0, os.SEEK_END)
    pending = b""
    try:
        quiet = 0
        while True:
            chunk = f.read()
            if chunk:
                quiet = 0
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line:
                        yield json.loads(line)
                continue
            try:
                if os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                    f.close()
                    f = open(path, "rb")
                    pending = b""
                    continue
            except FileNotFoundError:
                return
            if not alive():
                quiet += 1
                if quiet > 2:
                    return
            time.sleep(0.1)
    finally:
        f.close()
