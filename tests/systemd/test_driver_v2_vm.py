"""The systemd driver's v2 test (test_driver_v2.py) with every controller: in the qemu VM.

On this host the v2 tree has only hugetlb (the rest are bound to v1 hierarchies), so the
memory, pids and cpu properties and files of a scope are tested in the VM that the cgroup
v2 tests use (cove/handlers/vm/qemu.py: Debian's 6.1 kernel under TCG, the host's root
shared read-only over 9p, a pure cgroup2 hierarchy at /sys/fs/cgroup with every
controller enabled): the guest's pytest runs test_driver_v2.py there, where the systemd
container's v2 tree has them all (MemoryMax/TasksMax/CPUWeight/CPUQuotaPerSecUSec and
the files under the scope, their update, systemd's reload keeping them, systemd
refusing CPUWeight=0). The guest loads overlayfs first (its init loads only virtio and
9p), for the container's rootfs over the cached Debian one.
"""

from __future__ import annotations

import pytest

from tests.lib.guest import guest_pytest


def _systemd_rootfs() -> None:
    from tests.lib.debian import Unavailable, systemd_rootfs

    try:
        systemd_rootfs()  # built here: the guest sees the host's root read-only
    except Unavailable as e:
        pytest.skip(f"no Debian rootfs with systemd: {e}")


@pytest.mark.slow
def test_driver_v2_in_vm() -> None:
    r, counts, tail = guest_pytest(
        ["tests/systemd/test_driver_v2.py"], args="-s", timeout=420, mem_mb=1536,
        prepare=_systemd_rootfs,
        before="dmesg -n 1; modprobe overlay || echo 'vm: no overlay module'; ")
    assert counts == {"passed": 1}, tail
    # the guest's run had every controller (not the host's hugetlb-only tree)
    assert "controllers: cpu cpuset hugetlb io memory" in r.output, tail
