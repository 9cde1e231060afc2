"""`deploy.update_config` beyond start-first/rollback, end to end (each test in a network
namespace of its own, with its own root; a client loops requests to the published port
throughout):

- `order: stop-first`: sampled every 50 ms through the rollout, never more than
  `replicas` web replicas run and never fewer than `replicas - parallelism` are
  healthy; no request fails; only v2 answers after.
- a detached rollout (`--detach`, no CLI waiting) with a `delay` between batches is
  carried to the end by the engine alone: the monitor's passes run on the replicas'
  events and at the times the passes asked for (the delay), not on a timer.
- `failure_action: pause`: a new version that fails stops the rollout, recorded as
  paused (`cove compose ps`, the `rollout paused` event), nothing rolled back and
  nothing more of the new version made while the old one serves; `cove rollout`
  resumes it (once the cause is gone) and `cove rollback` restores the last version.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cove.engine.services import replica
from tests.lib.engine import Cove
from tests.lib.services import Loop, build_web, get, ps, write_project
from tests.lib.wait import wait_for

pytest.importorskip("cove.engine.services.lb")

PORT = 18082
# fails (exit 3) at start while the image has /broken (v3) or the test's control
# directory has `broken`
CMD = ("mkdir -p /www && echo \"$$(hostname) $$(cat /version)\" > /www/index.html; "
       "if [ -e /broken ] || [ -e /ctl/broken ]; then exit 3; fi; "
       "exec httpd -f -p 80 -h /www")
COMPOSE = """\
services:
  web:
    image: web:v1
    command: ["sh", "-c", '{cmd}']
    init: true
    ports: ["{port}:80"]
    volumes: ["{ctl}:/ctl:ro"]
    healthcheck:
      test: "wget -qO- http://127.0.0.1/ >/dev/null"
      interval: 0.3s
      timeout: 2s
      retries: 2
    stop_grace_period: 2s
    deploy:
      replicas: 3
      update_config: {{parallelism: 1, order: {order}, failure_action: {action},
                      monitor: 1s, delay: {delay}}}
"""


def _project(tmp: Path, name: str, order: str, action: str, delay: str = "0s"
             ) -> tuple[Path, Path]:
    ctl = tmp / f"{name}-ctl"
    ctl.mkdir()
    f = write_project(tmp / name, COMPOSE.format(cmd=CMD, port=PORT, ctl=ctl,
                                                 order=order, action=action,
                                                 delay=delay))
    return f, ctl


def _events(c: Cove, since: float) -> list[tuple[str, str]]:
    out = c("events", "--since", str(int(since) - 1), "--until", str(int(time.time()) + 1),
            "--filter", "type=service", "--format", "json").stdout
    return [(e["Action"], e["Actor"]["Attributes"].get("reason", ""))
            for e in map(json.loads, out.splitlines()) if e]


def _versions(loop: Loop, since: int) -> set[str]:
    return {a.split()[-1] for a in loop.answers[since:] if a}


def test_stop_first_stays_within_replicas(cove: Cove, netns: str, tmp_path: Path,
                                          downs: list[tuple[Cove, Path]]) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    build_web(c, tmp_path, ("v1", "v2"))
    f, _ = _project(tmp_path, "sf", "stop-first", "rollback")
    downs.append((c, f))
    c("up", "-d", "-f", str(f), timeout=120)
    wait_for(lambda: get(c.prefix, PORT).endswith("v1"), what="v1 serving")
    loop = Loop(netns, PORT)
    samples: list[tuple[int, int]] = []  # (running, healthy) web replicas
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            reps = replica.replicas(cove.root, "sf").get("web", [])
            samples.append((sum(r["status"] == "running" for r in reps),
                            sum(replica.serving(r) for r in reps)))
            time.sleep(0.05)
    t = threading.Thread(target=sample, daemon=True)
    try:
        wait_for(lambda: len(loop.answers) >= 5, what="the client's first answers")
        t.start()
        t0 = time.monotonic()
        c("rollout", "-p", "sf", "web", "--image", "web:v2", timeout=120)
        took = time.monotonic() - t0
        mark = len(loop.answers)
        wait_for(lambda: len(loop.answers) >= mark + 10, what="answers after")
    finally:
        stop.set()
        t.join(5)
        loop.stop()
    assert len(samples) > 20, samples
    assert max(r for r, _ in samples) <= 3, samples
    assert min(h for _, h in samples) >= 2, samples  # replicas - parallelism
    assert min(h for _, h in samples) == 2  # (it did go stop-first)
    assert loop.failures == [], loop.failures[:5]
    assert _versions(loop, mark) == {"v2"}
    print(f"stop-first rollout of 3 replicas: {took:.1f}s, {len(samples)} samples, "
          f"{len(loop.answers)} answers, 0 failed")
    c("down", "-v", "-f", str(f), timeout=60)


def test_pause_then_resume_or_rollback(cove: Cove, netns: str, tmp_path: Path,
                                       downs: list[tuple[Cove, Path]]) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    build_web(c, tmp_path)
    f, ctl = _project(tmp_path, "pa", "start-first", "pause")
    downs.append((c, f))
    c("up", "-d", "-f", str(f), timeout=120)
    wait_for(lambda: get(c.prefix, PORT).endswith("v1"), what="v1 serving")
    loop = Loop(netns, PORT)
    try:
        t0 = time.time()
        # 1. v2 fails while ctl/broken exists: paused, nothing rolled back
        (ctl / "broken").write_text("")
        r = c("rollout", "-p", "pa", "web", "--image", "web:v2", check=False,
              timeout=120)
        assert r.returncode == 1 and "paused" in r.stderr, r.stderr
        desired = json.loads(Path(cove.root, "projects/pa/desired.json").read_text())
        web = desired["services"]["web"]
        assert web["spec"]["image"] == "web:v2" and web["rollout"]["state"] == "paused"
        rows = ps(c, "pa")
        assert all("paused" in row["Rollout"] for row in rows), rows
        assert "rollout to web:v2 paused" in c("compose", "ps", "-p", "pa").stdout
        assert any(a == "rollout paused" and "exited with code 3" in why
                   for a, why in _events(c, t0)), _events(c, t0)
        assert not any(a == "rollback" for a, _ in _events(c, t0))
        time.sleep(2)  # paused: the monitor makes no more of v2, v1 serves as it was
        reps = replica.replicas(cove.root, "pa")["web"]
        assert sorted((r["name"], r["status"]) for r in reps) == [
            (f"pa-web-{n}", "running") for n in (1, 2, 3)], reps
        mark = len(loop.answers)
        wait_for(lambda: len(loop.answers) >= mark + 5, what="answers while paused")
        assert _versions(loop, mark) == {"v1"}
        # 2. the cause gone, `cove rollout` resumes it to the end
        (ctl / "broken").unlink()
        r = c("rollout", "-p", "pa", "web", timeout=120)
        assert "rolled out web:v2" in r.stderr, r.stderr
        mark = len(loop.answers)
        wait_for(lambda: len(loop.answers) >= mark + 5, what="answers after resume")
        assert _versions(loop, mark) == {"v2"}
        # 3. v3 (broken) pauses again; `cove rollback` restores v2
        r = c("rollout", "-p", "pa", "web", "--image", "web:v3", check=False,
              timeout=120)
        assert r.returncode == 1 and "paused" in r.stderr, r.stderr
        r = c("rollback", "-p", "pa", "web", timeout=120)
        assert "rolled back to web:v2" in r.stderr, r.stderr
        assert not any("paused" in row["Rollout"] for row in ps(c, "pa"))
        mark = len(loop.answers)
        wait_for(lambda: len(loop.answers) >= mark + 5, what="answers after rollback")
        assert _versions(loop, mark) == {"v2"}
    finally:
        loop.stop()
    assert loop.failures == [], loop.failures[:5]
    c("down", "-v", "-f", str(f), timeout=60)


def test_detached_rollout_is_driven_by_the_engine(cove: Cove, netns: str, tmp_path: Path,
                                                  downs: list[tuple[Cove, Path]]) -> None:
    c = Cove(cove.root, ["nsenter", f"--net={netns}"])
    build_web(c, tmp_path, ("v1", "v2"))
    f, _ = _project(tmp_path, "dr", "start-first", "rollback", delay="1s")
    downs.append((c, f))
    c("up", "-d", "-f", str(f), timeout=120)
    # `up -d` does not wait for health (as docker-compose's): v1 serving first, so that
    # the rollout replaces serving replicas batch by batch (not-yet-healthy old ones
    # would be replaced at once)
    wait_for(lambda: sum(map(replica.serving, replica.replicas(cove.root, "dr")["web"])) == 3,
             timeout=60, what="v1 serving")
    t0 = time.time()
    c("rollout", "-p", "dr", "web", "--image", "web:v2", "--detach")

    def state() -> str:
        d = json.loads(Path(cove.root, "projects/dr/desired.json").read_text())
        return str(d["services"]["web"]["rollout"]["state"])
    wait_for(lambda: state() == "done", timeout=60, what="the engine's rollout done")
    took = time.time() - t0
    assert took >= 2.0  # (two delays of 1 s between the three batches)
    reps = replica.replicas(cove.root, "dr")["web"]
    assert len(reps) == 3 and all(r["hash"] == reps[0]["hash"] and replica.serving(r)
                                  for r in reps), reps
    assert ("rollout complete", "cove rollout web:v2") in _events(c, t0)
    wait_for(lambda: get(c.prefix, PORT).endswith("v2"), what="v2 serving")
    print(f"detached rollout (3 batches, delay 1s) done by the engine in {took:.1f}s")
    c("down", "-v", "-f", str(f), timeout=60)
