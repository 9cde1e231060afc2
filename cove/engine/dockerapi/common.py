"""What the endpoint modules share: the server's context (state root, exec table),
docker's stream framing, and asynchronous followers of the engine's files (a json-file
log, the events log) that poll in the event loop instead of holding a thread each: a
server holds hundreds of `logs -f` and `events` streams."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cove.engine import state
from cove.engine.dockerapi.server import ApiError
from cove.errors import CoveError

STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}


@dataclass
class Ctx:
    """The server's state: its engine root and the execs it made (docker keeps execs
    in the daemon's memory too: they are gone with the daemon)."""
    root: str
    execs: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Callable[[str], None] = lambda _s: None


def frame(stream: int, data: bytes) -> bytes:
    """docker's multiplexed stream: 1 byte stream id, 3 zero bytes, a big-endian u32
    length, then the payload."""
    return struct.pack(">BxxxI", stream, len(data)) + data


def engine_error(e: CoveError) -> ApiError:
    from cove.engine.dockerapi.server import status_of
    return ApiError(status_of(e), str(e))


async def call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """A blocking engine call on a worker thread (the loop keeps serving)."""
    return await asyncio.to_thread(fn, *args, **kw)


def lookup(root: str, ref: str) -> str:
    """A container's name from a name (docker's with or without its '/'), id or
    prefix; 404 when none."""
    try:
        return state.lookup(state.Paths(root), ref.lstrip("/"))
    except CoveError as e:
        if e.why == "no such container":
            raise ApiError(404, f"No such container: {ref}") from None
        raise


def json_line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


async def follow_file(path: str, alive: Callable[[], bool], *, start_at_end: bool,
                      nap_max: float = 0.1, f: Any = None) -> AsyncIterator[bytes]:
    """Complete lines appended to `path` (from its end, or its start), across
    rotations (a new inode at `path`), while `alive()`; one last read after it says
    no. A file that does not exist yet is waited for. `f`: a handle already read up to
    where following starts (so that nothing written in between is lost)."""
    pending = b""
    nap = 0.01
    ended = False
    try:
        while True:
            if f is None:
                try:
                    f = open(path, "rb")
                    if start_at_end:
                        f.seek(0, os.SEEK_END)
                        start_at_end = False
                except FileNotFoundError:
                    f = None
                    start_at_end = False
            chunk = f.read() if f is not None else b""
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line:
                        yield line
                nap = 0.01
                continue
            if f is not None:
                try:
                    if os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                        f.close()
                        f, pending = None, b""
                        continue
                except FileNotFoundError:
                    pass
            if ended:
                return
            if not alive():
                ended = True
                continue
            await asyncio.sleep(nap)
            nap = min(nap * 1.5, nap_max)
    finally:
        if f is not None:
            f.close()


async def nap(rec: Mapping[str, Any] | None, limit: float) -> None:
    """Wait up to `limit` seconds for a record to change: while its init runs, on the
    init's pidfd (readable the moment it exits: the exit is seen at once, not at the
    next poll); otherwise a short sleep while the monitor records the exit."""
    st = (rec or {}).get("State") or {}
    pid = int(st.get("Pid") or 0)
    if st.get("Status") == "running" and pid and state.pid_alive(pid, st.get("PidStart")):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
        if fd >= 0:
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.add_reader(fd, lambda: None if done.done() else done.set_result(None))
            try:
                await asyncio.wait_for(done, limit)
            except TimeoutError:
                pass
            finally:
                loop.remove_reader(fd)
                os.close(fd)
            return
    await asyncio.sleep(min(0.005, limit))
