"""The cgroup v2 Manager on a real pure-cgroup2 host: a qemu (TCG) VM of Debian's kernel.

This host is cgroup v1 hybrid. cove/handlers/vm/qemu.py boots `linux-image-amd64` with the
host's root shared read-only over 9p, mounts only cgroup2 at /sys/fs/cgroup with every
controller enabled, and runs the v2 tests (tests/v2, plus the host-hierarchy tests,
which then see a v2 host) with the guest's pytest; their summary line comes back on the
serial console. `make test-v2` runs just this.
"""

from __future__ import annotations

import os
import shlex
import sys

import pytest

from cove.handlers.vm import qemu
from tests.lib.guest import summary_counts
from tests.lib.paths import ROOT

GUEST_TESTS = ["tests/v2", "tests/integration/test_cgroups_host.py"]


@pytest.mark.slow
def test_v2_manager_in_vm() -> None:
    why = qemu.missing()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("needs root (the guest tests write cgroupfs as the host's uid 0)")
    if not os.path.exists(ROOT / ".venv" / "bin" / "cove-runtime"):
        # The guest sees the tree read-only: write the launcher here, first.
        from cove.cli import launcher

        launcher.write(str(ROOT / ".venv" / "bin"))
    script = (f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m pytest "
              f"-p no:cacheprovider -q -rfEs --durations=5 {' '.join(GUEST_TESTS)}")
    r = qemu.run(script, timeout=420)
    tail = "\n".join(r.output.splitlines()[-80:])
    print(f"\nvm: wall {r.wall:.1f}s, guest up (init ran) at {r.guest_up}s of guest time")
    print(tail)
    assert r.rc is not None, f"the guest never reported back:\n{tail}"
    counts = summary_counts(r.output)
    assert counts.get("passed", 0) > 0, f"no pytest summary from the guest:\n{tail}"
    assert r.rc == 0 and not counts.get("failed") and not counts.get("error"), tail
    # Only the opt-in parts may skip (no block device, no hugetlb sizes).
    assert counts.get("skipped", 0) <= 2, tail


def test_summary_parser() -> None:
    out = "....\n==== 1 failed, 24 passed, 2 skipped, 1 error in 25.02s ====\nCOVE-VM-EXIT=1\n"
    assert summary_counts(out) == {"failed": 1, "passed": 24, "skipped": 2, "error": 1}
    assert summary_counts("24 passed in 3.1s\n") == {"passed": 24}
    assert summary_counts("kernel panic\n") == {}
