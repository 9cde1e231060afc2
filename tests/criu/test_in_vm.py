"""The CRIU tests where CRIU works: a qemu (TCG) VM of Debian's 6.1 kernel.

This host's kernel (6.18) breaks Debian's CRIU 3.17 (`criu check`: vDSO), so, as the
cgroup v2 tests do (tests/integration/test_cgroups_v2_vm.py), this boots the VM with
the host's root shared read-only and runs tests/criu there with the guest's pytest
(loopback up: CRIU's kernel probe connects to 127.0.0.1). On a host where CRIU works
the same tests run directly instead, and this one skips.
"""

from __future__ import annotations

import os

import pytest

from tests.lib.criu import criu_broken
from tests.lib.guest import guest_pytest

# COVE_CRIU_VM_TESTS: another selection, for a quicker turn while working on one
GUEST_TESTS = os.environ.get("COVE_CRIU_VM_TESTS", "").split() or [
    "tests/criu/test_runtime.py", "tests/criu/test_engine.py", "tests/criu/test_podman.py",
    "tests/criu/test_migrate.py", "tests/criu/test_containerd.py"]


@pytest.mark.slow
def test_criu_in_vm() -> None:
    if not criu_broken():
        pytest.skip("CRIU works on this host: tests/criu ran directly")
    if not os.path.exists("/usr/sbin/criu"):
        pytest.skip("criu is not installed (scripts/install-deps.sh)")
    # dmesg -n 1: no kernel line (auto_msgmni...) cut into the exit marker on the console;
    # a tmpfs on /var/lib/containers (read-only in the guest), where podman keeps a cache;
    # loopback up: CRIU's kernel probe connects to 127.0.0.1. test_migrate_bad_input runs
    # on the host too (no CRIU needed): not again in the slow guest.
    r, counts, tail = guest_pytest(
        GUEST_TESTS, timeout=960, mem_mb=1536,
        before="dmesg -n 1; mount -t tmpfs tmpfs /var/lib/containers 2>/dev/null; "
               "ip link set lo up && ",
        args="-s --durations=8 --deselect tests/criu/test_migrate.py::test_migrate_bad_input")
    assert counts.get("passed", 0) > 0, f"no pytest summary from the guest:\n{tail}"
    assert r.rc == 0 and not counts.get("failed") and not counts.get("error"), tail
    assert not counts.get("skipped"), f"CRIU did not work in the VM either:\n{tail}"
