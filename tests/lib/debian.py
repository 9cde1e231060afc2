"""A Debian bookworm rootfs (debootstrap --variant=minbase), built once and cached, split
into several layers: the image the slow test and bench/pull move around; and the same
with systemd, the image of the `--systemd` tests (tests/engine/test_systemd_container.py,
tests/systemd).

The rootfs is cached under /var/cache/cove-tests/debian-bookworm (COVE_TEST_DEBIAN to
move it; the one with systemd beside it, COVE_TEST_DEBIAN_SYSTEMD) and rebuilt only when
missing: debootstrap takes about a minute here, most of it downloading from the mirror.
`<cache>.ok` marks a complete one.
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
SYSTEMD_CACHE = os.environ.get("COVE_TEST_DEBIAN_SYSTEMD",
                               "/var/cache/cove-tests/debian-bookworm-systemd")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bottom first: the big, stable /usr; then the mutable /var and /etc; then the rest
# (the merged-/usr symlinks, /dev, empty mount points).
SPLIT: list[tuple[str, list[str] | None]] = [("usr", ["usr"]), ("var-etc", ["var", "etc"]),
                                             ("rest", None)]


class Unavailable(Exception):
    """The rootfs cannot be built here (no debootstrap, no mirror, not root)."""


def rootfs(log: Path | None = None) -> str:
    """The cached rootfs, built with debootstrap when missing."""
    return _debootstrap(CACHE, [], log)


def systemd_rootfs() -> str:
    """The cached rootfs with systemd, built with debootstrap when missing (~45 s here,
    most of it downloading from the mirror)."""
    return _debootstrap(SYSTEMD_CACHE, ["--include=systemd,systemd-sysv,dbus"], None)


def _debootstrap(cache: str, extra: list[str], log: Path | None) -> str:
    if os.path.exists(cache + ".ok") and os.path.isdir(cache):
        return cache
    if os.geteuid() != 0:
        raise Unavailable("debootstrap needs root")
    if shutil.which("debootstrap") is None:
        raise Unavailable("debootstrap is not installed (scripts/install-deps.sh)")
    tmp = cache + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    try:
        r = subprocess.run(["debootstrap", "--variant=minbase", *extra, "bookworm", tmp,
                            MIRROR], capture_output=True, text=True, timeout=1200)
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
    shutil.rmtree(cache, ignore_errors=True)
    os.rename(tmp, cache)
    Path(cache + ".ok").touch()
    return cache


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
