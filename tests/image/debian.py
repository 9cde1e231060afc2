"""A Debian bookworm rootfs (debootstrap --variant=minbase), built once and cached, split
into several layers: the image the slow test and bench/pull move around.

The rootfs is cached under /var/cache/cove-tests/debian-bookworm (COVE_TEST_DEBIAN to
move it) and rebuilt only when missing: debootstrap takes about a minute here, most of it
downloading from the mirror. `DEBIAN.ok` marks a complete one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cove.image.assemble import build_image
from cove.image.store import Store
from cove.oci.image import ContainerConfig

CACHE = os.environ.get("COVE_TEST_DEBIAN", "/var/cache/cove-tests/debian-bookworm")
MIRROR = os.environ.get("COVE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bottom first: the big, stable /usr; then the mutable /var and /etc; then the rest
# (the merged-/usr symlinks, /dev, empty mount points).
SPLIT: list[tuple[str, list[str] | None]] = [("usr", ["usr"]), ("var-etc", ["var", "etc"]),
                                             ("rest", None)]


class Unavailable(Exception):
    """The rootfs cannot be built here (no debootstrap, no mirror, not root)."""


def rootfs(log: Path | None = None) -> str:
    """The cached rootfs, built with debootstrap when missing."""
    if os.path.exists(CACHE + ".ok") and os.path.isdir(CACHE):
        return CACHE
    if os.geteuid() != 0:
        raise Unavailable("debootstrap needs root")
    if shutil.which("debootstrap") is None:
        raise Unavailable("debootstrap is not installed (scripts/install-deps.sh)")
    tmp = CACHE + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    try:
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", tmp, MIRROR],
                           capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Unavailable(f"debootstrap from {MIRROR} timed out") from None
    if log is not None:
        log.write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["?"]
        raise Unavailable(f"debootstrap from {MIRROR} failed: {last[0]}")
    # As Debian's own images: no downloaded packages, no package lists.
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in Path(tmp, d).glob("*"):
            if p.is_file() and p.name != "lock":
                p.unlink()
    shutil.rmtree(CACHE, ignore_errors=True)
    os.rename(tmp, CACHE)
    Path(CACHE + ".ok").touch()
    return CACHE


def layer_tars(root: str, out: Path) -> list[str]:
    """Tars of the SPLIT parts of `root` (GNU tar: numeric owners, xattrs), bottom first."""
    out.mkdir(parents=True, exist_ok=True)
    top = sorted(os.listdir(root))
    taken = {n for _, names in SPLIT if names for n in names}
    tars = []
    for name, names in SPLIT:
        members = names if names is not None else [n for n in top if n not in taken]
        path = out / f"{name}.tar"
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                        "-C", root, "-cf", str(path), *members], check=True, timeout=600)
        tars.append(str(path))
    return tars


def build(st: Store, name: str, work: Path, compression: list[str] | str = "gzip",
          extra: list[str] | None = None) -> str:
    """The Debian image in `st` (not unpacked), optionally with extra layer tars on top."""
    tars = layer_tars(rootfs(), work)
    cfg = ContainerConfig(cmd=["bash"], env=[PATH_ENV])
    return build_image(st, tars + (extra or []), cfg, names=(name,), compression=compression,
                       history="debootstrap --variant=minbase bookworm", unpack=False)
