"""An image with Debian's gcc made from this host's own files (no download): the files
of the installed packages gcc needs (apt's dependency closure, plus dash for /bin/sh),
less documentation and the parts a small C program never uses (LTO, sanitizers, gold),
as one layer. The host is Debian 12, as the issue's "Debian's gcc" asks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from cove.image.store import Store
from cove.image.transfer import build_image
from cove.oci.image import ContainerConfig

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SKIP = re.compile(r"^/usr/share/(doc|man|info|locale|lintian|bug|gdb)/|lto1$|lto-dump|"
                   r"ld\.gold|dwp$|lib[a-z]*san[^/]*$|gprofng")
_EXTRA = ["dash", "libc6", "libc6-dev", "linux-libc-dev", "libcrypt-dev", "libcrypt1"]


class Unavailable(Exception):
    pass


def _packages() -> list[str]:
    if shutil.which("gcc") is None or shutil.which("dpkg-query") is None:
        raise Unavailable("gcc is not installed on this host")
    r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends",
                        "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                        "--no-enhances", "gcc"], capture_output=True, text=True, check=True)
    names = {line.strip() for line in r.stdout.splitlines() if not line.startswith(" ")}
    names.update(_EXTRA)
    q = subprocess.run(["dpkg-query", "-W", "-f=${Package}\n"], capture_output=True,
                       text=True, check=True)
    installed = set(q.stdout.split())
    return sorted(n.partition(":")[0] for n in names if n.partition(":")[0] in installed)


def _files(pkgs: list[str]) -> list[str]:
    out: set[str] = set()
    for p in pkgs:
        r = subprocess.run(["dpkg", "-L", p], capture_output=True, text=True)
        out.update(f for f in r.stdout.splitlines() if f.startswith("/"))
    return sorted(f for f in out if not _SKIP.search(f))


def layer_tar(out: Path) -> str:
    """The layer: files at their canonical (merged-/usr) paths, the top-level
    compatibility symlinks (/bin -> usr/bin ...) as the host has them."""
    seen: set[str] = set()
    with tarfile.open(out, "w") as tf:
        for top in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink("/" + top):
                tf.add("/" + top, arcname=top)
        for f in _files(_packages()):
            if not os.path.lexists(f) or (os.path.isdir(f) and not os.path.islink(f)):
                continue
            real = os.path.join(os.path.realpath(os.path.dirname(f)), os.path.basename(f))
            if real in seen:
                continue
            parts = real.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/" + "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    tf.add(d, arcname=d.lstrip("/"), recursive=False)
            seen.add(real)
            tf.add(real, arcname=real.lstrip("/"), recursive=False)
        for d in ("tmp", "etc", "root"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tf.addfile(ti)
    return str(out)


def build(st: Store, name: str, work: Path) -> str:
    work.mkdir(parents=True, exist_ok=True)
    tar = layer_tar(work / "gcc.tar")
    try:
        return build_image(st, [tar], ContainerConfig(cmd=["sh"], env=[PATH_ENV]),
                           names=(name,), compression="none", history="host gcc files")
    finally:
        os.unlink(tar)
