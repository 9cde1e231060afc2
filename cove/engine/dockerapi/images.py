"""Image endpoints: list, inspect, pull (POST /images/create, docker's JSON progress
stream), push, tag, remove, history, prune. docker's image Id is the config's digest
(what `docker images` shows); an image is found by it, a prefix of it, a name or the
manifest digest Cove keeps it under."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from cove.engine import events
from cove.engine.dockerapi.common import Ctx, call, json_line
from cove.engine.dockerapi.server import ApiError, Request, Result, Router, Stream, jsonr
from cove.errors import CoveError
from cove.image.progress import Progress
from cove.image.store import Store


def resolve(root: str, ref: str) -> str:
    """The manifest digest Cove keeps `ref` under; 404 when none."""
    st = Store(root)
    try:
        return st.resolve(ref)
    except CoveError:
        pass
    want = ref if ref.startswith("sha256:") else "sha256:" + ref
    hits = []
    for rec in st.records():
        with contextlib.suppress(CoveError):
            if st.config_digest(rec.digest).startswith(want) and len(want) > 10:
                hits.append(rec.digest)
    if len(hits) == 1:
        return hits[0]
    raise ApiError(404, f"No such image: {ref}")


def _tags(names: list[str]) -> list[str]:
    return [n.removeprefix("docker.io/library/").removeprefix("docker.io/")
            for n in names if "@" not in n]


def inspect_image(root: str, digest: str) -> dict[str, Any]:
    st = Store(root)
    img = st.image(digest)
    tags = _tags(img.names)
    cfg = img.config.config.to_json()
    return {"Id": img.manifest.config.digest, "RepoTags": tags,
            "RepoDigests": [f"{t.rsplit(':', 1)[0]}@{img.digest}" for t in tags],
            "Parent": "", "Comment": "", "Created": img.config.created or
            "1970-01-01T00:00:00Z", "Container": "", "ContainerConfig": {},
            "DockerVersion": "", "Author": "", "Config": cfg,
            "Architecture": img.config.architecture, "Os": img.config.os,
            **({"Variant": img.config.variant} if img.config.variant else {}),
            "Size": img.size, "VirtualSize": img.size,
            "GraphDriver": {"Name": "overlay", "Data": None},
            "RootFS": {"Type": "layers", "Layers": img.config.diff_ids},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}}


def list_images(root: str) -> list[dict[str, Any]]:
    from cove.engine import state
    st = Store(root)
    out = []
    for rec in sorted(st.records(), key=lambda r: -r.created):
        try:
            d = inspect_image(root, rec.digest)
        except CoveError:
            continue
        try:
            created = int(state.parse_rfc3339(d["Created"]))
        except (ValueError, TypeError):
            created = int(rec.created)
        out.append({"Id": d["Id"], "ParentId": "", "RepoTags": d["RepoTags"] or None,
                    "RepoDigests": d["RepoDigests"], "Created": created, "Size": d["Size"],
                    "VirtualSize": d["Size"], "SharedSize": -1,
                    "Labels": (d["Config"] or {}).get("Labels") or None, "Containers": -1,
                    "_digest": rec.digest})
    return out


class _Json(Progress):
    """Pull/push progress as docker's JSON lines, into the stream's queue."""

    def __init__(self, put: Callable[[dict[str, Any]], None], push: bool = False) -> None:
        self.put = put
        self.verbs = ("Preparing", "Pushing") if push else ("Pulling fs layer",
                                                            "Downloading")
        self.total: dict[str, int] = {}
        self.cur: dict[str, int] = {}

    @staticmethod
    def _id(key: str) -> str:
        return key.removeprefix("sha256:")[:12]

    def start(self, key: str, what: str, total: int) -> None:
        self.total[key], self.cur[key] = total, 0
        self.put({"status": self.verbs[0], "progressDetail": {}, "id": self._id(key)})

    def advance(self, key: str, n: int) -> None:
        self.cur[key] = self.cur.get(key, 0) + n
        self.put({"status": self.verbs[1], "id": self._id(key),
                  "progressDetail": {"current": self.cur[key],
                                     "total": self.total.get(key, 0)},
                  "progress": f"{self.cur[key]}/{self.total.get(key, 0)}"})

    def done(self, key: str, msg: str) -> None:
        self.put({"status": msg[:1].upper() + msg[1:], "progressDetail": {},
                  "id": self._id(key)})

    def status(self, key: str, msg: str) -> None:
        self.done(key, msg)

    def note(self, msg: str) -> None:
        self.put({"status": msg})


async def _run_with_progress(fn: Callable[[Progress], Any], first: list[dict[str, Any]],
                             last: Callable[[Any], list[dict[str, Any]]], push: bool = False
                             ) -> AsyncIterator[bytes]:
    """Run `fn(progress)` on a thread, streaming its progress as JSON lines; an error
    is docker's in-stream error (the status is already 200)."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    for head in first:
        yield json_line(head)

    def put(m: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(q.put_nowait, m)
    result: list[Any] = []

    def work() -> None:
        try:
            result.append(fn(_Json(put, push)))
        except CoveError as e:
            put({"errorDetail": {"message": str(e)}, "error": str(e)})
        except Exception as e:
            put({"errorDetail": {"message": f"{type(e).__name__}: {e}"},
                 "error": f"{type(e).__name__}: {e}"})
        finally:
            loop.call_soon_threadsafe(q.put_nowait, None)
    fut = loop.run_in_executor(None, work)
    try:
        while (m := await q.get()) is not None:
            yield json_line(m)
        if result:
            for end in last(result[0]):
                yield json_line(end)
    finally:
        # a client gone mid-pull: the pull finishes (or fails) on its own thread and
        # leaves a complete image or nothing (the transfer's own guarantee)
        if not fut.done():
            fut.add_done_callback(lambda _f: None)


def _in_use(st: Store) -> dict[str, list[str]]:
    """Image digest -> the containers whose rootfs is made from it."""
    import os
    used: dict[str, list[str]] = {}
    for cid in os.listdir(st.container_dir):
        try:
            with open(os.path.join(st.container_dir, cid, "rootfs.json")) as f:
                used.setdefault(json.load(f).get("image", ""), []).append(cid)
        except (OSError, ValueError):
            pass
    return used


def _remove(root: str, ref: str, force: bool) -> list[dict[str, str]]:
    st = Store(root)
    digest = resolve(root, ref)
    names = st.index()["images"].get(digest, {}).get("names", [])
    out: list[dict[str, str]] = []
    full = next((n for n in names if n == ref or _tags([n]) == [ref] or
                 _tags([n]) == [ref + ":latest"] or n == ref + ":latest"), None)
    if full and len(names) > 1 and not force:
        st.untag(full)
        events.emit(root, "image", "untag", digest, name=full)
        return [{"Untagged": _tags([full])[0]}]
    users = _in_use(st).get(digest)
    if users and not force:
        raise ApiError(409, f"conflict: unable to remove repository reference \"{ref}\" "
                            f"(must force) - container {users[0]} is using its referenced "
                            "image")
    cfg = st.config_digest(digest)
    out += [{"Untagged": t} for t in _tags(names)]
    st.remove_image(digest)
    events.emit(root, "image", "delete", digest, name=ref)
    out.append({"Deleted": cfg})
    st.gc()
    return out


class _Routes:
    """The handlers of these endpoints, bound to the server's state (`Ctx`)."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.root = ctx.root

    async def list_(self, req: Request) -> Result:
        root = self.root
        f = req.filters()
        imgs = await call(list_images, root)
        out = []
        import fnmatch
        for i in imgs:
            tags = i["RepoTags"] or []
            ok = True
            for k, vals in f.items():
                if k == "dangling":
                    ok = ok and (not tags) == (vals[0] in ("true", "1"))
                elif k == "reference":
                    ok = ok and any(fnmatch.fnmatch(t, p) or fnmatch.fnmatch(
                        t.rpartition(":")[0], p) for t in tags for p in vals)
                elif k == "label":
                    labels = i["Labels"] or {}
                    ok = ok and all(a in labels and (not eq or labels[a] == b)
                                    for a, eq, b in (p.partition("=") for p in vals))
                else:
                    raise ApiError(400, f"invalid filter '{k}'")
            if ok:
                out.append({k: v for k, v in i.items() if not k.startswith("_")})
        return jsonr(out)

    async def inspect(self, req: Request) -> Result:
        root = self.root
        digest = await call(resolve, root, req.params["name"])
        return jsonr(await call(inspect_image, root, digest))

    async def history(self, req: Request) -> Result:
        root = self.root
        from cove.engine import commit
        digest = await call(resolve, root, req.params["name"])
        try:
            h = await call(commit.history, root, digest)
        except CoveError:
            h = []
        return jsonr([{"Id": x.get("Id", "<missing>"), "Created": x.get("Created", 0),
                       "CreatedBy": x.get("CreatedBy", ""), "Tags": x.get("Tags"),
                       "Size": x.get("Size", 0), "Comment": x.get("Comment", "")}
                      for x in h])

    async def pull(self, req: Request) -> Result:
        root = self.root
        image = req.q("fromImage")
        if not image:
            if req.q("fromSrc"):
                raise ApiError(400, "fromSrc (import): not supported by cove's API")
            raise ApiError(400, "fromImage: required")
        tag = req.q("tag") or ""
        ref = image
        if tag:
            ref += ("@" if tag.startswith("sha256:") else ":") + tag
        elif "@" not in image and ":" not in image.rpartition("/")[2]:
            ref += ":latest"
        plat = req.q("platform") or None
        from cove.engine.dockerapi.auth import registry_options
        opts = registry_options(req.headers.get("x-registry-auth"), ref)

        def fn(p: Progress) -> str:
            from cove.image import builtin
            from cove.image.transfer import pull as do_pull
            from cove.oci.image import Platform
            st = Store(root)
            if builtin.is_builtin(ref):
                return builtin.ensure_busybox(st)
            d = do_pull(st, ref, opts=opts, progress=p,
                        platform=Platform.from_string(plat) if plat else None)
            events.emit(root, "image", "pull", ref, name=ref)
            return str(d)
        name, _, t = ref.rpartition(":") if "@" not in ref else (ref, "", "")
        first = [{"status": f"Pulling from {name}", "id": t or "latest"}]
        return Stream(_run_with_progress(fn, first, lambda d: [
            {"status": f"Digest: {d}"},
            {"status": f"Status: Downloaded newer image for {ref}"}]))

    async def push(self, req: Request) -> Result:
        root = self.root
        name = req.params["name"]
        tag = req.q("tag")
        ref = f"{name}:{tag}" if tag else name
        from cove.engine.dockerapi.auth import registry_options
        opts = registry_options(req.headers.get("x-registry-auth"), ref)
        await call(resolve, root, ref)

        def fn(p: Progress) -> str:
            from cove.image.transfer import push as do_push
            return str(do_push(Store(root), ref, None, opts=opts, progress=p))
        first = [{"status": f"The push refers to repository [{name}]"}]
        return Stream(_run_with_progress(fn, first, lambda d: [
            {"status": f"{tag or 'latest'}: digest: {d} size: 0"},
            {"progressDetail": {}, "aux": {"Tag": tag or "latest", "Digest": d,
                                           "Size": 0}}], push=True))

    async def tag(self, req: Request) -> Result:
        root = self.root
        repo = req.q("repo")
        if not repo:
            raise ApiError(400, "repo: required")
        t = req.q("tag") or "latest"
        digest = await call(resolve, root, req.params["name"])
        try:
            await call(Store(root).tag, digest, f"{repo}:{t}")
        except CoveError as e:
            raise ApiError(400, str(e)) from None
        await call(events.emit, root, "image", "tag", digest, name=f"{repo}:{t}")
        return jsonr(None, 201)

    async def remove(self, req: Request) -> Result:
        root = self.root
        return jsonr(await call(_remove, root, req.params["name"], req.qbool("force")))

    async def prune(self, req: Request) -> Result:
        root = self.root
        f = req.filters()
        dangling_only = f.get("dangling", ["true"])[0] in ("true", "1")
        imgs = await call(list_images, root)
        gone = []
        used = await call(_in_use, Store(root))
        for i in imgs:
            if (dangling_only and i["RepoTags"]) or i["_digest"] in used:
                continue
            with contextlib.suppress(CoveError, ApiError):
                gone += await call(_remove, root, i["_digest"], False)
        return jsonr({"ImagesDeleted": gone or None, "SpaceReclaimed": 0})


def register(r: Router, ctx: Ctx) -> None:
    h = _Routes(ctx)
    r.add("GET", "/images/json", h.list_)
    r.add("POST", "/images/create", h.pull)
    r.add("POST", "/images/prune", h.prune)
    r.add("GET", "/images/{name*}/json", h.inspect)
    r.add("GET", "/images/{name*}/history", h.history)
    r.add("POST", "/images/{name*}/push", h.push)
    r.add("POST", "/images/{name*}/tag", h.tag)
    r.add("DELETE", "/images/{name*}", h.remove)

