"""The vm handler's rootfs as an erofs image on virtio-blk (io.cove.vm.rootfs=image)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cove.handlers.vm import qemu, rootimg
from cove.handlers.vm.guestcfg import cache_dir
from tests.lib.bundles import base_config, template_rootfs
from tests.lib.handlers import VM_RUNTIME, no_qemu_left, runtime
from tests.lib.runtime import Env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(qemu.missing() is not None, reason=str(qemu.missing()))]

SCRIPT = r"""
cat /etc/marker
echo guest > /etc/marker && echo "wrote=$(cat /etc/marker)"
touch /newfile && echo created=yes
grep -q ' / overlay ' /proc/mounts && echo root=overlay
"""


def test_vm_rootfs_image(env: Env) -> None:
    """A file from the image, writes in the tmpfs overlay (not on the host), the qemu
    command line (virtio-blk, no 9p rootfs), then a read-only second run that reuses the
    cached image."""
    try:
        rootimg.tool()
    except Exception as e:
        pytest.skip(str(e))
    rt = runtime(env, VM_RUNTIME)
    cfg = base_config(["sh", "-c", SCRIPT])
    cfg["annotations"] = {rootimg.ANNOTATION: "image"}
    b = env.bundle(cfg)
    (b.rootfs / "etc" / "marker").write_text("from-image\n")
    idir = Path(cache_dir()) / "rootfs"
    before = set(os.listdir(idir)) if idir.is_dir() else set()
    made: set[str] = set()
    try:
        t0 = time.monotonic()
        r = rt("run", "--bundle", str(b.path), env.id("vm"), timeout=180)
        cold = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "from-image"
        assert "wrote=guest" in lines and "created=yes" in lines and "root=overlay" in lines
        assert (b.rootfs / "etc" / "marker").read_text() == "from-image\n"
        assert not (b.rootfs / "newfile").exists()
        made = set(os.listdir(idir)) - before
        assert len(made) == 1 and next(iter(made)).endswith((".erofs", ".squashfs")), made
        img = idir / next(iter(made))
        built = img.stat()

        # Second run: read-only root, the same tree: the cached image, no rebuild.
        b.config["root"]["readonly"] = True
        b.config["process"]["args"] = ["sleep", "1000"]
        b.write()
        cid = env.id("vm")
        t0 = time.monotonic()
        rt("run", "--detach", "--bundle", str(b.path), cid, timeout=180, check=True)
        warm = time.monotonic() - t0
        assert set(os.listdir(idir)) - before == made
        assert img.stat().st_ino == built.st_ino  # the same file, not rebuilt
        q = int(rt.state(cid)["pid"])  # the monitor; qemu is its child
        qpid = int(Path(f"/proc/{q}/task/{q}/children").read_text().split()[0])
        cmdline = Path(f"/proc/{qpid}/cmdline").read_bytes().split(b"\0")
        assert b"virtio-blk-device,drive=rootimg" in cmdline or \
            b"virtio-blk-pci,drive=rootimg" in cmdline
        assert not any(a.startswith(b"local,id=rootfs,") for a in cmdline)
        r = rt("exec", cid, "sh", "-c", "cat /etc/marker; touch /x || echo ro-ok", timeout=60)
        assert r.stdout.splitlines() == ["from-image", "ro-ok"], (r.stdout, r.stderr)
        rt("delete", "--force", cid, check=True)
        print(f"rootfs image: first run {cold:.1f}s (built {img.stat().st_size >> 10} KiB), "
              f"second run {warm:.1f}s (cached)")
    finally:
        for name in made:
            (idir / name).unlink(missing_ok=True)
    assert not no_qemu_left()


def test_vm_rootfs_image_cache_key(tmp_path: Path) -> None:
    """The digest: equal for the same tree, different after a write (even one that keeps
    size and mtime), a chmod, a new file; and a cache hit skips mkfs (timed)."""
    try:
        rootimg.tool()
    except Exception as e:
        pytest.skip(str(e))
    root = template_rootfs(tmp_path)
    tree = tmp_path / "tree"
    import shutil

    shutil.copytree(root, tree, symlinks=True)
    for i in range(300):  # some bulk, so that the build's cost shows
        (tree / "usr" / f"f{i}").parent.mkdir(exist_ok=True)
        (tree / "usr" / f"f{i}").write_bytes(os.urandom(16384))
    d0 = rootimg.digest(str(tree))
    assert rootimg.digest(str(tree)) == d0
    f = tree / "usr" / "f0"
    st = f.stat()
    time.sleep(0.01)
    f.write_bytes(os.urandom(16384))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: ctime moved
    d1 = rootimg.digest(str(tree))
    assert d1 != d0
    f.chmod(0o600)
    assert rootimg.digest(str(tree)) != d1
    cache = tmp_path / "cache"
    t0 = time.monotonic()
    path, fstype = rootimg.image(str(cache), str(tree))
    cold = time.monotonic() - t0
    t0 = time.monotonic()
    assert rootimg.image(str(cache), str(tree)) == (path, fstype)
    warm = time.monotonic() - t0
    assert warm < cold
    print(f"rootfs image of {len(list(tree.rglob('*')))} entries: built in {cold * 1000:.0f} ms,"
          f" cache hit in {warm * 1000:.0f} ms")
    (tree / "usr" / "new").write_text("x")
    path2, _ = rootimg.image(str(cache), str(tree))
    assert path2 != path and os.path.exists(path)
    os.environ["COVE_VM_ROOTFS_KEEP"] = "1"
    try:
        (tree / "usr" / "newer").write_text("x")
        path3, _ = rootimg.image(str(cache), str(tree))
    finally:
        del os.environ["COVE_VM_ROOTFS_KEEP"]
    assert sorted(os.listdir(cache / "rootfs")) == [os.path.basename(path3)]


def test_vm_rootfs_bad_mode(env: Env) -> None:
    rt = runtime(env, VM_RUNTIME)
    cfg = base_config(["true"])
    cfg["annotations"] = {rootimg.ANNOTATION: "nfs"}
    b = env.bundle(cfg)
    r = rt("create", "--bundle", str(b.path), env.id("vm"))
    assert r.returncode == 1
    assert r.stderr == ("cove-runtime: annotation io.cove.vm.rootfs=nfs: "
                        "expected 9p or image\n")
    state = env.tmp / "state"
    assert not state.exists() or not list(state.iterdir())
