"""podman 4.3 with `cove-runtime` as its runtime: `container checkpoint` and `container
restore` of a running container (through conmon, which hands the restore its pipes).

Runs where CRIU works (the 6.1-kernel VM: tests/criu/test_in_vm.py mounts a tmpfs on
/var/lib/containers there first, where podman keeps a cache whatever its storage
says); podman's storage, config and temp files are the test's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.lib.criu import criu_broken
from tests.lib.paths import RUNTIME

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(bool(criu_broken()), reason=criu_broken() or "ok"),
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("conmon") is None,
                       reason="podman and conmon not installed"),
    pytest.mark.skipif(not os.access("/var/lib/containers", os.W_OK),
                       reason="/var/lib/containers is not writable (the VM mounts a tmpfs)"),
]

CONF = """[containers]
netns = "none"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_config_dir = "{T}/networks"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{T}/events.log"
tmp_dir = "{T}/tmp"
volume_path = "{T}/volumes"
image_copy_tmp_dir = "{T}/tmp"
runtime = "cove"
[engine.runtimes]
cove = ["{rt}"]
"""


def test_podman_checkpoint_restore(tmp_path: Path) -> None:
    from cove.image.busybox import build_rootfs

    T = str(tmp_path)
    for d in ("tmp", "networks", "volumes"):
        os.makedirs(os.path.join(T, d))
    Path(T, "containers.conf").write_text(CONF.format(T=T, rt=RUNTIME))
    Path(T, "storage.conf").write_text(f'[storage]\ndriver = "overlay"\n'
                                       f'graphroot = "{T}/storage"\nrunroot = "{T}/run"\n')
    Path(T, "registries.conf").write_text("unqualified-search-registries = []\n")
    env = {**os.environ, "TMPDIR": f"{T}/tmp", "CONTAINERS_CONF": f"{T}/containers.conf",
           "CONTAINERS_STORAGE_CONF": f"{T}/storage.conf",
           "CONTAINERS_REGISTRIES_CONF": f"{T}/registries.conf"}

    def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["podman", *args], env=env, capture_output=True, text=True,
                           timeout=180)
        assert not check or r.returncode == 0, f"podman {args}: {r.stderr}"
        return r

    rootfs = build_rootfs(os.path.join(T, "rootfs"))
    subprocess.run(["tar", "-C", rootfs, "-cf", f"{T}/rootfs.tar", "."], check=True)
    try:
        podman("import", f"{T}/rootfs.tar", "localhost/bb")
        podman("run", "-d", "--name", "p1", "localhost/bb", "sh", "-c",
               "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done")
        time.sleep(1)
        podman("container", "checkpoint", "p1")
        assert "Exited" in podman("ps", "-a", "--format", "{{.Status}}").stdout
        before = [int(x) for x in podman("logs", "p1").stdout.split()]
        podman("container", "restore", "p1")
        assert podman("inspect", "-f", "{{.State.Status}}", "p1").stdout.strip() == "running"
        deadline = time.monotonic() + 60
        while True:
            after = [int(x) for x in podman("logs", "p1").stdout.split()]
            if len(after) >= len(before) + 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert after[:len(before)] == before and len(after) >= len(before) + 3
        assert after == list(range(len(after))), after[len(before) - 2:]  # goes on
    finally:
        podman("rm", "-af", "-t", "0", check=False)
        podman("rmi", "-af", check=False)
        podman("system", "reset", "-f", check=False)
