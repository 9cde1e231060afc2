"""Fixtures for build tests: a state root per test holding the built-in busybox image
(copied from a session store), a `cove` runner over it, and a check that a build
leaves nothing behind: no mounts, no build containers, no runtime state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.image.builtin import ensure_busybox
from cove.image.store import Store

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = str(ROOT / ".venv" / "bin" / "cove-runtime")



class Cove:
    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 input: bytes | None = None, cwd: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COVE_RUNTIME": RUNTIME, "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", self.root,
                            *args], capture_output=True, env=env, timeout=timeout,
                           input=input, cwd=cwd or str(ROOT))
        out = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                          r.stderr.decode(errors="replace"))
        if check:
            assert r.returncode == 0, f"cove {' '.join(args)}: {out.stderr}\n{out.stdout}"
        return out

    def store(self) -> Store:
        return Store(self.root)

    def config(self, ref: str) -> dict[str, Any]:
        img = self.store().image(ref)
        return dict(json.loads(img.config_raw))

    def layer_members(self, ref: str) -> list[dict[str, tarfile.TarInfo]]:
        """Each layer's tar members by name, bottom first."""
        st = self.store()
        img = st.image(ref)
        out = []
        for d in img.manifest.layers:
            with st.open_blob(d.digest) as f, tarfile.open(fileobj=f, mode="r:*") as tf:
                out.append({m.name: m for m in tf.getmembers()})
        return out

    def layer_file(self, ref: str, index: int, name: str) -> bytes:
        st = self.store()
        img = st.image(ref)
        with st.open_blob(img.manifest.layers[index].digest) as f, \
                tarfile.open(fileobj=f, mode="r:*") as tf:
            x = tf.extractfile(name)
            assert x is not None
            return x.read()


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if path in line.split()[4]]


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


def write(ctx: Path, files: dict[str, str | bytes]) -> Path:
    ctx.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)
    return ctx
