"""Services end to end, each test in a network namespace of its own with its own state
root: a 3-service project (web x3 busybox httpd with a health check behind a published
port, a client polling `web` by name, a worker with a named volume) comes up in
dependency order; a killed replica is replaced while a looping client sees no failure
once the dead one is out; rollouts start-first to v2 with no failed request, and a v3
that never turns healthy is rolled back by the engine; `cove down -v` leaves nothing.

The published port and the service name come from the services networking work
(cove/engine/services/lb.py, names.py): these tests need both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.lib.engine import Cove, kill_engine
from tests.lib.services import Loop, build_web, get, ps, write_project
from tests.lib.wait import wait_for

pytest.importorskip("cove.engine.services.lb")
pytest.importorskip("cove.engine.services.names")

PORT = 18080


def _events(c: Cove, since: float, kind: str = "service") -> list[dict[str, object]]:
    out = c("events", "--since", str(int(since) - 1), "--until", str(int(time.time()) + 1),
            "--filter", f"type={kind}", "--format", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _records_left(root: str, project: str) -> list[str]:
    left = []
    for sub in ("containers", "volumes", "projects"):
        p = Path(root, sub)
        if p.exists():
            left += [f"{sub}/{n}" for n in os.listdir(p) if project in n]
    nets = Path(root, "networks")
    if nets.exists():
        left += [f"networks/{n}" for n in os.listdir(nets) if project in n]
    return left


def _desired(root: str, project: str) -> dict[str, object]:
    """What the user asked for (not the engine's bookkeeping: the backends it gave the
    load balancer)."""
    d: dict[str, object] = json.loads(
        Path(root, "projects", project, "desired.json").read_text())
    for s in d["services"].values():  # type: ignore[attr-defined]
        s.pop("applied", None)
    return d


def test_project_lifecycle(cove: Cove, netns: str, tmp_path: Path,
                           downs: list[tuple[Cove, Path]]) -> None:
    inns = ["nsenter", f"--net={netns}"]
    c = Cove(cove.root, inns)
    build_web(c, tmp_path)
    proj = tmp_path / "app"
    f = write_project(proj)
    downs.append((c, f))
    t0 = time.time()
    c("up", "-d", "-f", str(f), timeout=120)
    rows = ps(c, "app")
    assert sorted(r["Name"] for r in rows) == ["app-client-1", "app-web-1", "app-web-2",
                                               "app-web-3", "app-worker-1"], rows
    # dependency order: every web replica was healthy before the client was created,
    # and running before the worker was
    seq = [(e["Action"], e["Actor"]["Attributes"]["name"])  # type: ignore[index]
           for e in _events(c, t0, "container")]
    client = seq.index(("create", "app-client-1"))
    worker = seq.index(("create", "app-worker-1"))
    for n in ("app-web-1", "app-web-2", "app-web-3"):
        assert seq.index(("health_status: healthy", n)) < client, seq
        assert seq.index(("start", n)) < worker, seq
    # the port reaches all three (distinct hostnames)
    seen: set[str] = set()

    def three() -> bool:
        seen.add(get(inns, PORT))
        return len(seen - {""}) >= 3
    wait_for(three, timeout=20, what="3 replicas answering")
    assert {s.split()[0] for s in seen if s} == {"app-web-1", "app-web-2", "app-web-3"}
    # the client reaches web by name; the worker has its volume
    wait_for(lambda: "v1" in c("exec", "app-client-1", "cat", "/tmp/seen",
                               check=False).stdout, what="the client's answers")
    assert "starts" in c("exec", "app-worker-1", "ls", "/data").stdout

    # kill a replica: a new one within 5 s; no failure once the dead one is out
    loop = Loop(netns, PORT)
    try:
        wait_for(lambda: len(loop.answers) > 5, what="the loop's first answers")
        victim = json.loads(c("inspect", "app-web-2").stdout)[0]
        killed = time.monotonic()
        os.kill(victim["State"]["Pid"], signal.SIGKILL)

        def replaced() -> bool:
            try:
                r = json.loads(c("inspect", "app-web-2").stdout)[0]
            except AssertionError:
                return False
            return bool(r["State"]["StartedAt"] != victim["State"]["StartedAt"]
                        and r["State"]["Status"] == "running")
        wait_for(replaced, timeout=5, what="a new app-web-2 within 5 s")
        wait_for(lambda: (json.loads(c("inspect", "app-web-2").stdout)[0]["State"]
                          ["Health"] or {}).get("Status") == "healthy",
                 timeout=10, what="the new replica healthy")
        took = time.monotonic() - killed
        # a request that went to the dead replica before it was out times out (1 s):
        # count from the loop's next answers on
        got = len(loop.answers)
        wait_for(lambda: len(loop.answers) > got + 3, timeout=5, what="answers again")
        mark = loop.mark()
        time.sleep(2.0)
        after = loop.failures[mark[1]:]
        assert not after, after
        assert len(loop.answers) - mark[0] > 20
        print(f"replica death to healthy replacement: {took:.2f}s")

        # rollout start-first to v2: no failed request, finally only v2 answers
        mark = loop.mark()
        r = c("rollout", "web", "--image", "web:v2", "-f", str(f), timeout=120)
        assert "rolled out web:v2" in r.stderr
        time.sleep(0.5)
        assert loop.failures[mark[1]:] == [], loop.failures[mark[1]:]
        late = loop.mark()
        time.sleep(1.0)
        assert {a.split()[1] for a in loop.answers[late[0]:]} == {"v2"}

        # v3 never healthy: the engine rolls back by itself; v2 still serves, no failure
        mark = loop.mark()
        r = c("rollout", "web", "--image", "web:v3", "-f", str(f), check=False, timeout=120)
        assert r.returncode == 1 and "rolled back to web:v2" in r.stderr, r.stderr
        time.sleep(0.5)
        assert loop.failures[mark[1]:] == [], loop.failures[mark[1]:]
        assert {a.split()[1] for a in loop.answers[mark[0]:]} == {"v2"}
        assert sorted(x["Image"] for x in ps(c, "app") if x["Service"] == "web") == \
            ["web:v2"] * 3
    finally:
        loop.stop()
    acts = [(e["Action"], e["Actor"]["Attributes"].get("reason", ""))  # type: ignore[index]
            for e in _events(c, t0)]
    assert any(a == "replace" and "app-web-2 exited with code 137" in r for a, r in acts)
    assert any(a == "rollout" for a, _ in acts)
    assert any(a == "rollback" and "web-" in r for a, r in acts), acts

    # down -v: nothing left
    c("down", "-v", "-f", str(f), timeout=120)
    assert c("ps", "-a", "-q").stdout == ""
    assert _records_left(cove.root, "app") == []
    nft = subprocess.run([*inns, "nft", "list", "ruleset"], capture_output=True,
                         text=True).stdout
    assert "cove_s_" not in nft, nft
    links = subprocess.run([*inns, "ip", "-o", "link"], capture_output=True,
                           text=True).stdout
    assert "cove-" not in links and "@" not in links, links
    c("supervisor", "stop")


def test_bad_operations_change_nothing(cove: Cove, netns: str, tmp_path: Path,
                                       downs: list[tuple[Cove, Path]]) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    f = write_project(tmp_path / "small", """\
services:
  migrate:
    image: busybox
    restart: "no"
    command: ["sh", "-c", "sleep 0.5; echo migrated"]
  app:
    image: busybox
    init: true
    command: ["sleep", "100000"]
    deploy: {replicas: 2}
    depends_on: {migrate: {condition: service_completed_successfully}}
  one:
    image: busybox
    container_name: the-one
    command: ["sleep", "100000"]
    init: true
    ports: ["18091:80"]
""")
    downs.append((c, f))
    c("up", "-d", "-f", str(f), timeout=60)
    # a one-shot dependency ran to its end first, and stays done
    mig = json.loads(c("inspect", "small-migrate-1").stdout)[0]
    assert mig["State"]["Status"] == "exited" and mig["State"]["ExitCode"] == 0
    app1 = json.loads(c("inspect", "small-app-1").stdout)[0]
    assert app1["Created"] > mig["State"]["FinishedAt"]
    before = sorted((r["Name"], r["Status"].split()[0]) for r in ps(c, "small"))
    desired = _desired(cove.root, "small")
    for args, want in [
        (["rollout", "app", "--image", "nosuch:v9"], "cove: rollout app: --image nosuch:v9"),
        (["scale", "app=-1"], "cove: scale app=-1: replicas must be 0 or more"),
        (["scale", "app=two"], "cove: scale app=two: replicas must be a whole number"),
        (["scale", "nope=2"], "cove: service nope: no such service in project small"),
        (["scale", "one=2"], "cove: scale one=2: service has a fixed container_name"),
        (["rollback", "app"], "cove: rollback app: no previous version to go back to"),
    ]:
        r = c(*args, "-f", str(f), check=False)
        assert r.returncode == 1 and r.stderr.startswith(want), (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
    assert _desired(cove.root, "small") == desired
    assert sorted((r["Name"], r["Status"].split()[0]) for r in ps(c, "small")) == before
    assert "the-one" in [r["Name"] for r in ps(c, "small")]
    # scale works, and down takes everything
    c("scale", "app=3", "-f", str(f))
    assert len([r for r in ps(c, "small") if r["Service"] == "app"]) == 3
    c("scale", "app=1", "-f", str(f))
    assert [r["Name"] for r in ps(c, "small") if r["Service"] == "app"] == ["small-app-1"]
    # another project can't take a host port this one publishes
    g = write_project(tmp_path / "clash", "services: {web: {image: busybox, ports: "
                                          "['18091:8080']}}\n")
    r = c("up", "-d", "-f", str(g), check=False)
    assert r.returncode == 1 and r.stderr.strip() == (
        "cove: compose.yaml: services.web.ports[0]: host port 18091/tcp is already "
        "published by project small (service one)"), r.stderr
    assert not Path(cove.root, "projects", "clash").exists()
    assert json.loads(c("inspect", "small-migrate-1").stdout)[0]["Id"] == mig["Id"]
    c("down", "-f", str(f))
    assert _records_left(cove.root, "small") == []
    c("supervisor", "stop")


def test_engine_keeps_the_state_without_the_cli(cove: Cove, netns: str,
                                                tmp_path: Path,
                                                downs: list[tuple[Cove, Path]]) -> None:
    """The monitor, not the CLI, keeps the project: with the monitor and its keeper
    SIGKILLed and a replica killed meanwhile, a monitor that comes back replaces it; and
    a replica killed under a live monitor is replaced with no CLI running."""
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    f = write_project(tmp_path / "keep", """\
services:
  app:
    image: busybox
    init: true
    command: ["sleep", "100000"]
    deploy: {replicas: 2}
""")
    downs.append((c, f))
    c("up", "-d", "-f", str(f), timeout=60)
    first = json.loads(c("inspect", "keep-app-1").stdout)[0]
    os.kill(first["State"]["Pid"], signal.SIGKILL)
    wait_for(lambda: json.loads(c("inspect", "keep-app-1").stdout)[0]["State"]["StartedAt"]
             != first["State"]["StartedAt"], timeout=5, what="replaced by the monitor")
    kill_engine(cove.root)
    second = json.loads(c("inspect", "keep-app-2").stdout)[0]
    os.kill(second["State"]["Pid"], signal.SIGKILL)
    c("supervisor", "start")

    def back() -> bool:
        r = json.loads(c("inspect", "keep-app-2").stdout)[0]
        return bool(r["State"]["StartedAt"] != second["State"]["StartedAt"]
                    and r["State"]["Status"] == "running")
    wait_for(back, timeout=10, what="replaced once a monitor is back")
    c("down", "-f", str(f))
    c("supervisor", "stop")
