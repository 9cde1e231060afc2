"""Interop with the other image tools, through a local `docker-registry` (plain HTTP on
127.0.0.1) and through archives:

- skopeo pushes (docker v2s2 and OCI manifests, gzip and zstd layers), Cove pulls and runs;
- Cove pushes, skopeo (+ umoci unpack, run by cove-runtime), podman and docker pull and run;
- `cove save` → `docker load` / `podman load` → run;
- `podman save` / `docker save` → `cove load` → run.

podman and dockerd run with private roots (tests/lib/daemons.py; the fixtures are
tests/conftest.py's, shared with tests/build), with
cove-runtime as their OCI runtime; dockerd without iptables or a bridge.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.image.assemble import build_image
from cove.image.store import Store
from cove.oci.image import ContainerConfig, Manifest
from tests.lib.daemons import Docker, Podman, docker_run
from tests.lib.host import HostPaths
from tests.lib.images import RegistryServer, cove_at, d, f, searchable, write_tar
from tests.lib.paths import RUNTIME
from tests.lib.peers import docker_archive, need, sh

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers and daemons: needs root"),
]

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _skopeo() -> str:
    return need("skopeo")


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return sh([_skopeo(), *args], timeout=120)


# -- peers with private roots ---------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def skopeo_cache() -> Iterator[None]:
    """skopeo (as root) keeps a blob-info cache in /var/lib/containers/cache whatever
    else it is told: remove it afterwards when it was not there before."""
    host = HostPaths(["/var/lib/containers"])
    yield
    host.cleanup()


# -- images ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_tar(tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox as a docker-archive: the image tests/peers load into the peers."""
    from cove.image.busybox import BUSYBOX, build_rootfs
    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing (busybox-static)")
    d = tmp_path_factory.mktemp("interop-busybox")
    return docker_archive(build_rootfs(str(d / "rootfs")), str(d / "image.tar"))


@pytest.fixture
def root(tmp_path: Path) -> str:
    searchable(tmp_path)
    return str(tmp_path / "cove")


def app_image(tmp: Path, image_tar: str, st: Store, name: str, compression: str) -> str:
    """busybox (the peers' docker-archive, loaded by Cove) plus a layer with a script and
    a whiteout, with Entrypoint/Cmd/Env/WorkingDir."""
    cove_at(st.root, "load", "-i", image_tar, "localhost/interop-base:1")
    base = st.image("localhost/interop-base:1")
    bb = tmp / "bb.tar"
    with st.open_blob(base.manifest.layers[0].digest) as src, open(bb, "wb") as out:
        shutil.copyfileobj(src, out)
    app = write_tar(tmp / f"app-{compression}.tar", [
        d("srv"), f("srv/hello.sh", b'#!/bin/sh\necho "$GREETING from $(pwd): $*"\n',
                    mode=0o755),
        f("etc/.wh.motd", b"")])
    cfg = ContainerConfig(entrypoint=["/srv/hello.sh"], cmd=["default"],
                          env=[PATH_ENV, "GREETING=hello"], working_dir="/srv")
    return build_image(st, [str(bb), app], cfg, names=(name,),
                       compression=[compression, compression])


# -- skopeo → Cove --------------------------------------------------------------------

@pytest.mark.parametrize("fmt,comp", [("v2s2", "gzip"), ("oci", "gzip"), ("oci", "zstd")])
def test_skopeo_push_cove_pull_run(plain: RegistryServer, image_tar: str, root: str,
                                   fmt: str, comp: str) -> None:
    ref = f"{plain.host}/interop/skopeo-{fmt}-{comp}:1"
    args = ["copy", "--dest-tls-verify=false", "--format", fmt]
    if comp == "zstd":
        args += ["--dest-compress-format", "zstd"]
    skopeo(*args, f"docker-archive:{image_tar}", f"docker://{ref}")
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    want = json.loads(raw)
    digest = cove_at(root, "pull", "-q", ref).stdout.strip()
    m = Manifest.parse(cove_blob(root, digest))
    assert m.media_type == want["mediaType"]
    assert [x.media_type for x in m.layers] == [x["mediaType"] for x in want["layers"]]
    assert cove_at(root, "run", "--rm", ref, "echo", "hi", "from", "skopeo").stdout == \
        "hi from skopeo\n"
    # The registry's view of the digest is Cove's.
    insp = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert insp["Digest"] == digest


def cove_blob(root: str, digest: str) -> bytes:
    return (Path(root) / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()


# -- Cove → skopeo, podman, docker ----------------------------------------------------

@pytest.mark.parametrize("comp", ["gzip", "zstd"])
def test_cove_push_peers_pull_run(plain: RegistryServer, image_tar: str, root: str,
                                  tmp_path: Path, podman: Podman, docker: Docker,
                                  comp: str) -> None:
    ref = f"{plain.host}/interop/cove-{comp}:1"
    st = Store(root)
    digest = app_image(tmp_path, image_tar, st, ref, comp)
    assert cove_at(root, "push", "-q", ref).stdout.strip() == digest
    cove_at(root, "run", "--rm", ref, "x")

    # skopeo: same digest; copy into an OCI layout, unpack with umoci, run the bundle.
    insp = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert insp["Digest"] == digest
    assert insp["Env"] == [PATH_ENV, "GREETING=hello"]
    layout = tmp_path / "oci"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:app")
    idx = json.loads((layout / "index.json").read_text())
    assert idx["manifests"][0]["digest"] == digest
    if shutil.which("umoci") and comp == "gzip":   # umoci 0.4.7 has no zstd
        bundle = tmp_path / "bundle"
        sh(["umoci", "unpack", "--image", f"{layout}:app", str(bundle)], timeout=120)
        assert not (bundle / "rootfs" / "etc" / "motd").exists()
        spec = json.loads((bundle / "config.json").read_text())
        assert spec["process"]["args"] == ["/srv/hello.sh", "default"]
        spec["process"]["terminal"] = False
        (bundle / "config.json").write_text(json.dumps(spec))
        r = sh([RUNTIME, "--root", str(tmp_path / "rt"), "run", "--bundle", str(bundle),
                "interop-umoci"], timeout=60)
        assert r.stdout == "hello from /srv: default\n"

    # podman pulls and runs it (through cove-runtime).
    podman("pull", "-q", ref, timeout=120)
    assert podman("image", "inspect", "-f", "{{.Digest}}", ref).stdout.strip() == digest
    assert podman("run", "--rm", ref, "from", "podman").stdout == \
        "hello from /srv: from podman\n"
    podman("rmi", ref)
    podman.check_clean()

    # docker 20.10 knows no zstd layers.
    if comp == "gzip":
        docker("pull", "-q", ref, timeout=120)
        assert docker_run(docker, ref, "from", "docker") == "hello from /srv: from docker\n"
        docker("rmi", ref)
        docker.check_clean()


# -- archives -------------------------------------------------------------------------

def test_cove_save_peers_load_run(image_tar: str, root: str, tmp_path: Path,
                                  podman: Podman, docker: Docker) -> None:
    name = "localhost/interop/saved:1"
    st = Store(root)
    app_image(tmp_path, image_tar, st, name, "gzip")
    for fmt in ("docker-archive", "oci-archive"):
        out = tmp_path / f"saved-{fmt}.tar"
        cove_at(root, "save", "--format", fmt, "-o", str(out), name)
        r = podman("load", "-i", str(out), timeout=120)
        assert name in r.stdout, r.stdout
        assert podman("run", "--rm", name, fmt).stdout == f"hello from /srv: {fmt}\n"
        podman("rmi", name)
        podman.check_clean()
    out = tmp_path / "saved-docker-archive.tar"
    r = docker("load", "-i", str(out), timeout=120)
    assert "interop/saved:1" in r.stdout, r.stdout
    assert docker_run(docker, name, "docker") == "hello from /srv: docker\n"
    docker("rmi", name)
    docker.check_clean()


def test_peers_save_cove_load_run(image_tar: str, root: str, tmp_path: Path,
                                  podman: Podman, docker: Docker) -> None:
    name = "localhost/interop/peer:1"
    st = Store(str(tmp_path / "build"))
    app_image(tmp_path, image_tar, st, name, "gzip")
    src = tmp_path / "src.tar"
    cove_at(st.root, "save", "-o", str(src), name)
    podman("load", "-i", str(src), timeout=120)
    docker("load", "-i", str(src), timeout=120)
    saved = {}
    for fmt in ("docker-archive", "oci-archive"):
        saved[f"podman-{fmt}"] = tmp_path / f"podman-{fmt}.tar"
        podman("save", "--format", fmt, "-o", str(saved[f"podman-{fmt}"]), name,
               timeout=120)
    saved["docker"] = tmp_path / "docker.tar"
    docker("save", "-o", str(saved["docker"]), name, timeout=120)
    podman("rmi", name)
    docker("rmi", name)
    for what, path in saved.items():
        r = cove_at(root, "load", "-i", str(path))
        assert r.stdout.startswith("Loaded image: "), r.stdout
        loaded = r.stdout.split(": ", 1)[1].strip()
        out = cove_at(root, "run", "--rm", loaded, what).stdout
        assert out == f"hello from /srv: {what}\n", (what, loaded)
        img = json.loads(cove_at(root, "inspect", "--type", "image", loaded).stdout)[0]
        assert img["Config"]["Entrypoint"] == ["/srv/hello.sh"]
        cove_at(root, "rmi", loaded)
    assert json.loads(cove_at(root, "images", "--format", "json").stdout) == []
    podman.check_clean()
    docker.check_clean()


def test_archives_and_index_through_skopeo(plain: RegistryServer, image_tar: str, root: str,
                                           tmp_path: Path, podman: Podman) -> None:
    """`cove save --format oci-archive` → skopeo → registry → Cove pull (same digest);
    skopeo's docker-archive and oci-archive → `cove load`; a multi-platform index pushed
    by Cove is read by skopeo and podman (which pick the host's platform)."""
    from cove.image.assemble import build_index
    from cove.image.platforms import host_platform
    from cove.oci.image import Platform

    st = Store(str(tmp_path / "build"))
    name = "localhost/interop/arch:1"
    digest = app_image(tmp_path, image_tar, st, name, "gzip")
    oci = tmp_path / "app-oci.tar"
    cove_at(st.root, "save", "--format", "oci-archive", "-o", str(oci), name)
    ref = f"{plain.host}/interop/via-skopeo:1"
    skopeo("copy", "--dest-tls-verify=false", f"oci-archive:{oci}", f"docker://{ref}")
    assert cove_at(root, "pull", "-q", ref).stdout.strip() == digest
    for kind in ("docker-archive", "oci-archive"):
        out = tmp_path / f"skopeo-{kind}.tar"
        skopeo("copy", "--src-tls-verify=false", f"docker://{ref}",
               f"{kind}:{out}:localhost/interop/from-skopeo:{kind}")
        loaded = cove_at(root, "load", "-i", str(out)).stdout.split(": ", 1)[1].strip()
        assert loaded == f"localhost/interop/from-skopeo:{kind}"
        assert cove_at(root, "run", "--rm", loaded, kind).stdout == f"hello from /srv: {kind}\n"

    host = host_platform()
    other = Platform("linux", "arm64" if host.architecture != "arm64" else "amd64")
    l1 = write_tar(tmp_path / "other.tar", [f("etc/arch", other.architecture.encode())])
    theirs = build_image(st, [l1], ContainerConfig(cmd=["true"]), platform=other)
    iref = f"{plain.host}/interop/multi:1"
    idx = build_index(st, [digest, theirs], names=(iref,))
    assert cove_at(st.root, "push", "-q", iref).stdout.strip() == idx
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                            f"docker://{iref}").stdout)
    assert {m["platform"]["architecture"] for m in raw["manifests"]} == \
        {host.architecture, other.architecture}
    insp = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{iref}").stdout)
    assert insp["Architecture"] == host.architecture
    podman("pull", "-q", iref, timeout=120)
    assert podman("run", "--rm", iref, "multi").stdout == "hello from /srv: multi\n"
    podman("rmi", iref)
    podman.check_clean()
