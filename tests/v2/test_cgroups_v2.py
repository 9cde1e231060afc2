"""The cgroup v2 Manager on a real, pure cgroup2 hierarchy (root only).

This host is cgroup v1 hybrid: these tests run inside a VM that mounts only cgroup2 at
/sys/fs/cgroup with every controller enabled (tests/integration/test_cgroups_v2_vm.py
boots it); anywhere else they skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.runtime.cgroups import Manager, open_manager, open_manager_from_state
from tests.lib.bundles import base_config
from tests.lib.runtime import Env

ROOT = "/sys/fs/cgroup"


def _pure_v2() -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.partition(" - ")[::2] for line in f]
    except OSError:
        return False
    cg = [(left.split()[4], right.split()[0]) for left, right in mounts
          if right.split()[0] in ("cgroup", "cgroup2")]
    return (ROOT, "cgroup2") in cg and all(t == "cgroup2" for _m, t in cg)


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write cgroupfs"),
    pytest.mark.skipif(not _pure_v2(), reason="needs a pure cgroup2 hierarchy at "
                       "/sys/fs/cgroup (tests/integration/test_cgroups_v2_vm.py boots one)"),
]


def _read(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def _kv(d: str, name: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in _read(d, name).splitlines())


@pytest.fixture
def parent() -> Iterator[str]:
    name = f"/cove-v2-{uuid.uuid4().hex[:10]}"
    yield name
    top = ROOT + name
    if os.path.isdir(top):
        for d, _dirs, _files in os.walk(top):
            try:
                with open(os.path.join(d, "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass
        time.sleep(0.1)
        for d, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            os.rmdir(d)
    assert not os.path.exists(top)


@pytest.fixture
def mgr(parent: str) -> Iterator[Manager]:
    m = open_manager(f"{parent}/c", "c")
    m.create()
    yield m
    m.destroy()
    assert not m.exists()


def _d(m: Manager) -> str:
    assert len(m.dirs) == 1
    return m.dirs[0]


def _sleeper(m: Manager, cmd: str = "sleep 300") -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["sh", "-c", cmd])
    m.apply(p.pid)
    return p


def _reap(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(5)


# Creation and layout.


def test_layout_and_create(parent: str) -> None:
    m = open_manager(f"{parent}/c", "c")
    assert m.layout == "v2"
    assert [h.version for h in m.hierarchies] == [2]
    assert m.dirs == [f"{ROOT}{parent}/c"]
    have = _read(ROOT, "cgroup.controllers").split()
    for c in ("cpu", "cpuset", "io", "memory", "pids", "hugetlb"):
        assert c in have
        assert c in m.hierarchies[0].controllers
    m.create()
    m.create()  # idempotent
    d = _d(m)
    assert os.path.isdir(d)
    # runc enables every controller in the parents, so the container's own files exist.
    assert set(_read(ROOT + parent, "cgroup.subtree_control").split()) == set(have)
    assert set(_read(d, "cgroup.controllers").split()) == set(have)
    assert m.mounts() == [(d, "")]
    m.destroy()
    assert not os.path.exists(d)
    m.destroy()  # already gone


def test_relative_path_is_under_own_cgroup(parent: str) -> None:
    # This process sits in the root cgroup: a relative path lands under it.
    m = open_manager(f"{parent.lstrip('/')}/rel", "rel")
    assert m.dirs == [f"{ROOT}{parent}/rel"]
    m.create()
    m.destroy()


def test_default_path_prunes_parent(parent: str) -> None:
    cid = "v2" + uuid.uuid4().hex[:8]
    m = open_manager(None, cid)
    assert m.dirs == [f"{ROOT}/cove/{cid}"]
    existed = os.path.isdir(f"{ROOT}/cove")
    m.create()
    m.destroy()
    assert not os.path.exists(f"{ROOT}/cove/{cid}")
    if not existed:
        assert not os.path.exists(f"{ROOT}/cove")


# Resources.


def test_memory(mgr: Manager) -> None:
    d = _d(mgr)
    mgr.set({"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 16 << 20}})
    assert _read(d, "memory.max") == str(64 << 20)
    assert _read(d, "memory.swap.max") == str(32 << 20)  # OCI swap is memory+swap
    assert _read(d, "memory.low") == str(16 << 20)
    mgr.update({"memory": {"limit": 128 << 20}})
    assert _read(d, "memory.max") == str(128 << 20)
    assert _read(d, "memory.swap.max") == str(32 << 20)  # untouched
    mgr.update({"memory": {"limit": -1}})  # unlimited memory means unlimited swap too
    assert _read(d, "memory.max") == "max"
    assert _read(d, "memory.swap.max") == "max"
    with pytest.raises(CoveError) as e:
        mgr.set({"memory": {"limit": 64 << 20, "swap": 32 << 20}})
    assert e.value.what == "linux.resources.memory.swap"
    for bad in ({"swappiness": 10}, {"disableOOMKiller": True}):
        with pytest.raises(CoveError):
            mgr.set({"memory": bad})
    st = mgr.stats()["memory"]
    assert st["usage"]["limit"] == (1 << 64) - 1


def test_memory_check_before_update(mgr: Manager) -> None:
    d = _d(mgr)
    p = _sleeper(mgr, "x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 300")
    try:
        deadline = time.monotonic() + 10
        while int(_read(d, "memory.current")) < 4 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(CoveError) as e:
            mgr.update({"memory": {"limit": 1 << 20, "checkBeforeUpdate": True}})
        assert "below the current usage" in e.value.why
        assert _read(d, "memory.max") == "max"
    finally:
        _reap(p)


def test_cpu(mgr: Manager) -> None:
    d = _d(mgr)
    mgr.set({"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000}})
    assert _read(d, "cpu.weight") == "39"  # runc's conversion of the default 1024
    assert _read(d, "cpu.max") == "50000 100000"
    assert _read(d, "cpu.max.burst") == "1000"
    mgr.update({"cpu": {"quota": 20000}})  # period kept
    assert _read(d, "cpu.max") == "20000 100000"
    mgr.update({"cpu": {"quota": -1, "period": 50000}})
    assert _read(d, "cpu.max") == "max 50000"
    mgr.update({"cpu": {"shares": 2}})
    assert _read(d, "cpu.weight") == "1"
    mgr.update({"cpu": {"shares": 262144}})
    assert _read(d, "cpu.weight") == "10000"
    if os.path.exists(os.path.join(d, "cpu.idle")):
        mgr.update({"cpu": {"idle": 1}})
        assert _read(d, "cpu.idle") == "1"
        mgr.update({"cpu": {"idle": 0}})
    with pytest.raises(CoveError) as e:
        mgr.set({"cpu": {"realtimeRuntime": 1000}})
    assert e.value.what == "linux.resources.cpu.realtimeRuntime"


def test_cpu_quota_throttles(mgr: Manager) -> None:
    mgr.set({"cpu": {"quota": 10000, "period": 100000}})
    p = _sleeper(mgr, "while :; do :; done")
    try:
        time.sleep(1.5)
        th = mgr.stats()["cpu"]["throttling"]
        assert th["periods"] > 0 and th["throttledPeriods"] > 0 and th["throttledTime"] > 0
        assert mgr.stats()["cpu"]["usage"]["total"] > 0
    finally:
        _reap(p)


def test_cpuset(mgr: Manager) -> None:
    d = _d(mgr)
    last = max(os.sched_getaffinity(0))
    mgr.set({"cpu": {"cpus": str(last), "mems": "0"}})
    assert _read(d, "cpuset.cpus") == str(last)
    assert _read(d, "cpuset.mems") == "0"
    assert _read(d, "cpuset.cpus.effective") == str(last)
    p = _sleeper(mgr)
    try:
        assert os.sched_getaffinity(p.pid) == {last}
    finally:
        _reap(p)


def test_pids_limit_enforced(mgr: Manager) -> None:
    d = _d(mgr)
    mgr.set({"pids": {"limit": 3}})
    assert _read(d, "pids.max") == "3"
    r, w = os.pipe()
    sh = subprocess.Popen(["sh", "-c", "read x; for i in 1 2 3 4 5 6; do sleep 30 & done; wait"],
                          stdin=r, stderr=subprocess.PIPE)
    os.close(r)
    try:
        mgr.apply(sh.pid)
        os.write(w, b"go\n")
        os.close(w)
        deadline = time.monotonic() + 10
        while _kv(d, "pids.events")["max"] == "0" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _kv(d, "pids.events")["max"] != "0"
        assert len(mgr.pids()) <= 3
        assert mgr.stats()["pids"]["limit"] == 3
    finally:
        mgr.kill_all(signal.SIGKILL)
        sh.communicate(timeout=10)
    mgr.update({"pids": {"limit": -1}})
    assert _read(d, "pids.max") == "max"
    assert mgr.stats()["pids"]["limit"] == 0


def _block_dev() -> tuple[int, int] | None:
    try:
        with open("/sys/block/vda/dev") as f:
            major, minor = f.read().strip().split(":")
        return int(major), int(minor)
    except OSError:
        return None


def test_io(mgr: Manager) -> None:
    d = _d(mgr)
    dev = _block_dev()
    if dev is None:
        pytest.skip("no block device /dev/vda")
    major, minor = dev
    key = f"{major}:{minor}"
    mgr.set({"blockIO": {
        "weight": 500,
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
    }})
    if os.path.exists(os.path.join(d, "io.bfq.weight")):
        assert _read(d, "io.bfq.weight").startswith("default 500")
    else:
        assert _read(d, "io.weight").splitlines()[0] == "default 4950"
    lines = {ln.split()[0]: ln.split()[1:] for ln in _read(d, "io.max").splitlines()}
    assert lines[key] == ["rbps=1048576", "wbps=max", "riops=max", "wiops=100"]
    mgr.update({"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor,
                                                       "rate": 0}]}})
    lines = {ln.split()[0]: ln.split()[1:] for ln in _read(d, "io.max").splitlines()}
    assert lines[key] == ["rbps=max", "wbps=max", "riops=max", "wiops=100"]
    # Reads of the disk from inside show up in io.stat and in stats().
    p = _sleeper(mgr, "dd if=/dev/vda of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null;"
                      " sleep 300")
    try:
        deadline = time.monotonic() + 10
        while True:
            sb = mgr.stats()["blkio"].get("ioServiceBytesRecursive", [])
            got = [e for e in sb if (e["major"], e["minor"]) == dev and e["op"] == "Read"]
            if (got and got[0]["value"] >= 1 << 20) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got and got[0]["value"] >= 1 << 20, sb
    finally:
        _reap(p)
    with pytest.raises(CoveError):
        mgr.set({"blockIO": {"leafWeight": 100}})


def test_hugetlb(mgr: Manager) -> None:
    d = _d(mgr)
    sizes = sorted(n[len("hugetlb."):-len(".max")] for n in os.listdir(d)
                   if n.startswith("hugetlb.") and n.endswith(".max") and ".rsvd." not in n)
    if not sizes:
        pytest.skip("no hugetlb page sizes")
    assert "2MB" in sizes
    mgr.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    assert _read(d, "hugetlb.2MB.max") == str(4 << 20)
    if os.path.exists(os.path.join(d, "hugetlb.2MB.rsvd.max")):
        assert _read(d, "hugetlb.2MB.rsvd.max") == str(4 << 20)
    with pytest.raises(CoveError) as e:
        mgr.set({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]})
    assert e.value.what.endswith(".pageSize")
    st = mgr.stats()["hugetlb"]
    assert set(st) == set(sizes) and st["2MB"]["usage"] == 0


def test_unified(mgr: Manager) -> None:
    d = _d(mgr)
    mgr.set({"unified": {"memory.high": "50000000", "pids.max": "7",
                         "cgroup.max.depth": "3"}})
    assert _read(d, "memory.high") == str(50000000 // 4096 * 4096)
    assert _read(d, "pids.max") == "7"
    assert _read(d, "cgroup.max.depth") == "3"
    for bad, why in (({"memory.nope": "1"}, "does not exist"),
                     ({"nosuch.max": "1"}, "not available"),
                     ({"../x": "1"}, "not a cgroup file name"),
                     ({"memory.high": 5}, "expected string")):
        with pytest.raises(CoveError) as e:
            mgr.set({"unified": bad})
        assert why in e.value.why, (bad, e.value.why)


def test_unknown_and_v1_only_sections(mgr: Manager) -> None:
    with pytest.raises(CoveError) as e:
        mgr.set({"network": {"classID": 1}})
    assert e.value.what == "linux.resources.network.classID"
    mgr.set({"network": {}, "memory": {}, "cpu": {}, "pids": {}, "devices": []})


# Processes.


def test_apply_pids_freeze_thaw_kill(mgr: Manager) -> None:
    d = _d(mgr)
    p = _sleeper(mgr, "sleep 300 & sleep 300 & wait")
    try:
        deadline = time.monotonic() + 5
        while len(mgr.pids()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(mgr.pids()) == 3 and p.pid in mgr.pids()
        os.mkdir(os.path.join(d, "nested"))  # pids() counts descendants too
        child = mgr.pids()[-1]
        with open(os.path.join(d, "nested", "cgroup.procs"), "w") as f:
            f.write(str(child))
        assert len(mgr.pids()) == 3 and child in mgr.pids()
        assert not mgr.frozen()
        mgr.freeze()
        assert mgr.frozen()
        assert _kv(d, "cgroup.events")["frozen"] == "1"
        mgr.freeze()  # idempotent
        m2 = open_manager_from_state(json.loads(json.dumps(mgr.to_state())))
        assert m2.frozen() and sorted(m2.pids()) == sorted(mgr.pids())
        m2.thaw()
        assert not mgr.frozen()
        assert _kv(d, "cgroup.events")["frozen"] == "0"
        st = mgr.stats()
        assert st["pids"]["current"] == 3
        assert st["memory"]["usage"]["usage"] > 0
        # SIGTERM goes through freeze + signal each (sh waits; the sleeps die).
        mgr.kill_all(signal.SIGTERM)
        assert p.wait(5) == -signal.SIGTERM
        assert not mgr.frozen()
        deadline = time.monotonic() + 5
        while mgr.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mgr.pids() == []
    finally:
        _reap(p)


def _trapped(d: str) -> dict[str, str]:
    """Where each thread of d's own sleeps: {tid: wchan} of those not in the freezer trap."""
    out = {}
    for tid in _read(d, "cgroup.threads").split():
        try:
            with open(f"/proc/{tid}/wchan") as f:
                w = f.read()
        except OSError:
            continue
        if w not in ("do_freezer_trap", "get_signal"):
            out[tid] = w
    return out


def test_freeze_of_a_mixed_cgroup_waits_for_both_sides(mgr: Manager) -> None:
    """A cgroup with tasks of its own and a child cgroup is frozen only when both are:
    Linux flags it frozen when either side is done (a CI failure in the 6.1 guest)."""
    d = _d(mgr)
    # Many busy tasks of d's own, one sleeper below: the sleeper is woken into the
    # trap at once, the busy ones each wait for a turn on a CPU.
    p = _sleeper(mgr, "sleep 300 & " + "while :; do :; done & " * 16 + "wait")
    try:
        deadline = time.monotonic() + 5
        while len(mgr.pids()) < 18 and time.monotonic() < deadline:
            time.sleep(0.02)
        sleeper = next(pid for pid in mgr.pids()
                       if _read(f"/proc/{pid}", "comm") == "sleep")
        os.mkdir(os.path.join(d, "nested"))
        with open(os.path.join(d, "nested", "cgroup.procs"), "w") as f:
            f.write(str(sleeper))
        for _ in range(20):
            mgr.freeze()
            assert _kv(d, "cgroup.events")["frozen"] == "1"
            assert _kv(os.path.join(d, "nested"), "cgroup.events")["frozen"] == "1"
            assert _trapped(d) == {}
            mgr.thaw()
    finally:
        _reap(p)


def test_kill_all_uses_cgroup_kill(mgr: Manager) -> None:
    p = _sleeper(mgr, "trap '' TERM; sleep 300 & sleep 300 & wait")
    try:
        time.sleep(0.2)
        mgr.freeze()  # even a frozen cgroup dies
        mgr.kill_all(signal.SIGKILL)
        assert p.wait(5) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while mgr.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mgr.pids() == []
    finally:
        _reap(p)


def test_oom_kill_counted(mgr: Manager) -> None:
    d = _d(mgr)
    mgr.set({"memory": {"limit": 24 << 20, "swap": 24 << 20}})  # no swap beyond the limit
    assert _read(d, "memory.swap.max") == "0"
    assert mgr.oom_count() == 0
    r, w = os.pipe()
    code = ("import sys; sys.stdin.readline(); chunks = []\n"
            "for _ in range(200): chunks.append(bytearray(1 << 20))\n"
            "print('survived')")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=r, stdout=subprocess.PIPE)
    os.close(r)
    try:
        mgr.apply(p.pid)
        os.write(w, b"go\n")
        os.close(w)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == -signal.SIGKILL and b"survived" not in out
    finally:
        _reap(p)
    assert mgr.oom_count() >= 1
    assert int(_kv(d, "memory.events")["oom_kill"]) >= 1
    st = mgr.stats()["memory"]
    assert st["usage"]["limit"] == 24 << 20
    assert st["usage"]["failcnt"] >= 1
    assert st["usage"]["max"] >= 20 << 20
    assert st["swap"]["limit"] == 24 << 20


def test_destroy_kills_frozen_and_nested(mgr: Manager) -> None:
    d = _d(mgr)
    p = _sleeper(mgr)
    os.makedirs(os.path.join(d, "a", "b"))
    with open(os.path.join(d, "a", "b", "cgroup.procs"), "w") as f:
        f.write(str(p.pid))
    mgr.freeze()
    mgr.destroy()
    assert p.wait(5) == -signal.SIGKILL
    assert not os.path.exists(d)


# A real container: cove-runtime on the v2 host, limits and the device eBPF program.


def test_container_limits_and_devices(env: Env) -> None:
    cfg = base_config(["sh", "-c",
                       "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; "
                       "cat /proc/self/cgroup; "
                       "head -c1 /dev/zero >/dev/null && echo zero-ok; "
                       "head -c1 /xkmsg >/dev/null 2>&1 || echo kmsg-denied; "
                       "echo x > /dev/null && echo null-ok"])
    cfg["linux"]["resources"]["memory"] = {"limit": 48 << 20}
    cfg["linux"]["resources"]["pids"] = {"limit": 30}
    cfg["linux"]["resources"]["cpu"] = {"shares": 512, "quota": 50000, "period": 100000}
    cfg["linux"]["cgroupsPath"] = f"/cove-v2-ct-{uuid.uuid4().hex[:8]}/ct"
    b = env.bundle(cfg)
    os.mknod(b.rootfs / "xkmsg", 0o666 | 0o020000, os.makedev(1, 11))
    cid = env.id()
    p = env.rt("run", "--bundle", str(b.path), cid)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    assert lines[:2] == [str(48 << 20), "30"]
    assert "0::/" in lines  # its own cgroup namespace
    assert lines[-3:] == ["zero-ok", "kmsg-denied", "null-ok"], p.stdout
    assert not os.path.exists(ROOT + cfg["linux"]["cgroupsPath"])
    os.rmdir(os.path.dirname(ROOT + cfg["linux"]["cgroupsPath"]))


def test_container_pause_update_events(env: Env) -> None:
    # The loop stops forking (exec's a sleep) once /tmp/quiet exists, so that the fork
    # test below cannot kill the container's init, and with it the exec, through the pid
    # namespace (a CI run saw exec end in SIGKILL with nothing on stderr).
    cfg = base_config(["sh", "-c", "i=0; while [ ! -e /tmp/quiet ]; do i=$((i+1)); "
                                   "echo $i > /tmp/n; sleep 0.05; done; exec sleep 1000"])
    cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20}
    cfg["linux"]["resources"]["pids"] = {"limit": 50}
    b = env.bundle(cfg)
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    d = f"{ROOT}/cove/{cid}"
    assert os.path.isdir(d)
    ev = json.loads(env.rt("events", "--stats", cid, check=True).stdout)
    assert ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert ev["data"]["pids"]["limit"] == 50
    env.rt("pause", cid, check=True)
    assert env.rt.status(cid) == "paused"
    assert _read(d, "cgroup.freeze") == "1"
    n = b.rootfs / "tmp" / "n"
    v = n.read_text()
    time.sleep(0.3)
    assert n.read_text() == v
    env.rt("resume", cid, check=True)
    assert env.rt.status(cid) == "running"
    env.rt("update", "--memory", "128m", "--pids-limit", "20", "--cpu-quota", "150000", cid,
           check=True)
    assert _read(d, "memory.max") == str(128 << 20)
    assert _read(d, "pids.max") == "20"
    assert _read(d, "cpu.max").split()[0] == "150000"
    # exec joins the same v2 cgroup (its namespace root), under the new pids limit.
    p = env.rt("exec", cid, "cat", "/proc/self/cgroup", check=True)
    assert p.stdout.strip() == "0::/"
    assert "sh -c i=0" in env.rt("ps", cid, check=True).stdout
    (b.rootfs / "tmp" / "quiet").touch()
    deadline = time.monotonic() + 10
    while _read(d, "pids.current") != "1":
        assert time.monotonic() < deadline, _read(d, "pids.current")
        time.sleep(0.05)
    p = env.rt("exec", cid, "sh", "-c", "for i in $(seq 25); do sleep 1 & done; echo done")
    assert "can't fork" in p.stderr or "Resource temporarily unavailable" in p.stderr, p
    assert int(_read(d, "pids.current")) <= 20
    assert env.rt.status(cid) == "running"
    env.rt("delete", "--force", cid, check=True)
    assert not os.path.exists(d)


def test_guest_is_pure_v2() -> None:
    """What the VM driver checks first: this module really ran on a v2 host."""
    assert Path(ROOT, "cgroup.controllers").exists()
    assert not Path(ROOT, "unified").exists()
