"""`cove save` to stdout and `cove load` from stdin (docker's), the IMAGE ID kept across
them (the config's digest), `cove import`'s progress on a terminal, and `cove pull`
showing the unpacking of its layers."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

from cove.image.store import Store
from tests.lib.images import RegistryServer, f, sample_image, write_tar

COVE = [sys.executable, "-m", "cove.cli.main"]


def cove(root: str, *args: str, stdin: int | None = None,
         stdout: int | None = subprocess.PIPE, check: bool = True,
         input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run([*COVE, "--root", root, *args], stdin=stdin, stdout=stdout,
                       stderr=subprocess.PIPE, input=input)
    if check:
        assert r.returncode == 0, r.stderr.decode()
    return r


def _stderr_on_a_terminal(cmd: list[str]) -> tuple[int, bytes]:
    """Run `cmd` with its stderr a terminal; its status and what it wrote there."""
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(), out


def _image_ids(root: str) -> list[str]:
    return cove(root, "images", "-q").stdout.decode().split()


def test_save_to_stdout_load_from_stdin(busybox_store: Store, tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    shutil.copytree(busybox_store.root, root, symlinks=True)
    before = _image_ids(root)
    cfg = Store(root).image("localhost/busybox").manifest.config.digest
    assert before == [cfg.partition(":")[2][:12]]  # IMAGE ID: the config's digest
    archive = tmp_path / "bb.tar"
    with open(archive, "wb") as out:
        r = cove(root, "save", "localhost/busybox", stdout=out.fileno())
    assert r.stderr == b"" and archive.stat().st_size > 100_000
    cove(root, "rmi", "localhost/busybox")
    assert _image_ids(root) == []
    with open(archive, "rb") as src:
        r = cove(root, "load", stdin=src.fileno())
    assert r.stdout == b"Loaded image: localhost/busybox:latest\n"
    assert _image_ids(root) == before  # the same IMAGE ID, though the manifest is new
    # loaded again: the same image (no second, dangling copy)
    with open(archive, "rb") as src:
        cove(root, "load", stdin=src.fileno())
    assert _image_ids(root) == before
    # an oci-archive through a pipe; then the image runs by its IMAGE ID
    save = subprocess.Popen([*COVE, "--root", root, "save", "--format", "oci-archive",
                             "localhost/busybox"], stdout=subprocess.PIPE)
    assert save.stdout is not None
    cove(root, "load", stdin=save.stdout.fileno())
    save.stdout.close()
    assert save.wait() == 0
    assert _image_ids(root) == before
    try:
        r = cove(root, "run", "--rm", "--network", "none", before[0], "echo", "ok")
        assert r.stdout == b"ok\n"
    finally:
        cove(root, "supervisor", "stop")  # and the root's zygote, which forked its monitor
    # refused: a terminal as the archive's output; an empty stdin as its input
    master, slave = pty.openpty()
    try:
        r = subprocess.run([*COVE, "--root", root, "save", "localhost/busybox"],
                           stdout=slave, stderr=subprocess.PIPE)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 1
    assert r.stderr == b"cove: save: cowardly refusing to save to a terminal. Use the -o " \
                       b"flag or redirect\n"
    r = cove(root, "load", input=b"", check=False)
    assert r.returncode == 1
    assert r.stderr == b"cove: load: requested load from stdin, but stdin is empty\n"
    assert os.listdir(Store(root).tmp_dir) == []  # the spooled copies are gone


def test_import_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    tar = write_tar(tmp_path / "rootfs.tar", [f("big", os.urandom(2_000_000))])
    rc, said = _stderr_on_a_terminal([*COVE, "--root", root, "import", tar,
                                      "localhost/big:1"])
    assert rc == 0
    assert b"rootfs.tar" in said and b"done" in said
    # not a terminal: only the digest, on stdout
    r = cove(root, "import", tar, "localhost/big:2")
    assert r.stderr == b"" and r.stdout.decode().startswith("sha256:")


def test_pull_shows_unpacking(plain: RegistryServer, stores: dict[str, Store],
                              tmp_path: Path) -> None:
    ref = f"{plain.host}/unpack/app:v1"
    sample_image(tmp_path, stores["src"], ref)
    from cove.image.transfer import push
    push(stores["src"], ref)
    root = str(tmp_path / "store-cli")
    r = cove(root, "pull", ref)
    err = r.stderr.decode()
    assert err.count(": unpacking") == 3 and err.count(": done") == 3, err
