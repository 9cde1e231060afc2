"""Engine events (`cove events`): one JSON object a line in `<root>/events.log`, in
docker's event shape:

    {"status":"die","id":ID,"from":"busybox","Type":"container","Action":"die",
     "Actor":{"ID":ID,"Attributes":{"exitCode":"0","image":"busybox","name":"x"}},
     "scope":"local","time":1700000000,"timeNano":1700000000123456789}

There is no daemon to hold a ring buffer, so the file is the buffer: every process of
the engine (the CLI, a monitor, the supervisor) appends with O_APPEND, one write(2) per
event, so lines from concurrent writers don't interleave. Past 1 MiB the writer that
notices moves the file to `events.log.1` (replacing the older one): a root keeps 1-2
MiB of history. `emit` never fails: losing an event must not fail a container's start.

The monitor imports this module: os and time only, and the C string encoder.
"""

from __future__ import annotations

import os
import time

try:
    from _json import encode_basestring as _jstr  # C, and no `re`
except ImportError:  # pragma: no cover
    from json.encoder import py_encode_basestring as _jstr

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

LOG = "events.log"
MAX_SIZE = 1 << 20


def path(root: str) -> str:
    return os.path.join(root, LOG)


def emit(root: str, kind: str, action: str, actor: str | Mapping[str, Any], /,
         **attrs: object) -> None:
    """Append one event. `actor` is a container's record (its id, and its image, name
    and labels as attributes) or an object's id (an image's name, a network's or a
    volume's name); `attrs` are further attributes (exitCode, signal, ...)."""
    try:
        if not isinstance(actor, str):
            aid = str(actor.get("Id", ""))
            labels = (actor.get("Config") or {}).get("Labels") or {}
            attrs = {**{str(k): v for k, v in labels.items()},
                     "image": actor.get("Image", ""), "name": actor.get("Name", ""),
                     **attrs}
        else:
            aid = actor
        sig = str(attrs.get("signal", ""))
        if sig and not sig.isdigit():  # docker's kill event has the number: signal=15
            import _signal
            attrs["signal"] = getattr(_signal, "SIG" + sig.upper().removeprefix("SIG"), sig)
        ns = time.time_ns()
        body = ",".join(f"{_jstr(k)}:{_jstr(str(v))}" for k, v in sorted(attrs.items()))
        legacy = ""
        if kind in ("container", "image"):  # docker's deprecated fields, still read
            legacy = f'"status":{_jstr(action)},"id":{_jstr(aid)},'
            if "image" in attrs and kind == "container":
                legacy += f'"from":{_jstr(str(attrs["image"]))},'
        line = (f'{{{legacy}"Type":{_jstr(kind)},"Action":{_jstr(action)},'
                f'"Actor":{{"ID":{_jstr(aid)},"Attributes":{{{body}}}}},'
                f'"scope":"local","time":{ns // 1_000_000_000},"timeNano":{ns}}}\n')
        if not os.path.isdir(root):
            return
        p = path(root)
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())
            if os.fstat(fd).st_size > MAX_SIZE:
                _rotate(p, fd)
        finally:
            os.close(fd)
    except (OSError, ValueError, TypeError, AttributeError):
        pass


def _rotate(p: str, fd: int) -> None:
    """Move a full log aside, once: the writer that takes the lock and still finds its
    file under the name renames it; a writer holding the old file appends to `.1`."""
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another writer is rotating it
    if os.stat(p).st_ino == os.fstat(fd).st_ino:
        os.rename(p, p + ".1")


def _entries(data: bytes) -> list[dict[str, Any]]:
    from cove.oci.jsonio import loads
    out = []
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            e = loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and isinstance(e.get("timeNano"), int):
            out.append(e)
    return out


def _read(p: str) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def history(root: str, since: float = 0.0, until: float | None = None
            ) -> list[dict[str, Any]]:
    """The stored events from `since` up to `until` (unix seconds), oldest first."""
    p = path(root)
    out = _entries(_read(p + ".1")) + _entries(_read(p))
    lo = int(since * 1e9)
    hi = None if until is None else int(until * 1e9)
    return [e for e in out if e["timeNano"] >= lo and (hi is None or e["timeNano"] <= hi)]


def follow(root: str, since: float | None, until: float | None
           ) -> Iterator[dict[str, Any]]:
    """docker's `events`: the stored events from `since` up to `until` (none when
    neither is given), then new ones as they are appended, across rotations, until
    `until` has passed (forever without it)."""
    p = path(root)
    pending = b""
    try:
        f: Any = open(p, "rb")
        ino = os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        f, ino = None, -1
    lo = int((since or 0) * 1e9)
    hi = None if until is None else int(until * 1e9)
    if since is None and until is None:
        if f is not None:
            f.seek(0, os.SEEK_END)  # docker: only what happens from now on
    else:
        # the history through the handle we go on reading: no line is lost between
        *lines, pending = (f.read() if f is not None else b"").split(b"\n")
        for e in _entries(_read(p + ".1")) + _entries(b"\n".join(lines)):
            if e["timeNano"] >= lo and (hi is None or e["timeNano"] <= hi):
                yield e
    try:
        nap = 0.02
        while True:
            if until is not None and time.time() > until:
                return
            chunk = f.read() if f is not None else b""
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for e in _entries(b"\n".join(lines)):
                    if hi is not None and e["timeNano"] > hi:
                        return
                    if e["timeNano"] >= lo:
                        yield e
                nap = 0.02
                continue
            try:
                now_ino = os.stat(p).st_ino
            except FileNotFoundError:
                now_ino = -1
            if now_ino != ino and now_ino != -1:
                # rotated (or made): finish the old file, then read the new one whole
                if f is not None:
                    for e in _entries(pending + f.read()):
                        if hi is not None and e["timeNano"] > hi:
                            return
                        yield e
                    f.close()
                pending = b""
                try:
                    f = open(p, "rb")
                    ino = os.fstat(f.fileno()).st_ino
                except FileNotFoundError:
                    f, ino = None, -1
                continue
            time.sleep(nap)
            nap = min(nap * 1.5, 0.2)
    finally:
        if f is not None:
            f.close()
