"""Container logs in docker's json-file format: one JSON object a line,
`{"log": "text\\n", "stream": "stdout", "time": "RFC3339Nano"}`, in
`<container>/<name>-json.log`, rotated to `.1`, `.2`, ... by max-size and max-file.

Lines longer than 16 KiB are split as docker splits them (no trailing newline on the
parts); a partial last line is written when its stream ends.
"""

from __future__ import annotations

import os
import time

from cove.engine.state import now_rfc3339, parse_rfc3339
from cove.errors import CoveError
from cove.oci.jsonio import loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

try:
    from _json import encode_basestring as _jstr  # C, and no `re`
except ImportError:  # pragma: no cover
    from json.encoder import py_encode_basestring as _jstr

MAX_LINE = 16 * 1024
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30}


def parse_size(s: str) -> int:
    v = s.strip().lower()
    num = v.rstrip("kmgb")
    unit = v[len(num):]
    try:
        if unit not in _UNITS or float(num) < 0:
            raise ValueError(num)
        return int(float(num) * _UNITS[unit])
    except ValueError:
        raise CoveError(f"size {s!r}", "expected a number with an optional k, m or g") \
            from None


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
        line = (f'{{"log":{_jstr(data.decode(errors="replace"))},"stream":"{stream}",'
                f'"time":"{now_rfc3339()}"}}\n').encode()
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


def read_entries_of(p: str) -> list[dict[str, Any]]:
    """The complete lines of one file."""
    try:
        with open(p, "rb") as f:
            return [loads(line) for line in f if line.endswith(b"\n")]
    except FileNotFoundError:
        return []


def read_entries(path: str) -> list[dict[str, Any]]:
    out = []
    for p in _files(path):
        out += read_entries_of(p)
    return out


def follow(path: str, alive: Any, since: float = 0.0, tail: int = -1) -> Iterator[dict[str, Any]]:
    """Entries (after `since`, the last `tail`), then, while `alive()`, new ones as they
    are written, across rotations."""
    entries: list[dict[str, Any]] = []
    for p in _files(path)[:-1]:  # rotated, complete
        entries += read_entries_of(p)
    # the live file: read through the same handle we follow, so that no line written
    # between reading and following is lost
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        f = None
    pending = b""
    if f is not None:
        *lines, pending = f.read().split(b"\n")
        entries += [loads(x) for x in lines if x]
    entries = [e for e in entries if not since or parse_rfc3339(e["time"]) >= since]
    if tail >= 0:
        entries = entries[len(entries) - tail:] if tail else []
    yield from entries
    if alive is None or f is None:
        if f is not None:
            f.close()
        return
    try:
        nap = 0.01
        ended = False
        while True:
            chunk = f.read()
            if chunk:
                nap = 0.01
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line:
                        yield loads(line)
                continue
            if ended:
                return
            try:
                if os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                    f.close()
                    f = open(path, "rb")
                    pending = b""
                    continue
            except FileNotFoundError:
                return
            if not alive():
                ended = True  # the writer is done: one last read
                continue
            time.sleep(nap)
            nap = min(nap * 1.5, 0.025)
    finally:
        f.close()
