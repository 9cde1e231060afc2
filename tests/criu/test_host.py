"""`cove checkpoint` / `restore` where CRIU does not work, and their bad input (no
CRIU needed): one line each, the container untouched, nothing half-made."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from cove.image.store import Store
from tests.lib.criu import criu_broken
from tests.lib.engine import Cove

COUNTER = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done"


def test_checkpoint_where_criu_fails(cove: Cove) -> None:
    why = criu_broken()
    if not why or "not installed" in why or "root" in why:
        pytest.skip("CRIU works here (or is missing): the VM tests cover it")
    cove("run", "-d", "--network", "none", "--name", "c", "busybox", "sh", "-c", COUNTER)
    r = cove("checkpoint", "c", check=False)
    assert r.returncode == 1, r
    assert r.stderr.startswith("cove: checkpoint c: criu dump: ") and \
        r.stderr.count("\n") == 1, r.stderr
    print(f"\n{r.stderr.strip()}")
    assert "vdso" in r.stderr.lower()  # this host's reason (kernel 6.18, CRIU 3.17)
    st = cove("inspect", "-f", "{{.State.Status}} {{.State.Checkpointed}}", "c").stdout
    assert st.split()[0] == "running", st
    assert not Path(cove.root, "containers", "c", "checkpoint").exists()
    # a second try gets the same line, not "not empty"
    r2 = cove("checkpoint", "c", check=False)
    assert r2.stderr == r.stderr


def _archive(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_restore_bad_input(cove: Cove, tmp_path: Path) -> None:
    cove("create", "--network", "none", "--name", "plain", "busybox", "true")
    cases = []
    r = cove("restore", "plain", check=False)
    cases.append((r, "has no checkpoint"))
    r = cove("restore", check=False)
    cases.append((r, "which container"))
    r = cove("restore", "--import", str(tmp_path / "none.tar"), check=False)
    cases.append((r, "No such file"))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar" * 100)
    cases.append((cove("restore", "--import", str(junk), check=False), "not a tar archive"))
    fake = tmp_path / "fake.tar"
    _archive(fake, {"hello": b"x"})
    cases.append((cove("restore", "--import", str(fake), check=False),
                   "not a Cove checkpoint archive"))
    rec = json.loads(Path(cove.root, "containers", "plain", "container.json").read_text())
    good = {"cove-checkpoint.json": json.dumps({"format": 1, "root": "/x", "name": "plain",
                                                "cdir": "/x/containers/plain"}).encode(),
            "container/container.json": json.dumps(rec).encode(),
            "checkpoint/inventory.img": b"\0" * 64}
    taken = tmp_path / "taken.tar"
    _archive(taken, good)
    cases.append((cove("restore", "--import", str(taken), check=False), "already in use"))
    trunc = tmp_path / "trunc.tar"
    _archive(trunc, {**good, "upper/big": b"y" * 100000})
    trunc.write_bytes(trunc.read_bytes()[:20000])
    cases.append((cove("restore", "--import", str(trunc), "--name", "t2", check=False),
                  "truncated"))
    for r, want in cases:
        assert r.returncode != 0 and want in r.stderr and r.stderr.count("\n") == 1 and \
            r.stderr.startswith("cove: "), (want, r.stderr)
    names = cove("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert names == ["plain"]  # nothing half-made
    assert sorted(p.name for p in Path(cove.root, "containers").iterdir()) == ["plain"]


def test_archive_carries_volumes_and_opaque_dirs(cove: Cove, tmp_path: Path,
                                                 busybox_blobs: Store) -> None:
    """The export archive holds the named volumes a container mounts and the opaque
    xattr of its overlay's directories; an import on another root brings both back
    (no CRIU needed: the archive alone, around a stand-in image directory)."""
    import os

    from cove.engine import checkpoint_archive, state

    cove("create", "--network", "none", "-v", "mvol:/vol", "--name", "c", "busybox", "true")
    cdir = Path(cove.root, "containers", "c")
    Path(cove.root, "volumes", "mvol", "_data", "in-volume").write_text("v\n")
    odir = cdir / "upper" / "usr" / "sbin"
    odir.mkdir(parents=True, exist_ok=True)
    os.setxattr(odir, "trusted.overlay.opaque", b"y")
    (odir / "only").write_text("x\n")
    (cdir / "checkpoint").mkdir()
    (cdir / "checkpoint" / "inventory.img").write_bytes(b"\0" * 16)  # a stand-in
    archive = str(tmp_path / "c.tar")
    checkpoint_archive.write(state.Paths(cove.root), "c", archive)
    other = str(tmp_path / "root2")
    shutil.copytree(busybox_blobs.root, other, symlinks=True)
    p2 = state.Paths(other)
    try:
        assert checkpoint_archive.unpack(p2, archive, "c2") == "c2"
        up2 = Path(other, "containers", "c2", "upper", "usr", "sbin")
        assert os.getxattr(up2, "trusted.overlay.opaque") == b"y"
        assert (up2 / "only").read_text() == "x\n"
        assert Path(other, "volumes", "mvol", "_data", "in-volume").read_text() == "v\n"
        merged = Path(other, "containers", "c2", "merged", "usr", "sbin")
        if merged.is_dir() and any(merged.iterdir()):
            assert sorted(p.name for p in merged.iterdir()) == ["only"]  # opaque here too
    finally:
        checkpoint_archive.discard(p2, "c2")
        c2 = Cove(other)
        c2("rm", "-f", "c2", check=False)
        c2("volume", "rm", "-f", "mvol", check=False)
        c2("supervisor", "stop", check=False)
