"""`cove run` of an image with `Volumes` and `ExposedPorts` (anonymous volumes filled
from the image, removed with the container), and short names resolved through
`unqualified-search-registries` in a registries.conf."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cove.image.assemble import build_image
from cove.image.store import Store
from cove.image.transfer import push
from cove.oci.image import ContainerConfig
from tests.lib.images import RegistryServer, cove_at, d, f, searchable, write_tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root")


def vol_image(busybox: Store, tmp: Path, st: Store, name: str) -> str:
    base = busybox.image("localhost/busybox")
    bb_tar = tmp / "bb.tar"
    with busybox.open_blob(base.manifest.layers[0].digest) as src, open(bb_tar, "wb") as out:
        out.write(src.read())
    app = write_tar(tmp / "vol.tar", [d("data", 0o755),
                                      f("data/seed", b"seeded\n", uid=1, gid=1,
                                        mode=0o666)], "gzip")
    cfg = ContainerConfig(cmd=["sh"], env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                          volumes=["/data"], exposed_ports=["8080/tcp", "53/udp"])
    return build_image(st, [str(bb_tar), app], cfg, names=(name,))


def _vols(root: str) -> list[str]:
    try:
        return sorted(os.listdir(Path(root) / "volumes"))
    except FileNotFoundError:
        return []


def test_image_volumes_and_exposed_ports(busybox_store: Store, tmp_path: Path) -> None:
    searchable(tmp_path)
    root = str(tmp_path / "root")
    img = "localhost/vol:1"
    vol_image(busybox_store, tmp_path, Store(root), img)
    r = cove_at(root, "run", "--rm", img, "cat", "/data/seed")
    assert r.stdout == "seeded\n"
    assert _vols(root) == []  # --rm took the anonymous volume
    # a separate, writable mount (not the overlay), owned as in the image
    r = cove_at(root, "run", "--name", "c1", img, "sh", "-c",
                "grep -q ' /data ' /proc/mounts && echo more >> /data/seed && "
                "echo new > /data/new && stat -c %u /data/seed && cat /data/seed")
    assert r.stdout == "1\nseeded\nmore\n"
    info = json.loads(cove_at(root, "inspect", "c1").stdout)
    info = info[0] if isinstance(info, list) else info
    assert info["Config"]["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    (m,) = [m for m in info["Mounts"] if m["Destination"] == "/data"]
    assert m["Type"] == "volume" and m["RW"]
    assert _vols(root) == [m["Name"]]
    vol_data = Path(root) / "volumes" / m["Name"] / "_data"
    assert (vol_data / "seed").read_text() == "seeded\nmore\n"
    assert (vol_data / "new").read_text() == "new\n"
    # the image's own layer is untouched
    assert not (Path(root) / "containers" / "c1" / "upper" / "data" / "seed").exists()
    cove_at(root, "rm", "c1")
    assert _vols(root) == []
    # a user mount on the path wins: no anonymous volume
    own = tmp_path / "own"
    own.mkdir()
    (own / "seed").write_text("mine\n")
    r = cove_at(root, "run", "--rm", "-v", f"{own}:/data", img, "cat", "/data/seed")
    assert r.stdout == "mine\n"
    # a new named volume is filled from the image (docker's copy-up)
    r = cove_at(root, "run", "--rm", "-v", "named:/data", img, "ls", "/data")
    assert r.stdout == "seed\n"
    assert _vols(root) == ["named"]  # a named volume outlives the container


def test_short_name_search_registries(plain: RegistryServer, busybox_store: Store,
                                      tmp_path: Path, stores: dict[str, Store],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    searchable(tmp_path)
    ref = f"{plain.host}/shorty:2"
    digest = vol_image(busybox_store, tmp_path, stores["src"], ref)
    push(stores["src"], ref)
    root = str(tmp_path / "root")
    os.makedirs(root)
    # the root's registries.conf: a registry without it first, then the test's
    (Path(root) / "registries.conf").write_text(
        f'unqualified-search-registries = ["127.0.0.1:1", "{plain.host}"]\n')
    assert cove_at(root, "pull", "-q", "shorty:2").stdout.strip() == digest
    names = json.loads(cove_at(root, "images", "--format", "json").stdout)[0]["Names"]
    assert names == [ref]
    r = cove_at(root, "run", "--rm", "shorty:2", "cat", "/data/seed")
    assert r.stdout == "seeded\n"
    cove_at(root, "rmi", "shorty:2")
    # $COVE_REGISTRIES_CONF wins over the root's file
    conf = tmp_path / "other.conf"
    conf.write_text('unqualified-search-registries = ["127.0.0.1:1"]\n')
    monkeypatch.setenv("COVE_REGISTRIES_CONF", str(conf))
    r = cove_at(root, "run", "--rm", "shorty:2", "true", check=False)
    assert r.returncode != 0 and "127.0.0.1:1" in r.stderr
    conf.write_text(f'unqualified-search-registries = ["{plain.host}"]\n')
    r = cove_at(root, "run", "--rm", "shorty:2", "cat", "/data/seed")
    assert r.stdout == "seeded\n"
