"""The build tests' `cove` runner over a state root of the test's own (bytes in, text
out, a longer default timeout than the engine's), with a look into the images it built:
their config, each layer's members, the tree its layers make (to compare with another
builder's). The `cove` fixture of tests/build is tests/build/conftest.py's."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from cove.image import layers
from cove.image.store import Store
from tests.lib.paths import ROOT, RUNTIME


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


def tree(store: Store, ref: str, dest: Path) -> dict[str, tuple[Any, ...]]:
    """The image's layers applied into `dest`; path → (type, mode, uid, gid, content)."""
    img = store.image(ref)
    snaps = [layers.ensure_snapshot(store, d.digest, d.media_type, diff)
             for d, diff in zip(img.manifest.layers, img.config.diff_ids, strict=True)]
    dest.mkdir()
    layers.apply_snapshots(snaps, str(dest))
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            else:
                content = ""
            out[os.path.relpath(p, dest)] = (stat.S_IFMT(st.st_mode),
                                              oct(stat.S_IMODE(st.st_mode)),
                                              st.st_uid, st.st_gid, content)
    return out
