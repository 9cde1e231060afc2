"""A minimal busybox rootfs from Debian's `busybox-static`: the built-in default image
and the test rootfs. Nothing is downloaded: it works offline on a fresh machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess

BUSYBOX = "/bin/busybox"

_PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
           "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
           "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
_GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n"


def check_busybox(path: str = BUSYBOX) -> str:
    """The static busybox binary, or an error that says how to get it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: install Debian's busybox-static")
    return path


def applets(busybox: str = BUSYBOX) -> list[str]:
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def build_rootfs(dest: str, busybox: str = BUSYBOX) -> str:
    """Lay out a busybox rootfs in `dest` (created if missing); return `dest`."""
    check_busybox(busybox)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "var", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(dest, "bin", "busybox"))
    for full in applets(busybox):
        rel = full.lstrip("/")
        if rel == "bin/busybox":
            continue
        link = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink("/bin/busybox", link)
    for name, text in (("passwd", _PASSWD), ("group", _GROUP),
                       ("hostname", "cove\n"), ("hosts", "127.0.0.1 localhost\n")):
        with open(os.path.join(dest, "etc", name), "w") as f:
            f.write(text)
    return dest
