"""Files into a tar as an image layer holds them: the one writer behind a build step's
layer, `cove commit`'s layer, and `cove cp`/`cove export`'s archives.

Each entry keeps what an image layer must: numeric owners (no names: the image's
/etc/passwd, not the host's, gives them meaning), the mode, the mtime, a hard link
as a link to the first name of its inode, device numbers, FIFOs, and the xattrs an
image carries (`security.capability`, so that a file made `setcap` keeps its file
capabilities, and `user.*`), as PAX `SCHILY.xattr.NAME` records (docker's, buildah's
and containerd's spelling, which `cove.image.layers` reads back). Sockets are left out,
as docker leaves them out.

Written from an overlay upper directory (`overlay=True`) two kinds of entries mean
something else: a 0:0 character device is overlayfs's mark of a deletion and becomes
the OCI whiteout `.wh.NAME`; a directory marked opaque (`trusted.overlay.opaque=y`,
`user.overlay.opaque=y` on a rootless mount) replaced the one below and gets
`.wh..wh..opq`. overlayfs's own xattrs never go into a layer.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterable, Iterator

from cove.image import layers

_OPAQUE_XATTRS = (layers.OPAQUE_XATTR, "user.overlay.opaque")
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY


def kept_xattr(name: str) -> bool:
    """Whether an xattr goes into a layer: file capabilities and user xattrs, never
    overlayfs's bookkeeping (`trusted.overlay.*`, `user.overlay.*`)."""
    if name == "security.capability":
        return True
    return name.startswith("user.") and not name.startswith("user.overlay.")


def _xattrs(target: int | str) -> dict[str, str]:
    """The kept xattrs of an fd or a path (not followed), as PAX header values (bytes
    decoded with surrogateescape: tarfile writes them back byte for byte, marking the
    header hdrcharset=BINARY where they are not UTF-8)."""
    try:
        names = os.listxattr(target, follow_symlinks=False) if isinstance(target, str) \
            else os.listxattr(target)
    except OSError:
        return {}   # a filesystem without xattrs
    out: dict[str, str] = {}
    for n in names:
        if not kept_xattr(n):
            continue
        try:
            v = os.getxattr(target, n, follow_symlinks=False) if isinstance(target, str) \
                else os.getxattr(target, n)
        except OSError:
            continue
        out["SCHILY.xattr." + n] = v.decode("utf-8", "surrogateescape")
    return out


def is_opaque(target: int | str) -> bool:
    """Whether overlayfs marked this upper directory opaque (it replaced the one below)."""
    for n in _OPAQUE_XATTRS:
        try:
            v = os.getxattr(target, n, follow_symlinks=False) if isinstance(target, str) \
                else os.getxattr(target, n)
        except OSError:
            continue
        if v == b"y":
            return True
    return False


def tar_info(arc: str, st: os.stat_result) -> tarfile.TarInfo:
    """A member named `arc` with `st`'s numeric owners, mode and mtime."""
    ti = tarfile.TarInfo(arc)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = int(st.st_mtime)
    return ti


class LayerWriter:
    """Adds files to an open PAX tar one entry at a time (a directory's own entry, not
    what it holds: the caller walks). Hard links are found across all the entries this
    writer adds."""

    def __init__(self, tf: tarfile.TarFile, *, overlay: bool = False) -> None:
        self.tf = tf
        self.overlay = overlay
        self.links: dict[tuple[int, int], str] = {}
        self.count = 0

    def whiteout(self, arc: str, mtime: float = 0) -> None:
        """The OCI mark that `arc` was deleted: `.wh.NAME` beside it."""
        parent, _, base = arc.rpartition("/")
        wh = tarfile.TarInfo(f"{parent}/{layers.WHITEOUT_PREFIX}{base}".lstrip("/"))
        wh.mtime = int(mtime)
        self.tf.addfile(wh)

    def add(self, arc: str, st: os.stat_result, name: str, dir_fd: int | None = None
            ) -> None:
        """The file `name` (a path, or a name in the directory `dir_fd`; never
        followed), whose lstat is `st`, as the member `arc`."""
        mode = st.st_mode
        self.count += 1
        if self.overlay and stat.S_ISCHR(mode) and st.st_rdev == 0:
            self.whiteout(arc, st.st_mtime)
            return
        ti = tar_info(arc, st)
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                ti.type, ti.linkname = tarfile.LNKTYPE, self.links[key]
                self.tf.addfile(ti)
                return
            self.links[key] = arc
            fd = os.open(name, _OPEN, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as f:
                ti.size = os.fstat(fd).st_size
                ti.pax_headers = _xattrs(fd)
                self.tf.addfile(ti, f)
        elif stat.S_ISDIR(mode):
            ti.type = tarfile.DIRTYPE
            fd = os.open(name, _OPEN | os.O_DIRECTORY, dir_fd=dir_fd)
            try:
                ti.pax_headers = _xattrs(fd)
                opaque = self.overlay and is_opaque(fd)
            finally:
                os.close(fd)
            self.tf.addfile(ti)
            if opaque:
                opq = tarfile.TarInfo(f"{arc}/{layers.OPAQUE}")
                opq.mtime = int(st.st_mtime)
                self.tf.addfile(opq)
        elif stat.S_ISLNK(mode):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
            self.tf.addfile(ti)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tf.addfile(ti)
        elif stat.S_ISFIFO(mode):
            ti.type = tarfile.FIFOTYPE
            self.tf.addfile(ti)
        else:
            self.count -= 1   # a socket: not archived


def walk_upper(upper: str, skip: set[str] | None = None
               ) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under `upper`, sorted, parents first;
    `skip` (relative paths) and what is under them left out."""
    for dirpath, dirnames, filenames in os.walk(upper):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, upper)
        rel_dir = "" if rel_dir == "." else rel_dir
        if skip:
            dirnames[:] = [d for d in dirnames
                           if (f"{rel_dir}/{d}" if rel_dir else d) not in skip]
        for name in sorted(dirnames + filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if skip and rel in skip:
                continue
            yield rel, os.lstat(os.path.join(dirpath, name))


def write_upper(upper: str, out: str,
                entries: Iterable[tuple[str, os.stat_result]] | None = None) -> int:
    """An overlay upper directory's change as a layer tar at `out`: `entries` (relative
    path, lstat), by default all of `upper` (walk_upper). Returns the entry count."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        w = LayerWriter(tf, overlay=True)
        for rel, st in walk_upper(upper) if entries is None else entries:
            w.add(rel, st, os.path.join(upper, rel))
        return w.count
