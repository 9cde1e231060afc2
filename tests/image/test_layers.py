"""Unpacking layers: metadata preserved, compressions, whiteouts, hostile tars refused
with nothing left behind."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cove.image import layers, snapshots
from cove.image.assemble import build_image
from cove.image.store import Store
from tests.lib.images import compress, d, entry, f, hard, sym, tar_bytes, write_tar

ROOT = os.geteuid() == 0


def unpack(tmp: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]], how: str = "none",
           **kw: Any) -> Path:
    data = compress(tar_bytes(entries), how)
    dest = tmp / "snap"
    layers.unpack(io.BytesIO(data), how, str(dest), **kw)
    return dest / "fs"


def assert_clean(tmp: Path) -> None:
    left = [p for p in os.listdir(tmp) if p != "outside"]
    assert left == [], f"left behind: {left}"


def test_metadata_preserved(tmp_path: Path) -> None:
    fs = unpack(tmp_path, [
        d("etc", 0o755), f("etc/conf", b"hello", mode=0o640, uid=1234, gid=4321,
                           pax={"SCHILY.xattr.user.color": "blue"}),
        f("bin/suid", b"#!", mode=0o4755), sym("bin/sh", "/bin/busybox"),
        sym("rel", "etc/conf"), hard("etc/conf2", "etc/conf"),
        entry("fifo", type=tarfile.FIFOTYPE, mode=0o600), d("private", 0o700),
    ])
    st = os.lstat(fs / "etc/conf")
    assert (fs / "etc/conf").read_bytes() == b"hello"
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime == 1_600_000_000
    if ROOT:
        assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert os.getxattr(fs / "etc/conf", "user.color") == b"blue"
    assert stat.S_IMODE(os.lstat(fs / "bin/suid").st_mode) == 0o4755
    assert os.readlink(fs / "bin/sh") == "/bin/busybox"
    assert os.lstat(fs / "etc/conf2").st_ino == st.st_ino
    assert stat.S_ISFIFO(os.lstat(fs / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(fs / "private").st_mode) == 0o700


@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
def test_compressions_and_diff_id(tmp_path: Path, how: str) -> None:
    raw = tar_bytes([f("a/b", b"data" * 1000)])
    diff = "sha256:" + hashlib.sha256(raw).hexdigest()
    got, _ = layers.unpack(io.BytesIO(compress(raw, how)), how, str(tmp_path / "s"),
                      expected_diff_id=diff)
    assert got == diff
    assert (tmp_path / "s/fs/a/b").read_bytes() == b"data" * 1000
    # auto-detection gives the same stream
    assert layers.diff_id_of(io.BytesIO(compress(raw, how))) == diff


def test_diff_id_mismatch_refused(tmp_path: Path) -> None:
    with pytest.raises(layers.LayerError, match="diffID mismatch"):
        unpack(tmp_path, [f("a")], expected_diff_id="sha256:" + "0" * 64)
    assert_clean(tmp_path)


HOSTILE = {
    "absolute": ([f("/etc/evil")], "absolute path"),
    "dotdot": ([f("../evil")], "climbs out"),
    "dotdot-inner": ([d("a"), f("a/../../evil")], "climbs out"),
    "symlink-escape": ([sym("up", "../../../../outside")], "points outside"),
    "through-symlink": ([sym("lnk", "OUTSIDE"), f("lnk/evil")], "through a symlink"),
    "hardlink-absolute": ([hard("h", "/etc/passwd")], "absolute path"),
    "hardlink-dotdot": ([hard("h", "../outside/secret")], "climbs out"),
    "hardlink-missing": ([hard("h", "nothere")], "target not in the layer"),
    "hardlink-through-symlink": ([sym("lnk", "OUTSIDE"), hard("h", "lnk/secret")],
                                 "through a symlink"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_refused(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep")
    entries, why = HOSTILE[case]
    entries = [(ti, data) for ti, data in entries]
    for ti, _ in entries:
        if ti.linkname == "OUTSIDE":
            ti.linkname = str(outside)
    with pytest.raises(layers.LayerError, match=why):
        unpack(tmp_path, entries)
    assert_clean(tmp_path)
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == "keep"


def test_device_node_refused_when_not_root(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(layers.LayerError, match="only root may create device nodes"):
        unpack(tmp_path, [entry("dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)])
    assert_clean(tmp_path)


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_device_node_as_root(tmp_path: Path) -> None:
    fs = unpack(tmp_path, [entry("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3,
                                 mode=0o666)])
    st = os.lstat(fs / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_tar_bomb_refused(tmp_path: Path, how: str) -> None:
    bomb = [f("zeros", b"\0" * (8 << 20))]
    assert len(compress(tar_bytes(bomb), how)) < 100_000
    with pytest.raises(layers.LayerError, match="size limit"):
        unpack(tmp_path, bomb, how, max_size=1 << 20)
    assert_clean(tmp_path)


def test_corrupt_stream_refused(tmp_path: Path) -> None:
    data = compress(tar_bytes([f("a", os.urandom(100_000))]), "gzip")
    with pytest.raises(layers.LayerError):
        layers.unpack(io.BytesIO(data[:-5000] + b"\0" * 5000), "gzip", str(tmp_path / "s"))
    assert_clean(tmp_path)


def _whiteout_image(tmp: Path, store: Store) -> str:
    l1 = write_tar(tmp / "l1.tar", [d("a"), f("a/x", b"1"), f("a/y", b"2"), d("b"),
                                    f("b/old", b"3"), d("b/sub"), f("b/sub/deep"),
                                    f("gone", b"4")], "gzip")
    l2 = write_tar(tmp / "l2.tar", [d("a"), f("a/.wh.x", b""), d("b"),
                                    f("b/.wh..wh..opq", b""), f("b/new", b"5"),
                                    f(".wh.gone", b"")], "zstd")
    return build_image(store, [l1, l2], compression=["gzip", "zstd"])


def _view(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() else None
    return out


@pytest.mark.parametrize("overlay", [True, False], ids=["overlay", "copy"])
def test_whiteouts_and_opaque_dirs(tmp_path: Path, overlay: bool) -> None:
    if overlay and not ROOT:
        pytest.skip("overlay needs root")
    store = Store(str(tmp_path / "store"))
    digest = _whiteout_image(tmp_path, store)
    img = store.image(digest)
    rf = snapshots.prepare(store, img, "c1", allow_overlay=overlay)
    try:
        assert rf.mode == ("overlay" if overlay else "copy")
        assert _view(Path(rf.path)) == {"a": None, "a/y": b"2", "b": None, "b/new": b"5"}
        # the container writes to its own upper layer only
        (Path(rf.path) / "a/y").write_text("changed")
    finally:
        snapshots.release(store, "c1")
    snap = Path(store.snapshot_dir) / img.config.diff_ids[0].partition(":")[2]
    assert (snap / "fs/a/y").read_bytes() == b"2"
    assert os.listdir(store.container_dir) == []
    assert not snapshots.is_mounted(rf.path)


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    """Files are written by threads while the stream is parsed: a later entry for the
    same path (file, dir, symlink), a hard link to a file just written and a directory
    replaced by a symlink still come out as tar order says."""
    many = [f(f"many/f{i}", str(i).encode() * 100) for i in range(300)]
    fs = unpack(tmp_path, [
        *many,
        f("same", b"first"), f("same", b"second"),
        f("was-file", b"x"), d("was-file"), f("was-file/inside", b"y"),
        d("was-dir"), f("was-dir/a", b"a"), sym("was-dir", "many"),
        f("target", b"linked"), hard("link", "target"),
        f("big", b"z" * ((1 << 20) + 5)), f("big", b"small now"),
        f("many/f7", b"replaced"),
    ], "gzip")
    assert (fs / "same").read_bytes() == b"second"
    assert (fs / "was-file" / "inside").read_bytes() == b"y"
    assert os.readlink(fs / "was-dir") == "many"
    assert os.lstat(fs / "link").st_ino == os.lstat(fs / "target").st_ino
    assert (fs / "link").read_bytes() == b"linked"
    assert (fs / "big").read_bytes() == b"small now"
    assert (fs / "many" / "f7").read_bytes() == b"replaced"
    assert (fs / "many" / "f299").read_bytes() == b"299" * 100
    assert len(os.listdir(fs / "many")) == 300


def test_failure_with_writes_in_flight_leaves_nothing(tmp_path: Path) -> None:
    many = [f(f"many/f{i}", b"x" * 1000) for i in range(200)]
    with pytest.raises(layers.LayerError, match="points outside the layer"):
        unpack(tmp_path, [*many, sym("many/evil", "../../../etc")])
    assert_clean(tmp_path)
