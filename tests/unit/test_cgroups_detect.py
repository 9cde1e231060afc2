"""Layout detection and path resolution from sample mountinfo / proc cgroup texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.runtime.cgroups import detect_layout, open_manager
from cove.runtime.cgroups.detect import find_hierarchies, parse_mountinfo, parse_proc_cgroup

HYBRID = """\
24 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

V1_COMBINED = """\
25 18 0:21 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw shared:9 - cgroup cgroup rw,xattr,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/net_cls,net_prio rw shared:13 - cgroup cgroup rw,net_cls,net_prio
31 25 0:27 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
33 25 0:27 /docker/abc /var/lib/x/memory rw - cgroup cgroup rw,memory
"""

V2 = """\
22 1 0:21 / /sys rw - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""

V2_WITH_NAMED = V2 + "31 30 0:40 / /run/x/systemd rw - cgroup cgroup rw,name=systemd\n"


def test_layouts() -> None:
    assert detect_layout(HYBRID) == "hybrid"
    assert detect_layout(V1_COMBINED) == "v1"
    assert detect_layout(V2) == "v2"
    # name=systemd alone is no v1 controller: still a v2 host.
    assert detect_layout(V2_WITH_NAMED) == "v2"


def test_no_cgroups() -> None:
    with pytest.raises(CoveError) as e:
        detect_layout("24 1 0:22 / /sys rw - sysfs sysfs rw\n")
    assert e.value.what == "cgroups"


def test_this_host_is_detected() -> None:
    assert detect_layout() in ("v1", "v2", "hybrid")


def test_parse_mountinfo_escapes() -> None:
    text = r"40 31 0:37 / /sys/fs/my\040cg rw - cgroup cgroup rw,pids" + "\n"
    assert parse_mountinfo(text) == [("cgroup", "/", "/sys/fs/my cg", ["rw", "pids"])]


def test_hybrid_hierarchies() -> None:
    layout, hs = find_hierarchies(HYBRID, v2_controllers=["hugetlb", "memory"])
    assert layout == "hybrid"
    v1 = {h.mountpoint: h.controllers for h in hs if h.version == 1}
    assert v1["/sys/fs/cgroup/cpu"] == ["cpu"]
    assert v1["/sys/fs/cgroup/cpuacct"] == ["cpuacct"]
    assert v1["/sys/fs/cgroup/systemd"] == ["name=systemd"]
    (u,) = [h for h in hs if h.version == 2]
    # memory is bound to v1, so only hugetlb is served by unified.
    assert u.mountpoint == "/sys/fs/cgroup/unified" and u.controllers == ["hugetlb"]


def test_combined_and_duplicate_mounts() -> None:
    layout, hs = find_hierarchies(V1_COMBINED)
    assert layout == "v1"
    mps = [h.mountpoint for h in hs]
    assert "/sys/fs/cgroup/cpu,cpuacct" in mps
    assert "/var/lib/x/memory" not in mps  # the root mount is preferred
    assert [h.controllers for h in hs if h.mountpoint.endswith("cpu,cpuacct")] == [
        ["cpu", "cpuacct"]
    ]


def test_v2_drops_named() -> None:
    layout, hs = find_hierarchies(V2_WITH_NAMED, v2_controllers=["cpu", "memory", "pids"])
    assert layout == "v2"
    assert [(h.mountpoint, h.version, h.controllers) for h in hs] == [
        ("/sys/fs/cgroup", 2, ["cpu", "memory", "pids"])
    ]


def test_parse_proc_cgroup() -> None:
    own = parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/c\n0::/u\n")
    assert own == {"memory": "/a/b", "cpu": "/c", "cpuacct": "/c", "": "/u"}


def test_paths_absolute_relative_default() -> None:
    m = open_manager("/x/../a/b", "id", mountinfo=HYBRID, v2_controllers=["hugetlb"])
    assert m.path == "/a/b"
    assert "/sys/fs/cgroup/memory/a/b" in m.dirs
    assert "/sys/fs/cgroup/unified/a/b" in m.dirs
    m = open_manager(None, "abc", mountinfo=HYBRID, v2_controllers=[])
    assert m.path == "/cove/abc"
    m = open_manager(
        "sub/c", "id", mountinfo=HYBRID, v2_controllers=[],
        proc_cgroup="4:memory:/mine\n1:cpu:/\n0::/u\n",
    )
    assert "/sys/fs/cgroup/memory/mine/sub/c" in m.dirs
    assert "/sys/fs/cgroup/cpu/sub/c" in m.dirs
    assert "/sys/fs/cgroup/unified/u/sub/c" in m.dirs
    with pytest.raises(CoveError) as e:
        open_manager("../escape", "id", mountinfo=HYBRID, v2_controllers=[], proc_cgroup="")
    assert e.value.what == "cgroupsPath"


def test_relative_inside_namespaced_mount() -> None:
    text = "33 25 0:27 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    m = open_manager("c", "id", mountinfo=text, proc_cgroup="4:memory:/docker/abc/x\n")
    assert m.dirs == ["/sys/fs/cgroup/memory/x/c"]


def test_systemd_not_running(tmp_path: Path) -> None:
    missing = "/nonexistent/systemd/system"
    with pytest.raises(CoveError) as e:
        open_manager("system.slice:cove:abc", "abc", mountinfo=HYBRID, systemd_dir=missing)
    assert (e.value.what, e.value.why) == (
        "cgroupsPath", "systemd cgroup driver requested but systemd is not running"
    )
    with pytest.raises(CoveError):
        open_manager("/a", "abc", systemd=True, mountinfo=HYBRID, systemd_dir=missing)


def test_systemd_path_expansion(tmp_path: Path) -> None:
    m = open_manager(
        "a-b.slice:pfx:abc", "abc", mountinfo=HYBRID, v2_controllers=[],
        systemd_dir=str(tmp_path),
    )
    assert m.path == "/a.slice/a-b.slice/pfx-abc.scope"
