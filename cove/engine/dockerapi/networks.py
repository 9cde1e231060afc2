"""Network endpoints: create (a bridge with a subnet), list, inspect, connect,
disconnect, remove, prune. Labels and the options docker clients send that the engine
has no field for are kept beside the engine's record, in `<root>/dockerapi/networks/`,
so that compose finds its labels again; `host` and `none` are listed as docker lists
them."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

from cove.engine import network, state
from cove.engine.dockerapi.common import Ctx, call, lookup
from cove.engine.dockerapi.server import ApiError, Request, Result, Router, empty, jsonr
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record

_BUILTIN = {"host": "host", "none": "null"}


def _meta_path(root: str, name: str) -> str:
    return os.path.join(root, "dockerapi", "networks", name + ".json")


def _meta(root: str, name: str) -> dict[str, Any]:
    try:
        with open(_meta_path(root, name)) as f:
            v = json.load(f)
            return v if isinstance(v, dict) else {}
    except (OSError, ValueError):
        return {}


def _doc(root: str, n: dict[str, Any]) -> dict[str, Any]:
    meta = _meta(root, n["Name"])
    members = {}
    for cname, c in (n.get("Containers") or {}).items():
        rec: Mapping[str, Any] = state.load_record(state.Paths(root).cdir(cname)) or {}
        members[rec.get("Id", cname)] = {"Name": cname, "EndpointID": c.get("Veth", ""),
                                         "MacAddress": c.get("MacAddress", ""),
                                         "IPv4Address": c.get("IPv4Address", ""),
                                         "IPv6Address": ""}
    return {"Name": n["Name"], "Id": n["Id"], "Created": n.get("Created"), "Scope": "local",
            "Driver": "bridge", "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None,
                     "Config": [{"Subnet": n["Subnet"], "Gateway": n["Gateway"]}]},
            "Internal": False, "Attachable": bool(meta.get("Attachable")), "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": members,
            "Options": meta.get("Options") or {}, "Labels": meta.get("Labels") or {}}


def _builtin(name: str) -> dict[str, Any]:
    return {"Name": name, "Id": name, "Created": "0001-01-01T00:00:00Z", "Scope": "local",
            "Driver": _BUILTIN[name], "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []}, "Internal": False,
            "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
            "ConfigOnly": False, "Containers": {}, "Options": {}, "Labels": {}}


def find(root: str, ref: str) -> dict[str, Any]:
    """By name, id or id prefix (docker's); 404 when none."""
    with contextlib.suppress(CoveError):
        return network.inspect(root, ref)
    hits = [n for n in network.ls(root) if ref and n["Id"].startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    raise ApiError(404, f"network {ref} not found")


def _create(root: str, body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("Name")
    if not name or not isinstance(name, str):
        raise ApiError(400, "Name: required")
    if body.get("Driver") not in (None, "", "bridge"):
        raise ApiError(400, f"Driver: {body['Driver']!r}: cove has bridge networks")
    for k in ("Internal", "EnableIPv6", "Ingress", "ConfigOnly"):
        if body.get(k):
            raise ApiError(400, f"{k}: not supported by cove")
    if (body.get("ConfigFrom") or {}).get("Network"):
        raise ApiError(400, "ConfigFrom: not supported by cove")
    ipam = body.get("IPAM") or {}
    pools = ipam.get("Config") or []
    if ipam.get("Driver") not in (None, "", "default") or len(pools) > 1:
        raise ApiError(400, "IPAM: cove takes the default driver and one pool")
    subnet = None
    if pools:
        p = pools[0]
        for k in ("IPRange", "AuxiliaryAddresses"):
            if p.get(k):
                raise ApiError(400, f"IPAM.Config.{k}: not supported by cove")
        subnet = p.get("Subnet") or None
        if p.get("Gateway") and subnet:
            import ipaddress
            first = str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
            if p["Gateway"] != first:
                raise ApiError(400, f"IPAM Gateway {p['Gateway']}: cove's gateway is the "
                                    f"subnet's first address ({first})")
    if name in _BUILTIN or (name == network.DEFAULT and _exists(root, name)):
        raise ApiError(409, f"network with name {name} already exists")
    try:
        n = network.create(root, name, subnet)
    except CoveError as e:
        status = 409 if "already exists" in e.why else 400
        raise ApiError(status, str(e)) from None
    meta = {"Labels": body.get("Labels") or {}, "Options": body.get("Options") or {},
            "Attachable": bool(body.get("Attachable"))}
    os.makedirs(os.path.dirname(_meta_path(root, name)), exist_ok=True)
    state.write_atomic(_meta_path(root, name), json.dumps(meta).encode(), 0o644)
    return n


def _exists(root: str, name: str) -> bool:
    try:
        network.inspect(root, name)
        return True
    except CoveError:
        return False


def _remove(root: str, ref: str) -> None:
    n = find(root, ref)
    try:
        network.remove(root, n["Name"])
    except CoveError as e:
        if "in use" in e.why:
            raise ApiError(403, f"error while removing network: network {n['Name']} id "
                                f"{n['Id']} has active endpoints") from None
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_meta_path(root, n["Name"]))


def _match(doc: dict[str, Any], f: dict[str, list[str]]) -> bool:
    for k, vals in f.items():
        if k == "name":
            ok = any(v in doc["Name"] for v in vals)
        elif k == "id":
            ok = any(doc["Id"].startswith(v) for v in vals)
        elif k == "driver":
            ok = doc["Driver"] in vals
        elif k == "label":
            labels = doc["Labels"] or {}
            ok = all(a in labels and (not eq or labels[a] == b)
                     for a, eq, b in (v.partition("=") for v in vals))
        elif k == "type":
            ok = ("builtin" if doc["Name"] in _BUILTIN or doc["Name"] == network.DEFAULT
                  else "custom") in vals
        elif k == "scope":
            ok = "local" in vals
        elif k == "dangling":
            ok = (not doc["Containers"]) == (vals[0] in ("true", "1"))
        else:
            raise ApiError(400, f"invalid filter '{k}'")
        if not ok:
            return False
    return True


def _list(root: str, f: dict[str, list[str]]) -> list[dict[str, Any]]:
    docs = [_doc(root, n) for n in network.ls(root)]
    docs += [_builtin(b) for b in _BUILTIN]
    return [d for d in docs if _match(d, f)]


def register(r: Router, ctx: Ctx) -> None:
    root = ctx.root

    async def create(req: Request) -> Result:
        n = await call(_create, root, req.obj())
        return jsonr({"Id": n["Id"], "Warning": ""}, 201)

    async def list_(req: Request) -> Result:
        return jsonr(await call(_list, root, req.filters()))

    async def inspect(req: Request) -> Result:
        ref = req.params["id"]
        if ref in _BUILTIN:
            return jsonr(_builtin(ref))
        n = await call(find, root, ref)
        return jsonr(await call(_doc, root, n))

    async def remove(req: Request) -> Result:
        if req.params["id"] in _BUILTIN:
            raise ApiError(403, f"{req.params['id']} is a pre-defined network and cannot "
                                "be removed")
        await call(_remove, root, req.params["id"])
        return empty()

    async def connect(req: Request) -> Result:
        from cove.engine import netcontainer
        body = req.obj()
        n = await call(find, root, req.params["id"])
        name = lookup(root, str(body.get("Container") or ""))
        epc = body.get("EndpointConfig") or {}
        ip = ((epc.get("IPAMConfig") or {}).get("IPv4Address")) or None
        aliases = [a for a in epc.get("Aliases") or [] if isinstance(a, str)]
        rec = await call(state.load_record, state.Paths(root).cdir(name)) or {}
        joined = n["Name"] == rec.get("HostConfig", {}).get("NetworkMode") or \
            n["Name"] in (rec.get("Connected") or {})
        if not joined:
            try:
                await call(netcontainer.connect, root, n["Name"], name, ip)
            except CoveError as e:
                raise ApiError(409 if "already exists" in e.why else 400, str(e)) from None
        if aliases:
            def keep(x: Record) -> None:
                api = x.setdefault("Api", {})
                old = api.setdefault("Aliases", {}).get(n["Name"]) or []
                api["Aliases"][n["Name"]] = list(dict.fromkeys([*old, *aliases]))
            await call(state.update_record, state.Paths(root).cdir(name), keep)
        elif joined:
            raise ApiError(403, f"endpoint with name {name} already exists in network "
                                f"{n['Name']}")
        return empty(200)

    async def disconnect(req: Request) -> Result:
        from cove.engine import netcontainer
        body = req.obj()
        n = await call(find, root, req.params["id"])
        name = lookup(root, str(body.get("Container") or ""))
        await call(netcontainer.disconnect, root, n["Name"], name, bool(body.get("Force")))
        return empty(200)

    async def prune(req: Request) -> Result:
        gone = await call(network.prune, root)
        for g in gone:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_meta_path(root, g))
        return jsonr({"NetworksDeleted": gone or None})

    r.add("POST", "/networks/create", create)
    r.add("GET", "/networks", list_)
    r.add("POST", "/networks/prune", prune)
    r.add("GET", "/networks/{id}", inspect)
    r.add("DELETE", "/networks/{id}", remove)
    r.add("POST", "/networks/{id}/connect", connect)
    r.add("POST", "/networks/{id}/disconnect", disconnect)
