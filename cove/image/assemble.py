"""Images made here rather than fetched: a layer from a tar (`add_layer`, compressed on
every core), an image from layer tars (`build_image`), a multi-platform index
(`build_index`), `cove import` of a rootfs tar, and the layer tar of a directory."""

from __future__ import annotations

import datetime
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from typing import IO, Any

from cove.image import layerio, layers, reference
from cove.image.platforms import host_platform
from cove.image.progress import Progress
from cove.image.store import Store
from cove.oci.image import (
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
            plain = _Reading(layerio.decompressed(raw, "auto"), h)  # type: ignore[arg-type]
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


