"""Bridge networks, name resolution and published ports, all inside a network namespace
the test makes (the host's interfaces, nft tables and sysctls stay untouched)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.lib.engine import Cove
from tests.lib.wait import wait_for


def test_bridge_network_in_netns(cove: Cove, netns: str) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    inns = ["nsenter", f"--net={netns}"]
    forward = subprocess.run([*inns, "cat", "/proc/sys/net/ipv4/ip_forward"],
                             capture_output=True, text=True).stdout
    c("network", "create", "app")
    net = json.loads(c("network", "inspect", "app").stdout)[0]
    assert net["Subnet"].endswith("/24")
    c("run", "-d", "--name", "srv", "--network", "app", "-p", "8080:80", "busybox", "sh",
      "-c", "mkdir /www && echo hello > /www/index.html && httpd -f -p 80 -h /www")
    ip = json.loads(c("inspect", "srv").stdout)[0]["NetworkSettings"]["IPAddress"]
    assert ip.startswith(net["Subnet"].rsplit(".", 1)[0])
    assert "80/tcp -> 0.0.0.0:8080" in c("port", "srv").stdout
    # by name from another container on the network
    r = c("run", "--rm", "--network", "app", "busybox", "wget", "-qO-", "http://srv/")
    assert r.stdout == "hello\n"
    # published: from the namespace's own side, to one of its addresses
    for host in (net["Gateway"],):
        wait_for(lambda h=host: subprocess.run(
            [*inns, "busybox", "wget", "-qO-", f"http://{h}:8080/"],
            capture_output=True, text=True).stdout == "hello\n", timeout=5, what=host)
    # none and host
    r = c("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    assert r.stdout.count("\n") == 1 and " lo: " in r.stdout  # lo only
    assert "in use" in c("network", "rm", "app", check=False).stderr
    c("rm", "-f", "srv")
    c("network", "rm", "app")
    assert subprocess.run([*inns, "nft", "list", "tables"], capture_output=True,
                          text=True).stdout == ""
    links = subprocess.run([*inns, "ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "cove" not in links and "cv" not in links
    assert subprocess.run([*inns, "cat", "/proc/sys/net/ipv4/ip_forward"],
                          capture_output=True, text=True).stdout == forward
    assert not any("netns" in f for f in os.listdir(cove.root))


def test_two_roots_in_one_namespace(cove: Cove, netns: str, tmp_path: Path) -> None:
    """Two state roots in one network namespace are separate worlds: each its own
    default bridge and subnet, no address handed out twice, one root's `network rm
    bridge` leaves the other's containers connected, and ip_forward goes back to its old
    value only when the namespace's last Cove bridge goes."""
    import shutil as sh
    inns = ["nsenter", f"--net={netns}"]
    other = str(tmp_path / "other")
    sh.copytree(cove.root, other, symlinks=True)
    a, b = Cove(cove.root, inns), Cove(other, inns)
    assert subprocess.run([*inns, "cat", "/proc/sys/net/ipv4/ip_forward"],
                          capture_output=True, text=True).stdout == "0\n"
    for c, n in ((a, "a1"), (b, "b1")):
        c("run", "-d", "--name", n, "busybox", "sh", "-c",
          "mkdir /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www")
    na = json.loads(a("network", "inspect", "bridge").stdout)[0]
    nb = json.loads(b("network", "inspect", "bridge").stdout)[0]
    assert na["Bridge"] != nb["Bridge"] and na["Subnet"] != nb["Subnet"]
    ipa = json.loads(a("inspect", "a1").stdout)[0]["NetworkSettings"]["IPAddress"]
    ipb = json.loads(b("inspect", "b1").stdout)[0]["NetworkSettings"]["IPAddress"]
    assert ipa != ipb
    tables = subprocess.run([*inns, "nft", "list", "tables"], capture_output=True,
                            text=True).stdout
    assert tables.count(f"cove_{na['Bridge'].replace('-', '_')}") == 1
    # a's bridge goes: b's container still answers, ip_forward stays on for it
    a("rm", "-f", "a1")
    a("network", "rm", "bridge")
    r = subprocess.run([*inns, "busybox", "wget", "-qO-", f"http://{ipb}/"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout.strip(), r.stderr
    fwd = subprocess.run([*inns, "cat", "/proc/sys/net/ipv4/ip_forward"],
                         capture_output=True, text=True).stdout
    assert fwd == "1\n"
    b("rm", "-f", "b1")
    b("network", "rm", "bridge")
    assert subprocess.run([*inns, "cat", "/proc/sys/net/ipv4/ip_forward"],
                          capture_output=True, text=True).stdout == "0\n"
    assert subprocess.run([*inns, "nft", "list", "tables"], capture_output=True,
                          text=True).stdout == ""
    b("supervisor", "stop")


def test_read_only_commands_make_no_root(tmp_path: Path) -> None:
    """`cove --root /nonexistent/x ps` lists nothing and creates nothing."""
    root = str(tmp_path / "no" / "such" / "root")
    c = Cove(root)
    for args in (["ps", "-a"], ["images"], ["volume", "ls"], ["network", "ls"]):
        r = c(*args, check=False)
        assert r.returncode == 0, (args, r.stderr)
    assert not os.path.exists(tmp_path / "no"), os.listdir(tmp_path / "no")
