"""Image tarballs: GET /images/get?names=... and GET /images/{name}/get (`docker save`,
a docker-archive streamed as it is written) and POST /images/load (`docker load`: the
body is the archive; the answer docker's JSON stream, `{"stream": "Loaded image:
NAME\\n"}` a line). cove/image/archive.py does the work, as for `cove save`/`load`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
from collections.abc import AsyncIterator

from cove.engine import events
from cove.engine.dockerapi.common import Ctx, call, json_line
from cove.engine.dockerapi.images import resolve
from cove.engine.dockerapi.server import ApiError, Request, Result, Router, Stream
from cove.errors import CoveError
from cove.image.store import Store


async def _save(root: str, refs: list[str]) -> Result:
    if not refs:
        raise ApiError(400, "names: at least one image is required")
    names = []
    for ref in refs:  # 404 before the 200 of a stream; an IMAGE ID as the image
        try:
            await call(Store(root).resolve, ref)
            names.append(ref)
        except CoveError:
            names.append(await call(resolve, root, ref))
    r, w = os.pipe()
    failed: list[str] = []

    def write() -> None:
        from cove.image.archive import save
        try:
            with os.fdopen(w, "wb") as out:
                save(Store(root), names, out)
        except (CoveError, OSError) as e:  # the client left (EPIPE), or a store error
            failed.append(str(e))

    async def chunks() -> AsyncIterator[bytes]:
        t = threading.Thread(target=write, name="images/get", daemon=True)
        t.start()
        try:
            while data := await asyncio.to_thread(os.read, r, 1 << 20):
                yield data
        finally:
            os.close(r)  # a writer still writing gets EPIPE and stops
            await asyncio.to_thread(t.join)
    return Stream(chunks(), ctype="application/x-tar")


def _load(root: str, body: bytes) -> list[str]:
    from cove.image.archive import load
    st = Store(root)
    out = []
    for n in load(st, io.BytesIO(body)):
        if n.startswith("sha256:"):
            out.append(f"Loaded image ID: {st.config_digest(n) or n}\n")
        else:
            out.append(f"Loaded image: {n.removeprefix('docker.io/library/')}\n")
            with contextlib.suppress(Exception):
                events.emit(root, "image", "load", n, name=n)
    return out


def register(r: Router, ctx: Ctx) -> None:
    root = ctx.root

    async def get_many(req: Request) -> Result:
        return await _save(root, req.query.get("names") or [])

    async def get_one(req: Request) -> Result:
        return await _save(root, [req.params["name"]])

    async def load(req: Request) -> Result:
        if not req.body:
            raise ApiError(400, "no image archive in the request body")
        try:
            lines = await call(_load, root, req.body)
        except CoveError as e:
            raise ApiError(400, str(e)) from None

        async def out() -> AsyncIterator[bytes]:  # (quiet=1 only hides progress: none)
            for line in lines:
                yield json_line({"stream": line})
        return Stream(out())

    r.add("GET", "/images/get", get_many)
    r.add("GET", "/images/{name*}/get", get_one)
    r.add("POST", "/images/load", load)
