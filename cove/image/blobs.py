"""Blobs being written into the content store: verified against their digest while
they stream in, resumable partial downloads, renamed into place only when whole.
Apart from cove/image/store.py so that the index of names and the byte-level writer
each read on their own; the store hands out a `BlobWriter` from `Store.writer`."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import IO

from cove.errors import CoveError
from cove.oci.image import check_digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    import hashlib
    import tempfile

    from cove.image.store import Store
else:
    from cove.lazy import lazy

    hashlib = lazy("hashlib")
    tempfile = lazy("tempfile")


class DigestMismatch(CoveError):
    """Content that does not hash to the digest it was fetched or loaded under."""


class BlobWriter:
    """Write one blob: hashed as it is written into a temp file under the store's tmp/,
    then verified and renamed into place by `commit`. `abort` (or any failure) leaves
    nothing behind. Use as a context manager: leaving it without `commit` aborts.

    The temp file is flock(2)ed while in use, so `Store.clean_stale` can tell a live
    write from one a killed process left. With `resumable` (and an expected digest) the
    temp file is `tmp/partial-<hex>`: a download killed half-way is picked up again by
    the next writer of that blob (`written` > 0: fetch the rest with a Range request)."""

    def __init__(self, store: Store, expected: str | None = None,
                 size: int | None = None, resumable: bool = False) -> None:
        if expected is not None:
            check_digest(expected)
        self.store = store
        self.expected = expected
        self.size = size
        self.written = 0
        self.resumed = 0
        self._hash = hashlib.sha256()
        self._f: IO[bytes] | None = None
        self.digest = ""
        if resumable and expected is not None:
            self.tmp = os.path.join(store.tmp_dir, "partial-" + expected.partition(":")[2])
            fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)      # another process is fetching it: a private temp file
            else:
                self._f = os.fdopen(fd, "r+b")
                self._resume()
                return
        fd, self.tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-")
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._f = os.fdopen(fd, "r+b")

    def _resume(self) -> None:
        """Hash what an earlier, interrupted writer left in the partial file."""
        assert self._f is not None
        while chunk := self._f.read(1 << 20):
            self._hash.update(chunk)
            self.written += len(chunk)
        if self.size is not None and self.written > self.size:
            self.reset()
        self.resumed = self.written

    def write(self, data: bytes) -> None:
        assert self._f is not None, "blob writer is closed"
        self.written += len(data)
        if self.size is not None and self.written > self.size:
            self.abort()
            raise DigestMismatch(f"blob {self.expected or ''}".strip(),
                                 f"more data than its declared size {self.size}")
        self._hash.update(data)
        self._f.write(data)

    def reset(self) -> None:
        """Start over (a retried download)."""
        assert self._f is not None
        self._f.seek(0)
        self._f.truncate()
        self._hash = hashlib.sha256()
        self.written = 0

    def commit(self) -> str:
        """Verify and move into place; return the digest. Idempotent for equal content."""
        assert self._f is not None, "blob writer is closed"
        digest = "sha256:" + self._hash.hexdigest()
        what = f"blob {self.expected or digest}"
        if self.expected is not None and digest != self.expected:
            self.abort()
            raise DigestMismatch(what, f"digest mismatch: content hashes to {digest}")
        if self.size is not None and self.written != self.size:
            self.abort()
            raise DigestMismatch(what, f"size mismatch: got {self.written} bytes, "
                                       f"expected {self.size}")
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            os.fchmod(self._f.fileno(), 0o644)
            # Renamed while still locked: clean_stale never sees it unlocked.
            os.replace(self.tmp, self.store.blob_path(digest))
        except BaseException:
            self.abort()
            raise
        self._f.close()
        self._f = None
        self.digest = digest
        return digest

    def abort(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()   # a full disk fails the flush of buffered data
            self._f = None

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            self.abort()
