"""A container's mounts: -v, --mount and --tmpfs as docker's Mounts (inspect) and as
OCI mounts, the volumes they make, the image's VOLUMEs as anonymous volumes, and the
copy-up that fills an empty volume from the image."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

from cove.engine import hostconfig, state
from cove.engine.options import RunOptions, parse_volume
from cove.errors import CoveError


def container_mounts(paths: state.Paths, o: RunOptions, made: list[str], rootfs: str = "",
            anon: list[str] | None = None) -> list[dict[str, Any]]:
    """-v, --mount and --tmpfs as OCI mounts (and docker-style Mounts for inspect);
    the volumes this makes (docker makes a named volume on first use) go into `made`,
    and those without a name (`-v /dst`), which go with the container, into `anon` too.
    An empty volume is filled from the image's content at its mount point (docker's
    copy-up, unless `nocopy`), from `rootfs`."""
    from cove.engine import volumes
    out: list[dict[str, Any]] = []

    def add(kind: str, src: str, dst: str, ro: bool, prop: str = "", nocopy: bool = False,
            opts: list[str] | None = None) -> None:
        if not dst.startswith("/"):
            raise CoveError(f"mount target {dst!r}", "must be an absolute path")
        if kind == "volume":
            vname = src or os.urandom(32).hex()
            existed = volumes.exists(paths.root, vname)
            vol = volumes.ensure(paths.root, vname,
                                 None if src else {"cove.anonymous": "true"})
            if not existed:
                made.append(vname)
                if not src and anon is not None:
                    anon.append(vname)
            if rootfs and not nocopy and not os.listdir(vol["Mountpoint"]):
                copy_up(rootfs, os.path.normpath(dst), vol["Mountpoint"])
            out.append({"Type": "volume", "Name": vol["Name"], "Source": vol["Mountpoint"],
                        "Destination": dst, "RW": not ro})
        elif kind == "bind":
            if not os.path.exists(src):
                raise CoveError(f"bind source {src}", "does not exist")
            out.append({"Type": "bind", "Source": os.path.abspath(src), "Destination": dst,
                        "RW": not ro, "Propagation": prop})
        elif kind == "tmpfs":
            out.append({"Type": "tmpfs", "Source": "", "Destination": dst, "RW": not ro,
                        "Options": opts or []})
        else:
            raise CoveError(f"mount type {kind}", "expected bind, volume or tmpfs")

    for v in o.volumes:
        src, dst, ro, prop = parse_volume(v)
        nocopy = "nocopy" in v.split(":")[2].split(",") if v.count(":") == 2 else False
        add("bind" if src.startswith(("/", ".")) else "volume", src, dst, ro, prop, nocopy)
    for m in o.mounts:
        kv: dict[str, str] = {}
        ro = False
        for item in m.split(","):
            k, eq, val = item.partition("=")
            if k in ("readonly", "ro") and (not eq or val in ("1", "true")):
                ro = True
            else:
                kv[k] = val
        dst = kv.get("target") or kv.get("destination") or kv.get("dst") or ""
        topts = [f"size={kv['tmpfs-size']}"] if kv.get("tmpfs-size") else []
        if kv.get("tmpfs-mode"):
            topts.append(f"mode={kv['tmpfs-mode']}")
        nocopy = "volume-nocopy" in kv and kv["volume-nocopy"] in ("", "1", "true")
        topts = hostconfig.parse_tmpfs(f"{dst}:{','.join(topts)}")[1] if topts else []
        add(kv.get("type", "volume"), kv.get("source") or kv.get("src") or "", dst, ro,
            nocopy=nocopy, opts=topts)
    for t in o.tmpfs:
        tdst, topts = hostconfig.parse_tmpfs(t)
        add("tmpfs", "", tdst, False, opts=topts)
    return out


def oci_mounts(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in mounts:
        if m["Type"] == "tmpfs":
            from cove.engine.hostspec import tmpfs_options
            out.append({"destination": m["Destination"], "type": "tmpfs", "source": "tmpfs",
                        "options": tmpfs_options(m.get("Options") or [], not m["RW"])})
        else:
            out.append({"destination": m["Destination"], "type": "bind",
                        "source": m["Source"],
                        "options": ["rbind", "rw" if m["RW"] else "ro",
                                    *([m["Propagation"]] if m.get("Propagation") else [])]})
    return out


def image_volumes(paths: state.Paths, mounts: list[dict[str, Any]], wanted: list[str],
                   rootfs: str, made: list[str]) -> list[str]:
    """An anonymous volume for each of the image's `Volumes` that no -v/--mount covers,
    filled (as docker does) with what the image has there; added to `mounts` and `made`.
    Returns their names (removed with the container)."""
    from cove.engine import volumes
    taken = {os.path.normpath(m["Destination"]) for m in mounts}
    out: list[str] = []
    for v in wanted:
        dst = os.path.normpath("/" + v.lstrip("/"))
        if dst in taken:
            continue
        taken.add(dst)
        vname = os.urandom(32).hex()
        vol = volumes.ensure(paths.root, vname, {"cove.anonymous": "true"})
        made.append(vname)
        out.append(vname)
        copy_up(rootfs, dst, vol["Mountpoint"])
        mounts.append({"Type": "volume", "Name": vol["Name"], "Source": vol["Mountpoint"],
                       "Destination": dst, "RW": True})
    return out


def copy_up(rootfs: str, dst: str, data: str) -> None:
    """Copy the image's content at `dst` (inside `rootfs`) into the volume dir `data`,
    owners, modes and symlinks kept; nothing when it is absent or leads out of the rootfs.
    Rootless with subordinate ids, in the containers' user namespace (it may chown to
    them; cove/image/userns.py)."""
    from cove.image import userns
    userns.call(_copy_up_here, rootfs, dst, data)


def _copy_up_here(rootfs: str, dst: str, data: str) -> None:
    base = os.path.realpath(rootfs)
    src = os.path.realpath(os.path.join(base, dst.lstrip("/")))
    if not src.startswith(base + os.sep) or not os.path.isdir(src):
        return
    shutil.copytree(src, data, symlinks=True, dirs_exist_ok=True)
    shutil.copystat(src, data)
    st = os.lstat(src)
    os.chown(data, st.st_uid, st.st_gid)
    for dirpath, dirs, files in os.walk(src):
        for n in (*dirs, *files):
            s = os.path.join(dirpath, n)
            st = os.lstat(s)
            os.lchown(os.path.join(data, os.path.relpath(s, src)), st.st_uid, st.st_gid)


def drop_volumes(root: str, names: list[str]) -> None:
    """Remove volumes a failed `run` made implicitly (and nobody else uses)."""
    from cove.engine import volumes
    for v in names:
        with contextlib.suppress(CoveError, OSError):
            volumes.remove(root, v)
