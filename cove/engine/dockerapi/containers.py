"""Container endpoints: create, start, stop, kill, restart, wait, remove, list, inspect,
logs, top, stats, rename, pause/unpause, prune, resize. Attach, exec and archive are in
their own modules."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from cove.engine import containers, events, state
from cove.engine import logs as engine_logs
from cove.engine.dockerapi import translate
from cove.engine.dockerapi.common import (
    STREAM_IDS,
    Ctx,
    call,
    follow_file,
    frame,
    lookup,
    nap,
)
from cove.engine.dockerapi.server import (
    ApiError,
    Request,
    Result,
    Router,
    Stream,
    empty,
    jsonr,
    status_of,
)
from cove.errors import CoveError

_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _load(root: str, name: str) -> containers.Record | None:
    return state.load_record(state.Paths(root).cdir(name))


def _create(root: str, body: dict[str, Any], name: str | None) -> containers.Record:
    from cove.image import builtin
    from cove.image.store import Store
    o, extras = translate.run_options(body, name)
    if not builtin.is_builtin(o.image):
        try:
            Store(root).resolve(o.image)
        except CoveError:
            raise ApiError(404, f"No such image: {o.image}") from None
    if name and os.path.lexists(state.Paths(root).cdir(name)):
        other = _load(root, name)
        oid = other.get("Id", "") if other else ""
        raise ApiError(409, f'Conflict. The container name "/{name}" is already in use by '
                            f'container "{oid}". You have to remove (or '
                            "rename) that container to be able to reuse that name.")
    try:
        rec = containers.create(root, o)
    except CoveError as e:
        raise ApiError(status_of(e, 400), str(e)) from None

    def keep(r: containers.Record) -> None:
        r["Api"] = extras
        if extras["OpenStdin"] and not extras["StdinOnce"]:
            r["Config"]["OpenStdin"] = True   # the container holds its stdin open
    return state.update_record(state.Paths(root).cdir(rec["Name"]), keep)


def _matches(rec: containers.Record, f: dict[str, list[str]]) -> bool:
    for key, vals in f.items():
        if key == "name":
            ok = any(re.search(p, "/" + rec["Name"]) for p in vals)
        elif key == "status":
            bad = [s for s in vals if s not in _STATUSES]
            if bad:
                raise ApiError(400, f"invalid filter 'status={bad[0]}'")
            ok = rec["State"]["Status"] in vals
        elif key == "id":
            ok = any(rec["Id"].startswith(p) for p in vals)
        elif key == "label":
            labels = rec["Config"].get("Labels") or {}
            ok = all(k in labels and (not eq or labels[k] == v)
                     for k, eq, v in (p.partition("=") for p in vals))
        elif key == "exited":
            ok = rec["State"]["Status"] == "exited" and str(rec["State"]["ExitCode"]) in vals
        elif key == "ancestor":
            ok = any(p in (rec.get("Image"), rec.get("ImageDigest")) for p in vals)
        elif key == "network":
            ok = any(p in ((rec.get("NetworkSettings") or {}).get("Networks") or {})
                     or p == rec["HostConfig"].get("NetworkMode") for p in vals)
        elif key == "volume":
            ok = any(p in (m.get("Name"), m.get("Destination"))
                     for m in rec.get("Mounts") or [] for p in vals)
        elif key in ("health", "before", "since", "isolation", "publish", "expose",
                     "is-task"):
            raise ApiError(400, f"filter '{key}' is not supported by cove")
        else:
            raise ApiError(400, f"invalid filter '{key}'")
        if not ok:
            return False
    return True


def _list(root: str, all_: bool, limit: int, f: dict[str, list[str]]) -> list[dict[str, Any]]:
    recs = containers.ps_records(root, all=all_ or "status" in f or "exited" in f)
    recs = [r for r in recs if _matches(r, f)]
    recs.sort(key=lambda r: str(r["Created"]), reverse=True)
    if limit > 0:
        recs = recs[:limit]
    return [translate.list_doc(r) for r in recs]


def _last_exit(root: str, cid: str) -> int | None:
    """The exit code of a container that is gone (auto-removed): its last die event."""
    for e in reversed(events.history(root, time.time() - 3600)):
        if e.get("Action") == "die" and (e.get("Actor") or {}).get("ID") == cid:
            with contextlib.suppress(ValueError, TypeError):
                return int(e["Actor"]["Attributes"]["exitCode"])
    return None


async def wait_for(root: str, name: str, cond: str, rec: containers.Record) -> dict[str, Any]:
    """docker's wait: not-running (now, or when it stops), next-exit (its next exit),
    removed (when it is gone); `rec` the record when the wait was asked."""
    cid, fin0 = rec["Id"], rec["State"].get("FinishedAt")
    last = rec
    seen_active = rec["State"]["Status"] in containers.ACTIVE
    n = 0
    while True:
        cur = _load(root, name)
        if cur is not None and cur["Id"] != cid:
            cur = None
        if cur is None:
            code = await call(_last_exit, root, cid)
            if code is None:
                code = int(last["State"]["ExitCode"])
            return {"StatusCode": code, "Error": None}
        last = cur
        status = cur["State"]["Status"]
        active = status in containers.ACTIVE
        seen_active = seen_active or active
        done = not active and (cond == "not-running" or (
            cond == "next-exit" and (seen_active or cur["State"].get("FinishedAt") != fin0)))
        if done:
            err = cur["State"].get("Error")
            return {"StatusCode": int(cur["State"]["ExitCode"]),
                    "Error": {"Message": err} if err else None}
        n += 1
        if n % 100 == 0 and active:   # a monitor that died: the engine corrects it
            with contextlib.suppress(CoveError):
                await call(containers.refresh_record, state.Paths(root), name)
        await nap(cur, 0.5 if active else 0.02 if n < 100 else 0.1)


def log_alive(root: str, name: str, cid: str) -> bool:
    rec = _load(root, name)
    if rec is None or rec["Id"] != cid:
        return False
    if rec["State"]["Status"] in containers.ACTIVE:
        return True
    mon = int(rec.get("MonitorPid") or 0)
    return bool(mon) and state.pid_alive(mon)


def entry_bytes(e: dict[str, Any], tty: bool, timestamps: bool) -> bytes:
    data = str(e["log"]).encode()
    if timestamps:
        data = e["time"].encode() + b" " + data
    return data if tty else frame(STREAM_IDS.get(e["stream"], 1), data)


async def _logs(root: str, name: str, rec: containers.Record, req: Request
                ) -> AsyncIterator[bytes]:
    want = {s for s in ("stdout", "stderr") if req.qbool(s)}
    follow, ts = req.qbool("follow"), req.qbool("timestamps")
    tail_s = req.q("tail", "all") or "all"
    tail = -1 if tail_s == "all" else int(tail_s) if tail_s.isdigit() else -1
    since = engine_logs.parse_since(req.q("since") or "0") \
        if req.q("since") not in (None, "", "0") else 0.0
    until = engine_logs.parse_since(req.q("until") or "0", "until") \
        if req.q("until") not in (None, "", "0") else 0.0
    tty = bool(rec["Config"].get("Tty"))
    path = engine_logs.log_path(state.Paths(root).cdir(name))
    cid = rec["Id"]
    # history, read through the handle we go on following: no line lost in between
    f = await call(_open_or_none, path)
    hist = await call(_history, path, f)
    hist = [e for e in hist if (not since or state.parse_rfc3339(e["time"]) >= since)
            and (not until or state.parse_rfc3339(e["time"]) <= until)]
    if tail >= 0:
        hist = hist[len(hist) - tail:] if tail else []
    for e in hist:
        if e["stream"] in want:
            yield entry_bytes(e, tty, ts)
    if not follow:
        if f is not None:
            f.close()
        return
    async for line in follow_file(path, lambda: log_alive(root, name, cid),
                                  start_at_end=False, f=f):
        e = engine_logs._entry(line)
        if e is None or e["stream"] not in want:
            continue
        if until and state.parse_rfc3339(e["time"]) > until:
            return
        yield entry_bytes(e, tty, ts)


def _open_or_none(path: str) -> Any:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _history(path: str, f: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in engine_logs._files(path)[:-1]:
        out += engine_logs.read_entries_of(p)
    if f is not None:
        out += [e for x in f.read().split(b"\n") if x and (e := engine_logs._entry(x))]
    return out


def _stats_doc(root: str, name: str, pre: dict[str, Any] | None) -> dict[str, Any]:
    from cove.engine.client import _system_cpu_ns
    rec = containers.inspect_record(root, name)
    base: dict[str, Any] = {"read": state.now_rfc3339(), "preread": "0001-01-01T00:00:00Z",
                            "name": "/" + name, "id": rec["Id"],
                            "precpu_stats": pre or {"cpu_usage": {"total_usage": 0},
                                                    "system_cpu_usage": 0,
                                                    "online_cpus": os.cpu_count() or 1}}
    if rec["State"]["Status"] not in ("running", "paused"):
        return {**base, "pids_stats": {}, "memory_stats": {}, "blkio_stats": {},
                "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
                "networks": {}}
    s = containers.stats(root, name)
    raw = s.get("Raw") or {}
    cpu = raw.get("cpu", {}).get("usage", {})
    return {**base, "pids_stats": {"current": s["Pids"]},
            "memory_stats": {"usage": s["MemUsage"], "limit": s["MemLimit"],
                             "stats": {"inactive_file": s["MemCache"],
                                       **raw.get("memory", {}).get("raw", {})}},
            "cpu_stats": {"cpu_usage": {"total_usage": s["CPUNanos"],
                                        "usage_in_kernelmode": cpu.get("kernel", 0),
                                        "usage_in_usermode": cpu.get("user", 0)},
                          "system_cpu_usage": _system_cpu_ns(),
                          "online_cpus": os.cpu_count() or 1, "throttling_data": {}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 0, "minor": 0, "op": "read", "value": s["BlockRead"]},
                {"major": 0, "minor": 0, "op": "write", "value": s["BlockWrite"]}]},
            "networks": {"eth0": {"rx_bytes": s["NetRx"], "tx_bytes": s["NetTx"],
                                  "rx_packets": 0, "tx_packets": 0, "rx_errors": 0,
                                  "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0}}}


class _Routes:
    """The handlers of these endpoints, bound to the server's state (`Ctx`)."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.root = ctx.root

    async def create(self, req: Request) -> Result:
        root = self.root
        name = req.q("name") or None
        if name is not None:
            if not _NAME.match(name):
                raise ApiError(400, f"Invalid container name ({name}), only "
                                    "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            name = name.lstrip("/")
        if req.q("platform"):
            raise ApiError(400, "platform: not supported by cove's API yet")
        rec = await call(_create, root, req.obj(), name)
        return jsonr({"Id": rec["Id"], "Warnings": []}, 201)

    async def list_(self, req: Request) -> Result:
        root = self.root
        if req.qbool("size"):
            pass  # sizes are reported as 0
        return jsonr(await call(_list, root, req.qbool("all"), req.qint("limit", -1) or -1,
                                req.filters()))

    async def inspect(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        rec = await call(containers.inspect_record, root, name)
        return jsonr(translate.inspect_doc(rec))

    async def start(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        rec = await call(containers.refresh_record, state.Paths(root), name)
        if rec["State"]["Status"] == "running":
            return empty(304)
        if req.body.strip() and req.obj():
            raise ApiError(400, "a HostConfig at start is not supported (API >= 1.24 "
                                "takes it at create)")
        try:
            await call(containers.start, root, name)
        except CoveError as e:
            from cove.engine import hostconfig
            mapped = hostconfig.exec_error(e)
            raise ApiError(status_of(e, 500) if mapped is None else 400,
                           str(mapped or e)) from None
        return empty()

    async def stop(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        rec = await call(containers.refresh_record, state.Paths(root), name)
        if rec["State"]["Status"] not in containers.ACTIVE:
            return empty(304)
        t = req.qint("t")
        await call(containers.stop, root, name, None if t is None else float(t))
        return empty()

    async def restart(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        t = req.qint("t")
        await call(containers.restart, root, name, None if t is None else float(t))
        return empty()

    async def kill(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        sig = req.q("signal") or "KILL"
        try:
            await call(containers.kill, root, name, sig)
        except CoveError as e:
            if e.why == "is not running":
                raise ApiError(409, f"Container {req.params['id']} is not running") from None
            raise
        return empty()

    async def wait(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        cond = req.q("condition") or "not-running"
        if cond not in ("not-running", "next-exit", "removed"):
            raise ApiError(400, f"invalid condition: {cond!r}")
        rec = await call(containers.refresh_record, state.Paths(root), name)

        async def result() -> AsyncIterator[bytes]:
            # the headers go at once (the CLI's wait returns only when it has them, and
            # it starts the container after that), the body when the wait is over
            yield b""
            yield json.dumps(await wait_for(root, name, cond, rec)).encode() + b"\n"
        return Stream(result())

    async def remove(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        force = req.qbool("force")
        if req.qbool("link"):
            raise ApiError(400, "link: cove has no links")
        rec = await call(containers.refresh_record, state.Paths(root), name)
        if rec["State"]["Status"] in containers.ACTIVE and not force:
            raise ApiError(409, f"You cannot remove a {rec['State']['Status']} container "
                                f"{rec['Id']}. Stop the container before attempting "
                                "removal or force remove")
        if not req.qbool("v"):
            await call(state.update_record, state.Paths(root).cdir(name),
                       lambda x: x.__setitem__("AnonymousVolumes", []))
        with contextlib.suppress(CoveError):   # (an auto-removed one went meanwhile)
            await call(containers.remove, root, name, force)
        return empty()

    async def logs(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        if not req.qbool("stdout") and not req.qbool("stderr"):
            raise ApiError(400, "you must choose at least one stream")
        rec = await call(containers.inspect_record, root, name)
        tty = bool(rec["Config"].get("Tty"))
        return Stream(_logs(root, name, rec, req), "application/vnd.docker.raw-stream"
                      if tty else "application/vnd.docker.multiplexed-stream")

    async def top(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        args = (req.q("ps_args") or "").split() or None
        try:
            text = await call(containers.top, root, name, args)
        except CoveError as e:
            if "not running" in e.why or "stopped" in e.why:
                raise ApiError(409, f"Container {name} is not running") from None
            raise
        lines = text.splitlines()
        titles = lines[0].split() if lines else []
        procs = [ln.split(None, max(len(titles) - 1, 0)) for ln in lines[1:] if ln.strip()]
        return jsonr({"Titles": titles, "Processes": procs})

    async def stats(self, req: Request) -> Result:
        root = self.root
        name = lookup(root, req.params["id"])
        stream = req.qbool("stream", True) and not req.qbool("one-shot")
        if not stream:
            doc = await call(_stats_doc, root, name, None)
            if not req.qbool("one-shot"):   # docker samples twice for a CPU delta
                await asyncio.sleep(0.2)
                doc = await call(_stats_doc, root, name, doc["cpu_stats"])
            return jsonr(doc)

        async def gen() -> AsyncIterator[bytes]:
            pre = None
            while True:
                try:
                    doc = await call(_stats_doc, root, name, pre)
                except CoveError:
                    return
                yield json.dumps(doc).encode() + b"\n"
                if not doc["pids_stats"]:
                    return
                pre = doc["cpu_stats"]
                await asyncio.sleep(1.0)
        return Stream(gen())

    async def rename(self, req: Request) -> Result:
        root = self.root
        from cove.engine import ops
        name = lookup(root, req.params["id"])
        new = req.q("name") or ""
        if not _NAME.match(new):
            raise ApiError(400, f"Invalid container name ({new})")
        await call(ops.rename, root, name, new.lstrip("/"))
        return empty()

    async def pause(self, req: Request) -> Result:
        root = self.root
        from cove.engine import ops
        await call(ops.pause, root, lookup(root, req.params["id"]))
        return empty()

    async def unpause(self, req: Request) -> Result:
        root = self.root
        from cove.engine import ops
        await call(ops.unpause, root, lookup(root, req.params["id"]))
        return empty()

    async def resize(self, req: Request) -> Result:
        root = self.root
        from cove.engine.dockerapi import ttyhijack
        return await ttyhijack.resize(root, req)

    async def prune(self, req: Request) -> Result:
        root = self.root
        f = req.filters()
        recs = await call(containers.ps_records, root, True)
        gone = []
        for rec in recs:
            if rec["State"]["Status"] in ("created", "exited", "dead") and (
                    not f.get("label") or _matches(rec, {"label": f["label"]})):
                with contextlib.suppress(CoveError):
                    await call(containers.remove, root, rec["Name"], False)
                    gone.append(rec["Id"])
        return jsonr({"ContainersDeleted": gone or None, "SpaceReclaimed": 0})

    async def changes(self, req: Request) -> Result:
        root = self.root
        from cove.engine import commit
        name = lookup(root, req.params["id"])
        kinds = {"C": 0, "A": 1, "D": 2}
        out = [{"Path": p, "Kind": kinds.get(k, 0)} for k, p in
               await call(commit.diff, root, name)]
        return jsonr(out or None)


def register(r: Router, ctx: Ctx) -> None:
    h = _Routes(ctx)
    r.add("POST", "/containers/create", h.create)
    r.add("GET", "/containers/json", h.list_)
    r.add("POST", "/containers/prune", h.prune)
    r.add("GET", "/containers/{id}/json", h.inspect)
    r.add("POST", "/containers/{id}/start", h.start)
    r.add("POST", "/containers/{id}/stop", h.stop)
    r.add("POST", "/containers/{id}/restart", h.restart)
    r.add("POST", "/containers/{id}/kill", h.kill)
    r.add("POST", "/containers/{id}/wait", h.wait)
    r.add("DELETE", "/containers/{id}", h.remove)
    r.add("GET", "/containers/{id}/logs", h.logs)
    r.add("GET", "/containers/{id}/top", h.top)
    r.add("GET", "/containers/{id}/stats", h.stats)
    r.add("POST", "/containers/{id}/rename", h.rename)
    r.add("POST", "/containers/{id}/pause", h.pause)
    r.add("POST", "/containers/{id}/unpause", h.unpause)
    r.add("POST", "/containers/{id}/resize", h.resize)
    r.add("GET", "/containers/{id}/changes", h.changes)
