"""The tests that run inside the qemu VM (cove/handlers/vm/qemu.py boots it): the guest's
pytest prints its summary line on the serial console, and the host test reads the counts
back from it (tests/integration/test_cgroups_v2_vm.py, tests/criu/test_in_vm.py)."""

from __future__ import annotations


def summary_counts(output: str) -> dict[str, int]:
    """Counts from pytest's last line ("3 failed, 21 passed, 1 skipped in 25.0s")."""
    for line in reversed(output.splitlines()):
        line = line.strip("= ")
        if " in " in line and any(w in line for w in ("passed", "failed", "error")):
            counts: dict[str, int] = {}
            for part in line.rsplit(" in ", 1)[0].split(","):
                n, _, what = part.strip().partition(" ")
                if n.isdigit():
                    counts[what.rstrip("s") if what.endswith("errors") else what] = int(n)
            return counts
    return {}
