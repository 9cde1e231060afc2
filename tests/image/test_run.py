"""`cove run` of a pulled image end to end (through cove-runtime), the built-in busybox,
save/load and import."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from cove.image import snapshots
from cove.image.assemble import build_image
from cove.image.store import Store
from cove.image.transfer import push
from cove.oci.image import ContainerConfig
from tests.lib.images import (
    COVE,
    RegistryServer,
    cove_at,
    d,
    f,
    overlay_mounts,
    searchable,
    write_tar,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root")


def app_image(busybox: Store, tmp: Path, st: Store, name: str) -> str:
    """The busybox layer plus one with a script, an Entrypoint, Cmd, Env and WorkingDir."""
    base = busybox.image("localhost/busybox")
    for desc in [base.manifest.config, *base.manifest.layers]:
        st.put_blob(busybox.read_blob(desc.digest), desc.digest)
    bb_tar = tmp / "bb.tar"
    with busybox.open_blob(base.manifest.layers[0].digest) as src, open(bb_tar, "wb") as out:
        out.write(src.read())
    app = write_tar(tmp / "app.tar", [d("srv", 0o755), f("srv/greet.sh", (
        b"#!/bin/sh\necho \"$GREETING from $(pwd) as $(id -un): $*\"\n"), mode=0o755)],
        "zstd")
    cfg = ContainerConfig(entrypoint=["/srv/greet.sh"], cmd=["default", "args"],
                          env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"],
                          working_dir="/srv", user="daemon")
    return build_image(st, [str(bb_tar), app], cfg, names=(name,),
                       compression=["gzip", "zstd"])


def test_run_pulled_image(plain: RegistryServer, busybox_store: Store, tmp_path: Path,
                          stores: dict[str, Store]) -> None:
    searchable(tmp_path)
    ref = f"{plain.host}/apps/greet:1"
    digest = app_image(busybox_store, tmp_path, stores["src"], ref)
    push(stores["src"], ref)
    root = str(tmp_path / "run-root")
    assert cove_at(root, "pull", "-q", ref).stdout.strip() == digest
    r = cove_at(root, "run", "--rm", ref)
    assert r.stdout == "hello from /srv as daemon: default args\n"
    r = cove_at(root, "run", "--rm", "-e", "GREETING=hi", "-w", "/tmp", "-u", "0", ref, "x", "y")
    assert r.stdout == "hi from /tmp as root: x y\n"
    r = cove_at(root, "run", "--rm", "--entrypoint", "/bin/echo", ref, "plain", "echo")
    assert r.stdout == "plain echo\n"
    r = cove_at(root, "run", "--rm", ref.replace(":1", ":1"), check=False)
    assert r.returncode == 0
    r = cove_at(root, "run", "--rm", "--entrypoint", "", ref, "sh", "-c", "exit 7", check=False)
    assert r.returncode == 7
    # without --rm the container's dir stays (unmounted) until `cove rm`
    r = cove_at(root, "run", "--name", "keep", "-u", "0", "--entrypoint", "", ref, "sh", "-c",
                "echo kept > /srv/file")
    kept = Path(root) / "containers" / "keep"
    assert (kept / "upper" / "srv" / "file").read_text() == "kept\n"
    assert not snapshots.is_mounted(str(kept / "merged"))
    r = cove_at(root, "rmi", ref, check=False)
    assert "in use by container keep" in r.stderr
    cove_at(root, "rm", "keep")
    cove_at(root, "rmi", ref)
    assert os.listdir(Path(root) / "containers") == []
    assert os.listdir(Path(root) / "snapshots") == []
    assert os.listdir(Path(root) / "blobs" / "sha256") == []
    assert overlay_mounts(tmp_path) == []
    assert json.loads(cove_at(root, "images", "--format", "json").stdout) == []


def test_builtin_busybox_and_save_load(tmp_path: Path) -> None:
    searchable(tmp_path)
    root = str(tmp_path / "root")
    r = cove_at(root, "run", "--rm", "busybox", "sh", "-c", "echo hi from $(hostname)")
    assert r.stdout.startswith("hi from ")
    imgs = json.loads(cove_at(root, "images", "--format", "json").stdout)
    assert imgs[0]["Names"] == ["localhost/busybox:latest"]
    digest = imgs[0]["Digest"]
    for fmt in ("docker-archive", "oci-archive"):
        out = str(tmp_path / f"bb-{fmt}.tar")
        cove_at(root, "save", "--format", fmt, "-o", out, "busybox")
        with tarfile.open(out) as tf:
            names = tf.getnames()
        assert ("manifest.json" if fmt == "docker-archive" else "index.json") in names
        other = str(tmp_path / f"root-{fmt}")
        r = cove_at(other, "load", "-i", out)
        assert "localhost/busybox:latest" in r.stdout
        r = cove_at(other, "run", "--rm", "busybox", "echo", "loaded")
        assert r.stdout == "loaded\n"
        if fmt == "oci-archive":
            assert json.loads(cove_at(other, "images", "--format", "json").stdout)[0][
                "Digest"] == digest
    # import of a rootfs tar, tag, prune
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tf:
        for name in ("bin", "etc"):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            tf.addfile(ti)
    cove_at(root, "import", str(rootfs), "localhost/tiny:1")
    cove_at(root, "tag", "localhost/tiny:1", "localhost/tiny:2")
    cove_at(root, "rmi", "localhost/tiny:1")
    assert {n for i in json.loads(cove_at(root, "images", "--format", "json").stdout)
            for n in i["Names"]} == {"localhost/busybox:latest", "localhost/tiny:2"}
    cove_at(root, "import", str(rootfs), "localhost/tiny:2", "--compression", "zstd")
    r = cove_at(root, "image", "prune")
    assert "Deleted: " in r.stdout
    assert len(json.loads(cove_at(root, "images", "--format", "json").stdout)) == 2


def test_pull_unknown_image_clear_error(plain: RegistryServer, tmp_path: Path) -> None:
    r = cove_at(str(tmp_path / "r"), "pull", f"{plain.host}/nope/nothing:1", check=False)
    assert r.returncode == 1
    assert "MANIFEST_UNKNOWN" in r.stderr or "NAME_UNKNOWN" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_rootless_run_of_the_builtin_image(tmp_path: Path) -> None:
    """`cove run` as an ordinary user: a rootless spec, the image's root-owned files shown
    as root through the user namespace's single mapping of the caller's uid."""
    import pwd
    import shutil

    from tests.lib.paths import ROOT

    if shutil.which("runuser") is None:
        pytest.skip("runuser is missing")
    nobody = pwd.getpwnam("nobody")
    if not os.access(str(ROOT), os.X_OK) or any(
            (os.stat(p).st_mode & 0o005) != 0o005 for p in (ROOT, *ROOT.parents)):
        pytest.skip("the checkout is not readable by other users")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    for parent in (tmp_path, *tmp_path.parents):
        if str(parent) in ("/", "/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o111)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(home),
           "XDG_DATA_HOME": str(home / "data")}
    runuser = shutil.which("runuser") or "runuser"
    r = subprocess.run([runuser, "-u", "nobody", "--", *COVE, "run", "--rm", "--network",
                        "none", "busybox", "sh", "-c",
                        "id -u; cat /proc/self/uid_map; stat -c %u /bin/busybox"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(nobody.pw_uid), "1"]
    assert lines[2] == "0"
    import time

    # the root's zygote (it forks monitors) waits two idle minutes for the next `run`:
    # `supervisor stop` ends it, as a user ends the engine's daemons
    subprocess.run([runuser, "-u", "nobody", "--", *COVE, "supervisor", "stop"], env=env,
                   capture_output=True, text=True, timeout=60, check=True)
    deadline = time.monotonic() + 10  # the monitor finishes its clean-up after `run` returns
    while True:
        left = subprocess.run(["pgrep", "-u", str(nobody.pw_uid), "-f", "cove"],
                              capture_output=True, text=True).stdout
        if not left.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left.strip(), left
