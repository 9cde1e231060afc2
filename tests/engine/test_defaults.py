"""What a container made by `cove run` gets without asking, checked from inside: docker's
14 default capabilities (not runc's 3) with the seccomp profile that matches them, and
a loopback that is up in a `--network none` container (runc brings `lo` up in every
network namespace it creates; so does cove-runtime)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cove.sys.caps import CAPS, last_cap
from tests.lib.engine import Cove

DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
               "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
               "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
               "CAP_AUDIT_WRITE"]


def _mask(names: list[str]) -> str:
    return f"{sum(1 << CAPS[n] for n in names):016x}"


def _caps(cove: Cove, *flags: str) -> dict[str, str]:
    out = cove("run", "--rm", "--network", "none", *flags, "busybox", "grep", "^Cap",
               "/proc/self/status").stdout
    return dict(line.split(":\t") for line in out.splitlines())


def _sh(cove: Cove, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return cove("run", "--rm", "--network", "none", *flags, "busybox", "sh", "-c", script,
                check=False)


def test_docker_default_capabilities(cove: Cove) -> None:
    caps = _caps(cove)
    want = _mask(DOCKER_CAPS)
    assert (caps["CapEff"], caps["CapPrm"], caps["CapBnd"]) == (want, want, want)
    assert caps["CapInh"] == caps["CapAmb"] == "0" * 16
    # what those capabilities are for, as root in the container
    r = _sh(cove, "touch /tmp/f && chown 1:1 /tmp/f && stat -c %u:%g /tmp/f && "
                  "mknod /tmp/null c 1 3 && mknod /tmp/loop b 7 0 && echo made && "
                  "chroot / true && echo chroot && ping -c1 -W1 127.0.0.1 >/dev/null && "
                  "echo ping")
    assert (r.returncode, r.stdout) == (0, "1:1\nmade\nchroot\nping\n"), r.stderr
    # a user other than root starts with none in effect (as docker)
    caps = _caps(cove, "-u", "1000")
    assert caps["CapEff"] == "0" * 16 and caps["CapBnd"] == want


def test_cap_add_and_drop(cove: Cove) -> None:
    assert _caps(cove, "--cap-drop", "ALL")["CapBnd"] == "0" * 16
    assert _caps(cove, "--cap-drop", "ALL", "--cap-add", "chown")["CapEff"] == \
        _mask(["CAP_CHOWN"])
    # ALL: every capability the kernel knows and the engine holds (its bounding set)
    with open("/proc/self/status") as f:
        ours = int(next(x for x in f if x.startswith("CapBnd:")).split()[1], 16)
    every = [n for n, bit in CAPS.items() if bit <= last_cap() and ours >> bit & 1]
    assert _caps(cove, "--cap-add", "ALL")["CapEff"] == _mask(every)
    assert _caps(cove, "--cap-drop", "NET_RAW", "--cap-add", "CAP_NET_ADMIN")["CapEff"] == \
        _mask([c for c in DOCKER_CAPS if c != "CAP_NET_RAW"] + ["CAP_NET_ADMIN"])
    r = _sh(cove, "touch /tmp/f; chown 1 /tmp/f", "--cap-drop", "ALL")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    r = _sh(cove, "ping -c1 -W1 127.0.0.1", "--cap-drop", "NET_RAW")
    assert r.returncode != 0
    # the seccomp profile follows the capabilities: chroot(2) needs CAP_SYS_CHROOT,
    # unshare(2) CAP_SYS_ADMIN
    assert _sh(cove, "chroot / true", "--cap-drop", "SYS_CHROOT").returncode != 0
    assert _sh(cove, "unshare -m true").returncode != 0
    assert _sh(cove, "unshare -m true", "--cap-add", "SYS_ADMIN").returncode == 0


def test_runtime_spec_keeps_runcs_defaults(tmp_path: Path) -> None:
    from cove.oci.defaults import default_spec
    caps = default_spec()["process"]["capabilities"]
    assert caps["bounding"] == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def test_loopback_up_without_network(cove: Cove) -> None:
    r = _sh(cove, "ip -o link")
    assert r.stdout.count("\n") == 1 and " lo: " in r.stdout, r.stdout
    flags = r.stdout.split("<", 1)[1].split(">", 1)[0].split(",")
    assert "UP" in flags and "LOWER_UP" in flags, r.stdout
    # a service on 127.0.0.1 answers from inside the container
    r = _sh(cove, "nc -l -p 1234 > /tmp/got & "
                  "for i in 1 2 3 4 5 6 7 8 9 10; do "
                  "  echo hello | nc 127.0.0.1 1234 && break; sleep 0.1; done; "
                  "wait; cat /tmp/got")
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr


def test_api_default_network_has_loopback(cove: Cove) -> None:
    import cove as api
    c = api.run("busybox", ["cat", "/sys/class/net/lo/operstate", "/sys/class/net/lo/flags"],
                root=cove.root)
    assert c.exit_code == 0
    out = c.logs()
    state, flags = (out.decode() if isinstance(out, bytes) else out).split()
    assert int(flags, 16) & 1, (state, flags)  # IFF_UP
    rec = json.loads(cove("inspect", c.name).stdout)[0]
    assert rec["HostConfig"]["NetworkMode"] == "none"
    c.remove()
