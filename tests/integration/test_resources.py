"""linux.resources enforced on real containers, on this host's hierarchy.

Each test proves that a limit takes effect inside the container (a process is
OOM-killed, a fork fails, CPU time or I/O is held back, a device cannot be opened),
not only that a cgroup file was written.  Where a controller is absent, asking for
one of its knobs must fail with the knob's name.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.runtime.cgroups import detect_layout, open_manager
from tests.lib.bundles import base_config
from tests.lib.runtime import Env

MiB = 1 << 20


def _mounted(ctrl: str) -> bool:
    """Whether any hierarchy (v1 mount or the v2 controllers) offers ctrl."""
    m = open_manager("/probe", "probe")
    return any(ctrl in h.controllers for h in m.hierarchies)


def _v2_only(ctrl: str) -> bool:
    m = open_manager("/probe", "probe")
    return any(ctrl in h.controllers for h in m.hierarchies if h.version == 2)


def _tmpfs(cfg: dict[str, Any], dest: str = "/big") -> None:
    # tmpfs pages are charged to the writer's memory cgroup: a file there is an
    # allocation that busybox dd can make, and that stays until rm.
    cfg["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                          "options": ["size=512m"]})


def _start(env: Env, cfg: dict[str, Any], name: str = "bundle") -> tuple[str, Path]:
    b = env.bundle(cfg, name=name)
    cid = env.id()
    env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
    return cid, b.rootfs


def _stats(env: Env, cid: str) -> dict[str, Any]:
    ev = json.loads(env.rt("events", "--stats", cid, check=True).stdout)
    assert ev["type"] == "stats" and ev["id"] == cid
    data: dict[str, Any] = ev["data"]
    return data


class Events:
    """A bounded `cove-runtime events` stream: JSON lines read with a deadline."""

    def __init__(self, env: Env, cid: str) -> None:
        self.p = subprocess.Popen(
            [env.rt.binary, "--root", str(env.rt.root), "events", "--interval", "1s", cid],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None at EOF or after timeout seconds."""
        assert self.p.stdout is not None
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            return None
        line = self.p.stdout.readline()
        if not line:
            return None
        ev: dict[str, Any] = json.loads(line)
        self.lines.append(ev)
        return ev

    def wait_for(self, typ: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ev = self.next(left)
            if ev is None:
                return None
            if ev["type"] == typ:
                return ev
        return None

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(5)
        for f in (self.p.stdout, self.p.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def events_of(env: Env) -> Iterator[Any]:
    made: list[Events] = []

    def start(cid: str) -> Events:
        e = Events(env, cid)
        made.append(e)
        return e

    yield start
    for e in made:
        e.close()


# 1. memory.limit: OOM kill, reported by `events`.


def test_memory_limit_oom_kill_and_event(env: Env, events_of: Any) -> None:
    # Init waits for /tmp/go, then becomes an allocator itself; meanwhile an exec'd
    # allocator is killed first. swap == limit: nothing can be swapped out instead.
    cfg = base_config(["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.02; done; "
                                   "exec dd if=/dev/zero of=/big/f bs=1M count=200"])
    cfg["linux"]["resources"]["memory"] = {"limit": 48 * MiB, "swap": 48 * MiB}
    _tmpfs(cfg)
    cid, rootfs = _start(env, cfg)
    ev = events_of(cid)
    first = ev.next(10)
    assert first is not None and first["type"] == "stats", ev.lines
    assert first["data"]["memory"]["usage"]["limit"] == 48 * MiB
    # An exec'd process allocating 200 MiB past the 48 MiB limit is killed...
    # (its oom_score_adj raised, as any process may: among the cgroup's tiny processes
    # the OOM killer's choice is otherwise close to a tie with the init)
    p = env.rt("exec", cid, "sh", "-c", "sh -c 'echo 1000 > /proc/self/oom_score_adj; "
                                        "exec dd if=/dev/zero of=/big/x bs=1M count=200'; "
                                        "echo rc=$?; rm -f /big/x")
    assert "rc=137" in p.stdout, p  # SIGKILL
    # ...and `events` reports it.
    oom = ev.wait_for("oom", 10)
    assert oom == {"type": "oom", "id": cid}, ev.lines
    # The container lives on; now its init allocates: it is killed too, the container
    # stops, and `events` reports that OOM kill before its stream ends on its own.
    assert env.rt.status(cid) == "running"
    (rootfs / "tmp" / "go").touch()
    oom = ev.wait_for("oom", 10)
    assert oom == {"type": "oom", "id": cid}, ev.lines
    assert ev.p.wait(10) == 0
    assert env.rt.status(cid) == "stopped"
    env.rt("delete", cid, check=True)


# 2. pids.limit: a fork bomb stops at the limit; the container can still be deleted.


def test_pids_limit_stops_fork_bomb(env: Env) -> None:
    limit = 32
    cfg = base_config(["sh", "-c", "bomb() { while :; do bomb & done; }; "
                                   "bomb 2>/dev/null & exec sleep 1000"])
    cfg["linux"]["resources"]["pids"] = {"limit": limit}
    cid, _ = _start(env, cfg)
    seen = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        seen.append(_stats(env, cid)["pids"]["current"])
    assert max(seen) == limit, seen  # the bomb reached the limit...
    assert all(n <= limit for n in seen), seen  # ...and never went past it
    assert env.rt.status(cid) == "running"
    # no room for an exec'd process either, and the error says why
    p = env.rt("exec", cid, "true")
    assert p.returncode == 1 and "pids limit" in p.stderr, p
    t = time.monotonic()
    env.rt("delete", "--force", cid, check=True)
    assert time.monotonic() - t < 5
    assert env.rt("state", cid).returncode == 1


# 3. cpu quota/period: 20% of a core.


def _idle_cores(before: list[int], after: list[int], wall: float) -> float:
    hz = os.sysconf("SC_CLK_TCK")
    return ((after[3] + after[4]) - (before[3] + before[4])) / hz / wall


def _proc_stat_cpu() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def test_cpu_quota_limits_usage(env: Env) -> None:
    cfg = base_config(["sh", "-c", "while :; do :; done"])
    cfg["linux"]["resources"]["cpu"] = {"quota": 20000, "period": 100000}
    cid, _ = _start(env, cfg)
    time.sleep(0.3)  # past start-up

    def sample() -> tuple[float, dict[str, Any]]:
        t0 = time.monotonic()
        s = _stats(env, cid)
        return (t0 + time.monotonic()) / 2, s

    host0 = _proc_stat_cpu()
    t0, s0 = sample()
    time.sleep(2.5)
    t1, s1 = sample()
    host1 = _proc_stat_cpu()
    wall = t1 - t0
    used = (s1["cpu"]["usage"]["total"] - s0["cpu"]["usage"]["total"]) / 1e9
    pct = 100 * used / wall
    throttled = (s1["cpu"]["throttling"]["throttledPeriods"]
                 - s0["cpu"]["throttling"]["throttledPeriods"])
    env.rt("delete", "--force", cid, check=True)
    print(f"cpu: {pct:.1f}% of a core over {wall:.2f}s, {throttled} periods throttled")
    # Never more than the quota (+5 points for accounting edges)...
    assert pct <= 25, pct
    # ...and the burner was held back by the quota, not starved: it ran out of
    # quota in most of the 25 periods.
    assert throttled >= 15, throttled
    # It gets the whole 20% unless the host itself had no spare CPU for it.
    if _idle_cores(host0, host1, wall) > 0.5:
        assert pct >= 15, pct


# 4. cpuset: cpus "1".


def test_cpuset_pins_to_cpu(env: Env) -> None:
    with open("/sys/fs/cgroup/cpuset/cpuset.effective_cpus") as f:
        avail = f.read().strip()
    if (os.cpu_count() or 1) < 2 or avail in ("0", ""):
        pytest.skip("needs CPU 1")
    cfg = base_config(["sh", "-c", "while :; do :; done & while :; do :; done"])
    cfg["linux"]["resources"]["cpu"] = {"cpus": "1"}
    cid, _ = _start(env, cfg)
    time.sleep(0.2)
    s0 = _stats(env, cid)["cpu"]["usage"]["percpu"]
    time.sleep(1.0)
    s1 = _stats(env, cid)["cpu"]["usage"]["percpu"]
    env.rt("delete", "--force", cid, check=True)
    on_cpu0 = (s1[0] - s0[0]) / 1e9
    on_cpu1 = (s1[1] - s0[1]) / 1e9
    # two burners, one CPU: all of their time is on CPU 1
    assert on_cpu1 > 0.3, (on_cpu0, on_cpu1)
    assert on_cpu0 < 0.02, (on_cpu0, on_cpu1)
    # what the container sees
    b = env.bundle(base_config(["sh", "-c", "grep Cpus_allowed_list /proc/self/status; "
                                            "taskset -p $$; nproc"]), name="b2")
    b.config["linux"]["resources"]["cpu"] = {"cpus": "1"}
    b.write()
    p = env.rt("run", "--bundle", str(b.path), env.id())
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["Cpus_allowed_list:", "1"]
    assert lines[1].endswith("current affinity mask: 2"), lines
    assert lines[2] == "1"


# 5. blkio throttle on a loop device.


@pytest.fixture
def loopdev(env: Env) -> Iterator[tuple[str, int, int]]:
    img = env.tmp / "disk.img"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        rdev = os.stat(dev).st_rdev
        yield dev, os.major(rdev), os.minor(rdev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def test_blkio_throttle_write_bps(env: Env, loopdev: tuple[str, int, int]) -> None:
    _dev, major, minor = loopdev
    dd = "dd if=/dev/zero of=/dev/xloop bs=64k count=48 oflag=direct"  # 3 MiB

    def timed(rate: int, name: str) -> float:
        cfg = base_config(["sh", "-c", dd])
        cfg["linux"]["devices"] = [{"path": "/dev/xloop", "type": "b", "major": major,
                                    "minor": minor}]
        cfg["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "b", "major": major, "minor": minor, "access": "rw"})
        if rate:
            cfg["linux"]["resources"]["blockIO"] = {
                "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": rate}]}
        b = env.bundle(cfg, name=name)
        t = time.monotonic()
        p = env.rt("run", "--bundle", str(b.path), env.id())
        took = time.monotonic() - t
        assert p.returncode == 0 and "48+0 records out" in p.stderr, p
        return took

    free = timed(0, "free")
    throttled = timed(MiB, "throttled")
    print(f"blkio: 3 MiB O_DIRECT to a loop device: {free:.2f}s free, "
          f"{throttled:.2f}s at 1 MiB/s")
    assert throttled >= 2.5, (free, throttled)
    assert free < throttled / 2, (free, throttled)


# 6. devices: denied devices cannot be opened.


def test_device_rules_deny_open(env: Env) -> None:
    # CAP_MKNOD, so that mknod itself works (the default rules allow "m" on any
    # device, as runc's): only the devices cgroup stands between the node and open.
    cfg = base_config(["sh", "-c",
                       "mknod /dev/xmem c 1 1 && echo mknod=ok; "
                       "head -c1 /dev/xmem >/dev/null; echo mem=$?; "
                       "echo x > /dev/null; echo null=$?; "
                       "head -c1 /dev/zero | wc -c; "
                       "mknod /dev/xzero c 1 5 && head -c1 /dev/xzero | wc -c"])
    caps = cfg["process"]["capabilities"]
    for k in ("bounding", "effective", "permitted"):
        caps[k].append("CAP_MKNOD")
    # A deny for /dev/zero too: as in runc, the runtime's default device rules
    # (/dev/null, zero, full, random, urandom, tty, console, ptmx, pts) come after
    # the config's, so /dev/zero stays usable under any node name.
    cfg["linux"]["resources"]["devices"].append(
        {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "rwm"})
    b = env.bundle(cfg)
    p = env.rt("run", "--bundle", str(b.path), env.id())
    out = p.stdout.splitlines()
    assert out[0] == "mknod=ok", p
    assert out[1] == "mem=1" and "Operation not permitted" in p.stderr, p
    assert out[2] == "null=0", p
    assert out[3:] == ["1", "1"], p


# 7. freezer: no CPU time while paused.


def test_pause_stops_cpu_use(env: Env) -> None:
    cid, _ = _start(env, base_config(["sh", "-c", "while :; do :; done"]))
    time.sleep(0.2)
    env.rt("pause", cid, check=True)
    u0 = _stats(env, cid)["cpu"]["usage"]["total"]
    time.sleep(0.5)
    u1 = _stats(env, cid)["cpu"]["usage"]["total"]
    assert env.rt.status(cid) == "paused"
    env.rt("resume", cid, check=True)
    time.sleep(0.5)
    u2 = _stats(env, cid)["cpu"]["usage"]["total"]
    env.rt("delete", "--force", cid, check=True)
    assert u1 - u0 < 5_000_000, u1 - u0  # < 5 ms while frozen
    assert u2 - u1 > 100_000_000, u2 - u1  # > 0.1 s of the 0.5 s after resume


# 8. update: lowered memory and pids limits take effect.


def test_update_memory_and_pids_enforced(env: Env) -> None:
    cfg = base_config(["sleep", "1000"])
    cfg["linux"]["resources"]["memory"] = {"limit": 128 * MiB, "swap": 128 * MiB}
    cfg["linux"]["resources"]["pids"] = {"limit": 64}
    _tmpfs(cfg)
    cid, _ = _start(env, cfg)
    alloc = "dd if=/dev/zero of=/big/f bs=1M count=64 2>/dev/null; echo rc=$?; rm -f /big/f"
    forks = "for i in $(seq 12); do sleep 0.2 & done; echo forked; wait"
    p = env.rt("exec", cid, "sh", "-c", alloc)
    assert p.stdout == "rc=0\n", p  # 64 MiB fit in 128 MiB
    p = env.rt("exec", cid, "sh", "-c", forks)
    assert p.stdout == "forked\n", p  # 12 forks fit in 64 pids
    # limit before swap when lowering: cove orders the writes (memsw >= limit)
    env.rt("update", "--memory", "32m", "--memory-swap", "32m", "--pids-limit", "8", cid,
           check=True)
    st = _stats(env, cid)
    assert st["memory"]["usage"]["limit"] == 32 * MiB
    assert st["memory"]["swap"]["limit"] == 32 * MiB
    assert st["pids"]["limit"] == 8
    p = env.rt("exec", cid, "sh", "-c", alloc)
    assert p.stdout == "rc=137\n", p  # the same allocation is now OOM-killed
    p = env.rt("exec", cid, "sh", "-c", forks)
    assert "forked" not in p.stdout, p
    assert "can't fork" in p.stderr, p
    # the limit alone cannot go above memory+swap (as in runc); the error says so
    p = env.rt("update", "--memory", "64m", cid)
    assert p.returncode == 1 and "above the memory+swap limit" in p.stderr, p
    # raising both: memsw first, then the limit
    env.rt("update", "--resources", "-", cid, check=True,
           input='{"memory": {"limit": 134217728, "swap": 134217728}, "pids": {"limit": 64}}')
    p = env.rt("exec", cid, "sh", "-c", alloc)
    assert p.stdout == "rc=0\n", p
    env.rt("delete", "--force", cid, check=True)


# Absent controllers and unsupported knobs: an error naming the knob.


def _fails(env: Env, cfg: dict[str, Any], name: str = "bundle") -> str:
    b = env.bundle(cfg, name=name)
    p = env.rt("run", "--bundle", str(b.path), env.id())
    assert p.returncode == 1, p
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize(("ctrl", "section", "value", "knob"), [
    ("net_cls", "network", {"classID": 0x100001}, "network.classID"),
    ("net_prio", "network", {"priorities": [{"name": "lo", "priority": 1}]},
     "network.priorities"),
    ("rdma", "rdma", {"mlx5_0": {"hcaHandles": 2}}, "rdma"),
])
def test_absent_controller_is_an_error(env: Env, ctrl: str, section: str, value: Any,
                                       knob: str) -> None:
    if _mounted(ctrl):
        pytest.skip(f"{ctrl} is available here")
    cfg = base_config(["true"])
    cfg["linux"]["resources"][section] = value
    err = _fails(env, cfg)
    assert err.startswith(f"cove-runtime: linux.resources.{knob}: "), err
    assert ctrl in err, err


def test_unified_key_for_a_v1_controller_is_an_error(env: Env) -> None:
    if detect_layout() == "v2" or _v2_only("memory"):
        pytest.skip("memory is a v2 controller here")
    cfg = base_config(["true"])
    cfg["linux"]["resources"]["unified"] = {"memory.max": str(64 * MiB)}
    err = _fails(env, cfg)
    assert err.startswith("cove-runtime: linux.resources.unified.memory.max: "), err


def test_unsupported_knob_is_an_error(env: Env) -> None:
    # no leaf weights without CFQ (gone from the kernel): blkio.leaf_weight is absent
    if os.path.exists("/sys/fs/cgroup/blkio/blkio.leaf_weight") or not _mounted("blkio"):
        pytest.skip("blkio.leaf_weight exists here")
    cfg = base_config(["true"])
    cfg["linux"]["resources"]["blockIO"] = {"leafWeight": 500}
    err = _fails(env, cfg)
    assert err.startswith("cove-runtime: linux.resources.blockIO.leafWeight: "), err


# cgroupsPath forms.


def _cgroup_of(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(","):
                out[c] = path
    return out


def test_cgroups_path_absolute_and_relative(env: Env) -> None:
    mine = _cgroup_of(os.getpid())
    for form in ("absolute", "relative"):
        b = env.bundle(base_config(["sleep", "1000"]), name=form)
        cid = env.id()
        b.config["linux"]["cgroupsPath"] = f"/{cid}" if form == "absolute" else cid
        b.write()
        env.rt("run", "-d", "--bundle", str(b.path), cid, check=True)
        got = _cgroup_of(env.rt.state(cid)["pid"])
        for ctrl in ("memory", "pids", "cpu", "devices", "freezer"):
            if form == "absolute":
                want = f"/{cid}"
            else:  # under the caller's own cgroup in each hierarchy
                want = mine[ctrl].rstrip("/") + f"/{cid}"
            assert got[ctrl] == want, (form, ctrl, got)
        # the limits land there
        env.rt("update", "--pids-limit", "7", cid, check=True)
        assert _stats(env, cid)["pids"]["limit"] == 7
        env.rt("delete", "--force", cid, check=True)


def test_cgroups_path_systemd_form_without_systemd(env: Env) -> None:
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here")
    cfg = base_config(["true"])
    cfg["linux"]["cgroupsPath"] = "system.slice:cove:abc"
    err = _fails(env, cfg)
    assert err == ("cove-runtime: cgroupsPath: systemd cgroup driver requested "
                   "but systemd is not running"), err
