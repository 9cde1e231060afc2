"""cove/engine/rtnl.py's requests and bridge.new_netns, against the kernel, inside a
network namespace the test makes (a script run under `nsenter --net`): a veth pair
from a bridge into a new namespace, its address, route and MAC as `ip` sees them, the
errors as OSError, and the calling thread left in its own namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import errno, os, subprocess, sys
from cove.engine import bridge, rtnl
ns = sys.argv[1]
before = os.readlink("/proc/thread-self/ns/net")
sock = bridge.new_netns(ns)
assert os.readlink("/proc/thread-self/ns/net") == before  # (a thread entered it)
subprocess.run(["ip", "link", "add", "tbr0", "type", "bridge"], check=True)
subprocess.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "tbr0"], check=True)
subprocess.run(["ip", "link", "set", "tbr0", "up"], check=True)
host = rtnl.open_socket()
br = rtnl.link_index(host, "tbr0")
fd = os.open(ns, os.O_RDONLY)
rtnl.add_veth(host, "tveth0", br, "eth0", fd, "02:42:0a:63:00:02")
try:
    rtnl.add_veth(host, "tveth0", br, "eth0", fd, "02:42:0a:63:00:02")
    raise AssertionError("made twice")
except FileExistsError:
    pass
idx = rtnl.link_index(sock, "eth0")
rtnl.add_address(sock, idx, "10.99.0.2", 24)
rtnl.link_up(sock, idx)
rtnl.add_default_route(sock, "10.99.0.1")
inns = ["nsenter", f"--net={ns}"]
print(subprocess.run([*inns, "ip", "-o", "addr", "show", "eth0"], capture_output=True,
                     text=True).stdout)
print(subprocess.run([*inns, "ip", "route"], capture_output=True, text=True).stdout)
print(subprocess.run([*inns, "ip", "-o", "link"], capture_output=True, text=True).stdout)
print(subprocess.run(["ip", "-o", "link", "show", "master", "tbr0"], capture_output=True,
                     text=True).stdout)
rtnl.del_link(host, "tveth0")
try:
    rtnl.link_index(host, "tveth0")
    raise AssertionError("still there")
except OSError as e:
    assert e.errno == errno.ENODEV, e
print("peer gone:", "eth0" not in subprocess.run([*inns, "ip", "-o", "link"],
                                               capture_output=True, text=True).stdout)
"""


def test_veth_address_route_and_teardown(netns: str, tmp_path: Path) -> None:
    ns = str(tmp_path / "inner")
    root = str(Path(__file__).resolve().parents[2])
    try:
        r = subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", SCRIPT, ns],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": root})
    finally:
        subprocess.call(["umount", ns], stderr=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "inet 10.99.0.2/24" in out
    assert "default via 10.99.0.1 dev eth0" in out
    assert "link/ether 02:42:0a:63:00:02" in out and "lo: <LOOPBACK,UP" in out
    assert "tveth0@" in out and "state UP" in out.split("tveth0@")[1].split("\n")[0]
    assert "peer gone: True" in out
