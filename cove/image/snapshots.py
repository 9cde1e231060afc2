"""A container's root filesystem: an overlayfs of its image's layer snapshots (the
lowerdir chain, topmost first) with the container's own upper and work dirs, or, where
overlayfs is not allowed, a copy of the layers applied in order.

    containers/<id>/layers.json   the diffIDs it uses (garbage collection keeps them)
    containers/<id>/rootfs.json   {"mode": "overlay" | "copy"}
    containers/<id>/upper, work   overlayfs dirs
    containers/<id>/merged        the rootfs the bundle's root.path points at

`cove` mounts the overlay before calling cove-runtime and unmounts it after delete.
"""

from __future__ import annotations

import errno
import json
import os
import time

from cove.errors import CoveError
from cove.image import layercopy, layers
from cove.image.store import Image, Store
from cove.oci.record import record
from cove.sys import libc

MNT_DETACH = 2


@record
class Rootfs:
    container_dir: str
    path: str
    mode: str


def _snapshots(store: Store, image: Image, max_size: int) -> list[str]:
    out = []
    for desc, diff_id in zip(image.manifest.layers, image.config.diff_ids, strict=True):
        out.append(layers.ensure_snapshot(store, desc.digest, desc.media_type, diff_id,
                                     max_size=max_size))
    return out


def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == real:
                return True
    return False


def mount_overlay(lowers: list[str], upper: str, work: str, target: str, cwd: str) -> None:
    """Mount with lowerdirs relative to `cwd` (the snapshot dir): the option string is
    limited to a page, and relative paths fit about twice as many layers. A layer that
    comes twice (two steps that made the same change, e.g. two empty RUNs) is mounted
    once, at its topmost place: overlayfs refuses a lowerdir twice (ELOOP), and the
    upper copy hides all the lower one would show or delete."""
    rel = [os.path.relpath(x, cwd) for x in dict.fromkeys(lowers)]
    data = f"lowerdir={':'.join(rel)},upperdir={upper},workdir={work}"
    if len(data) >= 4096:
        raise OSError(errno.E2BIG, f"{len(lowers)} layers: overlay options too long")
    old = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(cwd)
        libc.mount("overlay", target, "overlay", 0, data)
    finally:
        os.fchdir(old)
        os.close(old)


def prepare(store: Store, image: Image, cid: str, *, max_size: int = layers.DEFAULT_MAX_SIZE,
            allow_overlay: bool = True) -> Rootfs:
    """Create `containers/<cid>/` with a merged rootfs for `image`."""
    cdir = os.path.join(store.container_dir, cid)
    try:
        os.mkdir(cdir, 0o711)
    except FileExistsError:
        raise CoveError(f"container {cid}", "already exists") from None
    try:
        with open(os.path.join(cdir, "layers.json"), "w") as f:
            f.write(json.dumps(image.config.diff_ids))
        snaps = _snapshots(store, image, max_size)
        merged = os.path.join(cdir, "merged")
        os.mkdir(merged, 0o755)
        mode = "copy"
        if allow_overlay and os.geteuid() == 0:
            upper, work = os.path.join(cdir, "upper"), os.path.join(cdir, "work")
            os.mkdir(upper, 0o755)
            os.mkdir(work, 0o700)
            lowers = [os.path.join(s, "fs") for s in reversed(snaps)]
            if not lowers:
                empty = os.path.join(cdir, "empty")
                os.mkdir(empty, 0o755)
                lowers = [empty]
            try:
                mount_overlay(lowers, upper, work, merged, store.snapshot_dir)
                mode = "overlay"
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EINVAL, errno.ENODEV, errno.E2BIG,
                                   errno.EACCES, errno.ENOTSUP):
                    raise
        if mode == "copy":
            layercopy.apply_snapshots(snaps, merged)
        with open(os.path.join(cdir, "rootfs.json"), "w") as f:
            f.write(json.dumps({"mode": mode, "image": image.digest}))
        return Rootfs(cdir, merged, mode)
    except BaseException:
        release(store, cid)
        raise


def release(store: Store, cid: str, remove: bool = True) -> None:
    """Unmount a container's rootfs; with `remove`, delete its directory too."""
    cdir = os.path.join(store.container_dir, cid)
    merged = os.path.join(cdir, "merged")
    if os.path.isdir(merged) and is_mounted(merged):
        try:
            libc.umount2(merged, 0)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            libc.umount2(merged, MNT_DETACH)
    if remove:
        for attempt in range(3):
            try:
                layers.remove_tree(cdir)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                # a file made in it meanwhile (the engine's last words on an exit)
                if e.errno != errno.ENOTEMPTY or attempt == 2:
                    raise
                time.sleep(0.05)


def remount(store: Store, cid: str) -> str:
    """Mount a kept container's overlay again (for a restart); returns the rootfs path."""
    cdir = os.path.join(store.container_dir, cid)
    merged = os.path.join(cdir, "merged")
    with open(os.path.join(cdir, "rootfs.json")) as f:
        info = json.load(f)
    if info.get("mode") != "overlay" or is_mounted(merged):
        return merged
    with open(os.path.join(cdir, "layers.json")) as f:
        diff_ids = json.load(f)
    lowers = [os.path.join(store.snapshot_dir, d.partition(":")[2], "fs")
              for d in reversed(diff_ids)]
    if not lowers:
        lowers = [os.path.join(cdir, "empty")]
    mount_overlay(lowers, os.path.join(cdir, "upper"), os.path.join(cdir, "work"), merged,
                  store.snapshot_dir)
    return merged
