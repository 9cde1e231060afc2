"""`cove run`'s docker flags, each checked from inside a real container: --privileged,
--ulimit, --sysctl, --shm-size, --tmpfs options, the cgroup knobs, --cgroup-parent,
--ipc/--pid/--uts, --init, --device, --group-add, --add-host/--dns*, labels, stop
signal and timeout, --cidfile, --entrypoint '', -a, --sig-proxy=false, -P/--expose;
docker's exit statuses (125, 126, 127); anonymous volumes and copy-up into new named
volumes; `network connect/disconnect/prune/ls`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lib.engine import Cove
from tests.lib.paths import RUNTIME
from tests.lib.wait import wait_for

NONE = ("run", "--rm", "--network", "none")


def _inspect(cove: Cove, name: str) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(cove("inspect", name).stdout)[0]
    return rec


def _containers(cove: Cove) -> list[str]:
    d = Path(cove.root, "containers")
    return sorted(os.listdir(d)) if d.is_dir() else []


def _cap_bnd() -> int:
    """This process's bounding set: what `--cap-add ALL` (and --privileged) can give."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapBnd:"))


def test_exit_statuses_as_docker(cove: Cove) -> None:
    r = cove(*NONE, "busybox", "nosuchcmd", check=False)
    assert r.returncode == 127
    assert r.stderr.startswith("cove: ") and r.stderr.count("\n") == 1
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in r.stderr
    r = cove(*NONE, "busybox", "/nonexistent", check=False)
    assert r.returncode == 127 and "stat /nonexistent: no such file or directory" in r.stderr
    r = cove(*NONE, "busybox", "/etc", check=False)
    assert r.returncode == 126 and 'exec: "/etc": is a directory' in r.stderr
    r = cove(*NONE, "busybox", "/etc/passwd", check=False)
    assert r.returncode == 126 and 'exec: "/etc/passwd": permission denied' in r.stderr
    # cove itself fails before the container runs: 125, one line
    for args in (("run", "--no-such-flag", "busybox", "true"),
                 ("run", "--memory"),
                 ("run", "--network", "none", "--pull", "never", "nosuch:1", "true"),
                 (*NONE, "--ulimit", "nofile=9:8", "busybox", "true"),
                 (*NONE, "--stop-signal", "NOPE", "busybox", "true")):
        r = cove(*args, check=False)
        assert r.returncode == 125, (args, r)
        assert r.stderr.startswith("cove: ") and r.stderr.count("\n") == 1, r.stderr
    assert "no such image" in cove("run", "--pull", "never", "nosuch:1", check=False).stderr
    # the container's own status passes through
    assert cove(*NONE, "busybox", "sh", "-c", "exit 3", check=False).returncode == 3
    assert _containers(cove) == []


def test_privileged(cove: Cove) -> None:
    probe = "grep -E '^(CapEff|Seccomp):' /proc/self/status; grep ' /sys ' /proc/mounts; " \
            "ls /dev | wc -l"
    plain = cove(*NONE, "busybox", "sh", "-c", probe).stdout.split("\n")
    priv = cove(*NONE, "--privileged", "busybox", "sh", "-c", probe).stdout.split("\n")
    assert int(priv[0].split()[1], 16) == _cap_bnd()    # every capability cove holds
    assert int(plain[0].split()[1], 16) == 0xa80425fb   # docker's 14
    assert priv[1].split() == ["Seccomp:", "0"] and plain[1].split() == ["Seccomp:", "2"]
    assert priv[2].split()[3].startswith("rw,") and plain[2].split()[3].startswith("ro,")
    assert int(priv[3]) > int(plain[3])                 # the host's devices
    # a privileged container may mount (every capability, no seccomp)
    r = cove(*NONE, "--privileged", "busybox", "sh", "-c",
             "mkdir /m && mount -t tmpfs t /m && echo mounted")
    assert r.stdout == "mounted\n"


def test_limits_and_kernel_settings(cove: Cove) -> None:
    r = cove(*NONE, "--ulimit", "nofile=1024:2048", "--ulimit", "nproc=500",
             "busybox", "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u")
    assert r.stdout == "1024\n2048\n500\n"
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if _cap_bnd() >> 24 & 1 == 0 and hard != resource.RLIM_INFINITY:
        # this host's engine lacks CAP_SYS_RESOURCE: a hard limit above ours can't be
        # set, and the error says so, before anything is made
        r = cove(*NONE, "--ulimit", f"nofile=1024:{hard + 1}", "busybox", "true",
                 check=False)
        assert r.returncode == 125 and "CAP_SYS_RESOURCE" in r.stderr
        assert f"above this host's {hard}" in r.stderr
    r = cove(*NONE, "--sysctl", "kernel.shmmax=100000", "--sysctl", "net.ipv4.ip_forward=1",
             "busybox", "cat", "/proc/sys/kernel/shmmax", "/proc/sys/net/ipv4/ip_forward")
    assert r.stdout == "100000\n1\n"
    r = cove(*NONE, "--sysctl", "kernel.panic=1", "busybox", "true", check=False)
    assert r.returncode == 125 and "is not allowed" in r.stderr
    r = cove("run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_forward=1",
             "busybox", "true", check=False)
    assert r.returncode == 125 and "host network namespace" in r.stderr
    r = cove(*NONE, "--shm-size", "128m", "--tmpfs", "/x:size=10m,mode=1770",
             "--tmpfs", "/y:exec", "busybox", "sh", "-c",
             "grep -E ' /dev/shm | /x | /y ' /proc/mounts; stat -c %a /x")
    mounts = {ln.split()[1]: ln.split()[3].split(",") for ln in r.stdout.splitlines()[:3]}
    assert "size=131072k" in mounts["/dev/shm"]
    assert "size=10240k" in mounts["/x"] and "noexec" in mounts["/x"]  # options kept
    assert "noexec" not in mounts["/y"] and "nosuid" in mounts["/y"]
    assert r.stdout.splitlines()[3] == "1770"
    r = cove(*NONE, "--tmpfs", "/x:sise=1m", "busybox", "true", check=False)
    assert r.returncode == 125 and "unknown tmpfs option 'sise=1m'" in r.stderr


def test_cgroup_knobs(cove: Cove) -> None:
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("cgroup v1 memory controller not mounted here")
    parent = f"cove-test-parent-{os.getpid()}"
    cg = "/sys/fs/cgroup"
    try:
        r = cove(*NONE, "--cpuset-cpus", "0", "--cpu-shares", "512", "-m", "64m",
                 "--memory-swap", "128m", "--memory-reservation", "32m",
                 "--oom-kill-disable", "--cgroup-parent", f"/{parent}", "busybox", "sh",
                 "-c", f"cat {cg}/cpuset/cpuset.cpus {cg}/cpu/cpu.shares "
                       f"{cg}/memory/memory.memsw.limit_in_bytes "
                       f"{cg}/memory/memory.soft_limit_in_bytes; "
                       f"grep oom_kill_disable {cg}/memory/memory.oom_control; "
                       f"ls -d {cg}/memory/{parent}* 2>/dev/null; true")
        assert r.stdout.splitlines()[:5] == ["0", "512", str(128 << 20), str(32 << 20),
                                             "oom_kill_disable 1"]
        # under the parent while it ran (the host's view)
        cid_dirs = [d for d in os.listdir(f"{cg}/memory/{parent}") if len(d) == 64]
        assert cid_dirs == []  # gone with the container
    finally:
        for ctl in os.listdir(cg):
            if os.path.isdir(f"{cg}/{ctl}/{parent}"):
                os.rmdir(f"{cg}/{ctl}/{parent}")
    for args, says in ((("--memory-swap", "128m"), "set the memory limit"),
                       (("-m", "64m", "--memory-swap", "32m"), "larger than memory"),
                       (("-m", "32m", "--memory-reservation", "64m"), "reservation"),
                       (("--cpuset-cpus", "999"), "not available"),
                       (("--cgroup-parent", "../x"), "'..'")):
        r = cove(*NONE, *args, "busybox", "true", check=False)
        assert r.returncode == 125 and says in r.stderr, (args, r.stderr)


def test_namespaces(cove: Cove) -> None:
    r = cove(*NONE, "--pid", "host", "busybox", "cat", "/proc/1/comm")
    with open("/proc/1/comm") as f:
        assert r.stdout == f.read()
    r = cove(*NONE, "--uts", "host", "busybox", "hostname")
    assert r.stdout.strip() == os.uname().nodename
    r = cove(*NONE, "--uts", "host", "--hostname", "x", "busybox", "true", check=False)
    assert r.returncode == 125 and "conflicting options" in r.stderr
    r = cove(*NONE, "--ipc", "none", "busybox", "sh", "-c", "grep -c ' /dev/shm ' "
             "/proc/mounts", check=False)
    assert r.stdout == "0\n"
    cove("run", "-d", "--name", "owner", "--network", "none", "--ipc", "shareable",
         "busybox", "sleep", "1000")
    want = cove("exec", "owner", "readlink", "/proc/self/ns/ipc").stdout
    r = cove(*NONE, "--ipc", "container:owner", "--pid", "container:owner", "busybox",
             "sh", "-c", "readlink /proc/self/ns/ipc; cat /proc/1/comm")
    assert r.stdout == want + "sleep\n"
    cove("rm", "-f", "owner")
    r = cove(*NONE, "--pid", "container:owner", "busybox", "true", check=False)
    assert r.returncode == 125 and "no such container: owner" in r.stderr


def test_init_reaps_and_forwards_signals(cove: Cove) -> None:
    r = cove(*NONE, "--init", "busybox", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; "
             "echo; (sleep 0.1 &) ; sleep 0.3; ps -o stat,comm")
    assert r.stdout.startswith("/sbin/docker-init -- sh -c")
    assert "Z" not in [ln.split()[0] for ln in r.stdout.splitlines()[2:]]  # reaped
    cove("run", "-d", "--name", "tini", "--network", "none", "--init", "busybox", "sleep",
         "1000")
    t = time.monotonic()
    cove("stop", "-t", "20", "tini")
    # tini passes SIGTERM on to sleep, which dies of it (sleep as pid 1 would ignore it
    # and take the 20 s to SIGKILL)
    assert time.monotonic() - t < 10
    assert _inspect(cove, "tini")["State"]["ExitCode"] == 143
    r = cove(*NONE, "--init", "busybox", "sh", "-c", "touch /sbin/docker-init",
             check=False)
    assert r.returncode != 0  # bound read-only


def test_devices_groups_and_platform(cove: Cove) -> None:
    r = cove(*NONE, "--device", "/dev/null:/dev/mynull:rw", "busybox", "sh", "-c",
             "ls -l /dev/mynull | cut -c1; echo x > /dev/mynull && echo written")
    assert r.stdout == "c\nwritten\n"
    if os.path.exists("/dev/fuse"):  # (not among the devices every container gets)
        r = cove(*NONE, "--device", "/dev/fuse", "busybox", "sh", "-c",
                 "ls -l /dev/fuse | cut -c1; grep -c '^c 10:229 ' "
                 "/sys/fs/cgroup/devices/devices.list; (: >/dev/fuse) && echo opened")
        assert r.stdout == "c\n1\nopened\n"
    r = cove(*NONE, "--device", "/etc/passwd", "busybox", "true", check=False)
    assert r.returncode == 125 and "not a device node" in r.stderr
    r = cove(*NONE, "--group-add", "10", "--group-add", "daemon", "busybox", "id", "-G")
    assert set(r.stdout.split()) >= {"1", "10"}
    r = cove(*NONE, "--group-add", "nosuchgroup", "busybox", "true", check=False)
    assert r.returncode == 125 and "nosuchgroup" in r.stderr
    r = cove(*NONE, "--platform", "linux/arm64", "--pull", "never", "busybox", "true",
             check=False)
    assert r.returncode == 125 and "does not match the specified platform" in r.stderr
    assert cove(*NONE, "--platform", "linux/amd64", "busybox", "true").returncode == 0 \
        or os.uname().machine != "x86_64"


def test_etc_hostname_as_docker(cove: Cove) -> None:
    """/etc/hostname holds the container's host name (the image's said "cove"), bound
    read-only with --read-only, as /etc/hosts is; --uts host keeps the image's file."""
    r = cove(*NONE, "busybox", "sh", "-c", "cat /etc/hostname; hostname")
    name, hn = r.stdout.split()
    assert name == hn and len(hn) == 12
    assert cove(*NONE, "--hostname", "web1", "busybox", "cat", "/etc/hostname"
                ).stdout == "web1\n"
    r = cove(*NONE, "--uts", "host", "busybox", "cat", "/etc/hostname")
    assert r.stdout == "cove\n"
    r = cove(*NONE, "--read-only", "--add-host", "db:10.1.2.3", "busybox", "sh", "-c",
             "for f in hostname hosts resolv.conf; do echo x >> /etc/$f 2>/dev/null "
             "|| echo ro $f; done")
    assert r.stdout == "ro hostname\nro hosts\nro resolv.conf\n"


def test_hosts_and_dns_without_a_network(cove: Cove) -> None:
    r = cove(*NONE, "--add-host", "db:10.1.2.3", "--add-host", "gw:host-gateway",
             "--dns", "9.9.9.9", "--dns-search", "example.com", "--dns-option", "ndots:2",
             "busybox", "cat", "/etc/hosts", "/etc/resolv.conf")
    lines = r.stdout.splitlines()
    assert "127.0.0.1\tlocalhost" in lines and "10.1.2.3\tdb" in lines
    assert any(ln.endswith("\tgw") for ln in lines)
    assert lines[-3:] == ["search example.com", "nameserver 9.9.9.9", "options ndots:2"]
    r = cove(*NONE, "--add-host", "db:notanip", "busybox", "true", check=False)
    assert r.returncode == 125 and "invalid IP address in add-host" in r.stderr
    r = cove(*NONE, "--dns", "x.y", "busybox", "true", check=False)
    assert r.returncode == 125


def test_labels_stop_cidfile_entrypoint_attach(cove: Cove, tmp_path: Path) -> None:
    lf = tmp_path / "labels"
    lf.write_text("a=1\n# a comment\nb=2\n")
    cid = tmp_path / "cid"
    cove("run", "-d", "--name", "l", "--network", "none", "-l", "x=y", "--label-file",
         str(lf), "--stop-signal", "SIGUSR1", "--stop-timeout", "1", "--cidfile", str(cid),
         "busybox", "sleep", "1000")
    rec = _inspect(cove, "l")
    assert rec["Config"]["Labels"] == {"a": "1", "b": "2", "x": "y"}
    assert cid.read_text() == rec["Id"]
    r = cove("ps", "-q", "--filter", "label=x=y", check=False)
    if r.returncode == 0:  # (ps --filter is another part's)
        assert r.stdout.split() == [rec["Id"][:12]]
    # SIGUSR1 is ignored by sleep as pid 1: the 1 s timeout, then SIGKILL
    t = time.monotonic()
    cove("stop", "l")
    assert 0.8 < time.monotonic() - t < 6
    assert _inspect(cove, "l")["State"]["ExitCode"] == 137
    r = cove("run", "--network", "none", "--cidfile", str(cid), "busybox", "true",
             check=False)
    assert r.returncode == 125 and "container ID file found" in r.stderr
    cove("rm", "l")
    assert cove(*NONE, "--entrypoint", "", "busybox", "echo", "hi").stdout == "hi\n"
    r = cove(*NONE, "--entrypoint", "", "busybox", check=False)
    assert r.returncode == 125 and "no command" in r.stderr
    both = ("busybox", "sh", "-c", "echo out; echo err >&2")
    r = cove(*NONE, "-a", "stdout", *both)
    assert (r.stdout, r.stderr) == ("out\n", "")
    r = cove(*NONE, "-a", "STDERR", *both)
    assert (r.stdout, r.stderr) == ("", "err\n")
    r = cove("run", "-d", "-a", "stdout", "--network", "none", "busybox", "true",
             check=False)
    assert r.returncode == 125 and "conflicting options" in r.stderr
    assert _containers(cove) == []


def test_sig_proxy_false(cove: Cove) -> None:
    """--sig-proxy=false: a SIGTERM ends `cove run` and leaves the container running
    (with the default, the container gets it)."""
    env = {**os.environ, "COVE_RUNTIME": RUNTIME}
    p = subprocess.Popen([sys.executable, "-m", "cove.cli.main", "--root", cove.root, "run",
                          "--name", "sp", "--network", "none", "--sig-proxy=false",
                          "busybox", "sleep", "1000"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: '"running"' in cove("inspect", "sp", check=False).stdout,
                 what="sp running")
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) != 0
        assert _inspect(cove, "sp")["State"]["Status"] == "running"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        cove("rm", "-f", "sp", check=False)


def test_anonymous_volumes_and_copy_up(cove: Cove) -> None:
    def vols() -> dict[str, dict[str, str]]:
        return {v["Name"]: v["Labels"] for v in
                json.loads(cove("volume", "ls", "--format", "json").stdout)}
    # a new named volume gets the image's content (docker's copy-up); an existing,
    # non-empty one is left as it is; nocopy leaves it empty
    r = cove(*NONE, "-v", "etc:/etc", "busybox", "sh", "-c", "ls /etc; echo new > /etc/x")
    assert "passwd" in r.stdout.split()
    r = cove(*NONE, "-v", "etc:/etc", "busybox", "cat", "/etc/x")
    assert r.stdout == "new\n"
    # (but for the mount point of /etc/hostname, bound over it as docker's are)
    assert cove(*NONE, "-v", "empty:/etc:nocopy", "busybox", "ls", "/etc"
                ).stdout == "hostname\n"
    # `-v /dst`: an anonymous volume, labelled, gone with the container (--rm, rm -v)
    cove(*NONE, "-v", "/data", "busybox", "sh", "-c", "echo x > /data/f")
    assert sorted(vols()) == ["empty", "etc"]
    cove("run", "-d", "--name", "a", "--network", "none", "-v", "/data", "--mount",
         "type=volume,target=/m", "busybox", "sleep", "1000")
    rec = _inspect(cove, "a")
    assert len(rec["AnonymousVolumes"]) == 2
    assert all(vols()[v] == {"cove.anonymous": "true"} for v in rec["AnonymousVolumes"])
    cove("rm", "-f", "-v", "a")
    assert sorted(vols()) == ["empty", "etc"]
    cove("volume", "rm", "etc", "empty")


def test_expose_and_publish_all(cove: Cove, netns: str) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    c("run", "-d", "--name", "p", "-P", "--expose", "9000-9001/udp", "--expose", "80",
      "busybox", "sleep", "1000")
    rec = _inspect(c, "p")
    assert set(rec["Config"]["ExposedPorts"]) == {"9000/udp", "9001/udp", "80/tcp"}
    ports = rec["NetworkSettings"]["Ports"]
    assert set(ports) == {"9000/udp", "9001/udp", "80/tcp"}
    assert all(int(b[0]["HostPort"]) > 0 for b in ports.values())
    assert len(c("port", "p").stdout.splitlines()) == 3
    r = c("run", "--rm", "--expose", "0", "busybox", "true", check=False)
    assert r.returncode == 125 and "--expose 0" in r.stderr
    c("rm", "-f", "p")


def test_network_connect_disconnect_prune(cove: Cove, netns: str) -> None:
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    for n in ("front", "back", "spare"):
        c("network", "create", n)
    ls = c("network", "ls").stdout.splitlines()
    assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert sorted(ln.split()[1] for ln in ls[1:]) == ["back", "front", "spare"]
    assert all(ln.split()[2:] == ["bridge", "local"] for ln in ls[1:])
    c("run", "-d", "--name", "web", "--network", "front", "busybox", "sleep", "1000")
    c("run", "-d", "--name", "db", "--network", "back", "busybox", "sleep", "1000")
    back = json.loads(c("network", "inspect", "back").stdout)[0]
    want = back["Subnet"].rsplit(".", 1)[0] + ".77"
    c("network", "connect", "--ip", want, "back", "web")
    addrs = c("exec", "web", "ip", "-o", "-4", "addr").stdout
    assert f"eth1    inet {want}/" in addrs
    assert f"{want}\tweb" in c("exec", "db", "cat", "/etc/hosts").stdout
    assert c("exec", "db", "ping", "-c1", "-W2", "web").returncode == 0
    r = c("network", "connect", "back", "web", check=False)
    assert r.returncode == 1 and "already exists in network back" in r.stderr
    r = c("network", "disconnect", "front", "web", check=False)
    assert r.returncode == 1 and "created on" in r.stderr
    # a restart keeps the connection (and the address asked for)
    c("restart", "-t", "1", "web")
    assert f"inet {want}/" in c("exec", "web", "ip", "-o", "-4", "addr").stdout
    c("network", "disconnect", "back", "web")
    assert "eth1" not in c("exec", "web", "ip", "-o", "link").stdout
    assert "\tweb" not in c("exec", "db", "cat", "/etc/hosts").stdout
    r = c("network", "disconnect", "back", "web", check=False)
    assert r.returncode == 1 and "is not connected" in r.stderr
    c("network", "disconnect", "-f", "back", "web")
    r = c("network", "prune", input="n\n")
    assert "Are you sure" in r.stdout and "spare" not in r.stdout
    r = c("network", "prune", "-f")
    assert r.stdout == "Deleted Networks:\nspare\n"
    c("rm", "-f", "web", "db")
    assert sorted(c("network", "prune", "-f").stdout.split()[2:]) == ["back", "front"]
    links = subprocess.run([*inns, "ip", "-o", "link"], capture_output=True,
                           text=True).stdout
    assert "cv" not in links and "cx" not in links
