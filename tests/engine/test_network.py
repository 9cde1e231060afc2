"""Bridge networks, name resolution and published ports, all inside a network namespace
the test makes (the host's interfaces, nft tables and sysctls stay untouched)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import Cove, wait_for


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[str]:
    if shutil.which("nft") is None:
        pytest.skip("nft not installed (scripts/install-deps.sh)")
    ns = str(tmp_path / "testns")
    Path(ns).touch()
    subprocess.run(["unshare", f"--net={ns}", "true"], check=True)
    yield ns
    subprocess.call(["umount", ns])


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
        wait_for(lambda h=host: subprocess.run(  # type: ignore[misc]
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
