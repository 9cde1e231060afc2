"""The content store: blobs addressed by sha256 digest, verified while written and
renamed into place, shared by every image; an index of names → manifest digests;
per-layer snapshots (unpacked by `cove.image.layers`) keyed by diffID.

Layout under the store root (`/var/lib/cove` for root, `$XDG_DATA_HOME/cove` otherwise):

    blobs/sha256/<hex>           content (manifests, configs, layers)
    index.json                   {"images": {digest: {names, created, ...}},
                                  "blob_sources": {digest: ["host/repo", ...]}}
    snapshots/<diffid hex>/      one unpacked layer (fs/ + whiteouts.json)
    containers/<id>/             a container's bundle, overlay upper/work/merged
    tmp/                         partial writes (same filesystem: rename is atomic), flock(2)ed
                                 while in use; partial-<hex>: a download to resume
    lock                         flock(2) serialising index updates
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import IO, Any

from cove.errors import CoveError
from cove.image import reference
from cove.image.blobs import BlobWriter, DigestMismatch
from cove.oci.image import (
    INDEX_TYPES,
    ImageConfig,
    Index,
    Manifest,
    check_digest,
    manifest_media_type,
)
from cove.oci.record import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import tempfile
else:
    from cove.lazy import lazy

    tempfile = lazy("tempfile")


def default_root() -> str:
    if os.geteuid() == 0:
        return "/var/lib/cove"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "cove")


def _sha256_hex(data: bytes) -> str:
    """sha256 of a small blob with the interpreter's own implementation: hashlib loads
    OpenSSL (~3.5 ms), which `cove run` would pay to check its image's config."""
    try:
        from _sha256 import sha256
    except ImportError:  # Python 3.12: _sha2
        from hashlib import sha256
    return str(sha256(data).hexdigest())


@record
class ImageRecord:
    digest: str                                   # the manifest (or index) digest
    names: list[str] = field(default_factory=list)
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"names": self.names, "created": self.created}


@record
class Image:
    """A stored image manifest with its config, ready to unpack or run."""
    digest: str
    manifest: Manifest
    config: ImageConfig
    config_raw: bytes
    names: list[str]

    @property
    def size(self) -> int:
        return self.manifest.config.size + sum(x.size for x in self.manifest.layers)


class Store:
    def __init__(self, root: str | None = None, create: bool = True) -> None:
        """The store at `root`; its directories are made unless `create` is False (for
        commands that only read: `cove --root /typo ps` must not make /typo)."""
        self.root = os.path.abspath(root or default_root())
        self.blob_dir = os.path.join(self.root, "blobs", "sha256")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.snapshot_dir = os.path.join(self.root, "snapshots")
        self.container_dir = os.path.join(self.root, "containers")
        self.index_path = os.path.join(self.root, "index.json")
        for d in (self.blob_dir, self.tmp_dir, self.snapshot_dir, self.container_dir):
            if create:
                os.makedirs(d, mode=0o700 if d == self.tmp_dir else 0o755, exist_ok=True)

    # -- blobs ---------------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        check_digest(digest)
        return os.path.join(self.blob_dir, digest.partition(":")[2])

    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    def blob_size(self, digest: str) -> int:
        return os.stat(self.blob_path(digest)).st_size

    def writer(self, expected: str | None = None, size: int | None = None,
               resumable: bool = False) -> BlobWriter:
        return BlobWriter(self, expected, size, resumable)

    def clean_stale(self, partials: bool = False) -> list[str]:
        """Remove what killed processes left: temp blobs and unpacks nobody holds a lock
        on (and, with `partials`, resumable downloads too). Returns what went."""
        from cove.image.layers import remove_tree
        gone = []
        for base, prefixes in ((self.tmp_dir, ("blob-", "partial-") if partials
                                else ("blob-",)), (self.snapshot_dir, (".tmp-",))):
            for name in os.listdir(base):
                if not name.startswith(prefixes):
                    continue
                path = os.path.join(base, name)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue          # in use
                else:
                    with contextlib.suppress(OSError):
                        remove_tree(path)
                    gone.append(path)
                finally:
                    os.close(fd)
        return gone

    def put_blob(self, data: bytes, expected: str | None = None) -> str:
        with self.writer(expected, None if expected is None else len(data)) as w:
            w.write(data)
            return w.commit()

    def put_blob_file(self, f: IO[bytes], expected: str | None = None,
                      size: int | None = None) -> str:
        with self.writer(expected, size) as w:
            while chunk := f.read(1 << 20):
                w.write(chunk)
            return w.commit()

    def open_blob(self, digest: str) -> IO[bytes]:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise CoveError(f"blob {digest}", "not in the store") from None

    def read_blob(self, digest: str) -> bytes:
        """A small blob's content, verified against its digest (manifests, configs)."""
        with self.open_blob(digest) as f:
            data = f.read()
        if "sha256:" + _sha256_hex(data) != digest:
            raise DigestMismatch(f"blob {digest}", "stored content is corrupt")
        return data

    def remove_blob(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.blob_path(digest))

    # -- the index -----------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The index, locked for update; written back (atomically) on a clean exit."""
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            idx = self._load()
            yield idx
            self._save(idx)
        finally:
            os.close(fd)

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.index_path) as f:
                idx = json.load(f)
        except FileNotFoundError:
            idx = {}
        except ValueError as e:
            raise CoveError(self.index_path, f"corrupt store index: {e}") from None
        idx.setdefault("version", 1)
        idx.setdefault("images", {})
        idx.setdefault("blob_sources", {})
        out: dict[str, Any] = idx
        return out

    def _save(self, idx: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="index-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(idx, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.index_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def index(self) -> dict[str, Any]:
        return self._load()

    def records(self) -> list[ImageRecord]:
        idx = self._load()
        return [ImageRecord(d, list(r.get("names", [])), float(r.get("created", 0)))
                for d, r in idx["images"].items()]

    def add_image(self, digest: str, names: list[str] | tuple[str, ...] = (),
                  sources: dict[str, str] | None = None) -> None:
        """Record an image (its manifest and blobs must be stored) and point `names` at
        it; a name moved off another image leaves that one dangling (`<none>`)."""
        check_digest(digest)
        if not self.has_blob(digest):
            raise CoveError(f"image {digest}", "manifest not in the store")
        with self.locked() as idx:
            rec = idx["images"].setdefault(digest, {"names": [], "created": time.time()})
            for n in names:
                for d, other in idx["images"].items():
                    if d != digest and n in other["names"]:
                        other["names"].remove(n)
                if n not in rec["names"]:
                    rec["names"].append(n)
            for blob, src in (sources or {}).items():
                lst = idx["blob_sources"].setdefault(blob, [])
                if src not in lst:
                    lst.append(src)

    def add_blob_sources(self, sources: dict[str, str]) -> None:
        with self.locked() as idx:
            for blob, src in sources.items():
                lst = idx["blob_sources"].setdefault(blob, [])
                if src not in lst:
                    lst.append(src)

    def blob_sources(self, digest: str) -> list[str]:
        return list(self._load()["blob_sources"].get(digest, []))

    def tag(self, image: str, name: str) -> str:
        digest = self.resolve(image)
        self.add_image(digest, [str(reference.parse(name))])
        return digest

    def untag(self, name: str) -> str | None:
        """Remove a name; return the digest it pointed at (None if unknown)."""
        full = str(reference.parse(name))
        with self.locked() as idx:
            for d, rec in idx["images"].items():
                if full in rec["names"]:
                    rec["names"].remove(full)
                    return str(d)
        return None

    def resolve(self, ref: str) -> str:
        """A name, a name@digest, a full digest or a unique id prefix → manifest digest."""
        idx = self._load()
        images: dict[str, Any] = idx["images"]
        s = ref.removeprefix("sha256:")
        if 4 <= len(s) <= 64 and all(c in "0123456789abcdef" for c in s):
            hits = [d for d in images if d.partition(":")[2].startswith(s)]
            if not hits:
                # the IMAGE ID `cove images` shows: the config's digest, as docker's (it
                # stays the same across save and load, which may rewrite the manifest)
                hits = [d for d in images if self.config_digest(d).partition(":")[2]
                        .startswith(s)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise CoveError(f"image {ref}", "ambiguous id prefix")
        # Not an id: a reference, which must parse (the parse error is the answer).
        # localhost/NAME (and a qualified name) first: reading the search registries
        # (a TOML file) is only needed when those are not here.
        cands = reference.local_candidates(ref, [])
        if "@" in ref:
            r = reference.parse(ref)
            if r.digest in images:
                return r.digest
        for tries in (0, 1):
            for c in cands:
                for d, rec in images.items():
                    if c in rec["names"]:
                        return d
            if tries == 0:
                cands = reference.local_candidates(ref, reference.search_registries(self.root))
        raise CoveError(f"image {ref}", "not found in the local store")

    def config_digest(self, digest: str) -> str:
        """The config digest of the stored image `digest` (for an index, of this host's
        platform's manifest): its IMAGE ID. "" when it can't be read."""
        try:
            return self.image(digest).manifest.config.digest
        except (CoveError, OSError, ValueError):
            return ""

    def remove_image(self, digest: str) -> None:
        with self.locked() as idx:
            idx["images"].pop(digest, None)

    # -- reading images ------------------------------------------------------------
    def manifest_raw(self, digest: str) -> tuple[bytes, str]:
        data = self.read_blob(digest)
        return data, manifest_media_type(data)

    def image(self, ref_or_digest: str, platform: Any = None) -> Image:
        """The image a reference names; an index resolves to `platform` (host's default)."""
        digest = ref_or_digest if ref_or_digest.startswith("sha256:") and \
            len(ref_or_digest) == 71 and self.has_blob(ref_or_digest) else \
            self.resolve(ref_or_digest)
        rec = self._load()["images"].get(digest, {})
        data, mt = self.manifest_raw(digest)
        if mt in INDEX_TYPES:
            from cove.image.platforms import host_platform
            desc = Index.parse(data).select(platform or host_platform())
            if not self.has_blob(desc.digest):
                raise CoveError(f"image {ref_or_digest}",
                                f"platform {desc.platform} is not in the store")
            digest = desc.digest
            data, mt = self.manifest_raw(digest)
        m = Manifest.parse(data, mt)
        raw = self.read_blob(m.config.digest)
        cfg = ImageConfig.parse(raw)
        if len(cfg.diff_ids) != len(m.layers):
            raise CoveError(f"image {digest}", f"config lists {len(cfg.diff_ids)} diff_ids "
                                               f"for {len(m.layers)} layers")
        return Image(digest, m, cfg, raw, list(rec.get("names", [])))

    # -- garbage collection --------------------------------------------------------
    def referenced(self) -> tuple[set[str], set[str]]:
        """Blobs and snapshot diffIDs reachable from recorded images and containers."""
        blobs: set[str] = set()
        diffs: set[str] = set()
        idx = self._load()
        todo = list(idx["images"])
        while todo:
            d = todo.pop()
            if d in blobs or not self.has_blob(d):
                continue
            blobs.add(d)
            try:
                data, mt = self.manifest_raw(d)
                if mt in INDEX_TYPES:
                    todo += [x.digest for x in Index.parse(data).manifests]
                    continue
                m = Manifest.parse(data, mt)
            except CoveError:
                continue
            blobs.add(m.config.digest)
            blobs.update(x.digest for x in m.layers)
            with contextlib.suppress(CoveError, OSError):
                diffs.update(ImageConfig.parse(self.read_blob(m.config.digest)).diff_ids)
        for cid in os.listdir(self.container_dir):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(self.container_dir, cid, "layers.json")) as f:
                    diffs.update(json.load(f))
        return blobs, diffs

    def gc(self) -> tuple[list[str], list[str]]:
        """Remove blobs and snapshots nothing references (and what killed processes
        left in tmp/); return what went."""
        from cove.image.layers import remove_tree
        self.clean_stale(partials=True)
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for name in os.listdir(self.tmp_dir):   # index writes happen under the lock
                if name.startswith("index-"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.tmp_dir, name))
            blobs, diffs = self.referenced()
            gone_b, gone_s = [], []
            for h in os.listdir(self.blob_dir):
                if f"sha256:{h}" not in blobs:
                    self.remove_blob(f"sha256:{h}")
                    gone_b.append(f"sha256:{h}")
            keep = {d.partition(":")[2] for d in diffs}
            for h in os.listdir(self.snapshot_dir):
                if h not in keep and not h.startswith("."):
                    remove_tree(os.path.join(self.snapshot_dir, h))
                    gone_s.append(f"sha256:{h}")
            idx = self._load()
            live = set(os.listdir(self.blob_dir))
            for b in list(idx["blob_sources"]):
                if b.partition(":")[2] not in live:
                    del idx["blob_sources"][b]
            self._save(idx)
            return gone_b, gone_s
        finally:
            os.close(fd)

    def remove_new_blobs(self, digests: list[str]) -> None:
        """After a failed pull or load: drop the blobs it wrote that nothing references."""
        blobs, _ = self.referenced()
        for d in digests:
            if d not in blobs:
                self.remove_blob(d)


def disk_usage(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def rmtree_quiet(path: str) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
