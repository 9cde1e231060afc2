"""Fixtures for build tests: a state root per test holding the built-in busybox image
(copied from a session store), a `cove` runner over it (tests/lib/build.py's), and a
check that a build leaves nothing behind: no mounts, no build containers, no runtime
state."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.image.builtin import ensure_busybox
from cove.image.store import Store
from tests.lib.build import Cove
from tests.lib.host import mounts_under


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Store:
    st = Store(str(tmp_path_factory.mktemp("build-busybox")))
    ensure_busybox(st)
    return st


@pytest.fixture
def cove(tmp_path: Path, busybox_root: Store) -> Iterator[Cove]:
    if os.geteuid() != 0:
        pytest.skip("builds mount overlays and run containers: needs root")
    root = str(tmp_path / "root")
    shutil.copytree(busybox_root.root, root, symlinks=True)
    c = Cove(root)
    yield c
    for name in c("ps", "-a", "-q", check=False).stdout.split():
        c("rm", "-f", name, check=False)
    c("supervisor", "stop", check=False)
    left = mounts_under(root)
    for m in reversed(left):
        subprocess.call(["umount", "-l", m])
    assert not left, f"mounts left: {left}"
    cdir = os.path.join(root, "containers")
    builds = [n for n in os.listdir(cdir) if n.startswith("build-")] \
        if os.path.isdir(cdir) else []
    assert not builds, f"build containers left: {builds}"
    rt = os.path.join(root, "build-runtime")
    states = [s for s in (os.listdir(rt) if os.path.isdir(rt) else [])
              if s != "seccomp-cache"]
    assert not states, f"runtime state left: {states}"

