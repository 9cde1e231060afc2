"""cove-runtime's systemd cgroup driver (`--systemd-cgroup`) against a real systemd.

The host has no systemd as pid 1, so the test boots one: a `cove run --systemd=always
--privileged` container of the cached Debian bookworm image with systemd
(tests/engine/test_systemd_container.py builds it), with the host's /usr (same Debian:
Python, podman) and the repository bound in read-only. cove-runtime runs inside it
(`cove exec`), with --systemd-cgroup, and talks to that systemd over its private
socket: create/start/update/delete of a busybox bundle, checked with systemctl and
the scope's cgroup files; then the bad input. --privileged makes the container's
cgroup hierarchies writable, so systemd manages the memory, cpu and pids
controllers for the scope (legacy mode on this v1/hybrid host).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.image.store import Store
from cove.image.transfer import build_image
from cove.oci.image import ContainerConfig
from tests.lib.bundles import base_config, make_bundle
from tests.lib.engine import Cove
from tests.lib.paths import REPO

IMAGE = "cove-test/debian-systemd-driver"
NAME = "sd-driver"
RT = f"{REPO}/.venv/bin/cove-runtime"


@pytest.fixture
def booted(cove: Cove, tmp_path: Path) -> Iterator[Cove]:
    """A running systemd container (booted to running or degraded) named NAME."""
    from tests.lib.debian import PATH_ENV, Unavailable, systemd_rootfs

    try:
        root = systemd_rootfs()
    except Unavailable as e:
        pytest.skip(f"no Debian image with systemd: {e}")
    base = tmp_path / "base.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", root, "-cf", str(base), "."],
                   check=True, timeout=600)
    build_image(Store(cove.root), [str(base)],
                ContainerConfig(cmd=["/lib/systemd/systemd"], env=[PATH_ENV]),
                names=(IMAGE,), compression="none", unpack=False)
    base.unlink()
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    cove("run", "-d", "--network", "none", "--systemd=always", "--privileged",
         "--name", NAME, "-v", "/usr:/usr:ro", "-v", f"{REPO}:{REPO}:ro",
         "-v", f"{bundles}:/bundles:ro", IMAGE)
    deadline = time.monotonic() + 60
    while True:
        r = cove("exec", NAME, "systemctl", "is-system-running", "--wait", check=False,
                 timeout=90)
        # "offline": no /run/systemd/system yet (systemd still starting: seen under TCG)
        if (("Failed to connect to bus" not in r.stderr and r.stdout.strip() != "offline")
                or time.monotonic() > deadline):
            break
        time.sleep(0.1)
    assert r.stdout.strip() in ("running", "degraded"), r.stdout + r.stderr
    yield cove
    cove("rm", "-f", NAME, check=False)


def _sh(c: Cove, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return c("exec", NAME, "sh", "-c", script, check=check, timeout=60)


def _rt(c: Cove, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return c("exec", NAME, RT, "--systemd-cgroup", "--root", "/run/cove-rt", *args,
             check=check, timeout=60)


def _create(c: Cove, bundle: str, cid: str, check: bool = True,
            prefix: str = "") -> subprocess.CompletedProcess[str]:
    """`create`, its output not to `cove exec`'s pipes (init keeps its stdout open)."""
    return _sh(c, f"{prefix}{RT} --systemd-cgroup --root /run/cove-rt create --bundle "
               f"/bundles/{bundle} {cid} </dev/null >/dev/null 2>/tmp/err; rc=$?; "
               "[ -n \"$t0\" ] && echo $((($(date +%s%N) - t0) / 1000000)) >/tmp/create-ms; "
               "cat /tmp/err >&2; exit $rc", check=check)


def _show(c: Cove, unit: str, *props: str) -> dict[str, str]:
    out = c("exec", NAME, "systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_scope_lifecycle_and_bad_input(booted: Cove, tmp_path: Path) -> None:
    c = booted
    cfg = base_config(["sleep", "1000"])
    cfg["root"]["readonly"] = True
    cfg["linux"]["cgroupsPath"] = "system.slice:cove:t1"
    cfg["linux"]["resources"].update({
        "memory": {"limit": 64 << 20}, "pids": {"limit": 50},
        "cpu": {"shares": 512, "quota": 25000, "period": 100000}})
    make_bundle(tmp_path / "bundles", cfg, "b1")
    # timed inside the container, without `cove exec`'s own cost
    _create(c, "b1", "t1", prefix="t0=$(date +%s%N); ")
    created = float(_sh(c, "cat /tmp/create-ms").stdout)
    _rt(c, "start", "t1")
    unit = "cove-t1.scope"
    props = _show(c, unit, "ActiveState", "Slice", "Delegate", "MemoryLimit", "TasksMax",
                  "CPUShares", "CPUQuotaPerSecUSec", "ControlGroup", "Description")
    assert props["ActiveState"] == "active", props
    assert props["Slice"] == "system.slice" and props["Delegate"] == "yes", props
    assert props["MemoryLimit"] == str(64 << 20) and props["TasksMax"] == "50", props
    assert props["CPUShares"] == "512" and props["CPUQuotaPerSecUSec"] == "250ms", props
    assert props["ControlGroup"] == "/system.slice/cove-t1.scope", props
    status = c("exec", NAME, "systemctl", "status", "--no-pager", unit).stdout
    assert "sleep 1000" in status, status
    # the limits in the scope's cgroup, and init in it
    cg = "/sys/fs/cgroup/memory/system.slice/cove-t1.scope"
    assert _sh(c, f"cat {cg}/memory.limit_in_bytes").stdout.strip() == str(64 << 20)
    pid = json.loads(_rt(c, "state", "t1").stdout)["pid"]
    assert f"/system.slice/{unit}" in _sh(c, f"cat /proc/{pid}/cgroup").stdout
    devs = f"sort /sys/fs/cgroup/devices/system.slice/{unit}/devices.list"
    before = _sh(c, devs).stdout
    assert "c 1:3 rwm" in before and "a *:* rwm" not in before, before
    # exec joins the scope (it asked systemd for a second unit once: "already exists")
    r = _rt(c, "exec", "t1", "cat", "/proc/self/cgroup")
    assert "memory:/\n" in r.stdout, r.stdout  # its cgroup namespace's root: the scope
    # update: systemd's property and the file
    _rt(c, "update", "--memory", str(128 << 20), "--pids-limit", "70", "t1")
    props = _show(c, unit, "MemoryLimit", "TasksMax")
    assert props == {"MemoryLimit": str(128 << 20), "TasksMax": "70"}, props
    assert _sh(c, f"cat {cg}/memory.limit_in_bytes").stdout.strip() == str(128 << 20)
    # the device rules survive systemd's own look at the unit (DevicePolicy=strict and
    # DeviceAllow: without them it writes `a *:* rwm` on an update or a reload)
    assert _sh(c, devs).stdout == before
    _sh(c, "systemctl daemon-reload")
    assert _sh(c, devs).stdout == before
    # a unit that already exists: one line, the other container untouched
    make_bundle(tmp_path / "bundles", cfg, "b2")
    r = _create(c, "b2", "t2", check=False)
    assert r.returncode != 0 and r.stderr.strip() == \
        "cove-runtime: systemd unit cove-t1.scope: already exists", r.stderr
    assert _show(c, unit, "ActiveState")["ActiveState"] == "active"
    # delete: nothing left
    deleted = float(_sh(c, f"t0=$(date +%s%N); {RT} --systemd-cgroup --root /run/cove-rt "
                           "delete --force t1; echo $((($(date +%s%N) - t0) / 1000000))"
                        ).stdout)
    r = c("exec", NAME, "systemctl", "status", unit, check=False)
    assert r.returncode == 4 and "could not be found" in r.stderr, r.stdout + r.stderr
    assert _sh(c, f"test -e {cg} || echo gone").stdout.strip() == "gone"
    print(f"create {created:.0f} ms, delete --force {deleted:.0f} ms (in the container)")

    # bad input, each one line and nothing left
    cfg2 = dict(cfg, linux=dict(cfg["linux"], cgroupsPath="/not/systemd/form"))
    make_bundle(tmp_path / "bundles", cfg2, "b3")
    r = _create(c, "b3", "t3", check=False)
    assert r.returncode != 0 and r.stderr.strip() == (
        "cove-runtime: cgroupsPath: expected slice:prefix:name for systemd, got "
        "'/not/systemd/form'"), r.stderr
    # systemd refuses a property (CPUShares is 2..262144 for it): one line, no unit
    cfg4 = json.loads(json.dumps(cfg))
    cfg4["linux"]["cgroupsPath"] = "system.slice:cove:t4"
    cfg4["linux"]["resources"]["cpu"]["shares"] = 1
    make_bundle(tmp_path / "bundles", cfg4, "b4")
    r = _create(c, "b4", "t4", check=False)
    assert r.returncode != 0 and r.stderr.strip().startswith(
        "cove-runtime: systemd unit cove-t4.scope: systemd refused it: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # a slice name that is no slice
    cfg5 = dict(cfg, linux=dict(cfg["linux"], cgroupsPath="bad.service:cove:t5"))
    make_bundle(tmp_path / "bundles", cfg5, "b5")
    r = _create(c, "b5", "t5", check=False)
    assert r.returncode != 0 and r.stderr.strip() == \
        "cove-runtime: cgroupsPath: invalid slice name 'bad.service'", r.stderr
    # no D-Bus: the private socket and the bus out of reach (a mount namespace of
    # its own with /run/systemd/private and /run/dbus hidden)
    r = _create(c, "b2", "t5", check=False, prefix=(
        "unshare -m sh -c 'mount -t tmpfs none /run/dbus && "
        "mount --bind /dev/null /run/systemd/private && exec \"$0\" \"$@\"' "))
    assert r.returncode != 0 and r.stderr.strip().startswith(
        "cove-runtime: --systemd-cgroup: no D-Bus connection to systemd"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    left = _sh(c, "systemctl list-units --all --no-legend --plain 'cove-*'; "
               "ls /run/cove-rt | grep -v seccomp-cache; "
               "ls -d /sys/fs/cgroup/*/system.slice/cove-* 2>/dev/null",
               check=False).stdout
    assert left.strip() == "", left


def test_no_systemd_here(tmp_path: Path) -> None:
    """On this host (pid 1 is no systemd): one line saying so."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here")
    b = make_bundle(tmp_path, base_config(["true"]))
    r = subprocess.run([RT, "--systemd-cgroup", "--root", str(tmp_path / "rt"), "create",
                        "--bundle", str(b.path), "x"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and r.stderr.strip() == (
        "cove-runtime: --systemd-cgroup: systemd is not running on this host"), r.stderr


PODMAN = """
mkdir -p /etc/containers /tmp/pm
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > /etc/containers/policy.json
printf '[engine]\\ncgroup_manager = "systemd"\\nevents_logger = "file"\\nruntime = "cove"\\n\
[engine.runtimes]\\ncove = ["%s"]\\n' "$RT" > /tmp/pm/containers.conf
printf '[storage]\\ndriver = "vfs"\\nrunroot = "/tmp/pm/run"\\ngraphroot = "/tmp/pm/graph"\\n' \
  > /tmp/pm/storage.conf
export CONTAINERS_CONF=/tmp/pm/containers.conf CONTAINERS_STORAGE_CONF=/tmp/pm/storage.conf
tar -C /bundles/bb/rootfs -c . | podman import -q - localhost/bb >/dev/null
podman run --rm --network none --memory 100m localhost/bb \
  sh -c 'grep memory /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes'
ID=$(podman run -d --network none --memory 100m localhost/bb sleep 1000)
systemctl show libpod-$ID.scope -p MemoryLimit -p Delegate -p Slice
podman update --memory 200m $ID >/dev/null
systemctl show libpod-$ID.scope -p MemoryLimit
podman rm -f -t 0 $ID >/dev/null
# the runtime's scopes (conmon's own, libpod-conmon-*, are podman's: they go once its
# cleanup has run, which takes a while on a loaded host)
for i in $(seq 100); do
  [ -z "$(systemctl list-units --all --no-legend --plain 'libpod-*' | grep -v conmon)" ] &&
    break
  sleep 0.1
done
echo left: $(systemctl list-units --all --no-legend --plain 'libpod-*' | grep -v conmon)
"""


CONTAINERD = """
mkdir -p /tmp/ctd
printf 'version = 2\\nroot = "/tmp/ctd/root"\\nstate = "/tmp/ctd/state"\\n' > /tmp/ctd/config.toml
printf '[grpc]\\naddress = "/tmp/ctd/sock"\\n' >> /tmp/ctd/config.toml
containerd --config /tmp/ctd/config.toml >/tmp/ctd/log 2>&1 &
CTD=$!
for i in $(seq 100); do [ -S /tmp/ctd/sock ] && break; sleep 0.1; done
C="ctr --address /tmp/ctd/sock"
$C images import --snapshotter native /bundles/bb.tar >/dev/null
REF=$($C images ls -q | head -1)
$C run -d --snapshotter native --runc-binary $RT --runc-systemd-cgroup \
  --cgroup system.slice:ctr:c2 --memory-limit 104857600 $REF c2 sleep 1000 >/dev/null
systemctl show ctr-c2.scope -p MemoryLimit -p Delegate -p ActiveState
$C task kill -s 9 c2; sleep 0.5; $C task rm c2 >/dev/null; $C c rm c2
echo left: $(systemctl list-units --all --no-legend --plain 'ctr-*')
kill $CTD; wait $CTD
"""


def test_podman_and_containerd_with_systemd_cgroups(booted: Cove, tmp_path: Path) -> None:
    """podman 4 (cgroup_manager = "systemd", runtime cove-runtime) and containerd's
    runc shim (`ctr run --runc-systemd-cgroup`, what `SystemdCgroup = true` sets) in
    the systemd container: they pass --systemd-cgroup and `slice:prefix:ID`."""
    from tests.lib.peers import docker_archive

    for binary in ("podman", "containerd", "ctr"):
        if not os.path.exists(f"/usr/bin/{binary}"):
            pytest.skip(f"{binary} is not installed")
    b = make_bundle(tmp_path / "bundles", base_config(), "bb")
    docker_archive(str(b.rootfs), str(tmp_path / "bundles" / "bb.tar"))
    r = booted("exec", "-e", f"RT={RT}", NAME, "sh", "-c", PODMAN, timeout=120)
    out = r.stdout.split("\n")
    assert out[0].startswith("4:memory:/machine.slice/libpod-"), r.stdout
    assert out[1] == str(100 << 20), r.stdout
    assert sorted(out[2:5]) == ["Delegate=yes", "MemoryLimit=104857600",
                                "Slice=machine.slice"], r.stdout
    assert out[5:] == ["MemoryLimit=209715200", "left:", ""], r.stdout
    r = booted("exec", "-e", f"RT={RT}", NAME, "sh", "-c", CONTAINERD, timeout=120)
    out = r.stdout.split("\n")
    assert sorted(out[:3]) == ["ActiveState=active", "Delegate=yes",
                               "MemoryLimit=104857600"], r.stdout + r.stderr
    assert out[3:] == ["left:", ""], r.stdout + r.stderr
