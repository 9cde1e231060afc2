"""The pieces of a layer that unpacking and copying share: its compression and the
counted, decompressed stream (read ahead by a thread), member names made safe, the
whiteouts record of a snapshot, and an rm -rf that gets through what a layer made
unwritable. cove/image/layers.py (unpack) and cove/image/layercopy.py (the copy
fallback) stand on it; `cove.image.layers` re-exports what its importers use."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from cove.errors import CoveError
from cove.image import userns
from cove.oci.image import LAYER_COMPRESSION
from cove.oci.record import field, record

if TYPE_CHECKING:
    import gzip
    import hashlib
else:
    from cove.lazy import lazy

    gzip = lazy("gzip")
    hashlib = lazy("hashlib")

CHUNK = 1 << 20
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
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass


class Prefetched(_Counted):
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
        buf = bytearray(CHUNK)
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
