"""The content store: verified, atomic blob writes; names; garbage collection."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.image.assemble import build_image
from cove.image.blobs import DigestMismatch
from cove.image.store import Store
from cove.oci.image import ImageConfig, Manifest
from tests.lib.images import f, store_files, write_tar


def digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_put_and_read(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    d = st.put_blob(b"hello", digest(b"hello"))
    assert d == digest(b"hello")
    assert st.read_blob(d) == b"hello"
    assert st.put_blob(b"hello") == d   # idempotent
    assert store_files(tmp_path)["tmp"] == []


def test_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        st.put_blob(b"evil", digest(b"good"))
    with pytest.raises(DigestMismatch, match="size"):
        with st.writer(digest(b"good"), 4) as w:
            w.write(b"good!")
    assert store_files(tmp_path) == {"blobs": [], "snapshots": [], "tmp": []}


def test_abandoned_write_leaves_nothing(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    with pytest.raises(RuntimeError):
        with st.writer(digest(b"abc")) as w:
            w.write(b"ab")
            assert len(os.listdir(st.tmp_dir)) == 1
            assert not st.has_blob(digest(b"abc"))   # not visible until committed
            raise RuntimeError("interrupted")
    assert store_files(tmp_path) == {"blobs": [], "snapshots": [], "tmp": []}


def test_concurrent_writers_of_one_blob(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    data = os.urandom(1 << 20)
    errs: list[BaseException] = []

    def put() -> None:
        try:
            st.put_blob(data, digest(data))
        except BaseException as e:
            errs.append(e)
    ts = [threading.Thread(target=put) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs
    assert st.read_blob(digest(data)) == data
    assert store_files(tmp_path)["tmp"] == []


def test_corrupt_stored_blob_detected(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    d = st.put_blob(b"{}")
    Path(st.blob_path(d)).write_bytes(b"[]")
    with pytest.raises(DigestMismatch, match="corrupt"):
        st.read_blob(d)


def test_names_shared_blobs_and_gc(tmp_path: Path) -> None:
    st = Store(str(tmp_path / "s"))
    base = write_tar(tmp_path / "base.tar", [f("base", b"b")])
    top1 = write_tar(tmp_path / "t1.tar", [f("one", b"1")])
    top2 = write_tar(tmp_path / "t2.tar", [f("two", b"2")])
    a = build_image(st, [base, top1], names=("localhost/a",))
    b = build_image(st, [base, top2], names=("localhost/b:v1",))
    ma, mb = (Manifest.parse(st.read_blob(x)) for x in (a, b))
    assert ma.layers[0].digest == mb.layers[0].digest          # shared base blob
    assert len(os.listdir(st.snapshot_dir)) == 3               # and one shared snapshot
    assert st.resolve("localhost/a:latest") == a
    assert st.resolve("localhost/b:v1") == b
    assert st.resolve(a[7:19]) == a
    with pytest.raises(CoveError, match="not found"):
        st.resolve("localhost/b")
    st.tag("localhost/a", "localhost/b:v1")                    # moves the name
    assert st.resolve("localhost/b:v1") == a
    st.remove_image(b)
    blobs, snaps = st.gc()
    assert set(blobs) == {b, mb.config.digest, mb.layers[1].digest}
    assert len(snaps) == 1
    img = st.image("localhost/a")
    assert isinstance(img.config, ImageConfig)
    assert st.has_blob(ma.layers[0].digest)
