"""Container logs in docker's json-file format: one JSON object a line,
`{"log": "text\\n", "stream": "stdout", "time": "RFC3339Nano"}`, in
`<container>/<name>-json.log`, rotated to `.1`, `.2`, ... by max-size and max-file.

Lines longer than 16 KiB are split as docker splits them (no trailing newline on the
parts); a partial last line is written when its stream ends.
"""

from __future__ import annotations

import os
import select
import time

from cove.engine.state import now_rfc3339, parse_rfc3339
from cove.errors import CoveError
from cove.oci.jsonio import loads
from cove.sys import inotify

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

try:
    from _json import encode_basestring as _jstr  # C, and no `re`
except ImportError:  # pragma: no cover
    from json.encoder import py_encode_basestring as _jstr

MAX_LINE = 16 * 1024
# The cap a container's log gets unless --log-opt says otherwise: docker's `local`
# driver's (20 MiB a file, 5 files); docker's json-file has none.
DEFAULT_MAX_SIZE, DEFAULT_MAX_FILE = "20m", "5"
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
    """Appends entries; rotates when the file would pass `max_size` (0: never).

    It keeps no output of its own: `entries` says how much of what it is shown makes
    whole entries, and the caller (cove/engine/logcopy.py) consumes only that much from
    the container's pipe, once `append` has stored it — so that a monitor killed at any
    point leaves every line it had not stored in the pipe, for the next one."""

    def __init__(self, path: str, max_size: int = 0, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self.lost, self.lost_why = 0, ""  # output dropped while writes failed
        self.fd = -1
        self.ino = self.size = 0
        self._reopen()

    def _rotate(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.max_file > 1:
            for i in range(self.max_file - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.rename(src, f"{self.path}.{i}")
        else:
            os.truncate(self.path, 0)
        self._reopen()

    def _line(self, stream: str, data: bytes) -> bytes:
        return (f'{{"log":{_jstr(data.decode(errors="replace"))},"stream":"{stream}",'
                f'"time":"{now_rfc3339()}"}}\n').encode()

    def entries(self, stream: str, data: bytes, last: bool) -> list[tuple[int, bytes]]:
        """The entries the head of `data` makes, each with the offset in `data` where its
        text ends: each line (a newline ends it), each 16 KiB of a longer one, and with
        `last` (the stream has ended) the partial line at its end. A shorter partial line
        waits for its end, in the pipe."""
        out: list[tuple[int, bytes]] = []
        pos, size = 0, len(data)
        while pos < size:
            nl = data.find(b"\n", pos, pos + MAX_LINE)
            if nl >= 0:
                end = nl + 1
            elif size - pos >= MAX_LINE:
                end = pos + MAX_LINE
            elif last:
                end = size
            else:
                break
            out.append((end, self._line(stream, data[pos:end])))
            pos = end
        return out

    def note(self) -> bytes:
        """The entry that says how much output was dropped while writes failed, to go
        before the next ones (b"" when none was)."""
        if not self.lost:
            return b""
        return self._line("stderr", (f"cove: {self.lost} bytes of output lost: "
                                     f"{self.lost_why}\n").encode())

    def room(self) -> int:
        """Bytes the current file takes before max-size (-1: no limit)."""
        return self.max_size - self.size if self.max_size else -1

    def make_room(self, size: int) -> None:
        """Rotate first if `size` more bytes would pass max-size; then `ino` and `size`
        say where the next `append` goes."""
        if self.max_size and self.size and self.size + size > self.max_size:
            self._rotate()
        if self.fd < 0:
            self._reopen()

    def append(self, blob: bytes) -> None:
        """Store entries with one write. One that fails (a full disk, a quota, an I/O
        error) raises, and leaves no half entry; the caller drops the output and counts
        it (`dropped`): a container must not block on its output, nor its monitor die,
        because the log's disk is full. Once writes succeed again, an entry says how
        much was lost (`note`, which the caller puts first)."""
        n = os.write(self.fd, blob)
        if n < len(blob):  # a short write (the disk filled): no half entry in the log
            os.ftruncate(self.fd, self.size)
            raise OSError(28, "No space left on device")
        self.size += n
        self.lost = 0

    def dropped(self, n: int, e: OSError) -> None:
        self.lost += n
        self.lost_why = e.strerror or str(e)

    def _reopen(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o640)
        st = os.fstat(self.fd)
        self.ino, self.size = st.st_ino, st.st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _entry(line: bytes | str) -> dict[str, Any] | None:
    """One log entry; None for a line that is not one (a log written by an older Cove
    when the disk filled mid-line): skipped, not fatal to `logs`."""
    try:
        e: dict[str, Any] = loads(line)
        return e
    except ValueError:
        return None


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


def parse_go_duration(s: str) -> float | None:
    """Seconds in a Go duration (`10m`, `1h30m`, `1.5s`, `500ms`), or None when `s` is
    not one."""
    v, total, i = s.strip(), 0.0, 0
    if not v:
        return None
    while i < len(v):
        j = i
        while j < len(v) and ((v[j].isascii() and v[j].isdigit()) or v[j] == "."):
            j += 1
        k = j
        while k < len(v) and not (v[k].isascii() and v[k].isdigit()) and v[k] != ".":
            k += 1
        num, unit = v[i:j], v[j:k]
        if not num or num == "." or unit not in _DURATION_UNITS or num.count(".") > 1:
            return None
        total += float(num) * _DURATION_UNITS[unit]
        i = k
    return total


def parse_since(s: str, flag: str = "--since") -> float:
    """docker's --since/--until: a Go duration before now (`10m`, `1h30m`), a unix time
    (`1700000000.5`), or RFC3339 (`2026-12-06T02:00:00Z`, with an offset or fractions;
    a date; no zone meaning local time, as docker)."""
    v = s.strip()
    d = parse_go_duration(v)
    if d is not None:
        return time.time() - d
    if v.replace(".", "", 1).isascii() and v.replace(".", "", 1).isdigit():
        return float(v)
    try:
        import datetime
        base, _, rest = v.partition(".")
        n = 0
        while n < len(rest) and rest[n].isdigit():
            n += 1
        # the fraction added as our log times are read (state.parse_rfc3339), so that
        # a time copied from `logs -t` compares equal to its entry's
        t = datetime.datetime.fromisoformat(base + rest[n:]).timestamp()
        return t + (float("0." + rest[:n]) if n else 0.0)
    except ValueError:
        raise CoveError(f"{flag} {s}", "expected RFC3339, a unix time or a duration "
                                       "(10m, 1h30m)") from None


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
            return [e for line in f if line.endswith(b"\n") and (e := _entry(line))]
    except FileNotFoundError:
        return []


def read_entries(path: str) -> list[dict[str, Any]]:
    out = []
    for p in _files(path):
        out += read_entries_of(p)
    return out


def follow(path: str, alive: Any, since: float = 0.0, tail: int = -1,
           until: float = 0.0) -> Iterator[dict[str, Any]]:
    """Entries (from `since`, up to `until`, the last `tail` of them), then, while
    `alive()`, new ones as they are written, across rotations, until an entry or the
    clock passes `until` (docker's `logs -f --until`)."""
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
        entries += [e for x in lines if x and (e := _entry(x))]
    entries = [e for e in entries if (not since or parse_rfc3339(e["time"]) >= since)
               and (not until or parse_rfc3339(e["time"]) <= until)]
    if tail >= 0:
        entries = entries[len(entries) - tail:] if tail else []
    yield from entries
    if alive is None or f is None:
        if f is not None:
            f.close()
        return
    # wakes on an inotify event in the log's directory (the log written, the record
    # renamed into place: cove/sys/inotify.py); else, or if none comes, polls: every
    # 5 ms for the first second (a short run's end shows at once: `cove run` waits for
    # it), then slower, up to 50 ms apart
    wake = _watch(os.path.dirname(path))
    try:
        nap, naps = 0.005, 0
        ended = False
        while True:
            chunk = f.read()
            if chunk:
                nap = 0.005
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line:
                        e = _entry(line)
                        if e and until and parse_rfc3339(e["time"]) > until:
                            return
                        if e:
                            yield e
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
            if not alive() or (until and time.time() > until):
                ended = True  # the writer is done (or --until is past): one last read
                continue
            if wake < 0:
                time.sleep(nap)
            elif select.select([wake], [], [], nap)[0]:
                inotify.drain(wake)
            naps += 1
            if naps > 200:
                nap = min(nap * 1.5, 0.05)
    finally:
        f.close()
        if wake >= 0:
            os.close(wake)


def _watch(directory: str) -> int:
    """An inotify fd for follow()'s waits, or -1 (it then polls)."""
    try:
        return inotify.watch(directory, inotify.IN_MODIFY | inotify.IN_MOVED_TO
                             | inotify.IN_CREATE | inotify.IN_DELETE)
    except OSError:
        return -1


class LogTail:
    """New entries of a json-file log from the moment it is made (from the start of a
    log that does not exist yet), across rotations."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pending = b""
        self.f: Any = None
        try:
            self.f = open(path, "rb")  # held across calls
            self.f.seek(0, os.SEEK_END)
        except FileNotFoundError:
            pass

    def read(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.f is None:
            try:
                self.f = open(self.path, "rb")
            except FileNotFoundError:
                return out
        while True:
            chunk = self.f.read()
            if chunk:
                self.pending += chunk
                *lines, self.pending = self.pending.split(b"\n")
                out += [e for x in lines if x and (e := _entry(x))]
            try:
                if os.stat(self.path).st_ino == os.fstat(self.f.fileno()).st_ino:
                    return out
            except FileNotFoundError:
                return out
            self.f.close()  # rotated: what was left is read; on to the new file
            self.f = open(self.path, "rb")
            self.pending = b""

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
