"""Faults the engine must survive.

A full disk must not wedge it: a container that fills its rootfs or its log (both on the
state root's disk) keeps its monitor; `ps`, `stop`, `rm -f` and a monitor recording an
exit still work; a failed write leaves no temp file; output written while the disk was
full is counted in the log once there is room again. A corrupt record is reported as
such and can still be removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.engine.state import pid_alive
from cove.image.store import Store
from tests.lib.engine import Cove, engine_leftovers
from tests.lib.host import mounts_under
from tests.lib.wait import wait_for


@pytest.fixture
def small(tmp_path: Path, busybox_blobs: Store) -> Iterator[Cove]:
    """A state root on a 48 MiB tmpfs, the busybox image in it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0711", "tmpfs", str(mnt)],
                   check=True)
    root = str(mnt / "root")
    try:
        shutil.copytree(busybox_blobs.root, root, symlinks=True)
        c = Cove(root)
        yield c
        c("supervisor", "stop", check=False)
        for name in c("ps", "-a", "-q", check=False).stdout.split():
            c("rm", "-f", name, check=False)
        c("supervisor", "stop", check=False)
        assert not engine_leftovers(root), engine_leftovers(root)
        assert not mounts_under(root), mounts_under(root)
    finally:
        for m in reversed(mounts_under(str(mnt))):
            subprocess.call(["umount", "-l", m])
        subprocess.call(["umount", "-l", str(mnt)])


def _rec(c: Cove, name: str) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(c("inspect", name).stdout)[0]
    return rec


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _temps(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if ".tmp" in f]


def test_a_full_disk_leaves_the_engine_usable(small: Cove) -> None:
    c = small
    c("run", "-d", "--name", "talker", "--network", "none", "busybox", "sh", "-c",
      "trap 'exit 4' TERM; i=0; while :; do i=$((i+1)); echo line $i; "
      "[ $((i % 200)) = 0 ] && sleep 0.01; done")
    c("run", "-d", "--name", "filler", "--network", "none", "busybox", "sh", "-c",
      "trap 'exit 3' TERM; dd if=/dev/zero of=/big bs=1M count=200; echo filled; "
      "while :; do sleep 0.1; done")
    wait_for(lambda: _free(c.root) < 64 * 1024, timeout=30, what="a full disk")
    talker, filler = _rec(c, "talker"), _rec(c, "filler")
    # the monitors live on (they drop what they can't write), and so does the tool
    for rec in (talker, filler):
        assert pid_alive(rec["MonitorPid"]), "a monitor died of the full disk"
    ps = c("ps")
    assert "talker" in ps.stdout and "filler" in ps.stdout
    r = c("run", "--network", "none", "busybox", "true", check=False)
    assert r.returncode != 0 and r.stderr.startswith("cove: ") \
        and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # stop records the exit code; rm -f works
    c("stop", "-t", "5", "talker")
    assert _rec(c, "talker")["State"]["ExitCode"] == 4
    assert pid_alive(filler["MonitorPid"])
    c("rm", "-f", "filler")
    assert "filler" not in c("ps", "-a").stdout
    assert not _temps(c.root), _temps(c.root)
    # with room again, the log says what was lost
    out = c("logs", "talker")
    log = out.stdout.splitlines()
    notes = [x for x in out.stderr.splitlines() if "bytes of output lost" in x]
    lines = [int(x.split()[1]) for x in log if x.startswith("line ")]
    assert lines == sorted(lines) and lines[0] == 1
    assert notes or lines == list(range(1, len(lines) + 1)), log[-5:]
    c("rm", "talker")
    c("run", "--rm", "--network", "none", "busybox", "true")


def test_a_corrupt_record(cove: Cove) -> None:
    """A record that can't be read is reported as such in one line by ps (which lists
    the others as usual), inspect and stop, and `rm -f` still removes the container:
    its process, mount and runtime state."""
    cove("run", "-d", "--name", "good", "--network", "none", "busybox", "sleep", "100")
    cove("run", "-d", "--name", "bad", "--network", "none", "busybox", "sleep", "100")
    pid = json.loads(cove("inspect", "bad").stdout)[0]["State"]["Pid"]
    Path(cove.root, "containers", "bad", "container.json").write_text('{"Id": "ab", brok')
    ps = cove("ps", "-a")
    assert "good" in ps.stdout and "bad" not in ps.stdout
    assert ps.stderr.startswith("cove: container bad: its record can't be read") \
        and ps.stderr.count("\n") == 1, ps.stderr
    for verb in (["inspect"], ["stop"], ["rm"]):
        r = cove(*verb, "bad", check=False)
        assert r.returncode == 1 and "its record can't be read" in r.stderr \
            and r.stderr.count("\n") == 1, (verb, r.stderr)
    cove("rm", "-f", "bad")
    wait_for(lambda: not pid_alive(pid), what="the container's process gone")
    assert "bad" not in os.listdir(Path(cove.root, "containers"))
    assert "bad" not in os.listdir(Path(cove.root, "runtime"))
    assert not [m for m in mounts_under(cove.root) if "/bad/" in m]
    assert "good" in cove("ps").stdout
    cove("rm", "-f", "good")


def test_stop_of_a_detached_rm_container(cove: Cove) -> None:
    """`stop` of a `-d --rm` container races its removal by the monitor (it goes the
    moment it exits): stop must succeed every time, never say "no such container"."""
    for i in range(12):
        cove("run", "-d", "--rm", "--name", f"r{i}", "--network", "none", "busybox", "sh",
             "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done")
        r = cove("stop", "-t", "5", f"r{i}", check=False)
        assert r.returncode == 0 and r.stdout == f"r{i}\n", (i, r.stderr)
    wait_for(lambda: cove("ps", "-a", "-q").stdout == "", what="all removed")
