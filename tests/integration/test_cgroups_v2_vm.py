"""The cgroup v2 Manager on a real pure-cgroup2 host: a qemu (TCG) VM of Debian's kernel.

This host is cgroup v1 hybrid. cove/handlers/vm/qemu.py boots `linux-image-amd64` with the
host's root shared read-only over 9p, mounts only cgroup2 at /sys/fs/cgroup with every
controller enabled, and runs the v2 tests (tests/v2, plus the host-hierarchy tests,
which then see a v2 host) with the guest's pytest; their summary line comes back on the
serial console. `make test-v2` runs just this.
"""

from __future__ import annotations

import pytest

from tests.lib.guest import guest_pytest, summary_counts

GUEST_TESTS = ["tests/v2", "tests/integration/test_cgroups_host.py"]


@pytest.mark.slow
def test_v2_manager_in_vm() -> None:
    r, counts, tail = guest_pytest(GUEST_TESTS, args="--durations=5", timeout=420,
                                   tail_lines=80)
    assert counts.get("passed", 0) > 0, f"no pytest summary from the guest:\n{tail}"
    assert r.rc == 0 and not counts.get("failed") and not counts.get("error"), tail
    # Only the opt-in parts may skip (no block device, no hugetlb sizes).
    assert counts.get("skipped", 0) <= 2, tail


def test_summary_parser() -> None:
    out = "....\n==== 1 failed, 24 passed, 2 skipped, 1 error in 25.02s ====\nCOVE-VM-EXIT=1\n"
    assert summary_counts(out) == {"failed": 1, "passed": 24, "skipped": 2, "error": 1}
    assert summary_counts("24 passed in 3.1s\n") == {"passed": 24}
    assert summary_counts("kernel panic\n") == {}
