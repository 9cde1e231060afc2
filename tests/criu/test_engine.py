"""`cove checkpoint` / `cove restore` with a real CRIU (in the 6.1-kernel VM).

A counter container (a number every 100 ms; exit 7 once /stop exists) is checkpointed
and restored:
its log goes on from the next number, no line lost or repeated, and the engine records
its exit code. Checkpointed with --leave-running and exported on one state root, then
imported on another (the same image): the source runs on, the copy runs beside it under
another name, with the files it changed before the checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from cove.image.store import Store
from tests.lib.criu import criu_broken
from tests.lib.engine import Cove
from tests.lib.wait import wait_for

pytestmark = pytest.mark.skipif(bool(criu_broken()), reason=criu_broken() or "ok")

COUNT = ("i=0; while [ $i -lt {n} ]; do echo $i; i=$((i+1)); sleep 0.1; done; exit 7")


def _numbers(c: Cove, name: str) -> list[int]:
    """The numbers in the container's json-file log, read directly: a `cove logs` is a
    second or more under TCG."""
    try:
        text = Path(c.root, "containers", name, f"{name}-json.log").read_text()
    except FileNotFoundError:
        return []
    return [int(json.loads(line)["log"]) for line in text.splitlines() if line.strip()]


def _until(c: Cove, name: str, n: int, timeout: float = 60) -> list[int]:
    wait_for(lambda: len(_numbers(c, name)) >= n, timeout, f"{n} lines from {name}")
    return _numbers(c, name)


def test_checkpoint_restore_counter(cove: Cove) -> None:
    cove("run", "-d", "--network", "none", "--name", "cnt", "busybox", "sh", "-c",
         "i=0; while [ ! -e /stop ]; do echo $i; i=$((i+1)); sleep 0.1; done; exit 7")
    _until(cove, "cnt", 3)
    t0 = time.monotonic()
    r = cove("checkpoint", "cnt", timeout=180)
    dump_s = time.monotonic() - t0
    assert r.stdout.strip() == "cnt"
    st = cove("inspect", "-f", "{{.State.Status}} {{.State.Checkpointed}}", "cnt").stdout
    assert st.split() == ["exited", "true"], st
    before = _numbers(cove, "cnt")
    time.sleep(0.5)
    assert _numbers(cove, "cnt") == before  # stopped: nothing more
    t0 = time.monotonic()
    cove("restore", "cnt", timeout=180)
    restore_s = time.monotonic() - t0
    assert cove("inspect", "-f", "{{.State.Status}}", "cnt").stdout.strip() == "running"
    after = _until(cove, "cnt", len(before) + 3)
    assert after == list(range(len(after))), after  # consecutive: none lost or doubled
    cove("exec", "cnt", "touch", "/stop")
    code = cove("wait", "cnt", timeout=120).stdout.strip()
    assert code == "7"  # the engine has the restored init's exit code
    final = _numbers(cove, "cnt")
    assert final == list(range(len(final)))
    print(f"\ncove checkpoint {dump_s:.1f}s, cove restore {restore_s:.1f}s (TCG)")


def test_leave_running_export_import_other_root(cove: Cove, tmp_path: Path,
                                                busybox_blobs: Store) -> None:
    """--leave-running --export on one root, --import on another: both copies run."""
    cove("run", "-d", "--network", "none", "-v", "mvol:/vol", "--name", "src", "busybox",
         "sh", "-c", "echo changed > /data.txt; rm /etc/group; echo v > /vol/in-volume; "
         "rm -rf /usr/sbin; mkdir /usr/sbin; echo x > /usr/sbin/only; "
         + COUNT.format(n=100000))
    _until(cove, "src", 2)
    archive = str(tmp_path / "src.tar")
    cove("checkpoint", "--leave-running", "--export", archive, "src", timeout=180)
    assert cove("inspect", "-f", "{{.State.Status}}", "src").stdout.strip() == "running"
    other = str(tmp_path / "root2")
    shutil.copytree(busybox_blobs.root, other, symlinks=True)  # the same image
    c2 = Cove(other)
    try:
        c2("restore", "--import", archive, "--name", "moved", timeout=180)
        assert c2("exec", "moved", "cat", "/data.txt").stdout == "changed\n"
        assert c2("exec", "moved", "ls", "/etc/group", check=False).returncode != 0
        # the named volume came along, and /usr/sbin is still opaque (its lower
        # entries hidden: the xattr travelled with the upper directory)
        assert c2("exec", "moved", "cat", "/vol/in-volume").stdout == "v\n"
        assert c2("exec", "moved", "ls", "/usr/sbin").stdout.split() == ["only"]
        n_src, n_moved = len(_numbers(cove, "src")), len(_numbers(c2, "moved"))
        _until(cove, "src", n_src + 2)
        _until(c2, "moved", n_moved + 2)  # both count on
        assert _numbers(c2, "moved")[0] >= 2  # goes on from the checkpoint
        r = c2("restore", "--import", archive, "--name", "moved", check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and \
            "already in use" in r.stderr, r.stderr
    finally:
        c2("rm", "-f", "moved", check=False)
        c2("volume", "rm", "mvol", check=False)
        c2("supervisor", "stop", check=False)
