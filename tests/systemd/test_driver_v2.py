"""cove-runtime's systemd cgroup driver against a real systemd on a pure cgroup v2 tree.

This host is cgroup v1 hybrid with no systemd, so the test boots one that sees only
cgroup v2: a raw OCI bundle run by cove-runtime itself (the crun-tests way: runc's
default spec, edited) whose init is systemd 252 of the cached Debian bookworm rootfs
(an overlay on it), in a cgroup namespace of its own, with /sys/fs/cgroup a read-write
bind of its own directory of the host's cgroup2 hierarchy (/sys/fs/cgroup/unified here)
and no v1 hierarchy mounted. systemd then runs in unified mode, rooted at that directory,
as it does on a v2 host.

On this host every controller but hugetlb is bound to a v1 hierarchy, so that v2 tree
has hugetlb only (enabled in the host's unified root for the test's duration, as the fs
driver does for any hugetlb limit, and disabled again if the test enabled it). What the
driver must do on v2 is tested: v2 detected (IOAccounting, not BlockIOAccounting), the
transient scope over D-Bus with Delegate, DevicePolicy/DeviceAllow and init in it
(`0::/system.slice/<unit>`), the device rules (eBPF) enforced, hugetlb (no systemd
property) written to the scope's own files and enabled in the slice's
subtree_control, kept across `systemctl daemon-reload`, `update`, `exec` joining the
scope, `delete --force` leaving nothing, the same through dbus-daemon's system bus
(the private socket hidden); and on v2 the bad input: a limit whose controller is
missing (runc's driver fails on the cgroup file after starting the unit: here one line
before systemd is asked anything), systemd refusing the unit (Slice= an instance name:
no slice directory left either), a wrong cgroupsPath, a unit that exists, no D-Bus.
Where the tree has memory, pids and cpu (the qemu VM: test_driver_v2_vm.py runs this
test there), their properties and files too, their update, a reload keeping them.

The commands inside are run with `nsenter` from a cgroup of their own below the
namespace's root (cove-test-runner): a cgroup namespace's root is not the hierarchy's
real root, so the no-internal-process rule holds there, and a process in it (what
`cove-runtime exec` would give) keeps the driver from enabling hugetlb below it (and
is refused once it has); on a real v2 host an engine runs in a unit of its own too.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.errors import CoveError
from tests.lib.bundles import base_config, make_bundle
from tests.lib.paths import REPO, RUNTIME, cove_runtime
from tests.lib.runtime import Runtime

RT = f"{REPO}/.venv/bin/cove-runtime --systemd-cgroup --root /run/cove-rt"
HUGE = "2MB"


def _unified() -> str | None:
    """The host's cgroup2 mount point (/sys/fs/cgroup/unified on a hybrid host)."""
    from cove.runtime.cgroups.detect import find_hierarchies

    try:
        _layout, hs = find_hierarchies()
    except CoveError:  # no cgroups at all: the test skips
        return None
    v2 = [h for h in hs if h.version == 2 and h.root == "/"]
    return v2[0].mountpoint if v2 else None


def _caps() -> list[str]:
    """Every capability this process has (a --privileged container's set)."""
    from cove.sys.caps import CAPS

    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return [n for n, bit in CAPS.items() if eff >> bit & 1]


class Booted:
    """The systemd container: `sh` runs a script in it (`nsenter`, from a cgroup below
    its namespace's root that is neither systemd's nor the root itself)."""

    def __init__(self, rt: Runtime, cid: str, bundles: Path, runner: str) -> None:
        self.rt, self.cid, self.bundles, self.runner = rt, cid, bundles, runner
        self.pid = rt.state(cid)["pid"]

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        enter = (f'echo $$ > {self.runner}/cgroup.procs && exec nsenter -t {self.pid} -a '
                 'sh -c "$0"')
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            # files, not pipes: a container created inside keeps them open
            rc = subprocess.run(["sh", "-c", enter, script], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, timeout=60).returncode
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(script, rc, out.read(), err.read())
        if check and r.returncode != 0:
            raise AssertionError(f"{script!r} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def bundle(self, name: str, cgroups_path: str, resources: dict[str, Any]) -> None:
        cfg = base_config(["sleep", "1000"])
        cfg["root"]["readonly"] = True
        cfg["linux"]["cgroupsPath"] = cgroups_path
        cfg["linux"]["resources"].update(resources)
        make_bundle(self.bundles, cfg, name)

    def create(self, bundle: str, cid: str, check: bool = True,
               prefix: str = "") -> subprocess.CompletedProcess[str]:
        """`create`, its stdio not the exec's (the container's init keeps it open)."""
        return self.sh(f"{prefix}{RT} create --bundle /bundles/{bundle} {cid} </dev/null "
                       ">/dev/null 2>/tmp/err; rc=$?; cat /tmp/err >&2; exit $rc", check)


def _outer_spec(rootfs: Path, cg: str, unified: str, bundles: Path) -> dict[str, Any]:
    spec = base_config(["/lib/systemd/systemd"])
    spec["process"]["env"] = [*spec["process"]["env"], "container=cove"]
    caps = _caps()
    spec["process"]["capabilities"] = {k: caps for k in ("bounding", "effective",
                                                         "permitted")}
    spec["root"] = {"path": str(rootfs), "readonly": False}
    lin = spec["linux"]
    lin.pop("seccomp", None)
    lin["maskedPaths"], lin["readonlyPaths"] = [], []
    lin["cgroupsPath"] = cg  # the fs driver's, on the host; "cgroup" ns in the spec
    lin["resources"] = {"devices": [{"allow": True, "access": "rwm"}]}
    mounts = [m for m in spec["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    for d, mode in (("/run", "755"), ("/run/lock", "1777"), ("/tmp", "1777")):
        mounts.append({"destination": d, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", f"mode={mode}"]})
    # the container's own cgroup2 directory as its whole /sys/fs/cgroup (the runtime
    # makes it before it mounts anything; the cgroup namespace makes it the root)
    mounts.append({"destination": "/sys/fs/cgroup", "type": "bind", "source": unified + cg,
                   "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]})
    for src, dst in (("/usr", "/usr"), (REPO, REPO), (str(bundles), "/bundles")):
        mounts.append({"destination": dst, "type": "bind", "source": src,
                       "options": ["rbind", "ro"]})
    spec["mounts"] = mounts
    return spec


def _hugetlb_on(unified: str) -> bool | None:
    """hugetlb enabled in the unified root: True if this call enabled it (to undo),
    False if it was on already, None where the kernel offers no hugetlb there."""
    root = Path(unified)
    if "hugetlb" not in (root / "cgroup.controllers").read_text().split():
        return None
    if "hugetlb" in (root / "cgroup.subtree_control").read_text().split():
        return False
    (root / "cgroup.subtree_control").write_text("+hugetlb")
    return True


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[Booted]:
    from tests.lib.debian import Unavailable, systemd_rootfs

    if os.geteuid() != 0:
        pytest.skip("needs root")
    unified = _unified()
    if unified is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    try:
        lower = systemd_rootfs()
    except Unavailable as e:
        pytest.skip(f"no Debian rootfs with systemd: {e}")
    cove_runtime()
    outer = tmp_path / "outer"
    for d in ("upper", "work", "rootfs"):
        (outer / d).mkdir(parents=True)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    cid = f"sdv2{uuid.uuid4().hex[:8]}"
    cg = f"/cove-{cid}"
    rt = Runtime(RUNTIME, tmp_path / "state")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={outer}/upper,workdir={outer}/work",
                    str(outer / "rootfs")], check=True, timeout=30)
    undo_hugetlb = None
    try:
        undo_hugetlb = _hugetlb_on(unified)
        spec = _outer_spec(outer / "rootfs", cg, unified, bundles)
        (outer / "config.json").write_text(json.dumps(spec))
        rt("create", "--bundle", str(outer), cid, check=True)
        rt("start", cid, check=True)
        os.mkdir(unified + cg + "/cove-test-runner")
        b = Booted(rt, cid, bundles, unified + cg + "/cove-test-runner")
        deadline = time.monotonic() + 60
        while True:
            r = b.sh("systemctl is-system-running --wait", check=False)
            # "offline": no /run/systemd/system yet (systemd still starting)
            if (("Failed to connect to bus" not in r.stderr and r.stdout.strip() != "offline")
                    or time.monotonic() > deadline):
                break
            time.sleep(0.1)
        assert r.stdout.strip() in ("running", "degraded"), r.stdout + r.stderr
        yield b
    finally:
        rt("delete", "--force", cid)
        subprocess.run(["umount", str(outer / "rootfs")], check=False, timeout=30)
        if undo_hugetlb:
            try:  # EBUSY while another container below uses it: left on, as the fs driver
                Path(unified, "cgroup.subtree_control").write_text("-hugetlb")
            except OSError:
                pass
        left = [p for p in (unified + cg, f"/sys/fs/cgroup/memory{cg}") if os.path.exists(p)]
        assert not left, f"left behind: {left}"


MISSING = ("cove-runtime: linux.resources.{knob}: the {ctrl} controller is not available "
           "(not in /sys/fs/cgroup/cgroup.controllers)")


def _limits(b: Booted, ctrls: set[str], scope: str, unit: str) -> None:
    """The limits systemd has properties for, where their controllers are (in the VM):
    the properties, the files, an update of both, and systemd's reload keeping them."""
    if not {"memory", "pids", "cpu"} <= ctrls:
        # an update whose controller is missing: one line, the property as it was
        r = b.sh(f"{RT} update --memory {64 << 20} t1", check=False)
        assert r.returncode != 0 and r.stderr.strip() == MISSING.format(
            knob="memory.limit", ctrl="memory"), r.stderr
        assert b.show(unit, "MemoryMax") == {"MemoryMax": "infinity"}
        return
    props = b.show(unit, "MemoryMax", "TasksMax", "CPUWeight", "CPUQuotaPerSecUSec")
    assert props == {"MemoryMax": str(64 << 20), "TasksMax": "50", "CPUWeight": "20",
                     "CPUQuotaPerSecUSec": "250ms"}, props
    files = f"cd {scope} && cat memory.max pids.max cpu.weight cpu.max"
    assert b.sh(files).stdout.split("\n") == [str(64 << 20), "50", "20", "25000 100000", ""]
    b.sh(f"{RT} update --memory {128 << 20} --pids-limit 70 t1")
    props = b.show(unit, "MemoryMax", "TasksMax")
    assert props == {"MemoryMax": str(128 << 20), "TasksMax": "70"}, props
    b.sh("systemctl daemon-reload")
    assert b.sh(files).stdout.split("\n") == [str(128 << 20), "70", "20", "25000 100000", ""]


def _hugetlb(b: Booted, scope: str) -> None:
    """hugetlb (no systemd property): the driver's own files, enabled in the slice's
    subtree_control by the driver and kept by systemd across a reload; `update`."""
    knob = f"{scope}/hugetlb.{HUGE}.max"
    assert b.sh(f"cat {knob}").stdout.strip() == str(4 << 20)
    b.sh("systemctl daemon-reload")
    assert "hugetlb" in b.sh("cat /sys/fs/cgroup/system.slice/cgroup.subtree_control"
                             ).stdout.split()
    assert b.sh(f"cat {knob}").stdout.strip() == str(4 << 20)
    new = json.dumps({"hugepageLimits": [{"pageSize": HUGE, "limit": 8 << 20}]})
    b.sh(f"echo {shlex.quote(new)} | {RT} update --resources - t1")
    assert b.sh(f"cat {knob}").stdout.strip() == str(8 << 20)


def _bad_input(b: Booted, ctrls: set[str]) -> None:
    """Each one line, and nothing left."""
    if "memory" not in ctrls:
        b.bundle("b3", "system.slice:cove:t3", {"memory": {"limit": 64 << 20}})
        r = b.create("b3", "t3", check=False)
        assert r.returncode != 0 and r.stderr.strip() == MISSING.format(
            knob="memory.limit", ctrl="memory"), r.stderr
    if "pids" not in ctrls:
        b.bundle("b4", "system.slice:cove:t4", {"unified": {"pids.max": "10"}})
        r = b.create("b4", "t4", check=False)
        assert r.returncode != 0 and r.stderr.strip() == MISSING.format(
            knob="unified.pids.max", ctrl="pids"), r.stderr
    # systemd refuses a property (Slice= an instance name): its line, and no unit, and
    # no slice directory left (the driver made it before asking)
    b.bundle("b6", "a@b.slice:cove:t4", {})
    r = b.create("b6", "t4", check=False)
    assert r.returncode != 0 and r.stderr.strip() == (
        "cove-runtime: systemd unit cove-t4.scope: systemd refused it: Invalid unit "
        "name 'a@b.slice'"), r.stderr
    assert b.sh("test -e /sys/fs/cgroup/a@b.slice || echo gone").stdout.strip() == "gone"
    b.bundle("b5", "/not/systemd/form", {})
    r = b.create("b5", "t5", check=False)
    assert r.returncode != 0 and r.stderr.strip() == (
        "cove-runtime: cgroupsPath: expected slice:prefix:name for systemd, got "
        "'/not/systemd/form'"), r.stderr
    r = b.create("b2", "t6", check=False, prefix=(
        "unshare -m sh -c 'mount -t tmpfs none /run/dbus && "
        "mount --bind /dev/null /run/systemd/private && exec \"$0\" \"$@\"' "))
    assert r.returncode != 0 and r.stderr.strip().startswith(
        "cove-runtime: --systemd-cgroup: no D-Bus connection to systemd"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    left = b.sh("systemctl list-units --all --no-legend --plain 'cove-*'; "
                "ls /run/cove-rt | grep -v seccomp-cache; "
                "ls -d /sys/fs/cgroup/system.slice/cove-* 2>/dev/null", check=False).stdout
    assert left.strip() == "", left


def _system_bus(b: Booted) -> None:
    """Through dbus-daemon's system bus (the private socket hidden): the job's end comes
    only to a client that subscribed (it once waited out the 30 s timeout)."""
    hide = ("unshare -m sh -c 'mount --bind /dev/null /run/systemd/private && "
            "exec \"$0\" \"$@\"' ")
    b.bundle("b7", "system.slice:cove:t7", {})
    b.create("b7", "t7", prefix=f"timeout 20 {hide}")
    assert b.show("cove-t7.scope", "ActiveState") == {"ActiveState": "active"}
    b.sh(f"timeout 20 {hide}{RT} delete --force t7")
    assert b.show("cove-t7.scope", "LoadState") == {"LoadState": "not-found"}


def test_scope_on_v2(booted: Booted) -> None:
    b = booted
    ctrls = set(b.sh("cat /sys/fs/cgroup/cgroup.controllers").stdout.split())
    res: dict[str, Any] = {}
    if "hugetlb" in ctrls:
        res["hugepageLimits"] = [{"pageSize": HUGE, "limit": 4 << 20}]
    if {"memory", "pids", "cpu"} <= ctrls:
        res.update({"memory": {"limit": 64 << 20}, "pids": {"limit": 50},
                    "cpu": {"shares": 512, "quota": 25000, "period": 100000}})
    b.bundle("b1", "system.slice:cove:t1", res)
    t0 = time.monotonic()
    b.create("b1", "t1")
    created = time.monotonic() - t0
    b.sh(f"{RT} start t1")
    unit = "cove-t1.scope"
    props = b.show(unit, "ActiveState", "Slice", "Delegate", "ControlGroup", "IOAccounting",
                   "BlockIOAccounting", "DevicePolicy")
    assert props["ActiveState"] == "active" and props["Slice"] == "system.slice", props
    assert props["Delegate"] == "yes" and props["DevicePolicy"] == "strict", props
    assert props["ControlGroup"] == f"/system.slice/{unit}", props
    # the v2 accounting switch: the driver saw a unified host
    assert props["IOAccounting"] == "yes" and props["BlockIOAccounting"] == "no", props
    pid = json.loads(b.sh(f"{RT} state t1").stdout)["pid"]
    assert b.sh(f"tail -1 /proc/{pid}/cgroup").stdout.strip() == f"0::/system.slice/{unit}"
    # `exec` joins the scope (no second unit asked for); the device rules hold (eBPF:
    # 1:1 denied); its cgroup namespace's root is the scope (else "0::/../..." shows)
    r = b.sh(f"{RT} exec --cap CAP_MKNOD t1 sh -c 'cat /proc/self/cgroup; echo x >/dev/null"
             " && echo null-ok; mknod /dev/m c 1 1 && head -c1 /dev/m'", check=False)
    assert "\n0::/\n" in f"\n{r.stdout}" and "null-ok" in r.stdout, r.stdout
    assert "Operation not permitted" in r.stderr, r.stderr
    scope = f"/sys/fs/cgroup/system.slice/{unit}"
    _limits(b, ctrls, scope, unit)
    if "hugetlb" in ctrls:
        _hugetlb(b, scope)
    # a unit that exists: one line, the other container untouched
    b.bundle("b2", "system.slice:cove:t1", {})
    r = b.create("b2", "t2", check=False)
    assert r.returncode != 0 and r.stderr.strip() == \
        "cove-runtime: systemd unit cove-t1.scope: already exists", r.stderr
    assert b.show(unit, "ActiveState") == {"ActiveState": "active"}
    t0 = time.monotonic()
    b.sh(f"{RT} delete --force t1")
    deleted = time.monotonic() - t0
    r = b.sh(f"systemctl status {unit}", check=False)
    assert r.returncode == 4 and "could not be found" in r.stderr, r.stdout + r.stderr
    assert b.sh(f"test -e {scope} || echo gone").stdout.strip() == "gone"
    print(f"controllers: {' '.join(sorted(ctrls)) or 'none'}; create {created * 1000:.0f} "
          f"ms, delete --force {deleted * 1000:.0f} ms (with nsenter's own cost)")
    _system_bus(b)
    _bad_input(b, ctrls)
