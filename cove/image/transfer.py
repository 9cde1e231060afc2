"""Moving images: pull and push (a registry), import (a rootfs tar), save and load
(docker-archive and oci-archive)."""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from cove.errors import CoveError, os_why
from cove.image import layers, reference
from cove.image.platforms import host_platform
from cove.image.progress import Progress
from cove.image.registry import Registry
from cove.image.store import Store
from cove.oci.image import (
    DOCKER_CONFIG,
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    ContainerConfig,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
)

PARALLEL = 4


@dataclass
class RegistryOptions:
    tls_verify: bool = True
    cert_dir: str | None = None
    authfile: str | None = None
    creds: tuple[str, str] | None = None

    def client(self, host: str) -> Registry:
        return Registry(host, tls_verify=self.tls_verify, cert_dir=self.cert_dir,
                        creds=self.creds, authfile=self.authfile)


@dataclass
class _Track:
    """Blobs and snapshots a transfer created: removed again when it fails."""
    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)

    def undo(self, store: Store) -> None:
        store.remove_new_blobs(self.blobs)
        _, diffs = store.referenced()
        for s in self.snapshots:
            if s not in diffs:
                layers.remove_tree(os.path.join(store.snapshot_dir, s.partition(":")[2]))


def _short(d: str) -> str:
    return d.partition(":")[2][:12]


# -- pull -------------------------------------------------------------------------------

def pull(store: Store, ref: str, *, platform: Platform | None = None,
         opts: RegistryOptions | None = None, progress: Progress | None = None,
         client: Registry | None = None, max_size: int = layers.DEFAULT_MAX_SIZE) -> str:
    """Pull `ref` into the store (blobs verified, layers unpacked); return the manifest
    digest. A short name is tried against each search registry in turn
    (`reference.search_registries`); the first that has it wins. A failure leaves
    nothing behind."""
    cands = [ref] if client is not None or reference.has_explicit_registry(ref) else \
        reference.pull_candidates(ref, reference.search_registries(store.root))
    if not cands:
        raise CoveError(f"image {ref}", "short name and no unqualified-search-registries")
    errors: list[CoveError] = []
    for c in cands:
        try:
            return _pull_one(store, c, platform=platform, opts=opts, progress=progress,
                             client=client, max_size=max_size)
        except CoveError as e:
            if len(cands) == 1:
                raise
            errors.append(e)
    raise CoveError(f"image {ref}", "not found in any search registry: "
                    + "; ".join(str(e) for e in errors))


def _pull_one(store: Store, ref: str, *, platform: Platform | None = None,
              opts: RegistryOptions | None = None, progress: Progress | None = None,
              client: Registry | None = None, max_size: int = layers.DEFAULT_MAX_SIZE) -> str:
    r = reference.parse(ref)
    opts = opts or RegistryOptions()
    prog = progress or Progress()
    reg = client or opts.client(r.registry)
    want = platform or host_platform()
    store.clean_stale()
    data, mt, digest = reg.get_manifest(r.repository, r.reference)
    if mt in INDEX_TYPES:
        desc = _doc(r, lambda: Index.parse(data, mt).select(want))
        prog.note(f"{r}: index {_short(digest)} → {desc.platform} manifest {_short(desc.digest)}")
        data, mt, digest = reg.get_manifest(r.repository, desc.digest)
    m = _doc(r, lambda: Manifest.parse(data, mt))
    if m.config.media_type not in IMAGE_CONFIG_TYPES:
        raise CoveError(f"image {r}", f"not a container image: its config is "
                                      f"{m.config.media_type!r}")
    track = _Track()
    try:
        cfg_raw = _fetch_small(store, reg, r.repository, m.config, track)
        cfg = _doc(r, lambda: ImageConfig.parse(cfg_raw), "image config")
        if len(cfg.diff_ids) != len(m.layers):
            raise CoveError(f"image {r}", f"config lists {len(cfg.diff_ids)} diff_ids for "
                                          f"{len(m.layers)} layers")
        if platform is not None and (cfg.os, cfg.architecture) != (want.os, want.architecture):
            raise CoveError(f"image {r}", f"is {cfg.platform}, not {want}")

        def one(i: int) -> None:
            desc, diff_id = m.layers[i], cfg.diff_ids[i]
            key = desc.digest
            if store.has_blob(desc.digest):
                prog.done(key, "already in the store")
            else:
                prog.start(key, f"blob {_short(desc.digest)}", desc.size)
                with store.writer(desc.digest, desc.size, resumable=True) as w:
                    if w.resumed:
                        prog.note(f"blob {_short(desc.digest)}: resuming at {w.resumed} "
                                  "bytes")
                        prog.advance(key, w.resumed)
                    reg.fetch_blob(r.repository, desc.digest, w,
                                   lambda n: prog.advance(key, n))
                    w.commit()
                track.blobs.append(desc.digest)
            snap = os.path.join(store.snapshot_dir, diff_id.partition(":")[2])
            if not os.path.isdir(snap):
                prog.status(key, "unpacking")
                layers.ensure_snapshot(store, desc.digest, desc.media_type, diff_id,
                                  max_size=max_size)
                track.snapshots.append(diff_id)
            prog.done(key, "done")

        _parallel(one, range(len(m.layers)))
        if not store.has_blob(digest):
            store.put_blob(data, digest)
            track.blobs.append(digest)
        names = [str(r)] if r.tag and not r.digest else [f"{r.name}@{r.digest}"]
        src = r.name.removeprefix(f"{r.registry}/")
        store.add_image(digest, names, {b: f"{r.registry}/{src}" for b in
                                        [m.config.digest, *(x.digest for x in m.layers)]})
        prog.note(f"{r}: {digest}")
        return digest
    except OSError as e:
        track.undo(store)
        raise local_error(f"pull {r}", e, store) from None
    except BaseException:
        track.undo(store)
        raise
    finally:
        prog.close()


IMAGE_CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)


def _doc(r: reference.Reference, parse: Callable[[], Any], what: str = "") -> Any:
    """Parse a manifest, index or config; errors name the image (and the document)."""
    try:
        return parse()
    except CoveError as e:
        raise CoveError(f"image {r}", f"{what}: {e}" if what else str(e)) from None


def local_error(what: str, e: OSError, store: Store) -> CoveError:
    """An OSError while writing the store, as one line."""
    why = os_why(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"no space left in the store ({store.root})"
    return CoveError(what, why)


def _fetch_small(store: Store, reg: Registry, repo: str, desc: Descriptor,
                 track: _Track) -> bytes:
    if not store.has_blob(desc.digest):
        with store.writer(desc.digest, desc.size, resumable=True) as w:
            reg.fetch_blob(repo, desc.digest, w)
            w.commit()
        track.blobs.append(desc.digest)
    return store.read_blob(desc.digest)


def _parallel(fn: Callable[[int], None], items: range) -> None:
    if len(items) <= 1:
        for i in items:
            fn(i)
        return
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(items))) as ex:
        futs = [ex.submit(fn, i) for i in items]
        errs = []
        for f in futs:
            try:
                f.result()
            except BaseException as e:
                errs.append(e)
        if errs:
            raise errs[0]


# -- push -------------------------------------------------------------------------------

def push(store: Store, image: str, dest: str | None = None, *,
         opts: RegistryOptions | None = None, progress: Progress | None = None,
         client: Registry | None = None) -> str:
    """Push a stored image (or index) to `dest` (default: its name); return the digest."""
    digest = store.resolve(image)
    if dest is None:
        if reference.has_explicit_registry(image) and "@" not in image:
            dest = str(reference.parse(image))
        else:
            names = [n for n in store.index()["images"][digest]["names"] if "@" not in n]
            if not names:
                raise CoveError(f"push {image}", "no destination: give one "
                                                 "(REGISTRY/REPO:TAG)")
            dest = names[0]
    r = reference.parse(dest)
    opts = opts or RegistryOptions()
    prog = progress or Progress()
    reg = client or opts.client(r.registry)
    try:
        data, mt = store.manifest_raw(digest)
        if mt in INDEX_TYPES:
            idx = Index.parse(data, mt)
            for d in idx.manifests:
                if not store.has_blob(d.digest):
                    raise CoveError(f"push {image}", f"platform {d.platform} ({d.digest}) "
                                                     "is not in the store")
                cdata, cmt = store.manifest_raw(d.digest)
                _push_manifest(store, reg, r, cdata, cmt, d.digest, prog)
            reg.put_manifest(r.repository, r.reference, data, mt)
        else:
            _push_manifest(store, reg, r, data, mt, r.reference, prog)
        prog.note(f"{r}: {digest}")
        return digest
    finally:
        prog.close()


def _push_manifest(store: Store, reg: Registry, r: reference.Reference, data: bytes,
                   mt: str, ref: str, prog: Progress) -> None:
    m = Manifest.parse(data, mt)
    repo = r.repository
    blobs = [m.config, *m.layers]
    pushed: dict[str, str] = {}

    def one(i: int) -> None:
        desc = blobs[i]
        key = desc.digest
        if not store.has_blob(desc.digest):
            raise CoveError(f"blob {desc.digest}", "not in the store (a foreign layer?)")
        if reg.blob_exists(repo, desc.digest):
            reg.stats.add("skipped", desc.digest)
            prog.done(key, f"blob {_short(desc.digest)}: already exists")
            pushed[desc.digest] = f"{r.registry}/{repo}"
            return
        loc = None
        for src in store.blob_sources(desc.digest):
            host, _, src_repo = src.partition("/")
            if host != r.registry or src_repo == repo:
                continue
            loc = reg.start_upload(repo, desc.digest, mount_from=src_repo)
            if loc is None:
                reg.stats.add("mounted", desc.digest)
                prog.done(key, f"blob {_short(desc.digest)}: mounted from {src_repo}")
                pushed[desc.digest] = f"{r.registry}/{repo}"
                return
            break
        prog.start(key, f"blob {_short(desc.digest)}", desc.size)
        path = store.blob_path(desc.digest)
        reg.upload_blob(repo, desc.digest, desc.size, lambda: open(path, "rb"), loc,
                        lambda n: prog.advance(key, n))
        prog.done(key, "pushed")
        pushed[desc.digest] = f"{r.registry}/{repo}"

    _parallel(one, range(len(blobs)))
    reg.put_manifest(repo, ref, data, mt)
    store.add_blob_sources(pushed)


# -- import -----------------------------------------------------------------------------

GZIP_CHUNK = 8 << 20


def _gzip_parallel(src: IO[bytes], out: IO[bytes], level: int = 6) -> None:
    """gzip `src` into `out` on every core: GZIP_CHUNK pieces compressed as separate
    gzip members by a thread pool (zlib lets go of the GIL) and written in order. A
    file of several members is one gzip file (RFC 1952; Go's, Python's and zlib's
    readers take it, as pigz's --independent output): deflate was ~75% of the time of
    an import, on one core. Deterministic (zlib's header: no name, mtime 0), so the
    same tar gives the same blob."""
    import zlib
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    def member(data: bytes) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    workers = max(1, len(os.sched_getaffinity(0)))
    pending: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(workers) as ex:
        while True:
            data = src.read(GZIP_CHUNK)
            if data:
                pending.append(ex.submit(member, data))
            while pending and (len(pending) > workers or not data):
                out.write(pending.popleft().result())
            if not data:
                break


def _compress(src: IO[bytes], out: IO[bytes], compression: str) -> None:
    if compression == "gzip":
        _gzip_parallel(src, out)
    elif compression == "zstd":
        import zstandard
        zstandard.ZstdCompressor().copy_stream(src, out)
    else:
        shutil.copyfileobj(src, out, 1 << 20)


LAYER_TYPES = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}


class _Reading(io.RawIOBase):
    """A file read through: counted into `advance` (progress), hashed into `h`."""

    def __init__(self, f: IO[bytes], h: Any = None,
                 advance: Callable[[int], None] | None = None) -> None:
        self.f, self.h, self.advance = f, h, advance

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.f.read(len(b))
        n = len(data)
        b[:n] = data
        if self.h is not None:
            self.h.update(data)
        if self.advance is not None and n:
            self.advance(n)
        return n


def add_layer(store: Store, tar_path: str, compression: str = "gzip",
              progress: Progress | None = None) -> tuple[Descriptor, str]:
    """Store a layer from a tar (plain or compressed): (descriptor, diffID). One pass
    over the file (decompressed, hashed for the diffID and compressed as it is read),
    shown by `progress` (import of a large tarball on a terminal)."""
    import hashlib
    prog = progress or Progress()
    key = f"import {tar_path}"
    prog.start(key, os.path.basename(tar_path), os.path.getsize(tar_path))
    h = hashlib.sha256()
    with tempfile.TemporaryFile(dir=store.tmp_dir) as tmp:
        with open(tar_path, "rb") as f:
            raw = _Reading(f, advance=lambda n: prog.advance(key, n))
            plain = _Reading(layers.decompressed(raw, "auto"), h)  # type: ignore[arg-type]
            _compress(plain, tmp, compression)  # type: ignore[arg-type]
        size = tmp.tell()
        tmp.seek(0)
        digest = store.put_blob_file(tmp)
    prog.done(key, "done")
    return Descriptor(LAYER_TYPES[compression], digest, size), "sha256:" + h.hexdigest()


def build_image(store: Store, layer_tars: list[str], config: ContainerConfig | None = None,
                *, names: tuple[str, ...] = (), compression: str | list[str] = "gzip",
                platform: Platform | None = None, history: str = "",
                unpack: bool = True, progress: Progress | None = None) -> str:
    """An image from layer tars (bottom first); return the manifest digest."""
    plat = platform or host_platform()
    descs, diffs = [], []
    for i, t in enumerate(layer_tars):
        comp = compression if isinstance(compression, str) else compression[i]
        d, diff = add_layer(store, t, comp, progress)
        descs.append(d)
        diffs.append(diff)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cfg = ImageConfig(os=plat.os, architecture=plat.architecture, variant=plat.variant,
                      config=config or ContainerConfig(), diff_ids=diffs, created=now,
                      history=[{"created": now, "created_by": history or "cove import"}
                               for _ in diffs])
    raw = cfg.to_bytes()
    cdesc = Descriptor(OCI_CONFIG, store.put_blob(raw), len(raw))
    m = Manifest(OCI_MANIFEST, cdesc, descs)
    mdata = m.to_bytes()
    digest = store.put_blob(mdata)
    if unpack:
        for d, diff in zip(descs, diffs, strict=True):
            layers.ensure_snapshot(store, d.digest, d.media_type, diff)
    store.add_image(digest, [str(reference.parse(n)) for n in names])
    return digest


def build_index(store: Store, manifests: list[str], names: tuple[str, ...] = ()) -> str:
    """A multi-platform index over stored manifests (platforms from their configs)."""
    descs = []
    for d in manifests:
        img = store.image(d)
        data, mt = store.manifest_raw(d)
        descs.append(Descriptor(mt, d, len(data), img.config.platform))
    data = Index(OCI_INDEX, descs).to_bytes()
    digest = store.put_blob(data)
    store.add_image(digest, [str(reference.parse(n)) for n in names])
    return digest


def import_rootfs(store: Store, tar_path: str, name: str, *, compression: str = "gzip",
                  config: ContainerConfig | None = None,
                  progress: Progress | None = None) -> str:
    cfg = config or ContainerConfig(
        env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    try:
        return build_image(store, [tar_path], cfg, names=(name,), compression=compression,
                           history=f"cove import {os.path.basename(tar_path)}",
                           progress=progress)
    finally:
        if progress is not None:
            progress.close()


def tar_directory(src: str, out: str) -> None:
    """A layer tar of a directory tree (numeric owners, symlinks kept). Not root, what
    the caller owns is root's in the layer, as its rootless containers see it (files a
    user unpacked for the built-in image are the user's: they are root's in it)."""
    uid, gid = os.geteuid(), os.getegid()

    def own(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        if uid != 0:
            ti.uid, ti.uname = (0, "root") if ti.uid == uid else (ti.uid, ti.uname)
            ti.gid, ti.gname = (0, "root") if ti.gid == gid else (ti.gid, ti.gname)
        return ti
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                tf.add(full, arcname=os.path.relpath(full, src), recursive=False,
                       filter=own)


# -- save / load ------------------------------------------------------------------------

def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    tf.addfile(ti, io.BytesIO(data))


def _add_blob(tf: tarfile.TarFile, name: str, store: Store, digest: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = store.blob_size(digest)
    ti.mode = 0o644
    with store.open_blob(digest) as f:
        tf.addfile(ti, f)


def save(store: Store, images: list[str], out: str | IO[bytes],
         fmt: str = "docker-archive") -> None:
    """Write images to a tar: `docker-archive` (docker load, podman load, ctr import) or
    `oci-archive` (an OCI image layout); to the file `out` (written whole, then
    renamed into place), or streamed to a writable binary stream (`cove save` to
    stdout)."""
    resolved = []
    for ref in images:
        img = store.image(ref)
        tags = [n for n in img.names if "@" not in n]
        if not ref.startswith("sha256:"):
            with contextlib.suppress(CoveError):
                full = store.index()["images"].get(img.digest) and [
                    c for c in reference.local_candidates(ref) if c in tags]
                if full:
                    tags = full[:1]
        resolved.append((img, tags))
    if fmt not in ("oci-archive", "docker-archive"):
        raise CoveError("--format", f"unknown archive format {fmt!r}")
    if not isinstance(out, str):
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            (_save_oci if fmt == "oci-archive" else _save_docker)(store, resolved, tf)
        return
    tmp = out + ".tmp"
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            if fmt == "oci-archive":
                _save_oci(store, resolved, tf)
            elif fmt == "docker-archive":
                _save_docker(store, resolved, tf)
            else:
                raise CoveError("--format", f"unknown archive format {fmt!r}")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _save_oci(store: Store, resolved: list[Any], tf: tarfile.TarFile) -> None:
    _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    seen: set[str] = set()
    manifests = []
    for img, tags in resolved:
        for d in [img.digest, img.manifest.config.digest, *(x.digest for x in
                                                            img.manifest.layers)]:
            if d not in seen:
                seen.add(d)
                _add_blob(tf, f"blobs/sha256/{d.partition(':')[2]}", store, d)
        data, mt = store.manifest_raw(img.digest)
        for t in tags or [""]:
            desc = Descriptor(mt, img.digest, len(data), img.config.platform)
            if t:
                r = reference.parse(t)
                desc.annotations = {"org.opencontainers.image.ref.name": r.tag,
                                    "io.containerd.image.name": t}
            manifests.append(desc)
    _add_bytes(tf, "index.json", Index(OCI_INDEX, manifests).to_bytes())


def _save_docker(store: Store, resolved: list[Any], tf: tarfile.TarFile) -> None:
    entries = []
    seen: set[str] = set()
    for img, tags in resolved:
        cfg_name = img.manifest.config.digest.partition(":")[2] + ".json"
        if cfg_name not in seen:
            seen.add(cfg_name)
            _add_bytes(tf, cfg_name, img.config_raw)
        layer_names = []
        for desc, diff in zip(img.manifest.layers, img.config.diff_ids, strict=True):
            name = diff.partition(":")[2] + "/layer.tar"
            layer_names.append(name)
            if name in seen:
                continue
            seen.add(name)
            # docker-archive layers are uncompressed tars named by diffID.
            with tempfile.TemporaryFile(dir=store.tmp_dir) as t:
                with store.open_blob(desc.digest) as f:
                    compression = layers.compression_of(desc.media_type)
                    shutil.copyfileobj(layers.decompressed(f, compression), t, 1 << 20)
                ti = tarfile.TarInfo(name)
                ti.size = t.tell()
                ti.mode = 0o644
                t.seek(0)
                tf.addfile(ti, t)
        entries.append({"Config": cfg_name,
                        "RepoTags": [_docker_tag(t) for t in tags],
                        "Layers": layer_names})
    _add_bytes(tf, "manifest.json", json.dumps(entries).encode())


def _docker_tag(name: str) -> str:
    return name.removeprefix("docker.io/library/").removeprefix("docker.io/")


class _Archive:
    """Members of an image archive, read in place (never extracted to disk)."""

    def __init__(self, tf: tarfile.TarFile) -> None:
        self.tf = tf
        self.members = {layers.safe_name(m.name, "archive"): m for m in tf.getmembers()
                        if m.isreg()}

    def has(self, name: str) -> bool:
        return layers.safe_name(name, "archive") in self.members

    def open(self, name: str) -> IO[bytes]:
        m = self.members.get(layers.safe_name(name, "archive"))
        f = self.tf.extractfile(m) if m is not None else None
        if f is None:
            raise CoveError(f"archive member {name!r}", "missing")
        return f

    def read(self, name: str, limit: int = 16 << 20) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise CoveError(f"archive member {name!r}", "too large for a JSON document")
        return data


def load(store: Store, archive: str | IO[bytes], name: str | None = None) -> list[str]:
    """Load a docker-archive or oci-archive (a file, or a stream such as stdin, which is
    spooled to the store's tmp dir: members are read in the archive's order, not the
    stream's); return the names loaded (or, for an image without one, `sha256:` + its
    IMAGE ID). Every blob is verified; a failure leaves nothing behind."""
    if not isinstance(archive, str):
        with tempfile.NamedTemporaryFile(dir=store.tmp_dir, suffix=".tar") as spool:
            try:
                shutil.copyfileobj(archive, spool, 1 << 20)
                spool.flush()
            except OSError as e:
                raise local_error("load", e, store) from None
            if spool.tell() == 0:
                raise CoveError("load", "requested load from stdin, but stdin is empty")
            return load(store, spool.name, name)
    track = _Track()
    store.clean_stale()
    try:
        try:
            tf = tarfile.open(archive, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise CoveError(archive, f"not a readable image archive: {e}") from None
        with tf:
            ar = _Archive(tf)
            if ar.has("oci-layout"):
                return _load_oci(store, ar, name, track)
            if ar.has("manifest.json"):
                return _load_docker(store, ar, name, track)
            raise CoveError(archive, "neither a docker-archive (manifest.json) nor an "
                                     "oci-archive (oci-layout)")
    except OSError as e:
        track.undo(store)
        raise local_error(f"load {archive}", e, store) from None
    except BaseException:
        track.undo(store)
        raise


def _put_file(store: Store, ar: _Archive, name: str, expected: str | None,
              track: _Track) -> str:
    if expected and store.has_blob(expected):
        return expected
    with ar.open(name) as f:
        d = store.put_blob_file(f, expected)
    track.blobs.append(d)
    return d


def _load_oci(store: Store, ar: _Archive, name: str | None, track: _Track) -> list[str]:
    idx = Index.parse(ar.read("index.json"), OCI_INDEX)
    out = []

    def blob(d: str) -> str:
        return _put_file(store, ar, f"blobs/sha256/{d.partition(':')[2]}", d, track)

    for desc in idx.manifests:
        blob(desc.digest)
        data, mt = store.manifest_raw(desc.digest)
        todo = [desc.digest]
        if mt in INDEX_TYPES:
            todo = []
            for s in Index.parse(data, mt).manifests:
                if ar.has(f"blobs/sha256/{s.digest.partition(':')[2]}"):
                    blob(s.digest)
                    todo.append(s.digest)
        for d in todo:
            cdata, cmt = store.manifest_raw(d)
            m = Manifest.parse(cdata, cmt)
            blob(m.config.digest)
            cfg = ImageConfig.parse(store.read_blob(m.config.digest))
            for lay, diff in zip(m.layers, cfg.diff_ids, strict=True):
                blob(lay.digest)
                if not os.path.isdir(os.path.join(store.snapshot_dir, diff.partition(":")[2])):
                    layers.ensure_snapshot(store, lay.digest, lay.media_type, diff)
                    track.snapshots.append(diff)
        names = []
        ann = desc.annotations
        if name:
            names = [str(reference.parse(name))]
        elif "io.containerd.image.name" in ann:
            names = [str(reference.parse(ann["io.containerd.image.name"]))]
        elif "org.opencontainers.image.ref.name" in ann:
            rn = ann["org.opencontainers.image.ref.name"]
            names = [str(reference.parse(rn if "/" in rn or ":" in rn else
                                         f"localhost/loaded:{rn}"))]
        store.add_image(desc.digest, names)
        out += names or [desc.digest]
    return out


def _image_with_config(store: Store, cdigest: str) -> str | None:
    """A stored image (a manifest, not an index) whose config is `cdigest`."""
    for rec in store.records():
        with contextlib.suppress(CoveError, OSError, ValueError):
            data, mt = store.manifest_raw(rec.digest)
            if mt not in INDEX_TYPES and Manifest.parse(data, mt).config.digest == cdigest:
                return rec.digest
    return None


def _load_docker(store: Store, ar: _Archive, name: str | None, track: _Track) -> list[str]:
    try:
        entries = json.loads(ar.read("manifest.json"))
    except ValueError as e:
        raise CoveError("manifest.json", f"malformed JSON: {e}") from None
    if not isinstance(entries, list):
        raise CoveError("manifest.json", "expected an array")
    out = []
    for i, ent in enumerate(entries):
        if not isinstance(ent, dict) or not isinstance(ent.get("Config"), str) \
                or not isinstance(ent.get("Layers"), list):
            raise CoveError(f"manifest.json[{i}]", "expected {Config, RepoTags, Layers}")
        cfg_raw = ar.read(ent["Config"])
        cfg = ImageConfig.parse(cfg_raw)
        if len(cfg.diff_ids) != len(ent["Layers"]):
            raise CoveError(f"manifest.json[{i}].Layers",
                            f"{len(ent['Layers'])} layers for {len(cfg.diff_ids)} diff_ids")
        tags = ent.get("RepoTags") or []
        names = [str(reference.parse(name))] if name else \
            [str(reference.parse(t)) for t in tags if isinstance(t, str)]
        from cove.oci.image import sha256_digest
        same = _image_with_config(store, sha256_digest(cfg_raw))
        if same is not None:
            # this very image is here (the config digest is its IMAGE ID): the archive's
            # layers are the same diffs; its names go to it rather than to a second,
            # rewritten manifest of the same image
            store.add_image(same, names)
            out += names or [same]
            continue
        had = store.has_blob(sha256_digest(cfg_raw))
        cdigest = store.put_blob(cfg_raw)
        if not had:
            track.blobs.append(cdigest)
        descs = []
        for lname, diff in zip(ent["Layers"], cfg.diff_ids, strict=True):
            with ar.open(lname) as f:
                comp = layers.detect_compression(f.read(4))
            d = _put_file(store, ar, lname, None, track)
            descs.append(Descriptor(LAYER_TYPES[comp], d, store.blob_size(d)))
            if not os.path.isdir(os.path.join(store.snapshot_dir, diff.partition(":")[2])):
                layers.ensure_snapshot(store, d, descs[-1].media_type, diff)
                track.snapshots.append(diff)
        m = Manifest(OCI_MANIFEST, Descriptor(OCI_CONFIG, cdigest, len(cfg_raw)), descs)
        mdigest = store.put_blob(m.to_bytes())
        track.blobs.append(mdigest)
        store.add_image(mdigest, names)
        out += names or [mdigest]
    return out
