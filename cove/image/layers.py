"""Unpacking image layers: gzip, zstd and uncompressed tars, into one snapshot per layer
(keyed by diffID, shared by every image that has it).

A snapshot is `snapshots/<diffid hex>/` holding `fs/` (the layer's files, with overlayfs
whiteouts: a 0:0 character device per deleted path and `trusted.overlay.opaque=y` on
opaque directories, where root may create them) and `whiteouts.json` (the same facts,
for the copy fallback and for non-root stores).

Hostile layers are refused, and a refused (or otherwise failed) unpack leaves nothing
behind: entries with absolute paths or `..`, anything reached through a symlink, hard
links to outside the layer, symlinks whose relative target climbs out of the root,
device nodes when not root, and a tar bomb (decompressed stream or written bytes past
`max_size`). Files are created with O_NOFOLLOW|O_EXCL and parents are checked with
lstat, so nothing the layer creates is ever followed.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from cove.errors import CoveError
from cove.oci.image import LAYER_COMPRESSION

DEFAULT_MAX_SIZE = 64 << 30          # 64 GiB of decompressed tar per layer
WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_CHUNK = 1 << 20


class LayerError(CoveError):
    """A layer that cannot (or must not) be unpacked."""


def detect_compression(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def compression_of(media_type: str) -> str:
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise LayerError(f"layer media type {media_type!r}", "unsupported") from None


def decompressed(f: IO[bytes], compression: str) -> IO[bytes]:
    """A reader of `f`'s tar stream; `compression` is gzip, zstd, none or auto."""
    if compression == "auto":
        buf = io.BufferedReader(f)  # type: ignore[type-var]
        compression = detect_compression(buf.peek(4)[:4])
        f = buf
    if compression == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    if compression == "none":
        return f
    raise LayerError("layer", f"unknown compression {compression!r}")


class _Counted(io.RawIOBase):
    """Hashes (the diffID) and counts what tarfile reads; refuses past the limit."""

    def __init__(self, f: IO[bytes], limit: int, what: str) -> None:
        self.f = f
        self.limit = limit
        self.what = what
        self.n = 0
        self.h = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self.f.read(len(b))
        except (OSError, EOFError) as e:
            raise LayerError(self.what, f"corrupt compressed stream: {e}") from None
        except Exception as e:  # zstandard.ZstdError
            raise LayerError(self.what, f"corrupt compressed stream: {e}") from None
        n = len(data)
        self.n += n
        if self.n > self.limit:
            raise LayerError(self.what, f"decompresses past the size limit of "
                                        f"{self.limit} bytes (a tar bomb?)")
        self.h.update(data)
        b[:n] = data
        return n

    def drain(self) -> None:
        buf = bytearray(_CHUNK)
        while self.readinto(buf):
            pass


def safe_name(name: str, what: str) -> str:
    """A member name as a clean relative path; refuses absolute paths and `..`."""
    if name.startswith("/"):
        raise LayerError(what, f"absolute path {name!r} in layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(what, f"path {name!r} climbs out of the layer with '..'")
    if "\0" in name:
        raise LayerError(what, f"NUL byte in path {name!r}")
    return "/".join(parts)


def _escapes(parent: str, target: str) -> bool:
    """Whether a symlink at `parent/x` to `target` would resolve above the root."""
    depth = 0 if target.startswith("/") else len([p for p in parent.split("/") if p])
    for p in target.split("/"):
        if p in ("", "."):
            continue
        depth = depth - 1 if p == ".." else depth + 1
        if depth < 0:
            return True
    return False


@dataclass
class Whiteouts:
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {"whiteouts": sorted(self.whiteouts), "opaque": sorted(self.opaque)}

    @classmethod
    def load(cls, path: str) -> Whiteouts:
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            return cls()
        return cls(list(d.get("whiteouts", [])), list(d.get("opaque", [])))


class _Unpacker:
    def __init__(self, root: str, what: str, max_size: int, overlay_markers: bool) -> None:
        self.root = root
        self.what = what
        self.max_size = max_size
        self.written = 0
        self.is_root = os.geteuid() == 0
        self.markers = overlay_markers and self.is_root
        self.wh = Whiteouts()
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def _err(self, why: str) -> LayerError:
        return LayerError(self.what, why)

    def _parent(self, rel: str) -> str:
        """Make (or check) the parent directories of `rel`; never through a symlink."""
        cur = self.root
        for part in [p for p in rel.split("/") if p][:-1]:
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise self._err(f"{rel!r} goes through a symlink ({part!r})")
            if not stat.S_ISDIR(st.st_mode):
                raise self._err(f"{rel!r}: parent {part!r} is not a directory")
        return cur

    def _clear(self, path: str, keep_dir: bool) -> bool:
        """Remove what is at `path` (a later entry replaces an earlier one). Returns
        True when `path` is a directory that stays (to be re-used)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            remove_tree(path)
        else:
            os.unlink(path)
        return False

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = safe_name(m.name, self.what)
        if not rel:
            return  # the root itself ("./")
        base = rel.rsplit("/", 1)[-1]
        parent_rel = rel.rpartition("/")[0]
        if base.startswith(WHITEOUT_PREFIX):
            parent = self._parent(rel)
            if base == OPAQUE:
                self.wh.opaque.append(parent_rel)
                if self.markers:
                    os.setxattr(parent, OPAQUE_XATTR, b"y")
            elif base.startswith(".wh..wh."):
                pass  # aufs metadata (.wh..wh.plnk, ...): nothing to apply
            else:
                target = base[len(WHITEOUT_PREFIX):]
                if target in ("", ".", ".."):
                    raise self._err(f"bad whiteout {m.name!r}")
                self.wh.whiteouts.append(f"{parent_rel}/{target}".lstrip("/"))
                if self.markers:
                    path = os.path.join(parent, target)
                    self._clear(path, keep_dir=False)
                    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
            return
        parent = self._parent(rel)
        path = os.path.join(parent, base)
        if m.isdir():
            if not self._clear(path, keep_dir=True):
                os.mkdir(path, 0o700)
            self.dirs.append((path, m))
            return
        self._clear(path, keep_dir=False)
        if m.isreg():
            self._file(tf, m, path)
        elif m.issym():
            if _escapes(parent_rel, m.linkname):
                raise self._err(f"symlink {rel!r} -> {m.linkname!r} points outside the layer")
            os.symlink(m.linkname, path)
        elif m.islnk():
            target_rel = safe_name(m.linkname, self.what)
            if not target_rel:
                raise self._err(f"hard link {rel!r} to the layer root")
            tparent = self._parent(target_rel)
            target = os.path.join(tparent, target_rel.rsplit("/", 1)[-1])
            try:
                tst = os.lstat(target)
            except FileNotFoundError:
                raise self._err(f"hard link {rel!r} -> {m.linkname!r}: target not in the "
                                "layer") from None
            if stat.S_ISDIR(tst.st_mode):
                raise self._err(f"hard link {rel!r} -> {m.linkname!r}: target is a directory")
            os.link(target, path, follow_symlinks=False)
            return  # shares the target's metadata
        elif m.ischr() or m.isblk():
            if not self.is_root:
                raise self._err(f"device node {rel!r}: only root may create device nodes")
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(path, 0o600 | kind, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(path, 0o600)
        else:
            raise self._err(f"{rel!r}: unsupported tar entry type {m.type!r}")
        self._meta(path, m)

    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, path: str) -> None:
        src = tf.extractfile(m)
        assert src is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                self.written += len(chunk)
                if self.written > self.max_size:
                    raise self._err(f"unpacks past the size limit of {self.max_size} bytes "
                                    "(a tar bomb?)")
                out.write(chunk)

    def _meta(self, path: str, m: tarfile.TarInfo) -> None:
        link = m.issym()
        if self.is_root:
            os.lchown(path, m.uid, m.gid)
        if not link:
            os.chmod(path, stat.S_IMODE(m.mode))
        for k, v in m.pax_headers.items():
            name: str | None = None
            value = b""
            if k.startswith("SCHILY.xattr."):
                name = k[len("SCHILY.xattr."):]
                value = v.encode("utf-8", "surrogateescape")
            elif k.startswith("LIBARCHIVE.xattr."):
                name = k[len("LIBARCHIVE.xattr."):]
                with contextlib.suppress(ValueError):
                    value = base64.b64decode(v + "=" * (-len(v) % 4))
            if name is None:
                continue
            if name.startswith("trusted.overlay."):
                continue  # a layer must not forge overlayfs markers
            try:
                os.setxattr(path, name, value, follow_symlinks=False)
            except OSError as e:
                # Unprivileged stores cannot set trusted.*/security.*; some filesystems
                # have no user xattrs on symlinks. Everything else is an error.
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
        with contextlib.suppress(OSError):
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def finish(self) -> None:
        # Directories last and deepest first: writing into them changes their mtime,
        # and a read-only mode must not stop the unpack.
        for path, m in sorted(self.dirs, key=lambda x: x[0].count("/"), reverse=True):
            self._meta(path, m)


def unpack(src: IO[bytes], compression: str, dest: str, *, max_size: int = DEFAULT_MAX_SIZE,
           expected_diff_id: str | None = None, what: str = "layer",
           overlay_markers: bool = True) -> tuple[str, Whiteouts]:
    """Unpack a layer stream into `dest/fs` (+ `dest/whiteouts.json`); return its diffID.
    `dest` must not exist: it appears complete (renamed from a temp sibling) or not at
    all."""
    tmp = f"{os.path.dirname(dest)}/.tmp-{uuid.uuid4().hex[:12]}"
    os.makedirs(tmp, 0o700)
    try:
        fs = os.path.join(tmp, "fs")
        os.mkdir(fs, 0o755)
        counted = _Counted(decompressed(src, compression), max_size, what)
        u = _Unpacker(fs, what, max_size, overlay_markers)
        try:
            with tarfile.open(fileobj=io.BufferedReader(counted, _CHUNK), mode="r|") as tf:
                for m in tf:
                    u.entry(tf, m)
        except tarfile.TarError as e:
            raise LayerError(what, f"not a valid tar stream: {e}") from None
        counted.drain()
        u.finish()
        diff_id = "sha256:" + counted.h.hexdigest()
        if expected_diff_id is not None and diff_id != expected_diff_id:
            raise LayerError(what, f"diffID mismatch: uncompressed content hashes to "
                                   f"{diff_id}, the image config says {expected_diff_id}")
        with open(os.path.join(tmp, "whiteouts.json"), "w") as f:
            json.dump(u.wh.to_json(), f)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, dest)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            remove_tree(tmp)  # another unpack of the same layer won the race
        return diff_id, u.wh
    except BaseException:
        remove_tree(tmp)
        raise


def ensure_snapshot(store: Any, layer_digest: str, media_type: str, diff_id: str, *,
                    max_size: int = DEFAULT_MAX_SIZE) -> str:
    """The snapshot dir of a stored layer blob, unpacking it on first use."""
    dest = os.path.join(store.snapshot_dir, diff_id.partition(":")[2])
    if os.path.isdir(dest):
        return dest
    with store.open_blob(layer_digest) as f:
        unpack(f, compression_of(media_type), dest, max_size=max_size,
               expected_diff_id=diff_id, what=f"layer {layer_digest}")
    return dest


def diff_id_of(f: IO[bytes], compression: str = "auto") -> str:
    """The diffID (digest of the uncompressed tar) of a layer stream."""
    h = hashlib.sha256()
    d = decompressed(f, compression)
    while chunk := d.read(_CHUNK):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def remove_tree(path: str) -> None:
    """rm -rf that also gets through directories without write/search permission."""
    def onerror(func: Callable[..., Any], p: str, exc: Any) -> None:
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)
        with contextlib.suppress(OSError):
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p)
                return
        try:
            func(p)
        except FileNotFoundError:
            pass
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
        return
    if os.path.isdir(path):
        shutil.rmtree(path, onerror=onerror)


# -- the copy fallback: apply snapshots in order into one plain directory -------------

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
