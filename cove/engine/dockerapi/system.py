"""System endpoints: /_ping, /version, /info, /events, /system/df."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import AsyncIterator
from typing import Any

from cove.engine import events as engine_events
from cove.engine.dockerapi.common import Ctx, call, follow_file
from cove.engine.dockerapi.server import (
    API_VERSION,
    MIN_API_VERSION,
    ApiError,
    Request,
    Response,
    Result,
    Router,
    Stream,
    jsonr,
)

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _version() -> dict[str, Any]:
    import cove
    kernel = os.uname().release
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
               "GitCommit": "cove", "GoVersion": "python" + platform.python_version(),
               "Os": "linux", "Arch": ARCH, "KernelVersion": kernel, "BuildTime": "",
               "Experimental": "false"}
    return {"Platform": {"Name": "Cove"},
            "Components": [{"Name": "Engine", "Version": cove.__version__,
                            "Details": details}],
            "Version": cove.__version__, "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION, "GitCommit": "cove",
            "GoVersion": details["GoVersion"], "Os": "linux", "Arch": ARCH,
            "KernelVersion": kernel, "BuildTime": ""}


def _info(root: str) -> dict[str, Any]:
    import cove
    from cove.engine import containers
    from cove.engine.units import host_memory
    from cove.image.store import Store
    recs = containers.ps_records(root, all=True)
    running = sum(r["State"]["Status"] == "running" for r in recs)
    paused = sum(r["State"]["Status"] == "paused" for r in recs)
    images = len(Store(root).records())
    return {
        "ID": "cove", "Containers": len(recs), "ContainersRunning": running,
        "ContainersPaused": paused, "ContainersStopped": len(recs) - running - paused,
        "Images": images, "Driver": "overlay", "DriverStatus": [],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"],
                    "Authorization": None, "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "CpuCfsPeriod": True, "CpuCfsQuota": True,
        "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
        "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": False,
        "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": False,
        "NGoroutines": 0, "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": "2",
        "NEventsListener": 0, "KernelVersion": os.uname().release,
        "OperatingSystem": "Cove", "OSVersion": "", "OSType": "linux", "Architecture":
        platform.machine(), "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [],
                           "AllowNondistributableArtifactsHostnames": [],
                           "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {},
                           "Mirrors": []},
        "NCPU": os.cpu_count() or 1, "MemTotal": host_memory(), "GenericResources": None,
        "DockerRootDir": root, "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Name": os.uname().nodename, "Labels": [], "ExperimentalBuild": False,
        "ServerVersion": cove.__version__,
        "Runtimes": {"cove": {"path": "cove-runtime"}}, "DefaultRuntime": "cove",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "tini",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "cove-runtime", "Expected": "cove-runtime"},
        "InitCommit": {"ID": "", "Expected": ""}, "SecurityOptions": ["name=seccomp,"
                                                                      "profile=default",
                                                                      "name=cgroupns"],
        "Warnings": [],
    }


def _match(e: dict[str, Any], f: dict[str, list[str]]) -> bool:
    """docker's event filters: values of a key OR'ed, keys AND'ed."""
    actor = e.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    for key, vals in f.items():
        if key == "type":
            ok = e.get("Type") in vals
        elif key == "event":
            ok = e.get("Action") in vals or str(e.get("Action", "")).split(":")[0] in vals
        elif key in ("container", "network", "volume"):
            ok = e.get("Type") == key and any(
                v in (actor.get("ID"), attrs.get("name")) or
                str(actor.get("ID", "")).startswith(v) for v in vals)
        elif key == "image":
            ok = any(v in (attrs.get("image"), actor.get("ID")) for v in vals)
        elif key == "label":
            ok = all(k in attrs and (not eq or attrs[k] == v)
                     for k, eq, v in (x.partition("=") for x in vals))
        elif key == "scope":
            ok = "local" in vals
        else:
            raise ApiError(400, f"invalid filter '{key}'")
        if not ok:
            return False
    return True


def _when(req: Request, name: str) -> float | None:
    v = req.q(name)
    if not v:
        return None
    from cove.engine.logs import parse_since
    return parse_since(v, name)


def register(r: Router, ctx: Ctx) -> None:
    async def ping(req: Request) -> Result:
        return Response(200, b"OK", "text/plain; charset=utf-8",
                        [("Cache-Control", "no-cache, no-store, must-revalidate"),
                         ("Pragma", "no-cache")])

    async def version(req: Request) -> Result:
        return jsonr(_version())

    async def info(req: Request) -> Result:
        return jsonr(await call(_info, ctx.root))

    async def events(req: Request) -> Result:
        f = req.filters()
        for k in f:   # an unknown filter is a 400 before the stream starts
            if k not in ("type", "event", "container", "network", "volume", "image",
                         "label", "scope"):
                raise ApiError(400, f"invalid filter '{k}'")
        since, until = _when(req, "since"), _when(req, "until")
        return Stream(_events(ctx.root, f, since, until))

    async def df(req: Request) -> Result:
        from cove.engine import containers, volumes
        recs = await call(containers.ps_records, ctx.root, True)
        vols = await call(volumes.ls, ctx.root)
        from cove.engine.dockerapi import images as images_api
        imgs = await call(images_api.list_images, ctx.root)
        return jsonr({"LayersSize": sum(i["Size"] for i in imgs), "Images": imgs,
                      "Containers": [{"Id": r["Id"], "Names": ["/" + r["Name"]],
                                      "Image": r["Image"], "State": r["State"]["Status"],
                                      "SizeRw": 0, "SizeRootFs": 0} for r in recs],
                      "Volumes": [{**v, "UsageData": {"Size": -1, "RefCount": -1}}
                                  for v in vols], "BuildCache": []})

    r.add("GET", "/_ping", ping)
    r.add("GET", "/version", version)
    r.add("GET", "/info", info)
    r.add("GET", "/events", events)
    r.add("GET", "/system/df", df)


async def _events(root: str, f: dict[str, list[str]], since: float | None,
                  until: float | None) -> AsyncIterator[bytes]:
    if since is not None or until is not None:
        for e in await call(engine_events.history, root, since or 0.0, until):
            if _match(e, f):
                yield json.dumps(e).encode() + b"\n"
        if until is not None and until <= time.time():
            return

    def alive() -> bool:
        return until is None or time.time() <= until
    async for line in follow_file(engine_events.path(root), alive, start_at_end=True, nap_max=0.2):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if until is not None and e.get("timeNano", 0) > until * 1e9:
            return
        if _match(e, f):
            yield line + b"\n"
