"""`cove run --isolation`: the engine asks cove-runtime for a handler through the
io.cove.isolation annotation; the process runs under gVisor's kernel or in a VM."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cove.handlers.vm import qemu
from tests.lib.handlers import live_qemus
from tests.lib.paths import ROOT


def _cove(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cove.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=180, cwd=str(ROOT))


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc not installed")
def test_cove_run_isolation_gvisor(tmp_path: Path) -> None:
    mem = "/sys/fs/cgroup/memory"  # v1/hybrid hosts: where runsc's cgroups showed up
    before = set(os.listdir(mem)) if os.path.isdir(mem) else set()
    r = _cove(tmp_path, "run", "--rm", "--network", "none", "--isolation", "gvisor", "busybox",
              "sh", "-c", "uname -r; exit 4")
    assert r.returncode == 4, r.stderr
    assert r.stdout.strip() != os.uname().release  # gVisor's kernel, not the host's
    # runsc's cgroups go with it: its `delete` waits for the sandbox and gofer, orphans
    # the monitor (a subreaper) must reap while the delete runs
    left = [c for c in (os.listdir(mem) if os.path.isdir(mem) else [])
            if c.startswith("cove-") and c not in before]
    assert not left, f"cgroups left: {left}"


@pytest.mark.slow
@pytest.mark.skipif(qemu.missing() is not None, reason=str(qemu.missing()))
def test_cove_run_isolation_vm(tmp_path: Path) -> None:
    before = set(live_qemus())
    r = _cove(tmp_path, "run", "--rm", "--network", "none", "--isolation", "vm", "busybox",
              "sh", "-c", "uname -r; exit 5")
    assert r.returncode == 5, r.stderr
    assert r.stdout.strip() != os.uname().release  # the guest's kernel
    assert set(live_qemus()) <= before
