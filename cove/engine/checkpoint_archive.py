"""The checkpoint archive of `cove checkpoint --export` / `cove restore --import` (its
layout: cove/engine/checkpoint.py), and `restore --name`'s copy of a container, which is
an export and an import through a temporary file.

Paths of the source's state root inside the record and config.json (the container
directory, its /etc files, a netns path) are rewritten to the target's. The image must
be in the target's store (same digest): the archive carries only the rootfs changes,
the overlay's upper directory (whiteouts are its 0:0 device nodes, kept as such;
opaque directories keep their `trusted.overlay.opaque` xattr, as a PAX
`SCHILY.xattr.` header), and the named volumes it mounts (`volumes/NAME/`: made on the
target if it has none of that name, else used as they are). Extraction refuses members
that would land outside their directory (by name, hard link or through a symlink); a
corrupt or truncated archive is one line, and a failed import leaves no container
(and no volume it made) behind.
"""

from __future__ import annotations

import copy as _copy
import json
import os
import tarfile
import tempfile
from typing import Any

from cove.engine import procs, state
from cove.errors import CoveError, os_why

TYPE_CHECKING = False
if TYPE_CHECKING:  # (record.py imports the flags' parsers: not at run time)
    from collections.abc import Mapping

    from cove.engine.container.record import Record

# The layout, shared with cove/engine/checkpoint.py (which imports it from here).
CKPT = "checkpoint"  # the CRIU images' directory in a container's
MANIFEST = "cove-checkpoint.json"
FORMAT = 1
# Files of a container's directory that belong to one run, not to the container.
_RUN_FILES = ("lock", procs.EXIT_FILE, "init.pid", "log.journal", "restore.log")


def _container_files(cdir: str) -> list[str]:
    """The container directory's own files worth carrying (record, config, /etc files)."""
    out = []
    for n in sorted(os.listdir(cdir)):
        p = os.path.join(cdir, n)
        if n in _RUN_FILES or "-json.log" in n or not os.path.isfile(p) or \
                os.path.islink(p) or n.endswith((".fifo", ".sock")):
            continue
        out.append(n)
    return out


def write(paths: state.Paths, name: str, dest: str) -> None:
    """The archive of checkpointed container `name` at `dest` (gzip when it ends in .gz)."""
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        with tarfile.open(tmp, "w:gz" if dest.endswith(".gz") else "w") as tar:
            write_into(tar, paths, name)
        os.rename(tmp, dest)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CoveError(f"--export {dest}", os_why(e)) from None


def write_into(tar: tarfile.TarFile, paths: state.Paths, name: str) -> None:
    """The archive's members into `tar` (a file, or `cove migrate`'s stream)."""
    import io

    cdir = paths.cdir(name)
    try:
        with open(os.path.join(cdir, "rootfs.json")) as f:
            mode = json.load(f).get("mode", "overlay")
    except (OSError, ValueError):
        mode = "overlay"
    manifest = {"format": FORMAT, "root": paths.root, "name": name, "cdir": cdir,
                "rootfs": mode}
    data = json.dumps(manifest).encode()
    info = tarfile.TarInfo(MANIFEST)
    info.size = len(data)
    info.mtime = int(os.path.getmtime(cdir))
    tar.addfile(info, io.BytesIO(data))
    for n in _container_files(cdir):
        tar.add(os.path.join(cdir, n), f"container/{n}", recursive=False)
    tar.add(os.path.join(cdir, CKPT), CKPT)
    changes = os.path.join(cdir, "upper" if mode == "overlay" else "merged")
    if os.path.isdir(changes):
        tar.add(changes, "upper", filter=_with_xattrs(changes, "upper"))
    try:
        rec: Mapping[str, Any] = state.load_record(cdir) or {}
    except (OSError, ValueError):
        rec = {}
    for vname in _volume_names(rec):
        vdir = os.path.join(paths.volumes, vname)
        if os.path.isdir(os.path.join(vdir, "_data")):
            tar.add(os.path.join(vdir, "volume.json"), f"volumes/{vname}/volume.json")
            tar.add(os.path.join(vdir, "_data"), f"volumes/{vname}/_data",
                    filter=_with_xattrs(os.path.join(vdir, "_data"),
                                        f"volumes/{vname}/_data"))


# overlayfs's directory xattrs that the upper directory needs to mean the same thing
# elsewhere: an opaque directory hides the lower one's entries (`rm -rf /d; mkdir /d`).
# (trusted.* as root, user.* with the userxattr option of rootless mounts.)
OVERLAY_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
PAX_XATTR = "SCHILY.xattr."


def _with_xattrs(top: str, arcname: str) -> Any:
    """tar.add's filter that carries OVERLAY_XATTRS of directories as PAX headers (GNU
    tar's and podman's SCHILY.xattr.NAME)."""
    def f(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if info.isdir():
            path = os.path.join(top, info.name[len(arcname):].lstrip("/"))
            for key in OVERLAY_XATTRS:
                try:
                    val = os.getxattr(path, key, follow_symlinks=False)
                except OSError:
                    continue
                info.pax_headers = {**info.pax_headers,
                                    PAX_XATTR + key: val.decode("utf-8", "replace")}
        return info
    return f


def _volume_names(rec: Mapping[str, Any]) -> list[str]:
    """The named volumes the container mounts (their data travels in the archive)."""
    return [str(m["Name"]) for m in rec.get("Mounts") or []
            if m.get("Type") == "volume" and m.get("Name")]


def _members(tar: tarfile.TarFile, prefix: str) -> list[tarfile.TarInfo]:
    """The members under `prefix/`, renamed relative to it; none absolute or with `..`
    (this Python's tarfile has no extraction filters: checked here, and each target's
    directory again at extraction, against symlinks the archive made)."""
    out = []
    for m in tar.getmembers():
        if m.name != prefix and not m.name.startswith(prefix + "/"):
            continue
        m = _copy.copy(m)
        m.name = m.name[len(prefix) + 1:] or "."
        if m.islnk():
            if not m.linkname.startswith(prefix + "/"):
                raise CoveError("archive", f"member {m.name!r}: a hard link out of {prefix}/")
            m.linkname = m.linkname[len(prefix) + 1:]
        for part in (m.name, m.linkname if m.islnk() else ""):
            if part.startswith("/") or ".." in part.split("/"):
                raise CoveError("archive", f"member {m.name!r}: a path out of its directory")
        out.append(m)
    return out


def _extract(tar: tarfile.TarFile, prefix: str, dest: str) -> None:
    """Extract `prefix/` into `dest`, modes and numeric owners kept (a rootfs has setuid
    files and ids of its own), no member landing outside `dest` through a symlink."""
    os.makedirs(dest, 0o755, exist_ok=True)
    top = os.path.realpath(dest)
    for m in _members(tar, prefix):
        parent = os.path.realpath(os.path.join(top, os.path.dirname(m.name)))
        if parent != top and not parent.startswith(top + "/"):
            raise CoveError("archive", f"member {m.name!r}: leads out of its directory "
                            "through a symlink")
        if m.islnk():
            target = os.path.realpath(os.path.join(top, m.linkname))
            if not target.startswith(top + "/"):
                raise CoveError("archive", f"member {m.name!r}: a hard link out of "
                                "its directory")
        tar.extract(m, top, numeric_owner=True)
        for key, val in m.pax_headers.items():
            if key.startswith(PAX_XATTR) and key[len(PAX_XATTR):] in OVERLAY_XATTRS:
                os.setxattr(os.path.join(top, m.name), key[len(PAX_XATTR):], val.encode(),
                            follow_symlinks=False)


def unpack(paths: state.Paths, archive: str, new_name: str = "") -> str:
    """A new (exited, checkpointed) container from `archive`; its name."""
    from cove.engine import containers, hostconfig
    from cove.image import snapshots
    from cove.image.store import Store

    try:
        tar = tarfile.open(archive)
    except (OSError, tarfile.TarError) as e:
        why = os_why(e) if isinstance(e, OSError) and e.errno else "not a tar archive"
        raise CoveError(f"--import {archive}", why) from None
    with tar:
        try:
            f = tar.extractfile(MANIFEST)
            manifest = json.loads(f.read()) if f else None
            rf = tar.extractfile("container/container.json")
            rec: Record = json.loads(rf.read() if rf else b"{}")  # checked below
            names = set(tar.getnames())
        except (KeyError, ValueError, OSError, tarfile.TarError, EOFError) as e:
            raise CoveError(f"--import {archive}", f"not a Cove checkpoint archive, or "
                            f"truncated ({e or type(e).__name__})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or \
                f"{CKPT}/inventory.img" not in names or not rec.get("State"):
            raise CoveError(f"--import {archive}", "not a Cove checkpoint archive (format "
                            f"{FORMAT}) with CRIU images")
        name = new_name or str(rec.get("Name") or "")
        containers.check_name(name)
        cdir = paths.cdir(name)
        if os.path.lexists(cdir):
            raise CoveError(f"container name {name!r}", "already in use")
        st = Store(paths.root)
        digest = str(rec.get("ImageDigest") or "")
        try:
            try:
                img = hostconfig.image_for_platform(st, digest, digest, None)
            except (CoveError, OSError):
                from cove.engine import images

                # the built-in busybox is made locally, not pulled
                images.find_image(st, str(rec.get("Image") or ""), pull="never")
                img = hostconfig.image_for_platform(st, digest, digest, None)
        except (CoveError, OSError) as e:
            raise CoveError(f"--import {archive}", f"its image {rec.get('Image')} "
                            f"({digest[:19]}) is not in this store: pull it first "
                            f"({e})") from None
        rootfs = snapshots.prepare(st, img, name)
        made_volumes: list[str] = []
        try:
            snapshots.release(st, name, remove=False)  # unmounted: fill upper/ first
            upper = os.path.join(cdir, "upper" if rootfs.mode == "overlay" else "merged")
            try:
                _extract(tar, "upper", upper)
                made_volumes = _import_volumes(paths, tar, rec)
                _extract(tar, CKPT, os.path.join(cdir, CKPT))
                stage = os.path.join(cdir, ".import")
                _extract(tar, "container", stage)
            except (OSError, tarfile.TarError, EOFError) as e:
                raise CoveError(f"--import {archive}", f"truncated or corrupt "
                                f"({e or type(e).__name__})") from None
            _settle(paths, stage, cdir, manifest, rec, name)
            snapshots.remount(st, name)
        except BaseException:
            discard(paths, name)
            _drop_volumes(paths, made_volumes)
            raise
    return name


def _import_volumes(paths: state.Paths, tar: tarfile.TarFile, rec: Record
                    ) -> list[str]:
    """The archive's named volumes made here, with their data; one that exists here
    already (a copy on the same root, or the user's) is used as it is. Those made."""
    from cove.engine import volumes

    made: list[str] = []
    names = set(tar.getnames())
    for vname in _volume_names(rec):
        if volumes.exists(paths.root, vname) or f"volumes/{vname}/_data" not in names:
            continue
        labels: dict[str, str] | None = None
        f = tar.extractfile(f"volumes/{vname}/volume.json")
        if f is not None:
            labels = json.loads(f.read()).get("Labels") or None
        vol = volumes.ensure(paths.root, vname, labels)
        made.append(vname)
        _extract(tar, f"volumes/{vname}/_data", vol["Mountpoint"])
    return made


def _drop_volumes(paths: state.Paths, names: list[str]) -> None:
    from cove.engine import volumes

    for vname in names:
        try:
            volumes.remove(paths.root, vname, force=True)
        except (OSError, CoveError):
            pass


def _settle(paths: state.Paths, stage: str, cdir: str, manifest: dict[str, Any],
            rec: Record, name: str) -> None:
    """The staged container files moved in, the source's paths rewritten to ours."""
    old_cdir, old_root = str(manifest.get("cdir", "")), str(manifest.get("root", ""))

    def moved(text: str) -> str:
        if old_cdir:
            text = text.replace(old_cdir, cdir)
        if old_root and old_root != paths.root:
            text = text.replace(old_root.rstrip("/") + "/", paths.root.rstrip("/") + "/")
        return text
    for n in os.listdir(stage):
        src = os.path.join(stage, n)
        if n == "container.json":
            continue
        if n == "config.json":
            with open(src) as f:
                text = moved(f.read())
            with open(os.path.join(cdir, n), "w") as f:
                f.write(text)
            os.unlink(src)
        else:
            os.replace(src, os.path.join(cdir, n))
    rec = json.loads(moved(json.dumps(rec)))
    if name != rec.get("Name"):
        rec["Id"] = os.urandom(32).hex()
    rec["Name"] = name
    rec["State"].update({"Status": "exited", "Running": False, "Pid": 0, "Checkpointed": True})
    rec["MonitorPid"] = 0
    state.save(cdir, rec)
    for p in procs.fifo_paths(cdir):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    from cove.image import layers

    layers.remove_tree(stage)


def copy(paths: state.Paths, src: str, new_name: str) -> str:
    """Container `new_name` from `src`'s checkpoint (the source untouched)."""
    with tempfile.TemporaryDirectory(prefix="cove-ckpt-", dir=paths.root) as tmp:
        archive = os.path.join(tmp, "copy.tar")
        write(paths, src, archive)
        return unpack(paths, archive, new_name)


def discard(paths: state.Paths, name: str) -> None:
    """Remove a container a failed import or restore made (never a pre-existing one:
    callers pass only names they created)."""
    from cove.image import snapshots
    from cove.image.store import Store

    try:
        snapshots.release(Store(paths.root), name, remove=True)
    except (OSError, CoveError):
        pass
