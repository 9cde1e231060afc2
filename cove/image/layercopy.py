"""The copy fallback: a container's rootfs as a plain directory, its image's snapshots
applied in order as overlayfs would show them (where overlayfs is not allowed: some
rootless kernels, file systems that cannot be an upper dir)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat

from cove.image import userns
from cove.image.layerio import Whiteouts, remove_tree


def apply_snapshots(snapshots: list[str], dest: str) -> None:
    """`apply_snapshot` of each, in order; rootless with subordinate ids, in the
    containers' user namespace (the copies keep the layers' owners)."""
    userns.call(_apply_all, snapshots, dest)


def _apply_all(snapshots: list[str], dest: str) -> None:
    for s in snapshots:
        apply_snapshot(s, dest)


def apply_snapshot(snapshot: str, dest: str) -> None:
    """Merge one snapshot (a layer) onto `dest` as overlayfs would show it."""
    src = os.path.join(snapshot, "fs")
    wh = Whiteouts.load(os.path.join(snapshot, "whiteouts.json"))
    is_root = os.geteuid() == 0
    for d in wh.opaque:
        target = os.path.join(dest, d) if d else dest
        if os.path.isdir(target) and not os.path.islink(target):
            for name in os.listdir(target):
                remove_tree(os.path.join(target, name))
    skip = set(wh.whiteouts)
    for w in wh.whiteouts:
        target = os.path.join(dest, w)
        if _safe_under(dest, w) and os.path.lexists(target):
            remove_tree(target)
    inodes: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result, str]] = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in dirnames + filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            s = os.path.join(dirpath, name)
            d = os.path.join(dest, rel)
            st = os.lstat(s)
            if rel in skip and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                continue
            if stat.S_ISDIR(st.st_mode):
                if os.path.islink(d) or (os.path.lexists(d) and not os.path.isdir(d)):
                    os.unlink(d)
                if not os.path.isdir(d):
                    os.mkdir(d, 0o700)
                dirs.append((d, st, s))
                continue
            if os.path.lexists(d):
                remove_tree(d)
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in inodes:
                os.link(inodes[key], d, follow_symlinks=False)
                continue
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISREG(st.st_mode):
                shutil.copyfile(s, d, follow_symlinks=False)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(d, 0o600)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                os.mknod(d, st.st_mode, st.st_rdev)
            else:
                continue
            inodes[key] = d
            _copy_meta(s, d, st, is_root)
    for d, st, s in reversed(dirs):
        _copy_meta(s, d, st, is_root)


def _safe_under(root: str, rel: str) -> bool:
    cur = root
    for part in rel.split("/")[:-1]:
        cur = os.path.join(cur, part)
        if os.path.islink(cur) or not os.path.isdir(cur):
            return False
    return True


def _copy_meta(s: str, d: str, st: os.stat_result, is_root: bool) -> None:
    link = stat.S_ISLNK(st.st_mode)
    if is_root:
        os.lchown(d, st.st_uid, st.st_gid)
    if not link:
        os.chmod(d, stat.S_IMODE(st.st_mode))
    with contextlib.suppress(OSError):
        for name in os.listxattr(s, follow_symlinks=False):
            if name.startswith("trusted.overlay."):
                continue
            with contextlib.suppress(OSError):
                os.setxattr(d, name, os.getxattr(s, name, follow_symlinks=False),
                            follow_symlinks=False)
    with contextlib.suppress(OSError):
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
