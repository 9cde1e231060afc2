"""CRIU checkpoint/restore: the runtime's verbs and the engine's commands.

Debian's CRIU 3.17 does not work on this host's kernel (6.18: `criu check` fails on the
vDSO), so the tests that checkpoint run in the qemu VM of Debian's 6.1 kernel
(tests/criu/test_in_vm.py boots it, as the cgroup v2 tests do); on a host where CRIU
works they run directly, and elsewhere they skip.
"""

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
