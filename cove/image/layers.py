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

The layer's stream, names and whiteouts record are cove/image/layerio.py's, the copy
fallback cove/image/layercopy.py's. The names of theirs imported below are also what
other modules reach as `layers.X` (the build's cove/image/build/fs.py and tests/build,
another change's this round, use detect_compression and apply_snapshots so).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import stat
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from cove.image import userns
from cove.image.layercopy import apply_snapshot as apply_snapshot
from cove.image.layercopy import apply_snapshots as apply_snapshots
from cove.image.layerio import CHUNK, Prefetched
from cove.image.layerio import LayerError as LayerError
from cove.image.layerio import Whiteouts as Whiteouts
from cove.image.layerio import compression_of as compression_of
from cove.image.layerio import decompressed as decompressed
from cove.image.layerio import detect_compression as detect_compression
from cove.image.layerio import remove_tree as remove_tree
from cove.image.layerio import safe_name as safe_name

if TYPE_CHECKING:
    import base64
    import gzip
    import hashlib
    import tarfile
else:
    from cove.lazy import lazy

    base64 = lazy("base64")
    gzip = lazy("gzip")
    hashlib = lazy("hashlib")
    tarfile = lazy("tarfile")

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

DEFAULT_MAX_SIZE = 64 << 30          # 64 GiB of decompressed tar per layer
WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITERS = 4                 # threads creating files while the tar stream is parsed
_ASYNC_MAX = 1 << 20         # files up to this size go to them (as bytes in memory)
_ASYNC_SLOTS = 64            # files in flight at most


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


class _Unpacker:
    """Applies tar entries under `root` (empty at the start).

    What the layer created so far is tracked in `kinds` (relative path → d, l or f), so
    parents are checked without an lstat per path component and nothing it made is
    ever followed. Regular files up to `_ASYNC_MAX` bytes are written (with their
    owner, mode, xattrs and times) by a few threads while the tar stream is parsed:
    creating a file is a syscall that waits on the filesystem's journal, and several in
    flight overlap. A path is waited for before anything replaces or links to it."""

    def __init__(self, root: str, what: str, max_size: int, overlay_markers: bool) -> None:
        self.root = root
        self.what = what
        self.max_size = max_size
        self.written = 0
        self.is_root = os.geteuid() == 0
        # In a rootless user namespace (userns.INSIDE) root may chown to the mapped ids,
        # but device nodes and trusted.* markers stay the host root's.
        self.devices = self.is_root and not userns.INSIDE
        self.markers = overlay_markers and self.devices
        self.wh = Whiteouts()
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.kinds: dict[str, str] = {}
        self.pending: dict[str, Future[None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(_ASYNC_SLOTS)

    def _err(self, why: str) -> LayerError:
        return LayerError(self.what, why)

    def _parent(self, rel: str) -> str:
        """Make (or check) the parent directories of `rel`; never through a symlink."""
        cur = self.root
        sofar = ""
        for part in [p for p in rel.split("/") if p][:-1]:
            cur = os.path.join(cur, part)
            sofar = f"{sofar}/{part}" if sofar else part
            kind = self.kinds.get(sofar)
            if kind is None:
                os.mkdir(cur, 0o755)
                self.kinds[sofar] = "d"
            elif kind == "l":
                raise self._err(f"{rel!r} goes through a symlink ({part!r})")
            elif kind != "d":
                raise self._err(f"{rel!r}: parent {part!r} is not a directory")
        return cur

    def _wait(self, rel: str) -> None:
        fut = self.pending.pop(rel, None)
        if fut is not None:
            fut.result()

    def _drain(self) -> None:
        pending, self.pending = self.pending, {}
        errors = []
        for fut in pending.values():
            try:
                fut.result()
            except BaseException as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Stop the writer threads (after a failure: before the tree is removed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _clear(self, rel: str, path: str, keep_dir: bool) -> bool:
        """Remove what is at `path` (a later entry replaces an earlier one). Returns
        True when `path` is a directory that stays (to be re-used)."""
        kind = self.kinds.get(rel)
        if kind is None:
            return False
        if kind == "d":
            if keep_dir:
                return True
            self._drain()
            remove_tree(path)
            prefix = rel + "/"
            for k in [k for k in self.kinds if k.startswith(prefix)]:
                del self.kinds[k]
        else:
            self._wait(rel)
            os.unlink(path)
        del self.kinds[rel]
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
                trel = f"{parent_rel}/{target}".lstrip("/")
                self.wh.whiteouts.append(trel)
                if self.markers:
                    path = os.path.join(parent, target)
                    self._clear(trel, path, keep_dir=False)
                    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
                    self.kinds[trel] = "f"
            return
        parent = self._parent(rel)
        path = os.path.join(parent, base)
        if m.isdir():
            if not self._clear(rel, path, keep_dir=True):
                os.mkdir(path, 0o700)
                self.kinds[rel] = "d"
            self.dirs.append((path, m))
            return
        self._clear(rel, path, keep_dir=False)
        if m.isreg():
            self.kinds[rel] = "f"
            self._file(tf, m, rel, path)
            return
        if m.issym():
            if _escapes(parent_rel, m.linkname):
                raise self._err(f"symlink {rel!r} -> {m.linkname!r} points outside the layer")
            os.symlink(m.linkname, path)
            self.kinds[rel] = "l"
        elif m.islnk():
            target_rel = safe_name(m.linkname, self.what)
            if not target_rel:
                raise self._err(f"hard link {rel!r} to the layer root")
            tparent = self._parent(target_rel)
            target = os.path.join(tparent, target_rel.rsplit("/", 1)[-1])
            tkind = self.kinds.get(target_rel)
            if tkind is None:
                raise self._err(f"hard link {rel!r} -> {m.linkname!r}: target not in the "
                                "layer")
            if tkind == "d":
                raise self._err(f"hard link {rel!r} -> {m.linkname!r}: target is a directory")
            self._wait(target_rel)
            os.link(target, path, follow_symlinks=False)
            self.kinds[rel] = tkind
            return  # shares the target's metadata
        elif m.ischr() or m.isblk():
            if not self.devices:
                raise self._err(f"device node {rel!r}: only root may create device nodes")
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(path, 0o600 | kind, os.makedev(m.devmajor, m.devminor))
            self.kinds[rel] = "f"
        elif m.isfifo():
            os.mkfifo(path, 0o600)
            self.kinds[rel] = "f"
        else:
            raise self._err(f"{rel!r}: unsupported tar entry type {m.type!r}")
        self._meta(path, m)

    def _count(self, n: int) -> None:
        self.written += n
        if self.written > self.max_size:
            raise self._err(f"unpacks past the size limit of {self.max_size} bytes "
                            "(a tar bomb?)")

    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, rel: str, path: str) -> None:
        src = tf.extractfile(m)
        assert src is not None
        if m.size <= _ASYNC_MAX:
            data = src.read()
            self._count(len(data))
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor  # 8 ms: only to unpack
                self._pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="unpack")
            self._slots.acquire()
            try:
                fut = self._pool.submit(self._write_file, path, m, data)
            except BaseException:
                self._slots.release()
                raise
            fut.add_done_callback(lambda _: self._slots.release())
            self.pending[rel] = fut
            return
        fd = os.open(path, _CREATE, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                self._count(len(chunk))
                out.write(chunk)
            out.flush()
            self._fmeta(out.fileno(), path, m)

    def _write_file(self, path: str, m: tarfile.TarInfo, data: bytes) -> None:
        fd = os.open(path, _CREATE, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self._fmeta(fd, path, m)
        finally:
            os.close(fd)

    def _fmeta(self, fd: int, path: str, m: tarfile.TarInfo) -> None:
        """A regular file's metadata, through its open descriptor."""
        if self.is_root:
            self._chown(lambda: os.fchown(fd, m.uid, m.gid), path, m)
        os.fchmod(fd, stat.S_IMODE(m.mode))
        if m.pax_headers:
            self._xattrs(fd, m)
        with contextlib.suppress(OSError):
            os.utime(fd, (m.mtime, m.mtime))

    def _meta(self, path: str, m: tarfile.TarInfo) -> None:
        link = m.issym()
        if self.is_root:
            self._chown(lambda: os.lchown(path, m.uid, m.gid), path, m)
        if not link:
            os.chmod(path, stat.S_IMODE(m.mode))
        if m.pax_headers:
            self._xattrs(path, m)
        with contextlib.suppress(OSError):
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def _chown(self, do: Callable[[], None], path: str, m: tarfile.TarInfo) -> None:
        """`do` (a chown to the entry's owner); in a rootless user namespace an owner
        outside its maps (EINVAL) is the error, named, rather than a bare errno."""
        try:
            do()
        except OSError as e:
            if e.errno != errno.EINVAL or not userns.INSIDE:
                raise
            rel = os.path.relpath(path, self.root)
            raise self._err(f"{rel!r} is owned by {m.uid}:{m.gid}, which the rootless user "
                            "namespace does not map (too few ids granted in /etc/subuid "
                            "or /etc/subgid)") from None

    def _xattrs(self, target: str | int, m: tarfile.TarInfo) -> None:
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
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as e:
                # Unprivileged stores cannot set trusted.*/security.*; some filesystems
                # have no user xattrs on symlinks. Everything else is an error.
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise

    def finish(self) -> None:
        self._drain()
        self.close()
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
    tmp = f"{os.path.dirname(dest)}/.tmp-{os.urandom(6).hex()}"
    os.makedirs(tmp, 0o700)
    # Locked while in use: Store.clean_stale removes only what a killed process left.
    lock = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        fs = os.path.join(tmp, "fs")
        os.mkdir(fs, 0o755)
        counted = Prefetched(decompressed(src, compression), max_size, what)
        u = _Unpacker(fs, what, max_size, overlay_markers)
        try:
            with tarfile.open(fileobj=io.BufferedReader(counted, CHUNK), mode="r|") as tf:
                for m in tf:
                    u.entry(tf, m)
            counted.drain()
            u.finish()
        except tarfile.TarError as e:
            raise LayerError(what, f"not a valid tar stream: {e}") from None
        finally:
            counted.close()
            u.close()
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
    finally:
        os.close(lock)


def ensure_snapshot(store: Any, layer_digest: str, media_type: str, diff_id: str, *,
                    max_size: int = DEFAULT_MAX_SIZE) -> str:
    """The snapshot dir of a stored layer blob, unpacking it on first use."""
    dest = os.path.join(store.snapshot_dir, diff_id.partition(":")[2])
    if os.path.isdir(dest):
        return dest
    # Rootless with subordinate ids: unpacked in the containers' user namespace, so the
    # layer's owners become the host ids the containers see them as.
    userns.call(_unpack_blob, store, layer_digest, media_type, diff_id, dest, max_size)
    return dest


def _unpack_blob(store: Any, layer_digest: str, media_type: str, diff_id: str, dest: str,
                 max_size: int) -> None:
    with store.open_blob(layer_digest) as f:
        unpack(f, compression_of(media_type), dest, max_size=max_size,
               expected_diff_id=diff_id, what=f"layer {layer_digest}",
               overlay_markers=not userns.INSIDE)


def diff_id_of(f: IO[bytes], compression: str = "auto") -> str:
    """The diffID (digest of the uncompressed tar) of a layer stream."""
    h = hashlib.sha256()
    d = decompressed(f, compression)
    while chunk := d.read(CHUNK):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


