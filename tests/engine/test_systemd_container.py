"""`cove run --systemd`: a Debian bookworm image with systemd (debootstrap
--variant=minbase --include=systemd,systemd-sysv,dbus, built once and cached beside the
plain Debian image of tests/lib/debian.py) boots to `systemctl is-system-running`
running (or degraded, naming the failed units), runs a service of the test's own that
writes to the journal, answers `cove exec NAME systemctl ...`, and stops on `cove stop`
(SIGRTMIN+3) within 10 s with exit status 0 and nothing left: no processes, mounts,
runtime state or cgroup. And the bad input: `--systemd=always` on an image without
systemd, a bad mode.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.engine.systemd import is_systemd_command, parse_mode, wanted
from cove.errors import CoveError
from cove.image.assemble import build_image
from cove.image.store import Store
from cove.oci.image import ContainerConfig
from tests.lib.debian import PATH_ENV, Unavailable, systemd_rootfs
from tests.lib.engine import Cove

IMAGE = "cove-test/debian-systemd"
UNIT = """[Unit]
Description=A service of the test's own

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo cove-hello-from-unit'

[Install]
WantedBy=multi-user.target
"""


def test_modes() -> None:
    assert parse_mode("true") == "true" and parse_mode(None) == "false"
    assert parse_mode("ALWAYS") == "always"
    with pytest.raises(CoveError, match="expected true, false or always"):
        parse_mode("sometimes")
    assert is_systemd_command(["/sbin/init"])
    assert is_systemd_command(["/lib/systemd/systemd", "--log-level=debug"])
    assert is_systemd_command(["/bin/sh", "-c", "/usr/sbin/init"])
    assert not is_systemd_command(["sh", "-c", "init"]) and not is_systemd_command([])
    assert wanted("always", ["bash"]) and not wanted("true", ["bash"])
    assert not wanted("false", ["/sbin/init"])


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The rootfs as one layer, and a layer with the test's unit, enabled."""
    try:
        root = systemd_rootfs()
    except Unavailable as e:
        pytest.skip(f"no Debian image with systemd: {e}")
    out = tmp_path_factory.mktemp("systemd-layers")
    base = out / "base.tar"
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", root,
                    "-cf", str(base), "."], check=True, timeout=600)
    unit = out / "unit"
    (unit / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (unit / "etc/systemd/system/cove-hello.service").write_text(UNIT)
    (unit / "etc/systemd/system/multi-user.target.wants/cove-hello.service").symlink_to(
        "/etc/systemd/system/cove-hello.service")
    top = out / "unit.tar"
    with tarfile.open(top, "w") as t:
        t.add(unit, arcname=".")
    return [str(base), str(top)]


@pytest.fixture
def sd(cove: Cove, layers: list[str]) -> Iterator[Cove]:
    build_image(Store(cove.root), layers, ContainerConfig(cmd=["/sbin/init"], env=[PATH_ENV]),
                names=(IMAGE,), compression="none", unpack=False)
    yield cove


def _cgroup_dirs(name: str) -> list[str]:
    return [d for d in (f"/sys/fs/cgroup/systemd/cove/{name}", f"/sys/fs/cgroup/memory/cove/"
                        f"{name}", f"/sys/fs/cgroup/unified/cove/{name}") if os.path.isdir(d)]


def _wait_booted(sd: Cove, name: str) -> subprocess.CompletedProcess[str]:
    """`systemctl is-system-running --wait`, once systemd's bus socket is there (an
    exec that comes before it fails at once with "Failed to connect to bus": seen on a
    loaded host)."""
    deadline = time.monotonic() + 60
    while True:
        r = sd("exec", name, "systemctl", "is-system-running", "--wait", check=False,
               timeout=90)
        if "Failed to connect to bus" not in r.stderr or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_systemd_container_boots_and_stops(sd: Cove) -> None:
    name = "sd-boot"
    t0 = time.monotonic()
    sd("run", "-d", "--network", "none", "--systemd=true", "--name", name, IMAGE)
    r = _wait_booted(sd, name)
    booted = time.monotonic() - t0
    state = r.stdout.strip()
    failed = sd("exec", name, "systemctl", "--failed", "--no-legend", "--plain",
                check=False).stdout
    assert state in ("running", "degraded"), f"{state}: {r.stderr}; failed: {failed}"
    if state == "degraded":
        print(f"degraded: failed units: {failed}")
    print(f"booted to {state} in {booted:.2f}s")
    # the test's own service ran, and its output is in the journal
    assert sd("exec", name, "systemctl", "is-active", "cove-hello").stdout.strip() == "active"
    j = sd("exec", name, "journalctl", "-u", "cove-hello", "--no-pager", "-o", "cat").stdout
    assert "cove-hello-from-unit" in j
    # systemctl drives units
    sd("exec", name, "systemctl", "stop", "cove-hello")
    r = sd("exec", name, "systemctl", "is-active", "cove-hello", check=False)
    assert r.stdout.strip() == "inactive"
    # what --systemd set up
    rec = sd("inspect", "--format", "{{.Id}} {{.Config.StopSignal}}", name).stdout.split()
    assert rec[1] == "SIGRTMIN+3"
    assert sd("exec", name, "cat", "/run/systemd/container").stdout.strip() == "cove"
    assert sd("exec", name, "cat", "/etc/machine-id").stdout.strip() == rec[0][:32]
    mounts = sd("exec", name, "cat", "/proc/self/mounts").stdout.splitlines()
    for dst in ("/run", "/run/lock", "/tmp", "/var/log/journal"):
        assert any(m.split()[1] == dst and m.split()[0] == "tmpfs" for m in mounts), dst
    if os.path.isdir("/sys/fs/cgroup/systemd"):  # v1/hybrid: the named hierarchy, rw
        assert any(m.split()[1] == "/sys/fs/cgroup/systemd" and
                   m.split()[3].startswith("rw") for m in mounts)
        assert any(m.split()[1] == "/sys/fs/cgroup/memory" and
                   m.split()[3].startswith("ro") for m in mounts)
    # cove stop: SIGRTMIN+3, a clean shutdown well within 10 s
    t0 = time.monotonic()
    sd("stop", name)
    took = time.monotonic() - t0
    assert took < 10, f"cove stop took {took:.1f}s"
    assert sd("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    assert _cgroup_dirs(name) == []
    sd("rm", name)


def test_systemd_bad_input(cove: Cove) -> None:
    r = cove("run", "--rm", "--network", "none", "--systemd=always", "busybox", "true",
             check=False)
    assert r.returncode == 125 and "the image has no systemd" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cove("run", "--rm", "--network", "none", "--systemd=maybe", "busybox", "true",
             check=False)
    assert r.returncode == 125 and "expected true, false or always" in r.stderr
    r = cove("run", "--rm", "--network", "none", "--isolation", "vm", "--systemd=true",
             "busybox", "true", check=False)
    assert r.returncode == 125 and "not with --isolation vm" in r.stderr
    # true: only for init or systemd; busybox's sh runs as ever
    r = cove("run", "--rm", "--network", "none", "--systemd=true", "busybox", "sh", "-c",
             "echo ${container:-none}")
    assert r.stdout.strip() == "none"
    assert cove("ps", "-a", "-q").stdout.strip() == ""


def test_systemd_console_is_the_log(sd: Cove) -> None:
    """Without -t, /dev/console is a pty the runtime relays into the log: systemd's
    boot lines show in `cove logs` (podman's behaviour),
    and the relay goes with the container."""
    name = "sd-console"
    sd("run", "-d", "--network", "none", "--systemd=always", "--name", name, IMAGE,
       "/lib/systemd/systemd")
    r = _wait_booted(sd, name)
    assert r.stdout.strip() in ("running", "degraded"), \
        r.stdout + r.stderr + sd("logs", name).stdout + sd("ps", "-a").stdout
    assert sd("exec", name, "test", "-c", "/dev/console", check=False).returncode == 0
    logs = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "Reached target" not in logs:
        logs = sd("logs", name).stdout
        time.sleep(0.2)
    assert "Welcome to" in logs and "Reached target" in logs, logs
    Path(os.environ.get("COVE_TEST_SD_LOG", "/dev/null")).write_text(repr(logs[:3000]))
    sd("stop", name)
    assert sd("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    assert _cgroup_dirs(name) == []
    sd("rm", name)
