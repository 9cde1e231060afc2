"""`cove save` and `cove load`: images to and from docker-archive and oci-archive tars
(docker load, podman load, ctr import read what this writes). Loads verify every blob
and leave nothing behind when they fail (`Track`)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from typing import IO, Any

from cove.errors import CoveError
from cove.image import layerio, layers, reference
from cove.image.assemble import LAYER_TYPES
from cove.image.store import Store
from cove.image.tracking import Track, local_error
from cove.oci.image import (
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
)

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
                    compression = layerio.compression_of(desc.media_type)
                    shutil.copyfileobj(layerio.decompressed(f, compression), t, 1 << 20)
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
    track = Track()
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
              track: Track) -> str:
    if expected and store.has_blob(expected):
        return expected
    with ar.open(name) as f:
        d = store.put_blob_file(f, expected)
    track.blobs.append(d)
    return d


def _load_oci(store: Store, ar: _Archive, name: str | None, track: Track) -> list[str]:
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


def _load_docker(store: Store, ar: _Archive, name: str | None, track: Track) -> list[str]:
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
                comp = layerio.detect_compression(f.read(4))
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
