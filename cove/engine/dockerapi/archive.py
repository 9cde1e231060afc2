"""`docker cp`: GET (a tar of a path), HEAD (its stat, in the
X-Docker-Container-Path-Stat header) and PUT (a tar unpacked into a directory) of
/containers/{id}/archive, over the engine's copy (cove/engine/copy.py): paths are
resolved inside the container's root, tar entries with `..` are refused, nothing is
written outside it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from cove.engine import containers, copy, state
from cove.engine.dockerapi.common import Ctx, lookup
from cove.engine.dockerapi.server import (
    ApiError,
    Request,
    Response,
    Result,
    Router,
    Stream,
)
from cove.errors import CoveError

# Go's os.FileMode bits, as docker's PathStat carries them
_GO_DIR, _GO_LINK = 1 << 31, 1 << 27


def stat_doc(root: str, name: str, path: str) -> dict[str, Any] | None:
    """The path's docker PathStat, or None when it does not exist (found in a child,
    as the copy itself: a stopped container's rootfs is mounted there). Runs in a
    process of its own (`main`): the engine forks for this, which a threaded server
    must not (a child of a threaded process can deadlock on a lock another thread
    held at the fork)."""
    paths = state.Paths(root)
    rec = containers.refresh_record(paths, name)
    r, w = os.pipe()

    def child() -> None:
        rootfd = copy.container_root(paths, name, rec, view=True)
        try:
            pfd, sname, st = copy.locate(rootfd, path, False)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        doc: dict[str, Any] | None = None
        if st is not None:
            link = ""
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                mode |= _GO_DIR
            elif stat.S_ISLNK(st.st_mode):
                mode |= _GO_LINK
                link = os.readlink(sname, dir_fd=pfd)
            doc = {"name": os.path.basename(path.rstrip("/")) or "/", "size": st.st_size,
                   "mode": mode, "mtime": time.strftime(
                       "%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)), "linkTarget": link}
        os.write(w, json.dumps(doc).encode())
    try:
        copy.in_child(child)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    doc = json.loads(data or b"null")
    return doc if isinstance(doc, dict) else None


def _header(doc: dict[str, Any]) -> tuple[str, str]:
    return ("X-Docker-Container-Path-Stat",
            base64.b64encode(json.dumps(doc).encode()).decode())


def _cove(root: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "cove.cli.main", "--root", root, *args]


async def _stat(root: str, name: str, path: str) -> dict[str, Any] | None:
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cove.engine.dockerapi.archive", root, name, path,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=_SRC)
    out, err = await p.communicate()
    if p.returncode != 0:
        raise ApiError(500, err.decode(errors="replace").strip() or "stat failed")
    doc = json.loads(out or b"null")
    return doc if isinstance(doc, dict) else None


async def _tar_stream(root: str, name: str, path: str) -> AsyncIterator[bytes]:
    p = await asyncio.create_subprocess_exec(
        *_cove(root, "cp", f"{name}:{path}", "-"), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=_SRC)
    assert p.stdout is not None
    try:
        while data := await p.stdout.read(1 << 16):
            yield data
    finally:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        await p.wait()


async def _extract(root: str, name: str, path: str, body: bytes) -> None:
    p = await asyncio.create_subprocess_exec(
        *_cove(root, "cp", "-", f"{name}:{path}"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=_SRC)
    _, err = await p.communicate(body)
    if p.returncode != 0:
        raise ApiError(400, err.decode(errors="replace").strip().removeprefix("cove: ")
                       or "extraction failed")


def register(r: Router, ctx: Ctx) -> None:
    root = ctx.root

    async def head_or_get(req: Request) -> Result:
        name = lookup(root, req.params["id"])
        path = req.q("path")
        if not path:
            raise ApiError(400, "path: required")
        doc = await _stat(root, name, path)
        if doc is None:
            raise ApiError(404, f"Could not find the file {path} in container {name}")
        if req.method == "HEAD":
            return Response(200, b"", "application/x-tar", [_header(doc)])
        s = Stream(_tar_stream(root, name, path), "application/x-tar")
        s.headers = [_header(doc)]
        return s

    async def put(req: Request) -> Result:
        name = lookup(root, req.params["id"])
        path = req.q("path")
        if not path:
            raise ApiError(400, "path: required")
        doc = await _stat(root, name, path)
        if doc is None:
            raise ApiError(404, f"Could not find the file {path} in container {name}")
        if not doc["mode"] & _GO_DIR:
            raise ApiError(400, f"extraction point is not a directory: {path}")
        await _extract(root, name, path, req.body)
        return Response(200, b"", "text/plain")

    r.add("GET", "/containers/{id}/archive", head_or_get)
    r.add("PUT", "/containers/{id}/archive", put)




_SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def main(argv: list[str]) -> int:
    """`python -m cove.engine.dockerapi.archive ROOT NAME PATH`: the PathStat JSON."""
    try:
        print(json.dumps(stat_doc(*argv[:3])))
    except CoveError as e:
        print(f"cove: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
