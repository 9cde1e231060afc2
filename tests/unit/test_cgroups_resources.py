"""linux.resources -> cgroup file values, on a fake cgroupfs built in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cove.errors import CoveError
from cove.runtime.cgroups import Manager, fs, open_manager, open_manager_from_state

# Files a fresh cgroup has, per controller (only what the tests touch).
V1_FILES = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
            "cpu.cfs_burst_us": "0", "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "0",
            "cpu.idle": "0", "cpu.stat": "nr_periods 4\nnr_throttled 1\nthrottled_time 77\n"},
    "cpuacct": {"cpuacct.usage": "1000", "cpuacct.usage_percpu": "600 400",
                "cpuacct.stat": "user 1\nsystem 2\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712",
               "memory.kmem.tcp.limit_in_bytes": "9223372036854771712",
               "memory.usage_in_bytes": "4096", "memory.max_usage_in_bytes": "8192",
               "memory.failcnt": "0", "memory.swappiness": "60", "memory.use_hierarchy": "1",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
               "memory.stat": "cache 10\nrss 20\n"},
    "devices": {"devices.allow": "", "devices.deny": ""},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.weight": "500", "blkio.throttle.read_bps_device": "",
              "blkio.throttle.write_iops_device": "", "blkio.weight_device": "",
              "blkio.throttle.io_service_bytes_recursive": "8:0 Read 5\n8:0 Write 6\nTotal 11\n"},
    "pids": {"pids.max": "max", "pids.current": "1"},
}
V2_FILES = {
    "cgroup.subtree_control": "", "cgroup.controllers": "", "cgroup.freeze": "0",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "memory.max": "max", "memory.swap.max": "max", "memory.low": "0", "memory.current": "100",
    "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "memory.stat": "file 7\n",
    "cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0",
    "cpu.stat": "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 0\n",
    "cpuset.cpus": "", "cpuset.mems": "", "pids.max": "max", "pids.current": "0",
    "io.weight": "default 100", "io.max": "", "hugetlb.2MB.max": "max",
    "hugetlb.2MB.current": "0", "hugetlb.2MB.events": "max 0\n",
}


class Recorder:
    """Wraps fs.write so tests see every write in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self._orig = fs.write

    def __call__(self, d: str, name: str, value: str, knob: str) -> None:
        self.calls.append((d, name, value))
        self._orig(d, name, value, knob)

    def names(self) -> list[tuple[str, str]]:
        return [(n, v) for _d, n, v in self.calls]


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    r = Recorder()
    monkeypatch.setattr(fs, "write", r)
    return r


def _fill(d: str, files: dict[str, str]) -> None:
    os.makedirs(d, exist_ok=True)
    for name, val in files.items():
        p = os.path.join(d, name)
        if not os.path.exists(p):
            with open(p, "w") as f:
                f.write(val)


def hybrid(tmp: str, ctrls: tuple[str, ...] = tuple(V1_FILES), path: str = "/t/c1") -> Manager:
    """A fake hybrid host under tmp, with the container cgroup created."""
    lines = [f"{30 + i} 1 0:{30 + i} / {tmp}/{c} rw - cgroup cgroup rw,{c}"
             for i, c in enumerate(ctrls)]
    lines.append(f"99 1 0:99 / {tmp}/unified rw - cgroup2 cgroup2 rw")
    m = open_manager(path, "id", root=tmp, mountinfo="\n".join(lines) + "\n",
                     v2_controllers=["hugetlb"])
    for h, d in zip(m.hierarchies, m.dirs, strict=True):
        files = V1_FILES.get(h.controllers[0], {}) if h.version == 1 else V2_FILES
        top = {k: ("0-1" if k == "cpuset.cpus" else "0" if k == "cpuset.mems" else v)
               for k, v in files.items()}
        _fill(h.mountpoint, top)
        cur = h.mountpoint
        for part in d[len(h.mountpoint):].strip("/").split("/"):
            cur = os.path.join(cur, part)
            _fill(cur, files)
    m.create()
    return m


def v2host(tmp: str, path: str = "/t/c1") -> Manager:
    mi = f"30 1 0:30 / {tmp} rw - cgroup2 cgroup2 rw\n"
    m = open_manager(path, "id", root=tmp, mountinfo=mi,
                     v2_controllers=["cpuset", "cpu", "io", "memory", "hugetlb", "pids"])
    _fill(tmp, V2_FILES)
    _fill(os.path.join(tmp, "t"), V2_FILES)
    _fill(os.path.join(tmp, "t", "c1"), V2_FILES)
    m.create()
    return m


def rd(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as f:
        return f.read()


def cg(m: Manager, ctrl: str) -> str:
    for h, d in zip(m.hierarchies, m.dirs, strict=True):
        if ctrl in h.controllers or (ctrl == "" and h.version == 2):
            return d
    raise KeyError(ctrl)


def test_cpuset_copied_from_parent(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path))
    d = cg(m, "cpuset")
    assert rd(d, "cpuset.cpus") == "0-1" and rd(d, "cpuset.mems") == "0"
    assert rd(os.path.dirname(d), "cpuset.cpus") == "0-1"


def test_memory_v1_raise_writes_swap_first(tmp_path: Path, rec: Recorder) -> None:
    m = hybrid(str(tmp_path))
    m.set({"memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20,
                      "swappiness": 10, "disableOOMKiller": True, "kernelTCP": 4096}})
    names = [n for n, _ in rec.names()]
    # The current limit is huge, so lowering: memory first, then memsw.
    assert names.index("memory.limit_in_bytes") < names.index("memory.memsw.limit_in_bytes")
    d = cg(m, "memory")
    assert rd(d, "memory.limit_in_bytes") == str(64 << 20)
    assert rd(d, "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert rd(d, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert rd(d, "memory.swappiness") == "10"
    assert rd(d, "memory.oom_control") == "1"
    assert rd(d, "memory.kmem.tcp.limit_in_bytes") == "4096"
    rec.calls.clear()
    # Raising from 64M to 256M+512M: memsw must grow first.
    m.update({"memory": {"limit": 256 << 20, "swap": 512 << 20}})
    assert [n for n, _ in rec.names()] == ["memory.memsw.limit_in_bytes",
                                            "memory.limit_in_bytes"]
    rec.calls.clear()
    m.update({"memory": {"limit": -1}})
    assert rec.names() == [("memory.memsw.limit_in_bytes", "-1"),
                           ("memory.limit_in_bytes", "-1")]


def test_memory_check_before_update(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path))
    with pytest.raises(CoveError) as e:
        m.update({"memory": {"limit": 1024, "checkBeforeUpdate": True}})
    assert e.value.what == "linux.resources.memory.limit"


def test_cpu_v1(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path))
    m.set({"cpu": {"shares": 512, "quota": 20000, "period": 50000, "burst": 1000,
                   "realtimeRuntime": 950, "realtimePeriod": 1000, "idle": 1,
                   "cpus": "1", "mems": "0"}})
    d = cg(m, "cpu")
    assert [rd(d, f) for f in ("cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us",
                               "cpu.cfs_burst_us", "cpu.rt_runtime_us", "cpu.rt_period_us",
                               "cpu.idle")] == ["512", "20000", "50000", "1000", "950",
                                                "1000", "1"]
    assert rd(cg(m, "cpuset"), "cpuset.cpus") == "1"


def test_pids_v1(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path))
    m.set({"pids": {"limit": 20}})
    assert rd(cg(m, "pids"), "pids.max") == "20"
    m.update({"pids": {"limit": -1}})
    assert rd(cg(m, "pids"), "pids.max") == "max"
    m.update({"pids": {"limit": 0}})
    assert rd(cg(m, "pids"), "pids.max") == "max"


def test_blkio_v1(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path))
    m.set({"blockIO": {"weight": 300,
                       "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                       "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                       "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 10}]}})
    d = cg(m, "blkio")
    assert rd(d, "blkio.weight") == "300"
    assert rd(d, "blkio.weight_device") == "8:0 200"
    assert rd(d, "blkio.throttle.read_bps_device") == "8:0 1048576"
    assert rd(d, "blkio.throttle.write_iops_device") == "8:16 10"
    with pytest.raises(CoveError) as e:
        m.set({"blockIO": {"leafWeight": 10}})
    assert e.value.what == "linux.resources.blockIO.leafWeight"


def test_devices_v1_in_order(tmp_path: Path, rec: Recorder) -> None:
    m = hybrid(str(tmp_path))
    rec.calls.clear()
    m.set({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rw"},
        {"allow": False, "type": "b", "major": 8, "access": "m"},
    ]})
    assert rec.names() == [("devices.deny", "a *:* rwm"), ("devices.allow", "c 1:3 rwm"),
                           ("devices.allow", "c 136:* rw"), ("devices.deny", "b 8:* m")]
    with pytest.raises(CoveError) as e:
        m.set({"devices": [{"allow": True, "type": "x"}]})
    assert e.value.what == "linux.resources.devices[0].type"


def test_hugetlb_hybrid_goes_to_unified(tmp_path: Path, rec: Recorder) -> None:
    m = hybrid(str(tmp_path))
    m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    d = cg(m, "")
    assert rd(d, "hugetlb.2MB.max") == str(4 << 20)
    # Delegated from the unified root down to the parent of the container.
    assert rd(os.path.join(str(tmp_path), "unified"), "cgroup.subtree_control") == "+hugetlb"
    assert rd(os.path.join(str(tmp_path), "unified", "t"), "cgroup.subtree_control") == "+hugetlb"
    with pytest.raises(CoveError) as e:
        m.set({"hugepageLimits": [{"pageSize": "1GB", "limit": 0}]})
    assert e.value.what == "linux.resources.hugepageLimits[0].pageSize"


def test_absent_controller_named(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path), ctrls=("memory", "freezer"))
    with pytest.raises(CoveError) as e:
        m.set({"network": {"classID": 5}})
    assert (e.value.what, e.value.why) == ("linux.resources.network.classID",
                                           "net_cls controller is not mounted")
    with pytest.raises(CoveError) as e:
        m.set({"pids": {"limit": 5}})
    assert e.value.what == "linux.resources.pids.limit"
    with pytest.raises(CoveError) as e:
        m.set({"cpu": {"cpus": "0"}})
    assert e.value.what == "linux.resources.cpu.cpus"
    # Asking for nothing is fine even without the controller.
    m.set({"pids": {"limit": -1}, "cpu": {"shares": 0}, "network": {}, "blockIO": {}})


def test_type_errors_name_the_path(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"memory": {"limit": "64M"}}, "linux.resources.memory.limit"),
        ({"memory": {"limit": True}}, "linux.resources.memory.limit"),
        ({"pids": {"limit": 1.5}}, "linux.resources.pids.limit"),
        ({"cpu": {"cpus": 1}}, "linux.resources.cpu.cpus"),
        ({"memory": []}, "linux.resources.memory"),
        ({"hugepageLimits": [{"pageSize": "2MB", "limit": "x"}]},
         "linux.resources.hugepageLimits[0].limit"),
        ({"bogus": {}}, "linux.resources.bogus"),
    ]
    for res, what in cases:
        with pytest.raises(CoveError) as e:
            m.set(res)
        assert e.value.what == what, res


def test_unified_on_v1_only_is_error(tmp_path: Path) -> None:
    tmp = str(tmp_path)
    mi = f"30 1 0:30 / {tmp}/pids rw - cgroup cgroup rw,pids\n"
    m = open_manager("/c", "id", root=tmp, mountinfo=mi)
    with pytest.raises(CoveError) as e:
        m.set({"unified": {"pids.max": "3"}})
    assert e.value.what == "linux.resources.unified"


def test_v1_freeze_stats_oom_mounts_state(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path))
    m.freeze()
    assert m.frozen() and rd(cg(m, "freezer"), "freezer.state") == "FROZEN"
    m.thaw()
    assert not m.frozen()
    s = m.stats()
    assert s["memory"]["usage"] == {"limit": 9223372036854771712, "usage": 4096,
                                    "max": 8192, "failcnt": 0}
    assert s["memory"]["raw"] == {"cache": 10, "rss": 20} and s["memory"]["cache"] == 10
    assert s["cpu"]["usage"]["total"] == 1000 and s["cpu"]["usage"]["percpu"] == [600, 400]
    assert s["cpu"]["throttling"] == {"periods": 4, "throttledPeriods": 1, "throttledTime": 77}
    assert s["pids"] == {"current": 1, "limit": 0}
    assert s["blkio"]["ioServiceBytesRecursive"][0] == {"major": 8, "minor": 0, "op": "Read",
                                                        "value": 5}
    assert m.oom_count() == 3
    tmp = str(tmp_path)
    assert (f"{tmp}/memory/t/c1", "memory") in m.mounts()
    assert (f"{tmp}/unified/t/c1", "unified") in m.mounts()
    m2 = open_manager_from_state(m.to_state())
    assert m2.dirs == m.dirs and m2.path == "/t/c1" and m2.layout == "hybrid"


def test_destroy_removes_children(tmp_path: Path) -> None:
    m = hybrid(str(tmp_path), ctrls=("pids",))
    # Fake cgroupfs dirs hold regular files; empty them as the kernel would.
    for _h, d in zip(m.hierarchies, m.dirs, strict=True):
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.makedirs(os.path.join(d, "sub"))
    m.destroy()
    assert not m.exists()
    m.destroy()  # already gone: no error


def test_v2_mapping(tmp_path: Path) -> None:
    m = v2host(str(tmp_path))
    tmp = str(tmp_path)
    # create() delegates every controller down to the parent.
    assert rd(tmp, "cgroup.subtree_control") == "+cpuset +cpu +io +memory +hugetlb +pids"
    m.set({"memory": {"limit": 100 << 20, "swap": 300 << 20, "reservation": 50 << 20},
           "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0"},
           "pids": {"limit": 7},
           "blockIO": {"weight": 500,
                       "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 100}]},
           "hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}],
           "unified": {"memory.low": "123"}})
    d = m.dirs[0]
    assert rd(d, "memory.max") == str(100 << 20)
    assert rd(d, "memory.swap.max") == str(200 << 20)
    assert rd(d, "memory.low") == "123"  # unified wins, written last
    assert rd(d, "cpu.weight") == "39"
    assert rd(d, "cpu.max") == "50000 100000"
    assert rd(d, "cpuset.cpus") == "0"
    assert rd(d, "pids.max") == "7"
    assert rd(d, "io.weight") == "default 4950"
    assert rd(d, "io.max") == "8:0 rbps=100"
    assert rd(d, "hugetlb.2MB.max") == str(2 << 20)
    assert m.mounts() == [(d, "")]
    with pytest.raises(CoveError) as e:
        m.set({"memory": {"limit": 100, "swap": 50}})
    assert e.value.what == "linux.resources.memory.swap"
    m.set({"memory": {"limit": 100 << 20, "swap": 100 << 20}})  # swap == limit: no swap
    assert rd(d, "memory.swap.max") == "0"
    with pytest.raises(CoveError) as e:
        m.set({"unified": {"rdma.max": "x"}})
    assert e.value.what == "linux.resources.unified.rdma.max"
    with pytest.raises(CoveError) as e:
        m.set({"cpu": {"realtimeRuntime": 5}})
    assert e.value.what == "linux.resources.cpu.realtimeRuntime"
    with pytest.raises(CoveError) as e:
        m.set({"network": {"classID": 1}})
    assert e.value.what == "linux.resources.network.classID"


def test_v2_freeze_stats_oom(tmp_path: Path) -> None:
    m = v2host(str(tmp_path))
    d = m.dirs[0]
    with open(os.path.join(d, "cgroup.events"), "w") as f:
        f.write("populated 0\nfrozen 1\n")  # the fake kernel freezes at once
    m.freeze()
    assert m.frozen() and rd(d, "cgroup.freeze") == "1"
    m.thaw()
    assert not m.frozen()
    assert m.oom_count() == 1
    s = m.stats()
    assert s["memory"]["usage"]["usage"] == 100 and s["memory"]["usage"]["failcnt"] == 2
    assert s["memory"]["cache"] == 7
    assert s["cpu"]["usage"]["total"] == 5000 and s["cpu"]["usage"]["user"] == 3000
    assert s["hugetlb"] == {"2MB": {"usage": 0, "max": 0, "failcnt": 0}}


def test_rootless_unwritable_skips_then_errors_on_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = str(tmp_path)
    mi = f"30 1 0:30 / {tmp}/pids rw - cgroup cgroup rw,pids\n"
    m = open_manager("/c", "id", root=tmp, mountinfo=mi, rootless=True)

    def denied(path: str, exist_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", path)

    # Tests run as root, which mode bits do not stop: fake the EACCES.
    monkeypatch.setattr(os, "makedirs", denied)
    m.create()
    assert m.skipped == {0}
    assert m.mounts() == [] and m.pids() == []
    m.apply(os.getpid())  # skipped (warned)
    m.set({"pids": {"limit": -1}})  # asks for nothing
    with pytest.raises(CoveError) as e:
        m.set({"pids": {"limit": 3}})
    assert e.value.what == "linux.resources.pids.limit"
    assert "rootless" in e.value.why
    assert open_manager_from_state(m.to_state()).skipped == {0}
    m2 = open_manager("/c", "id", root=tmp, mountinfo=mi, rootless=False)
    with pytest.raises(CoveError) as e:
        m2.create()
    assert e.value.what == "cgroup"
