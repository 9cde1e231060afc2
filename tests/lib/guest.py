"""The tests that run inside the qemu VM (cove/handlers/vm/qemu.py boots it): the guest's
pytest prints its summary line on the serial console, and the host test reads the counts
back from it (tests/integration/test_cgroups_v2_vm.py, tests/criu/test_in_vm.py,
tests/systemd/test_driver_v2_vm.py)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable

import pytest

from cove.handlers.vm import qemu
from tests.lib.paths import ROOT


def guest_pytest(tests: list[str], *, before: str = "", args: str = "", timeout: float,
                 mem_mb: int = 1024, tail_lines: int = 60,
                 prepare: Callable[[], None] | None = None,
                 ) -> tuple[qemu.Result, dict[str, int], str]:
    """Run the guest's pytest on `tests` in the VM, after the shell commands `before`;
    return the VM's result, pytest's summary counts and the console's last lines (also
    printed). Skips where no VM can boot or not root, then calls `prepare` (what the
    guest needs built here: it sees this tree and the host's root read-only, so the
    cove-runtime launcher is written here first too)."""
    why = qemu.missing()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("needs root (the guest tests write cgroupfs as the host's uid 0)")
    if prepare is not None:
        prepare()
    if not os.path.exists(ROOT / ".venv" / "bin" / "cove-runtime"):
        from cove.cli import launcher

        launcher.write(str(ROOT / ".venv" / "bin"))
    script = (f"{before}cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m pytest "
              f"-p no:cacheprovider -q -rfEs {args} {' '.join(tests)}")
    r = qemu.run(script, timeout=timeout, mem_mb=mem_mb)
    tail = "\n".join(r.output.splitlines()[-tail_lines:])
    print(f"\nvm: wall {r.wall:.1f}s, guest up (init ran) at {r.guest_up}s of guest time")
    print(tail)
    assert r.rc is not None, f"the guest never reported back:\n{tail}"
    return r, summary_counts(r.output), tail


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
