"""A service's published port spread over its replicas (cove/engine/services/lb.py):
real busybox httpd replicas on a user network, nft in a network namespace the test
makes, clients on its loopback and in a second namespace ("outside", through a veth)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cove.engine.services import lb
from tests.lib.engine import Cove
from tests.lib.paths import ROOT
from tests.lib.wait import wait_for

HTTPD = ["busybox", "sh", "-c",
         "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
PORT = 18080


def _py(netns: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Python `code` run in the test's namespace (lb's nft goes where it runs)."""
    return subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", code, *args],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=30)


def _apply(netns: str, root: str, backends: list[str], port: int = PORT) -> None:
    ports = [{"host_ip": "", "host_port": port, "proto": "tcp", "target": 80}]
    r = _py(netns, "import json, sys; from cove.engine.services import lb; "
                   "lb.apply(*json.loads(sys.argv[1]))",
            json.dumps([root, "proj", "web", ports, backends]))
    assert r.returncode == 0, r.stderr


def _remove(netns: str, root: str) -> None:
    r = _py(netns, "import sys; from cove.engine.services import lb; "
                   "lb.remove(sys.argv[1], 'proj', 'web')", root)
    assert r.returncode == 0, r.stderr


def _get(ns: str, url: str, timeout: float = 3) -> subprocess.CompletedProcess[str]:
    """busybox wget in namespace `ns` (the host's busybox has no -T: a hang is a
    failure after `timeout`, status 124)."""
    cmd = ["nsenter", f"--net={ns}", "busybox", "wget", "-qO-", url]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", "timed out")


def _ruleset(netns: str) -> str:
    return subprocess.run(["nsenter", f"--net={netns}", "nft", "list", "ruleset"],
                          capture_output=True, text=True).stdout


def _replicas(c: Cove, netns: str, n: int) -> tuple[list[str], dict[str, str]]:
    """n httpd replicas on network app: their addresses and hostnames (by address)."""
    c("network", "create", "app")
    ips, hosts = [], {}
    for i in range(n):
        c("run", "-d", "--name", f"web{i}", "--network", "app", *HTTPD)
        rec = json.loads(c("inspect", f"web{i}").stdout)[0]
        ip = rec["NetworkSettings"]["IPAddress"]
        ips.append(ip)
        hosts[ip] = rec["Config"]["Hostname"]
    for ip in ips:  # each answers on its own before the test starts counting
        wait_for(lambda ip=ip: _get(netns, f"http://{ip}/").returncode == 0,
                 timeout=10, what=f"httpd at {ip}")
    return ips, hosts


@pytest.fixture
def outside(tmp_path: Path, netns: str) -> Any:
    """A second namespace joined to the test's by a veth (10.250.0.1 on the test's
    side, 10.250.0.2 here): a client from outside the engine's namespace."""
    ns = str(tmp_path / "outside")
    Path(ns).touch()
    subprocess.run(["unshare", f"--net={ns}", "true"], check=True)
    inns, inout = ["nsenter", f"--net={netns}"], ["nsenter", f"--net={ns}"]
    for cmd in ([*inns, "ip", "link", "add", "vh", "type", "veth", "peer", "name", "vo",
                 "netns", ns],
                [*inns, "ip", "addr", "add", "10.250.0.1/24", "dev", "vh"],
                [*inns, "ip", "link", "set", "vh", "up"],
                [*inout, "ip", "addr", "add", "10.250.0.2/24", "dev", "vo"],
                [*inout, "ip", "link", "set", "vo", "up"],
                [*inout, "ip", "link", "set", "lo", "up"]):
        subprocess.run(cmd, check=True)
    yield ns
    subprocess.call(["umount", ns])


def test_spreads_over_replicas_from_loopback_and_outside(cove: Cove, netns: str,
                                                         outside: str) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    ips, hosts = _replicas(c, netns, 3)
    _apply(netns, cove.root, ips)
    seen = [_get(netns, f"http://127.0.0.1:{PORT}/").stdout.strip() for _ in range(6)]
    assert sorted(set(seen)) == sorted(hosts.values()), seen  # round robin: all three
    assert len(set(seen[:3])) == 3, seen
    far = [_get(outside, f"http://10.250.0.1:{PORT}/").stdout.strip() for _ in range(3)]
    assert sorted(far) == sorted(hosts.values()), far
    # hairpin: a container on the replicas' own network, through the host's address
    gw = json.loads(c("network", "inspect", "app").stdout)[0]["Gateway"]
    for _ in range(2):
        r = c("run", "--rm", "--network", "app", "busybox", "wget", "-qO-",
              f"http://{gw}:{PORT}/")
        assert r.stdout.strip() in hosts.values()
    # the same call again changes nothing (idempotent), one table
    before = _ruleset(netns)
    _apply(netns, cove.root, ips)
    assert _ruleset(netns) == before
    assert before.count(f"table ip {lb.table(cove.root, 'proj', 'web')}") == 1
    _remove(netns, cove.root)
    _remove(netns, cove.root)  # (again: nothing to do, no error)
    assert "cove_s_" not in _ruleset(netns)
    assert _get(netns, f"http://127.0.0.1:{PORT}/").returncode != 0
    for i in range(3):
        c("rm", "-f", f"web{i}")
    c("network", "rm", "app")
    assert _ruleset(netns) == ""


def test_replica_leaves_without_a_failed_request(cove: Cove, netns: str) -> None:
    """A client loops requests while one replica leaves the set and is then stopped:
    none fails, and after it left none reaches it."""
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    ips, hosts = _replicas(c, netns, 3)
    _apply(netns, cove.root, ips)
    answers: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            r = _get(netns, f"http://127.0.0.1:{PORT}/")
            (answers if r.returncode == 0 else failures).append(r.stdout.strip()
                                                                or r.stderr.strip())
    t = threading.Thread(target=loop)
    t.start()
    try:
        wait_for(lambda: len(answers) >= 6, timeout=15, what="requests")
        _apply(netns, cove.root, ips[:2])  # the replica leaves the set, then stops
        mark = len(answers)
        c("stop", "-t", "1", "web2")
        wait_for(lambda: len(answers) >= mark + 10, timeout=20, what="more requests")
    finally:
        stop.set()
        t.join()
    assert not failures, failures
    assert hosts[ips[2]] in answers[:mark]
    assert hosts[ips[2]] not in answers[mark:], answers[mark:]
    assert set(answers[mark:]) == {hosts[ips[0]], hosts[ips[1]]}
    _remove(netns, cove.root)
    for i in range(3):
        c("rm", "-f", f"web{i}")
    c("network", "rm", "app")


CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET / HTTP/1.0\\r\\n")
print("connected", flush=True)
sys.stdin.readline()
s.sendall(b"\\r\\n")
data = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    data += b
print(data.decode().split("\\r\\n\\r\\n", 1)[-1].strip(), flush=True)
"""


def test_established_connection_survives_and_empty_set_refuses(cove: Cove,
                                                                netns: str) -> None:
    """A connection made before the set changes finishes with its replica; with no
    backend left, a new connection is refused at once (not left hanging)."""
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    ips, hosts = _replicas(c, netns, 2)
    _apply(netns, cove.root, ips)
    p = subprocess.Popen(["nsenter", f"--net={netns}", sys.executable, "-c", CLIENT,
                          str(PORT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "connected"
        _apply(netns, cove.root, [])
        t0 = time.monotonic()
        r = _get(netns, f"http://127.0.0.1:{PORT}/")
        assert r.returncode != 0 and "refused" in r.stderr.lower(), r.stderr
        assert time.monotonic() - t0 < 1.5
        out, err = p.communicate("go\n", timeout=10)
        assert out.strip() in hosts.values(), (out, err)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "reject" in _ruleset(netns)
    _apply(netns, cove.root, ips[1:])  # and back: one backend (a plain dnat)
    assert _get(netns, f"http://127.0.0.1:{PORT}/").stdout.strip() == hosts[ips[1]]
    _remove(netns, cove.root)
    for i in range(2):
        c("rm", "-f", f"web{i}")
    c("network", "rm", "app")
    assert _ruleset(netns) == ""


def test_bad_input_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    from cove.errors import CoveError
    root = str(tmp_path)
    good = {"host_ip": "", "host_port": 8080, "proto": "tcp", "target": 80}
    for ports, backends, why in (
            ([{**good, "proto": "sctp"}], [], "protocol"),
            ([{**good, "host_port": 70000}], [], "host_port"),
            ([{**good, "target": "80"}], [], "target"),
            ([{**good, "host_ip": "nowhere"}], [], "host_ip"),
            ([good], ["10.0.0.300"], "not an IPv4")):
        with pytest.raises(CoveError, match=why):
            lb.apply(root, "p", "s", ports, backends)
    # the script names each backend once and the table is the service's own
    text = lb.script(root, "p", "s", [good], ["10.1.0.2", "10.1.0.3"])
    assert "numgen inc mod 2 map { 0 : 10.1.0.2, 1 : 10.1.0.3 } : 80" in text
    udp = {**good, "proto": "udp", "host_ip": "::"}  # (all addresses, as 0.0.0.0)
    assert "fib daddr type local udp dport 8080 dnat to 10.1.0.2 : 80" in lb.script(
        root, "p", "s", [udp], ["10.1.0.2"])
    assert "fib daddr type local udp dport 8080 reject\n" in lb.script(root, "p", "s",
                                                                        [udp], [])
    assert "ip daddr 127.0.0.1 tcp dport 8080 reject with tcp reset" in lb.script(
        root, "p", "s", [{**good, "host_ip": "127.0.0.1"}], [])
    assert lb.table(root, "p", "s") != lb.table(root, "p", "t") != lb.table(root + "x",
                                                                            "p", "t")


PORTS_SCRIPT = """
import json, socket, sys
from cove.engine.services import lb
from cove.errors import CoveError
root = sys.argv[1]
anyport = [{"host_ip": "", "host_port": 0, "proto": "tcp", "target": 80}]
lb.apply(root, "proj", "web", anyport, ["10.99.0.2", "10.99.0.3"])
got = lb.published(root, "proj", "web")
lb.apply(root, "proj", "web", anyport, ["10.99.0.2"])
assert lb.published(root, "proj", "web") == got, "the picked port is kept"
port = got[0]["host_port"]
lb.check(root, "proj", "web", got)  # its own: fine
out = []
for proj, p in (("other", got[0]), ("other", {**got[0], "host_ip": "127.0.0.1"})):
    try:
        lb.check(root, proj, "api", [p])
    except CoveError as e:
        out.append(str(e))
s = socket.socket()
s.bind(("127.0.0.1", 18099))
s.listen()
try:
    lb.check(root, "proj", "api", [{**got[0], "host_port": 18099}])
except CoveError as e:
    out.append(str(e))
lb.remove(root, "proj", "web")
print(json.dumps({"port": port, "errors": out,
                  "after": lb.published(root, "proj", "web")}))
"""


def test_any_port_and_conflicts(netns: str, tmp_path: Path) -> None:
    """host_port 0: a free port, the same one at every call; a port another service
    publishes or a socket holds is refused in one line; remove leaves no record."""
    root = str(tmp_path / "root")
    r = _py(netns, PORTS_SCRIPT, root)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert 1024 <= got["port"] < 65536 and got["after"] == []
    assert got["errors"] == [
        f"api: port {got['port']}/tcp: already published by service proj/web",
        f"api: port 127.0.0.1:{got['port']}/tcp: already published by service proj/web",
        "api: port 18099/tcp: port is already in use (Address already in use)"]
    assert not (tmp_path / "root" / "lb").exists()
    assert _ruleset(netns) == ""
