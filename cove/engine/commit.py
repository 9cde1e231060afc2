"""`cove diff`, `cove commit` and `cove history`: a container's changes to its image.

A container's changes are its overlayfs upper directory (`containers/<name>/upper`):
what it created or modified, a 0:0 character device for each path it deleted, and
`trusted.overlay.opaque=y` on a directory it replaced. `diff` lists them as docker does
(A added, C changed, D deleted: whether a path is new is asked of the image's layers,
topmost first, honouring their own whiteouts). `commit` turns them into one more
layer on top of the container's image, with OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`),
and a config that is the container's (its command, environment and working directory,
as docker's is) changed by `--change` instructions; the new image is stored as any
pulled image is (cove images, run, push, save).

What the runtime made only to mount over (a mount point that the image lacked: an
empty /proc, an empty /etc/hosts) is not a change, as docker keeps those in a layer of
its own ("init") that diff and commit leave out.

A container whose rootfs is a copy (no overlayfs: not root) has no upper directory:
diff and commit say so.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import stat
import tempfile
from typing import Any

from cove.engine import containers, events, state
from cove.errors import CoveError
from cove.image import layers as image_layers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record

# paths the engine mounts over (besides the spec's mounts): created when missing
_ENGINE_MOUNTS = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


class Changes:
    """A container's upper directory against its image's layers."""

    def __init__(self, root: str, name: str) -> None:
        from cove.image.store import Store
        self.paths = state.Paths(root)
        self.name = name
        cdir = self.paths.cdir(name)
        self.upper = os.path.join(cdir, "upper")
        with open(os.path.join(cdir, "rootfs.json")) as f:
            mode = json.load(f).get("mode")
        if mode != "overlay" or not os.path.isdir(self.upper):
            raise CoveError(f"container {name}", "its root filesystem is a copy (no "
                            "overlayfs, as when not root): its changes are not known")
        with open(os.path.join(cdir, "layers.json")) as f:
            diff_ids: list[str] = json.load(f)
        store = Store(root)
        self.lowers = [os.path.join(store.snapshot_dir, d.partition(":")[2])
                       for d in reversed(diff_ids)]
        self.whiteouts = [image_layers.Whiteouts.load(os.path.join(s, "whiteouts.json"))
                          for s in self.lowers]
        try:
            with open(os.path.join(cdir, "config.json")) as f:
                spec = json.load(f)
            mounts = [m.get("destination", "") for m in spec.get("mounts") or []]
        except (OSError, ValueError):
            mounts = []
        self.mount_points = {os.path.normpath("/" + m.lstrip("/"))
                             for m in (*mounts, *_ENGINE_MOUNTS) if m}

    def in_image(self, path: str) -> bool:
        """Whether the image has `path` ("/etc/passwd")."""
        rel = path.lstrip("/")
        for snap, wh in zip(self.lowers, self.whiteouts, strict=True):
            if rel in wh.whiteouts:
                return False
            full = os.path.join(snap, "fs", rel)
            try:
                st = os.lstat(full)
            except OSError:
                st = None
            if st is not None:
                return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)
            if any(rel == o or rel.startswith(o + "/") for o in wh.opaque if o):
                return False
        return False

    def walk(self) -> list[tuple[str, str, os.stat_result]]:
        """(kind A|C|D, path, lstat in upper), sorted by path; mount points the runtime
        made are left out."""
        out: list[tuple[str, str, os.stat_result]] = []
        self._walk(self.upper, "", out)
        return sorted(out, key=lambda x: x[1])

    def _walk(self, d: str, prefix: str, out: list[tuple[str, str, os.stat_result]]) -> bool:
        """Add the changes under `d`; whether it added any."""
        added = False
        for n in sorted(os.listdir(d)):
            full = os.path.join(d, n)
            path = f"{prefix}/{n}"
            st = os.lstat(full)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.append(("D", path, st))
                added = True
                continue
            existed = self.in_image(path)
            if stat.S_ISDIR(st.st_mode):
                mark = len(out)
                below = self._walk(full, path, out)
                if not existed and not below and path in self.mount_points:
                    continue  # an empty mount point the runtime made
                out.insert(mark, ("C" if existed else "A", path, st))
                added = True
            else:
                if not existed and path in self.mount_points and st.st_size == 0:
                    continue
                out.append(("C" if existed else "A", path, st))
                added = True
        return added


def diff(root: str, ref: str) -> list[tuple[str, str]]:
    """docker diff: (A|C|D, path) for each change, sorted by path."""
    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    containers.refresh_record(paths, name)
    return [(k, p) for k, p, _ in Changes(root, name).walk()]


def write_layer(ch: Changes, out: str) -> None:
    """The changes as a layer tar (OCI whiteouts) at `out`, by the image layer's writer
    (the one a build step's layer goes through)."""
    from cove.image.layerwrite import write_upper
    write_upper(ch.upper, out, ((path.lstrip("/"), st) for _, path, st in ch.walk()))


# -- --change ---------------------------------------------------------------------------

def _words(rest: str) -> list[str]:
    """A JSON array (exec form), or the shell form run by /bin/sh -c."""
    if rest.startswith("["):
        try:
            v = json.loads(rest)
        except ValueError:
            v = None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
    return ["/bin/sh", "-c", rest]


def _pairs(rest: str) -> dict[str, str]:
    """`K=V K2="v 2"`, or the old `K V` form."""
    words = shlex.split(rest)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: rest.split(None, 1)[1]}
    out = {}
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise CoveError(f"--change {rest}", f"{w!r} is not KEY=VALUE")
        out[k] = v
    return out


def apply_change(cfg: Any, change: str) -> None:
    """One Dockerfile instruction of those docker commit takes, on a ContainerConfig."""
    instr, _, rest = change.strip().partition(" ")
    rest = rest.strip()
    op = instr.upper()
    if op == "CMD":
        cfg.cmd = _words(rest)
    elif op == "ENTRYPOINT":
        cfg.entrypoint = _words(rest)
    elif op == "ENV":
        env = dict(e.partition("=")[::2] for e in cfg.env)
        env.update(_pairs(rest))
        cfg.env = [f"{k}={v}" for k, v in env.items()]
    elif op == "LABEL":
        cfg.labels = {**cfg.labels, **_pairs(rest)}
    elif op == "EXPOSE":
        ports = [p if "/" in p else f"{p}/tcp" for p in rest.split()]
        cfg.exposed_ports = sorted({*cfg.exposed_ports, *ports})
    elif op == "VOLUME":
        vols = _words(rest) if rest.startswith("[") else rest.split()
        cfg.volumes = sorted({*cfg.volumes, *vols})
    elif op == "USER":
        cfg.user = rest
    elif op == "WORKDIR":
        if not rest.startswith("/"):
            raise CoveError(f"--change {change}", "WORKDIR must be an absolute path")
        cfg.working_dir = rest
    elif op == "STOPSIGNAL":
        cfg.stop_signal = rest
    else:
        raise CoveError(f"--change {change}", f"{instr} is not one of CMD, ENTRYPOINT, ENV, "
                        "EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR")


# -- commit -----------------------------------------------------------------------------

def _container_config(rec: Record, base: Any, cdir: str) -> Any:
    """The new image's config: the container's (docker commit's), from its image's."""
    import copy as _copy
    cfg = _copy.deepcopy(base)
    argv = [rec.get("Path") or "", *(rec.get("Args") or [])]
    cmd = list(rec["Config"].get("Cmd") or base.cmd or [])
    if argv[0]:
        if cmd and argv[len(argv) - len(cmd):] == cmd:
            ep = argv[:len(argv) - len(cmd)]
        else:
            ep, cmd = argv, []
        cfg.entrypoint = ep or None
        cfg.cmd = cmd or None
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(os.path.join(cdir, "config.json")) as f:
            proc = json.load(f)["process"]
        cfg.env = [e for e in proc["env"] if not e.startswith(("HOSTNAME=", "TERM="))]
        if proc.get("cwd") and proc["cwd"] != "/":
            cfg.working_dir = proc["cwd"]
    return cfg


def commit(root: str, ref: str, repo: str | None = None, *, message: str = "",
           author: str = "", changes: list[str] | None = None, pause: bool = True) -> str:
    """docker commit: a new image, the container's image plus its changes as one layer;
    its id (the config's digest, as docker's and `cove images`'s IMAGE ID)."""
    from cove.image import reference
    from cove.image.assemble import add_layer
    from cove.image.store import Store
    from cove.oci.image import (
        DOCKER_LAYER_GZIP,
        DOCKER_MANIFEST,
        OCI_LAYER_GZIP,
        Descriptor,
        ImageConfig,
        Manifest,
    )
    paths = state.Paths(root)
    name = state.lookup(paths, ref)
    rec = containers.refresh_record(paths, name)
    names = [str(reference.parse(repo))] if repo else []
    store = Store(root)
    base = store.image(rec["ImageDigest"])
    cfg = _container_config(rec, base.config.config, paths.cdir(name))
    for change in changes or []:
        apply_change(cfg, change)
    ch = Changes(root, name)
    paused = False
    if pause and rec["State"]["Status"] == "running":
        from cove.engine import ops
        ops.pause(root, name)
        paused = True
    fd, tmp = tempfile.mkstemp(dir=store.tmp_dir, suffix=".tar")
    os.close(fd)
    try:
        try:
            write_layer(ch, tmp)
        finally:
            if paused:
                from cove.engine import ops
                with contextlib.suppress(CoveError):
                    ops.unpause(root, name)
        docker = base.manifest.media_type == DOCKER_MANIFEST
        desc, diff_id = add_layer(store, tmp)
        desc = Descriptor(DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP, desc.digest,
                          desc.size)
    finally:
        os.unlink(tmp)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    by = " ".join([rec.get("Path") or "", *(rec.get("Args") or [])]).strip()
    hist: dict[str, Any] = {"created": now, "created_by": by}
    if author:
        hist["author"] = author
    if message:
        hist["comment"] = message
    icfg = ImageConfig(os=base.config.os, architecture=base.config.architecture,
                       variant=base.config.variant, config=cfg,
                       diff_ids=[*base.config.diff_ids, diff_id], created=now,
                       author=author, history=[*base.config.history, hist])
    raw = icfg.to_bytes()
    cdesc = Descriptor(base.manifest.config.media_type, store.put_blob(raw), len(raw))
    mdata = Manifest(base.manifest.media_type, cdesc, [*base.manifest.layers, desc]).to_bytes()
    digest = store.put_blob(mdata)
    store.add_image(digest, names)
    events.emit(root, "container", "commit", rec, comment=message,
                imageID=cdesc.digest, imageRef=names[0] if names else "")
    return cdesc.digest


# -- history ----------------------------------------------------------------------------

def history(root: str, ref: str) -> list[dict[str, Any]]:
    """docker history: one row per history entry, newest first (Id on the top row only,
    `<missing>` below, as docker), with the size of the layer each one made."""
    from cove.image.store import Store
    store = Store(root, create=False)
    img = store.image(ref)
    layers = list(zip(img.manifest.layers, img.config.diff_ids, strict=True))
    hist = img.config.history or [{"created": img.config.created, "created_by": ""}
                                  for _ in layers]
    rows = []
    i = 0
    for h in hist:
        size = 0
        if not h.get("empty_layer") and i < len(layers):
            desc, diff_id = layers[i]
            i += 1
            size = _layer_size(store, diff_id, desc.size)
        rows.append({"Id": "<missing>", "Created": str(h.get("created", "")),
                     "CreatedBy": str(h.get("created_by", "")), "Size": size,
                     "Comment": str(h.get("comment", "")), "Author": str(h.get("author", ""))})
    rows.reverse()
    if rows:
        rows[0]["Id"] = img.manifest.config.digest  # docker's image id
    return rows


def _layer_size(store: Any, diff_id: str, packed: int) -> int:
    """The bytes a layer's files hold (docker's SIZE), from its snapshot when unpacked;
    else its compressed size."""
    fs = os.path.join(store.snapshot_dir, diff_id.partition(":")[2], "fs")
    if not os.path.isdir(fs):
        return packed
    total = 0
    for dirpath, dirs, files in os.walk(fs):
        for n in (*dirs, *files):
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, n))
                if not stat.S_ISDIR(st.st_mode):
                    total += st.st_size
    return total
