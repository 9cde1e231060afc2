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

import contextlib
import errno
import fcntl
import io
import json
import os
import queue
import shutil
import stat
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from cove.errors import CoveError
from cove.image import userns
from cove.oci.image import LAYER_COMPRESSION
from cove.oci.record import field, record

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
_CHUNK = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITERS = 4                 # threads creating files while the tar stream is parsed
_ASYNC_MAX = 1 << 20         # files up to this size go to them (as bytes in memory)
_ASYNC_SLOTS = 64            # files in flight at most
_PREFETCH = 8                # decompressed chunks read ahead


class LayerError(CoveError):
    """A layer that cannot (or must not) be unpacked."""


def detect_compression(head: bytes) -> str:
    """The compression a stream's first bytes name: gzip, zstd, bzip2, xz or none
    (bzip2 and xz only as docker's DecompressStream reads them: ADD's local tars, old
    archives; no OCI media type names them)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
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
        compression = detect_compression(buf.peek(6)[:6])
        f = buf
    if compression == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    if compression == "bzip2":
        import bz2
        return bz2.BZ2File(f, "rb")
    if compression == "xz":
        import lzma
        return lzma.LZMAFile(f, "rb")
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


class _Prefetched(_Counted):
    """`_Counted`, with decompressing, hashing and counting done ahead by a thread
    (zlib, zstd and sha256 release the GIL) while tarfile parses and files are written."""

    def __init__(self, f: IO[bytes], limit: int, what: str) -> None:
        super().__init__(f, limit, what)
        self._q: queue.Queue[bytes | BaseException] = queue.Queue(_PREFETCH)
        self._buf = memoryview(b"")
        self._eof = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="unpack-read", daemon=True)
        self._t.start()

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        buf = bytearray(_CHUNK)
        try:
            while True:
                n = _Counted.readinto(self, buf)
                if not self._put(bytes(buf[:n])) or not n:
                    return
        except BaseException as e:
            self._put(e)

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._eof:
            item = self._q.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
            self._buf = memoryview(item)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        super().close()


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


@record
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
            while chunk := src.read(_CHUNK):
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
        counted = _Prefetched(decompressed(src, compression), max_size, what)
        u = _Unpacker(fs, what, max_size, overlay_markers)
        try:
            with tarfile.open(fileobj=io.BufferedReader(counted, _CHUNK), mode="r|") as tf:
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
        if func in (os.open, os.scandir):  # a directory it could not enter: no retry
            if not isinstance(exc[1], FileNotFoundError):
                raise exc[1]
            return
        try:
            func(p)
        except FileNotFoundError:
            pass
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
        return
    if os.path.isdir(path):
        try:
            shutil.rmtree(path, onerror=onerror)
        except PermissionError:
            # Rootless: directories owned by subordinate ids (unpacked or written by a
            # container through its user namespace) yield only to that namespace's root.
            if not userns.mapped():
                raise
            userns.call(remove_tree, path)


# -- the copy fallback: apply snapshots in order into one plain directory -------------

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
