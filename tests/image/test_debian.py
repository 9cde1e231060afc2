"""A real distribution: Debian bookworm (debootstrap minbase, cached across runs) in three
layers (gzip, zstd, gzip), pushed by Cove to a local registry, pulled into a fresh store,
unpacked and run: `apt --version`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cove.image.store import Store
from tests.lib import debian
from tests.lib.images import RegistryServer, cove_at, overlay_mounts, searchable

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and runs: needs root")]


def test_debian_multi_layer_pull_run(plain: RegistryServer, tmp_path: Path) -> None:
    try:
        debian.rootfs(tmp_path / "debootstrap.log")
    except debian.Unavailable as e:
        pytest.skip(str(e))
    searchable(tmp_path)
    ref = f"{plain.host}/debian/bookworm:minbase"
    build = Store(str(tmp_path / "build"))
    digest = debian.build(build, ref, tmp_path / "tars", ["gzip", "zstd", "gzip"])
    assert cove_at(build.root, "push", "-q", ref).stdout.strip() == digest

    root = str(tmp_path / "root")
    assert cove_at(root, "pull", "-q", ref).stdout.strip() == digest
    img = Store(root).image(ref)
    assert [x.media_type.rsplit(".", 1)[-1] for x in img.manifest.layers] == \
        ["tar+gzip", "tar+zstd", "tar+gzip"]
    assert len(os.listdir(Path(root) / "snapshots")) == 3
    r = cove_at(root, "run", "--rm", ref, "apt", "--version")
    assert r.stdout.startswith("apt 2."), r.stdout
    r = cove_at(root, "run", "--rm", ref, "sh", "-c",
                "cat /etc/debian_version; ls -ld /bin | cut -c1; id -un")
    lines = r.stdout.split()
    assert lines[0].startswith("12."), r.stdout
    assert lines[1:] == ["l", "root"]                  # merged /usr: /bin is a symlink
    assert overlay_mounts(tmp_path) == []
    cove_at(root, "rmi", ref)
    assert json.loads(cove_at(root, "images", "--format", "json").stdout) == []
    assert os.listdir(Path(root) / "snapshots") == []
