"""A service on more than one network (`networks: [front, back]`), end to end in the
test's own network namespace and root: each replica joins both project networks, the
service's name resolves on each to the replicas' addresses on that network (a client
on `front` only and one on `back` only both reach it by name), the published port
spreads over the replicas, and all of it holds after a replica is killed and
replaced; `down -v` takes both networks."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.lib.engine import Cove
from tests.lib.services import get, write_project
from tests.lib.wait import wait_for

pytest.importorskip("cove.engine.services.lb")
pytest.importorskip("cove.engine.services.names")

PORT = 18083
CLIENT = ('["sh", "-c", "while :; do wget -qO- http://web/ || echo FAIL$$?; '
          'sleep 0.1; done"]')
COMPOSE = """\
services:
  web:
    image: busybox
    init: true
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html &&
              exec httpd -f -p 80 -h /www"]
    ports: ["{port}:80"]
    networks: [front, back]
    deploy: {{replicas: 2}}
  fclient:
    image: busybox
    init: true
    command: {client}
    networks: [front]
  bclient:
    image: busybox
    init: true
    command: {client}
    networks: [back]
networks:
  front: {{}}
  back: {{}}
"""


def _nets(c: Cove, name: str) -> dict[str, str]:
    rec = json.loads(c("inspect", name).stdout)[0]
    return {k: v["IPAddress"] for k, v in rec["NetworkSettings"]["Networks"].items()}


def _resolved(c: Cove, client: str) -> set[str]:
    """The addresses `web` has in the client's hosts file."""
    out = c("exec", client, "cat", "/etc/hosts").stdout
    return {ln.split()[0] for ln in out.splitlines()
            if ln.split()[1:2] == ["web"]}


def _answers(c: Cove, client: str) -> list[str]:
    """What the client's loop got from `web`, by name, in order."""
    return c("logs", client).stdout.split()


def _settled(c: Cove, client: str) -> bool:
    """The client's last 5 requests by name all answered by a web replica."""
    got = _answers(c, client)[-5:]
    return len(got) == 5 and set(got) <= {"mn-web-1", "mn-web-2"}


def test_service_on_two_networks(cove: Cove, netns: str, tmp_path: Path,
                                 downs: list[tuple[Cove, Path]]) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    f = write_project(tmp_path / "mn", COMPOSE.format(port=PORT, client=CLIENT))
    downs.append((c, f))
    c("up", "-d", "-f", str(f), timeout=120)

    def check() -> None:
        reps = {n: _nets(c, n) for n in ("mn-web-1", "mn-web-2")}
        for n, nets in reps.items():
            assert set(nets) == {"mn_front", "mn_back"} and all(nets.values()), (n, nets)
        for client, net in (("fclient", "mn_front"), ("bclient", "mn_back")):
            want = {nets[net] for nets in reps.values()}
            wait_for(lambda client=client, want=want: _resolved(c, f"mn-{client}-1")
                     == want, timeout=10, what=f"web on {net}: {want}")
            # (each member has its own rotation of the addresses: busybox's wget takes
            # the first, so one client keeps to one replica)
            wait_for(lambda client=client: _settled(c, f"mn-{client}-1"), timeout=10,
                     what=f"{client} reaching web by name")
        seen: set[str] = set()

        def both() -> bool:
            seen.add(get(c.prefix, PORT))
            return seen >= {"mn-web-1", "mn-web-2"}
        wait_for(both, timeout=10, what=f"both replicas through port {PORT}")
    check()
    # a replica killed: started again by the engine, on both networks again
    first = json.loads(c("inspect", "mn-web-2").stdout)[0]
    os.kill(first["State"]["Pid"], signal.SIGKILL)

    def back() -> bool:
        r = json.loads(c("inspect", "mn-web-2").stdout)[0]
        return bool(r["State"]["Status"] == "running"
                    and r["State"]["StartedAt"] != first["State"]["StartedAt"])
    wait_for(back, timeout=10, what="mn-web-2 replaced")
    check()
    c("down", "-v", "-f", str(f), timeout=60)
    nets = c("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in nets if n.startswith("mn_")], nets
