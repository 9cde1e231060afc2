"""Volume endpoints: create, list, inspect, remove, prune (local volumes)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from cove.engine import volumes
from cove.engine.dockerapi.common import Ctx, call
from cove.engine.dockerapi.server import ApiError, Request, Result, Router, empty, jsonr
from cove.errors import CoveError

ANONYMOUS = "cove.anonymous"


def _doc(info: dict[str, Any]) -> dict[str, Any]:
    return {"Name": info["Name"], "Driver": "local", "Mountpoint": info["Mountpoint"],
            "CreatedAt": info.get("CreatedAt"), "Labels": info.get("Labels") or None,
            "Scope": "local", "Options": None}


def _create(root: str, body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("Name") or None
    if body.get("Driver") not in (None, "", "local"):
        raise ApiError(400, f"Driver: {body['Driver']!r}: cove has local volumes")
    if body.get("DriverOpts"):
        raise ApiError(400, "DriverOpts: not supported by cove")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise ApiError(400, "Labels: expected an object")
    if name is None:
        name, labels = os.urandom(32).hex(), {**labels, ANONYMOUS: "true"}
    try:
        return volumes.ensure(root, str(name), {str(k): str(v) for k, v in labels.items()})
    except CoveError as e:
        raise ApiError(400, str(e)) from None


def _list(root: str, f: dict[str, list[str]]) -> list[dict[str, Any]]:
    out = []
    for info in volumes.ls(root):
        ok = True
        for k, vals in f.items():
            if k == "name":
                ok = ok and any(v in info["Name"] for v in vals)
            elif k == "label":
                labels = info.get("Labels") or {}
                ok = ok and all(a in labels and (not eq or labels[a] == b)
                                for a, eq, b in (v.partition("=") for v in vals))
            elif k == "dangling":
                ok = ok and (not volumes.users(root, info["Name"])) == (vals[0] in ("true", "1"))
            elif k == "driver":
                ok = ok and "local" in vals
            else:
                raise ApiError(400, f"invalid filter '{k}'")
        if ok:
            out.append(_doc(info))
    return out


def register(r: Router, ctx: Ctx) -> None:
    root = ctx.root

    async def create(req: Request) -> Result:
        return jsonr(_doc(await call(_create, root, req.obj())), 201)

    async def list_(req: Request) -> Result:
        return jsonr({"Volumes": await call(_list, root, req.filters()), "Warnings": None})

    async def inspect(req: Request) -> Result:
        try:
            return jsonr(_doc(await call(volumes.inspect, root, req.params["name"])))
        except CoveError as e:
            raise ApiError(404, f"get {req.params['name']}: no such volume") from e

    async def remove(req: Request) -> Result:
        try:
            await call(volumes.remove, root, req.params["name"], req.qbool("force"))
        except CoveError as e:
            if e.why == "no such volume":
                if req.qbool("force"):
                    return empty()
                raise ApiError(404, f"get {req.params['name']}: no such volume") from None
            if "in use" in e.why:
                raise ApiError(409, f"remove {req.params['name']}: volume is in use - "
                                    f"[{e.why.rpartition(' ')[2]}]") from None
            raise
        return empty()

    async def prune(req: Request) -> Result:
        f = req.filters()
        every = f.pop("all", ["false"])[0] in ("true", "1")
        gone = []
        for v in await call(_list, root, {**f, "dangling": ["true"]}):
            if every or (v.get("Labels") or {}).get(ANONYMOUS) == "true":
                with contextlib.suppress(CoveError):
                    await call(volumes.remove, root, v["Name"])
                    gone.append(v["Name"])
        return jsonr({"VolumesDeleted": gone or None, "SpaceReclaimed": 0})

    r.add("POST", "/volumes/create", create)
    r.add("GET", "/volumes", list_)
    r.add("POST", "/volumes/prune", prune)
    r.add("GET", "/volumes/{name}", inspect)
    r.add("DELETE", "/volumes/{name}", remove)
