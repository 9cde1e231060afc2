"""Files in a step's root filesystem: paths resolved inside it (an image's symlinks
never lead out to the host), COPY's copying with owners, modes and the xattrs a layer
keeps (file capabilities: set after the chown, which clears them), and ADD's
unpacking of a local tar. (The step's change becomes a layer through
cove.image.layerwrite.)
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from typing import IO

from cove.errors import CoveError
from cove.image import layers

_MAX_LINKS = 40


def in_root(root: str, path: str, follow_last: bool = True) -> str:
    """`path` inside `root`, symlinks resolved as if `root` were `/` (securejoin)."""
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    cur = "/"
    hops = 0
    while parts:
        p = parts.pop(0)
        if p == "..":
            cur = posixpath.dirname(cur)
            continue
        nxt = posixpath.join(cur, p)
        full = root + nxt
        if (parts or follow_last) and os.path.islink(full):
            hops += 1
            if hops > _MAX_LINKS:
                raise CoveError(path, "too many levels of symbolic links in the image")
            target = os.readlink(full)
            if target.startswith("/"):
                cur = "/"
            parts = [x for x in target.split("/") if x and x != "."] + parts
            continue
        cur = nxt
    return root.rstrip("/") + cur if cur != "/" else root


def mkdirs(root: str, path: str, uid: int = 0, gid: int = 0) -> str:
    """`mkdir -p` of `path` inside `root`; new directories 0755 owned by uid:gid."""
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    cur = "/"
    for p in parts:
        full = in_root(root, posixpath.join(cur, p))
        cur = full[len(root.rstrip("/")):] or "/"
        if not os.path.isdir(full):
            if os.path.lexists(full):
                raise CoveError(path, f"{cur} exists and is not a directory")
            os.mkdir(full, 0o755)
            os.chmod(full, 0o755)
            os.lchown(full, uid, gid)
    return in_root(root, path)


def copy_entry(src: str, dst: str, uid: int | None, gid: int | None,
               mode: int | None, follow: bool = False) -> None:
    """One file, link, directory (the directory itself only) or special file."""
    st = os.stat(src) if follow else os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        if os.path.lexists(dst) and not os.path.isdir(dst):
            layers.remove_tree(dst)
        if not os.path.isdir(dst):
            os.mkdir(dst, 0o700)
    else:
        if os.path.lexists(dst):
            if os.path.isdir(dst) and not os.path.islink(dst):
                raise CoveError(dst, "cannot overwrite a directory with a file")
            os.unlink(dst)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, dst)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(dst, 0o600)
        else:
            return   # sockets, devices: not copied
    os.lchown(dst, st.st_uid if uid is None else uid, st.st_gid if gid is None else gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode) if mode is None else mode)
        copy_xattrs(src if not follow else os.path.realpath(src), dst)
    with contextlib.suppress(OSError):
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_xattrs(src: str, dst: str) -> None:
    """The xattrs an image layer keeps (layerwrite.kept_xattr), `src` to `dst`."""
    from cove.image.layerwrite import kept_xattr
    try:
        names = [n for n in os.listxattr(src, follow_symlinks=False) if kept_xattr(n)]
    except OSError:
        return
    for n in names:
        with contextlib.suppress(OSError):
            os.setxattr(dst, n, os.getxattr(src, n, follow_symlinks=False),
                        follow_symlinks=False)


def unpack_safely(src: IO[bytes], dest: str, what: str,
                  max_size: int = layers.DEFAULT_MAX_SIZE) -> str:
    """A tar stream (plain, gzip or zstd) unpacked under `dest` (which must not exist)
    by the image layer's hardened unpacker: no absolute or `..` names, nothing written
    through a symlink, no links out. Returns the directory holding the files."""
    head = src.peek(8)[:8] if hasattr(src, "peek") else b""
    comp = layers.detect_compression(head) if head else "auto"
    try:
        layers.unpack(src, comp, dest, what=what, overlay_markers=False, max_size=max_size)
    except CoveError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise CoveError(what, f"cannot unpack: {e}") from None
    return os.path.join(dest, "fs")


def extract_tar(archive: str, dest_root: str, dest: str, uid: int | None,
                gid: int | None, scratch: str) -> None:
    """ADD's auto-extraction of a local tar into `dest` inside the rootfs: unpacked
    safely into `scratch` first, then merged in (owners kept unless --chown)."""
    mkdirs(dest_root, dest)
    with open(archive, "rb") as raw:
        tree = unpack_safely(io.BufferedReader(raw), scratch,
                             f"ADD {os.path.basename(archive)}")
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, tree)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            parent = in_root(dest_root, posixpath.join(dest, posixpath.dirname(rel)))
            copy_entry(os.path.join(dirpath, name), os.path.join(parent, name), uid, gid,
                       None)
    layers.remove_tree(scratch)


def is_archive(path: str) -> bool:
    """Whether ADD unpacks this local file: a tar, plain or compressed (gzip, bzip2,
    xz, zstd), known by its content as docker knows it, not by its name."""
    try:
        with open(path, "rb") as raw:
            buf = io.BufferedReader(raw)
            comp = layers.detect_compression(buf.peek(6)[:6])
            head = layers.decompressed(buf, comp).read(tarfile.BLOCKSIZE)
    except (OSError, EOFError, ValueError, layers.LayerError):
        return False
    if len(head) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True
