"""The peer tests' fixtures: podman, containerd (ctr) and dockerd driving cove-runtime.

Each daemon runs with its own root, state and socket under a temp dir (prefix "peer"),
is stopped by PID at the end of its module, and everything it leaves on the host
(mounts, processes, cgroups, /etc/docker/key.json, /opt/containerd, ...) is removed
and then checked for. Each test also checks, after it ran, that it left no mount, no
process and no container cgroup behind (`Peer.check_clean`). The helpers are
tests/peerlib.py's (tests/cri shares them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.peerlib import docker_archive


@pytest.fixture(scope="session")
def image_tar() -> Iterator[str]:
    """A busybox image as a docker-archive tar (built once per session)."""
    from cove.image.busybox import BUSYBOX, build_rootfs

    if not os.path.exists(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing (busybox-static)")
    d = tempfile.mkdtemp(prefix="peer-image-")
    try:
        rootfs = build_rootfs(os.path.join(d, "rootfs"))
        yield docker_archive(rootfs, os.path.join(d, "image.tar"))
    finally:
        shutil.rmtree(d, ignore_errors=True)
