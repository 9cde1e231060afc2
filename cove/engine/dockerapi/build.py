"""`POST /build`: docker 20.10's classic builder endpoint, so `docker build` and
compose's `build:` work against `cove serve`. The body is the build context as a tar;
the query is turned into build options and the build's progress into docker's JSON
stream by cove/image/build/dockerapi.py. The server advertises no BuildKit, so clients
use this path. `networkmode=bridge` gives RUN steps the engine's default bridge network
(cove/engine/buildnet.py), as `cove build --network bridge`."""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import AsyncIterator

from cove.engine.dockerapi.common import Ctx, json_line
from cove.engine.dockerapi.server import ApiError, Request, Result, Router, Stream
from cove.errors import CoveError
from cove.image.store import Store


def register(r: Router, ctx: Ctx) -> None:
    root = ctx.root

    async def build(req: Request) -> Result:
        from cove.image.build import dockerapi as build_dockerapi
        query = {k: v[-1] for k, v in req.query.items() if v}
        # `networkmode=bridge` (docker build --network bridge): RUN on the engine's
        # default bridge network, as `cove build --network bridge`; the image layer
        # makes no network (it reads bridge and default as none), cove.engine.buildnet
        # does. "default" stays none: a build reaches no network unless asked to.
        bridged = query.get("networkmode") == "bridge"
        if bridged:
            del query["networkmode"]
        try:
            opts = build_dockerapi.options_from_query(query, io.BytesIO(req.body),
                                                      tags=list(req.query.get("t") or []))
        except CoveError as e:
            raise ApiError(400, str(e)) from None
        if bridged:
            from cove.engine.buildnet import bridge_netns
            opts.network = "bridge"
            opts.bridge = functools.partial(bridge_netns, root)
        messages = build_dockerapi.stream(Store(root), opts, quiet=req.qbool("q"))

        async def chunks() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            while (msg := await loop.run_in_executor(None, next, messages, None)) \
                    is not None:
                yield json_line(msg)
        return Stream(chunks())

    r.add("POST", "/build", build)
