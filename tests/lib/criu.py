"""Whether CRIU can checkpoint on this host: the CRIU tests (tests/criu) and bench/migrate
skip, or go into the VM, on its answer."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


@functools.cache
def criu_broken() -> str:
    """Why CRIU cannot checkpoint here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    exe = shutil.which("criu") or ("/usr/sbin/criu" if os.path.exists("/usr/sbin/criu") else "")
    if not exe:
        return "criu is not installed"
    r = subprocess.run([exe, "check"], capture_output=True, text=True, timeout=60)
    if r.returncode == 0:
        return ""
    errs = [ln for ln in r.stderr.splitlines() if "Error" in ln]
    return f"`criu check` fails on this kernel: {(errs or ['?'])[0]}"
