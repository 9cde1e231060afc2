"""Fixtures for engine tests: a state root per test (the busybox image copied in from a
session store), a `cove` runner, and a check that nothing outlives a test: no monitor or
supervisor of its root, no mounts under it, no runtime state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.image.builtin import ensure_busybox
from cove.image.store import Store

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = str(ROOT / ".venv" / "bin" / "cove-runtime")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root")


class Cove:
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


def _ours(root: str) -> list[str]:
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


def _mounts(root: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if root in line.split()[4]]


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
    import signal
    pids = engine_pids(root)
    for pid in pids.values():
        os.kill(pid, signal.SIGSTOP)
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not engine_pids(root), what="the monitor's and keeper's death")
    return pids


def wait_for(cond: object, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or cond}")


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[str]:
    """A network namespace of the test's own, loopback up: bridges, veths, nft tables and
    per-interface sysctls made in it vanish with it (the host's stay untouched). Run
    `cove` in it as `Cove(root, ["nsenter", f"--net={netns}"])`."""
    if shutil.which("nft") is None:
        pytest.skip("nft not installed (scripts/install-deps.sh)")
    ns = str(tmp_path / "testns")
    Path(ns).touch()
    subprocess.run(["unshare", f"--net={ns}", "ip", "link", "set", "lo", "up"], check=True)
    yield ns
    subprocess.call(["umount", ns])


@pytest.fixture(scope="session")
def busybox_blobs(tmp_path_factory: pytest.TempPathFactory) -> Store:
    st = Store(str(tmp_path_factory.mktemp("engine-busybox")))
    ensure_busybox(st)
    return st


@pytest.fixture
def cove(tmp_path: Path, busybox_blobs: Store) -> Iterator[Cove]:
    for p in (tmp_path, *tmp_path.parents):
        if str(p) in ("/", "/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o111)
    root = str(tmp_path / "root")
    shutil.copytree(busybox_blobs.root, root, symlinks=True)
    c = Cove(root)
    yield c
    # stop everything this test left running, then insist nothing was left
    c("supervisor", "stop", check=False)
    for name in c("ps", "-a", "-q", check=False).stdout.split():
        c("rm", "-f", name, check=False)
    c("supervisor", "stop", check=False)  # `ps` brings back one a container relied on
    leftovers = _ours(root)
    mounts = _mounts(root)
    rt = os.path.join(root, "runtime")
    states = [s for s in (os.listdir(rt) if os.path.isdir(rt) else [])
              if s != "seccomp-cache"]  # the runtime's shared cache, not a container
    for m in reversed(mounts):
        subprocess.call(["umount", "-l", m])
    assert not leftovers, f"processes left: {leftovers}"
    assert not mounts, f"mounts left: {mounts}"
    assert not states, f"runtime state left: {states}"
