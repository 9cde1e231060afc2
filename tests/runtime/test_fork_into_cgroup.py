"""The stage-1 child born in the container's cgroup2 cgroup (nsexec.spawn with
NsPlan.cgroup_dirfd: clone3 with CLONE_INTO_CGROUP), and the fallback to fork where
that is refused. Root and a mounted cgroup2 hierarchy (this host's hybrid
/sys/fs/cgroup/unified, or a v2 host's /sys/fs/cgroup).

The fork sequence runs in a child interpreter: spawn takes the raw clone3 only in a
single-threaded process, which pytest's is not promised to be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lib.paths import ROOT

SCRIPT = r"""
import json, os, sys
from cove.runtime.nsexec import NsPlan, spawn

def stage2(sync):
    with open("/proc/self/cgroup") as f:
        line = [x for x in f.read().splitlines() if x.startswith("0::")][0]
    sync.send("cg " + line[3:])
    os._exit(0)

plan = NsPlan()
plan.cgroup_dirfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
child, sync = spawn(plan, stage2)
born = plan.born_in_cgroup
sync.send("go")
gpid = int(sync.expect("pid").split()[1])
os.waitpid(child, 0)
sync.send("start")
cg = sync.expect("cg").split(" ", 1)[1]
print(json.dumps({"born": born, "cgroup": cg, "fd_closed": plan.cgroup_dirfd == -1}))
"""


def _cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return left.split()[4]
    return None


def _run(target: str) -> dict[str, object]:
    p = subprocess.run([sys.executable, "-c", SCRIPT, target], cwd=ROOT, capture_output=True,
                       text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    out: dict[str, object] = json.loads(p.stdout)
    return out


@pytest.fixture
def cgroup2_dir() -> Iterator[Path]:
    mnt = _cgroup2_mount()
    if os.geteuid() != 0 or mnt is None:
        pytest.skip("needs root and a cgroup2 hierarchy")
    d = Path(mnt, f"cove-test-clone-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    yield d
    d.rmdir()  # empty again: C and G exited


def test_child_is_born_in_the_cgroup(cgroup2_dir: Path) -> None:
    res = _run(str(cgroup2_dir))
    assert res["born"] is True
    mnt = _cgroup2_mount()
    assert mnt is not None
    assert res["cgroup"] == "/" + str(cgroup2_dir.relative_to(mnt))
    assert res["fd_closed"] is True


def test_refused_clone_falls_back_to_fork(tmp_path: Path) -> None:
    """A directory that is not a cgroup2 one: clone3 says EBADF, spawn forks as usual
    and leaves the move to its caller (born_in_cgroup stays False)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    res = _run(str(tmp_path))
    assert res["born"] is False
    with open("/proc/self/cgroup") as f:
        mine = [x for x in f.read().splitlines() if x.startswith("0::")]
    if mine:
        assert res["cgroup"] == mine[0][3:]
