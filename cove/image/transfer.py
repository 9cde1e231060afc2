"""Moving images to and from a registry: pull and push. Images made here (import,
layers from tars) are cove/image/assemble.py's; save and load (docker-archive and
oci-archive) cove/image/archive.py's."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cove.errors import CoveError
from cove.image import layers, reference

# Imported from here by files another change owns this round (cove/image/build/runner.py,
# tests/build/): new code imports them from where they live. To go once those follow.
from cove.image.archive import load as load
from cove.image.assemble import add_layer as add_layer
from cove.image.assemble import build_image as build_image
from cove.image.platforms import host_platform
from cove.image.progress import Progress
from cove.image.registry import Registry
from cove.image.store import Store
from cove.image.tracking import Track, local_error
from cove.oci.image import (
    DOCKER_CONFIG,
    INDEX_TYPES,
    OCI_CONFIG,
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
    track = Track()
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



def _fetch_small(store: Store, reg: Registry, repo: str, desc: Descriptor,
                 track: Track) -> bytes:
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


