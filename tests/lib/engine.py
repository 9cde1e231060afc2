"""The engine tests' `cove` runner over a state root of the test's own, and what the
engine runs for a root (its monitor and keeper, and any process of it left behind).
The fixtures that make the root (`cove`, `busybox_blobs`, `netns`) are tests/conftest.py's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.lib.paths import ROOT, RUNTIME
from tests.lib.terminal import PtySession
from tests.lib.wait import wait_for


class Cove:
    """`cove --root <root>` (after `prefix`, say `nsenter --net=...`); asserts success
    unless check=False."""

    def __init__(self, root: str, prefix: list[str] | None = None) -> None:
        self.root = root
        self.prefix = prefix or []

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COVE_RUNTIME": RUNTIME}
        r = subprocess.run([*self.prefix, sys.executable, "-m", "cove.cli.main", "--root",
                            self.root, *args], capture_output=True, text=True, env=env,
                           timeout=timeout, input=input, cwd=str(ROOT))
        if check:
            assert r.returncode == 0, f"cove {' '.join(args)}: {r.stderr}"
        return r


def cove_terminal(argv: list[str]) -> PtySession:
    """`argv` (a `cove` command line) on a fresh pty, as from a person's xterm, with the
    tests' cove-runtime, in the repository."""
    return PtySession(argv, env={**os.environ, "COVE_RUNTIME": RUNTIME, "TERM": "xterm"},
                      cwd=str(ROOT))


def engine_leftovers(root: str) -> list[str]:
    """Processes of the engine (`cove.engine` in their command line) of `root` that
    still run: "pid: command line"."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if root in cmd and "cove.engine" in cmd:
            out.append(f"{pid}: {cmd}")
    return out


def engine_pids(root: str) -> dict[str, int]:
    """The pids of a root's monitor and keeper (those that run)."""
    out = {}
    for what, comm in (("monitor", "cove-monitor"), ("zygote", "cove-zygote")):
        try:
            pid = int(Path(root, f"{what}.pid").read_text())
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm and \
                    Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                out[what] = pid
        except (OSError, ValueError):
            continue
    return out


def kill_engine(root: str) -> dict[str, int]:
    """SIGKILL a root's monitor and keeper at the same moment (both stopped first, so
    that neither sees the other die and starts a new one); the pids they had."""
    pids = engine_pids(root)
    for pid in pids.values():
        os.kill(pid, signal.SIGSTOP)
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not engine_pids(root), what="the monitor's and keeper's death")
    return pids
