"""Shared bits of the handler tests: runtimes per handler, no qemu/runsc left behind."""

from __future__ import annotations

import os
import subprocess
import time

from tests.lib.paths import ROOT
from tests.lib.runtime import Env, Runtime

VM_RUNTIME = str(ROOT / ".venv" / "bin" / "cove-runtime-vm")
GVISOR_RUNTIME = str(ROOT / ".venv" / "bin" / "cove-runtime-gvisor")


def runtime(env: Env, binary: str) -> Runtime:
    """A driver for `binary` on the env's state root (so env.cleanup deletes with it too)."""
    return Runtime(binary, env.tmp / "state")


def pgrep(pattern: str, under: str) -> list[str]:
    """Processes whose command line has `pattern` and mentions `under` (the test's tmp)."""
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if under in ln or "cove-vm" in ln]


def live_qemus() -> list[str]:
    """qemu processes that are not zombies (a zombie whose parent is a non-reaping pid 1
    holds nothing)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm.startswith("qemu-system") and stat[stat.rindex(")") + 2] != "Z":
            out.append(f"{pid} {comm}")
    return out


def no_qemu_left(timeout: float = 5) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        out = live_qemus()
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)
