"""A service's name on its network (cove/engine/services/names.py): busybox clients in
containers resolve it through /etc/hosts to the replicas the engine says are healthy;
all in a network namespace the test makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cove.engine import netcontainer
from cove.engine.services import names
from cove.errors import CoveError
from tests.lib.engine import Cove

HTTPD = ["busybox", "sh", "-c",
         "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]


def _web_lines(c: Cove, member: str) -> list[str]:
    return [ln.split()[0] for ln in c("exec", member, "cat", "/etc/hosts").stdout.splitlines()
            if ln.split()[1:] == ["web"]]


def test_name_resolves_to_healthy_replicas(cove: Cove, netns: str) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    c("network", "create", "app")
    ips, hosts = [], {}
    for i in range(3):
        c("run", "-d", "--name", f"web{i}", "--network", "app", *HTTPD)
        rec = json.loads(c("inspect", f"web{i}").stdout)[0]
        ips.append(rec["NetworkSettings"]["IPAddress"])
        hosts[ips[-1]] = rec["Config"]["Hostname"]
    c("run", "-d", "--name", "client", "--network", "app", "busybox", "sleep", "300")
    names.apply(cove.root, "app", "web", ips)
    names.apply(cove.root, "app", "web", ips)  # (again: nothing changes)
    assert sorted(_web_lines(c, "client")) == sorted(ips)
    assert names.resolve(cove.root, "app", "web") == ips
    got = c("exec", "client", "wget", "-qO-", "http://web/").stdout.strip()
    assert got in hosts.values()
    # a member that joins later gets the name with its hosts file
    c("run", "-d", "--name", "late", "--network", "app", "busybox", "sleep", "300")
    assert sorted(_web_lines(c, "late")) == sorted(ips)
    # the replica a client resolves first leaves the set, then stops: a client resolving
    # per request never fails and never reaches it
    first = _web_lines(c, "client")[0]
    rest = [ip for ip in ips if ip != first]
    names.apply(cove.root, "app", "web", rest)
    assert sorted(_web_lines(c, "client")) == sorted(rest)
    c("stop", "-t", "1", next(f"web{i}" for i in range(3) if ips[i] == first))
    out = c("exec", "client", "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do "
            "wget -qO- http://web/ || echo FAILED; done").stdout.split()
    assert len(out) == 10 and "FAILED" not in out, out
    assert hosts[first] not in out and set(out) <= {hosts[ip] for ip in rest}
    # no replica left: the name goes (a client fails at once: no such host)
    names.apply(cove.root, "app", "web", [])
    assert _web_lines(c, "client") == []
    r = c("exec", "client", "wget", "-qO-", "http://web/", check=False)
    assert r.returncode != 0 and "bad address" in r.stderr, r.stderr
    assert "Services" not in json.loads(c("network", "inspect", "app").stdout)[0]
    for n in ("web0", "web1", "web2", "client", "late"):
        c("rm", "-f", n)
    names.remove(cove.root, "app", "web")
    c("network", "rm", "app")
    names.remove(cove.root, "app", "web")  # (the network gone: nothing to do)


def test_members_get_their_own_rotation() -> None:
    """Clients that take the first address spread over the replicas."""
    n = {"Name": "app", "Services": {"web": ["10.0.0.2", "10.0.0.3", "10.0.0.4"],
                                     "db": ["10.0.0.9"]}}
    firsts = {netcontainer.service_lines(n, f"proj-client-{i}")[1].split()[0] for i in range(12)}
    assert firsts == {"10.0.0.2", "10.0.0.3", "10.0.0.4"}
    lines = netcontainer.service_lines(n, "x")
    assert lines[0] == "10.0.0.9\tdb" and sorted(lines[1:]) == [
        "10.0.0.2\tweb", "10.0.0.3\tweb", "10.0.0.4\tweb"]


def test_bad_input(tmp_path: Path) -> None:
    root = str(tmp_path)
    with pytest.raises(CoveError, match="no such network"):
        names.apply(root, "nope", "web", ["10.0.0.2"])
    with pytest.raises(CoveError, match="not an IPv4"):
        names.apply(root, "nope", "web", ["10.0.0"])
    with pytest.raises(CoveError, match="not a valid host name"):
        names.apply(root, "nope", "we b", [])
    assert not (tmp_path / "networks" / "nope.json").exists()
