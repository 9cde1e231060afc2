"""Fixtures for tests that run real containers (as root)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import helpers as H


class Env:
    """One test's world: a temp dir, a cove-runtime with its own root, the ids it made."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rt = H.Runtime(H.RUNTIME, tmp / "state")
        self.ids: list[str] = []

    def id(self, prefix: str = "t") -> str:
        cid = H.new_id(prefix)
        self.ids.append(cid)
        return cid

    def bundle(self, config: dict[str, Any] | None = None, name: str = "bundle") -> H.Bundle:
        return H.make_bundle(self.tmp, config, name)

    def cleanup(self) -> None:
        """Force-delete what a failing test may have left, with cove-runtime itself."""
        for cid in self.ids:
            self.rt("delete", "--force", cid)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not os.path.exists(H.RUNTIME):
        subprocess.run([str(H.ROOT / ".venv/bin/python"), "-m", "cove.cli.launcher"], check=True)
    # User-namespaced containers reach their rootfs as an unmapped host uid: let every
    # directory above it be searched (pytest makes its base 0700).
    for d in (tmp_path, *tmp_path.parents):
        if str(d) in ("/", "/tmp"):
            break
        d.chmod(d.stat().st_mode | 0o111)
    e = Env(tmp_path / "w")
    e.tmp.mkdir()
    yield e
    left = H.leftovers(e.tmp, e.ids)
    e.cleanup()
    assert not left, f"left behind: {left}"


def _engine_processes(tmp: str) -> dict[int, str]:
    """The keepers and monitors of state roots under `tmp` (pid -> name)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if comm not in ("cove-zygote", "cove-monitor"):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if tmp.encode() in f.read():
                    out[int(pid)] = comm
        except OSError:
            continue
    return out


@pytest.fixture(autouse=True)
def _monitors_end_with_their_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """`cove run` leaves its root's monitor and keeper waiting two idle minutes for the
    next run (cove/engine/monitor.py, zygote.py): a test's end with the test, as `cove
    supervisor stop` would end them (SIGTERM to the keeper, which stops the monitor;
    then SIGKILL for any left, monitors first: each restarts the other)."""
    tmp = str(request.getfixturevalue("tmp_path")) if "tmp_path" in request.fixturenames \
        else ""
    yield
    if not tmp:
        return
    import time
    procs = _engine_processes(tmp)
    for pid, comm in procs.items():
        if comm == "cove-zygote":
            with contextlib.suppress(OSError):
                os.kill(pid, 15)
    for _ in range(3):
        deadline = time.monotonic() + 2
        while procs and time.monotonic() < deadline:
            time.sleep(0.02)
            procs = _engine_processes(tmp)
        for pid, _comm in sorted(procs.items(), key=lambda p: p[1] != "cove-monitor"):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
