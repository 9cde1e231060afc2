"""The container's rootfs as a read-only filesystem image on virtio-blk.

With the annotation `io.cove.vm.rootfs=image` (or `COVE_VM_ROOTFS=image` as the default)
the bundle's rootfs is packed into an uncompressed erofs image (Debian's erofs-utils;
squashfs-tools' mksquashfs when mkfs.erofs is missing), attached read-only as the VM's
virtio-blk disk and mounted by the guest's /init under a tmpfs-upper overlay, instead of
being shared over 9p. Images are cached under <vm cache>/rootfs by a digest of the tree:
every entry's path, type, mode, owner, and for non-directories its size, mtime, ctime,
device number and link target. A write to a file changes its ctime (which no one can set
back), so a changed tree gets a new image without reading the content of the files;
the same image's layers mounted again (an engine's overlay rootfs) keep their inodes'
times and share one. The most recently used images are kept (COVE_VM_ROOTFS_KEEP, 16).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from typing import Any

from cove.errors import CoveError, os_why

ANNOTATION = "io.cove.vm.rootfs"
MODES = ("9p", "image")


def mode(raw: dict[str, Any]) -> str:
    """9p or image: the annotation's, else COVE_VM_ROOTFS, else 9p."""
    v = (raw.get("annotations") or {}).get(ANNOTATION)
    what = f"annotation {ANNOTATION}={v}"
    if not v:
        v = os.environ.get("COVE_VM_ROOTFS") or "9p"
        what = f"COVE_VM_ROOTFS={v}"
    if v not in MODES:
        raise CoveError(what, "expected 9p or image")
    return str(v)


def tool() -> tuple[str, str]:
    """(fstype, mkfs binary)."""
    for fstype, name in (("erofs", "mkfs.erofs"), ("squashfs", "mksquashfs")):
        path = shutil.which(name)
        if path:
            return fstype, path
    raise CoveError(f"annotation {ANNOTATION}=image",
                    "mkfs.erofs not installed (apt-get install erofs-utils)")


def digest(rootfs: str, extra: str = "") -> str:
    """A digest of the tree's metadata (see the module's doc)."""
    h = hashlib.sha256(extra.encode() + b"\0")
    st = os.lstat(rootfs)
    h.update(repr(("", st.st_mode, st.st_uid, st.st_gid)).encode())
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(rootfs, rel) if rel else rootfs) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise CoveError(f"rootfs {rootfs}/{rel}", os_why(err)) from None
        for e in entries:
            p = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            rec: tuple[object, ...] = (p, st.st_mode, st.st_uid, st.st_gid)
            if stat.S_ISDIR(st.st_mode):
                stack.append(p)
            else:
                rec += (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_rdev)
                if stat.S_ISLNK(st.st_mode):
                    rec += (os.readlink(e.path),)
            h.update(repr(rec).encode(errors="surrogateescape"))
    return h.hexdigest()


def image(cache_dir: str, rootfs: str) -> tuple[str, str]:
    """(path, fstype) of the rootfs's image, built on a cache miss."""
    fstype, mkfs = tool()
    mst = os.stat(mkfs)
    d = digest(rootfs, f"{mkfs}:{mst.st_size}:{mst.st_mtime_ns}")
    idir = os.path.join(cache_dir, "rootfs")
    path = os.path.join(idir, f"{d[:32]}.{fstype}")
    if os.path.exists(path):
        os.utime(path)  # most recently used
        return path, fstype
    os.makedirs(idir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    if fstype == "erofs":
        cmd = [mkfs, "--quiet", "--preserve-mtime", tmp, rootfs]
    else:
        cmd = [mkfs, rootfs, tmp, "-noappend", "-quiet", "-no-progress",
               "-noI", "-noD", "-noF", "-noX"]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
        if r.returncode != 0:
            err = (r.stderr or r.stdout).decode(errors="replace").strip()
            raise CoveError(f"rootfs image ({os.path.basename(mkfs)})",
                            err.splitlines()[-1] if err else f"exit status {r.returncode}")
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _evict(idir, keep=int(os.environ.get("COVE_VM_ROOTFS_KEEP") or 16))
    return path, fstype


def _evict(idir: str, keep: int) -> None:
    """Drop the least recently used images past `keep`, and stale partial builds."""
    imgs, now = [], time.time()
    for name in os.listdir(idir):
        p = os.path.join(idir, name)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if name.endswith(".tmp"):
            if now - st.st_mtime > 3600:
                _unlink(p)
        else:
            imgs.append((st.st_mtime, p))
    for _, p in sorted(imgs, reverse=True)[max(keep, 1):]:
        _unlink(p)  # a running VM keeps its open image


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
