"""The cgroup Manager against this host's real hierarchy (root only)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from cove.runtime.cgroups import detect_layout, open_manager, open_manager_from_state
from tests.lib.wait import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroupfs")

ROOT = "/sys/fs/cgroup"


def _all_dirs(parent: str) -> list[str]:
    """parent under every mounted hierarchy that has it."""
    out = []
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            d = left.split()[4] + parent
            if os.path.isdir(d):
                out.append(d)
    return out


def _rmtree(d: str) -> None:
    for top, _dirs, _files in sorted(os.walk(d), key=lambda t: -t[0].count("/")):
        try:
            os.rmdir(top)
        except OSError:
            pass


@pytest.fixture
def parent() -> Iterator[str]:
    name = f"/cove-test-{uuid.uuid4().hex[:10]}"
    yield name
    # Even after a failure: kill what is left, remove every directory.
    for d in _all_dirs(name):
        for top, _dirs, _files in os.walk(d):
            try:
                for pid in open(os.path.join(top, "cgroup.procs")).read().split():
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.05)
    for d in _all_dirs(name):
        _rmtree(d)
    assert _all_dirs(name) == []


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def test_full_lifecycle(parent: str) -> None:
    path = f"{parent}/c1"
    m = open_manager(path, "c1")
    assert m.path == path and m.layout == detect_layout()
    m.create()
    m.create()  # idempotent
    assert m.exists()
    m.set({"memory": {"limit": 64 << 20}, "pids": {"limit": 20}})
    mem = next(d for h, d in zip(m.hierarchies, m.dirs, strict=True) if "memory" in h.controllers)
    pids = next(d for h, d in zip(m.hierarchies, m.dirs, strict=True) if "pids" in h.controllers)
    if m.layout == "v2":
        assert open(f"{mem}/memory.max").read().strip() == str(64 << 20)
    else:
        assert open(f"{mem}/memory.limit_in_bytes").read().strip() == str(64 << 20)
    assert open(f"{pids}/pids.max").read().strip() == "20"

    child = subprocess.Popen(["sleep", "300"])
    try:
        m.apply(child.pid)
        assert m.pids() == [child.pid]
        for d, _dest in m.mounts():
            assert str(child.pid) in open(f"{d}/cgroup.procs").read().split()

        m.freeze()
        assert m.frozen()
        if m.layout != "v2":
            fz = next(d for h, d in zip(m.hierarchies, m.dirs, strict=True)
                  if "freezer" in h.controllers)
            assert open(f"{fz}/freezer.state").read().strip() == "FROZEN"
        # A frozen task is stopped in the kernel's refrigerator.
        assert open(f"/proc/{child.pid}/stat").read().split(") ")[1][0] in "DS"
        m.thaw()
        assert not m.frozen()

        st = m.stats()
        assert st["memory"]["usage"]["limit"] == 64 << 20
        assert st["pids"] == {"current": 1, "limit": 20}
        assert m.oom_count() == 0

        # A later cove-runtime process reopens it from state.json.
        m2 = open_manager_from_state(m.to_state())
        assert m2.pids() == [child.pid]
        m2.kill_all(signal.SIGKILL)
        assert child.wait(timeout=5) == -signal.SIGKILL
        wait_for(lambda: child.pid not in m2.pids(), 5, "the killed child out of the cgroup",
                 interval=0.01)
        assert m2.pids() == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    m.destroy()
    assert not m.exists()
    for d, _dest in m.mounts():
        assert not os.path.exists(d)
    m.destroy()  # already gone


def test_pids_limit_enforced(parent: str) -> None:
    m = open_manager(f"{parent}/c2", "c2")
    m.create()
    m.set({"pids": {"limit": 3}})
    # The shell waits to be moved in, then forks until the kernel refuses.
    r, w = os.pipe()
    script = "read x; for i in 1 2 3 4 5 6; do sleep 30 & done; wait"
    # bash, not dash: it reports the fork error with strerror (EAGAIN).
    sh = subprocess.Popen(["bash", "-c", script], stdin=r, stderr=subprocess.PIPE)
    os.close(r)
    try:
        m.apply(sh.pid)
        os.write(w, b"go\n")
        os.close(w)
        pids_dir = next(d for h, d in zip(m.hierarchies, m.dirs, strict=True)
                    if "pids" in h.controllers)
        deadline = time.monotonic() + 5
        while "max 0" in _read(f"{pids_dir}/pids.events") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(m.pids()) <= 3
        assert int(_read(f"{pids_dir}/pids.current")) <= 3
        assert _read(f"{pids_dir}/pids.events") != "max 0"  # the kernel refused forks
        time.sleep(0.1)
        m.kill_all(signal.SIGKILL)
        _, err = sh.communicate(timeout=5)
        assert b"Resource temporarily unavailable" in err, err
    finally:
        if sh.poll() is None:
            sh.kill()
            sh.wait()
    m.destroy()
    assert not m.exists()


def test_destroy_kills_stragglers_and_children(parent: str) -> None:
    m = open_manager(f"{parent}/c3", "c3")
    m.create()
    child = subprocess.Popen(["sleep", "300"])
    m.apply(child.pid)
    for d, _dest in m.mounts():
        os.mkdir(f"{d}/nested")
    m.freeze()  # a paused container is still destroyed
    m.destroy()
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert not m.exists()


def test_absent_controller_is_an_error(parent: str) -> None:
    m = open_manager(f"{parent}/c4", "c4")
    if m._find("net_cls") is not None:
        pytest.skip("net_cls is mounted here")
    m.create()
    try:
        with pytest.raises(Exception) as e:
            m.set({"network": {"classID": 1}})
        assert str(e.value).startswith("linux.resources.network.classID:")
    finally:
        m.destroy()


def test_v2_device_filter_enforced(parent: str) -> None:
    from cove.runtime.cgroups import devices_bpf
    from cove.runtime.cgroups.v1 import device_rule

    m = open_manager(f"{parent}/c5", "c5")
    v2 = [d for h, d in zip(m.hierarchies, m.dirs, strict=True) if h.version == 2]
    if not v2:
        pytest.skip("no cgroup2 mount")
    m.create()
    rules = [device_rule(r, "d") for r in (
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # null
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"},  # zero
    )]
    devices_bpf.apply(v2[0], rules, "linux.resources.devices")
    devices_bpf.apply(v2[0], rules, "linux.resources.devices")  # replaces, not stacks
    script = (f"echo $$ > {v2[0]}/cgroup.procs; echo x > /dev/null && echo null; "
              "head -c1 /dev/zero > /dev/null && echo zero-r; "
              "echo x > /dev/zero || echo zero-w-denied; cat /dev/full || echo full-denied")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert out.stdout.split() == ["null", "zero-r", "zero-w-denied", "full-denied"]
    m.destroy()
