"""reconcile.py's decisions, on made-up replicas (no containers: the pass's actions are
recorded instead of done): rolling updates start-first and stop-first, pause and
rollback on a failing new version, replacement, scaling, and that the load balancer
loses a replica before it is stopped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cove.engine.services import composekeys, reconcile

SPEC_V1 = "v1hash"
SPEC_V2 = "v2hash"


def _spec(order: str = "start-first", action: str = "rollback", par: int = 1,
          health: bool = True) -> dict[str, Any]:
    uc = {**composekeys.UPDATE_DEFAULTS, "order": order, "failure_action": action,
          "parallelism": par, "monitor": 1.0}
    return {"image": "web:v2", "command": None, "entrypoint": None, "environment": {},
            "labels": {}, "ports": [{"host_ip": "", "host_port": 8080, "proto": "tcp",
                                     "target": 80}],
            "volumes": [], "networks": ["default"], "depends_on": {},
            "healthcheck": {"test": "true", "interval": 0.3, "timeout": 1.0, "retries": 2,
                            "start_period": 0.0} if health else None,
            "restart": None, "restart_policy": {}, "update_config": uc,
            "rollback_config": uc, "limits": {}, "reservations": {},
            "container_name": None, "stop_grace_period": 1.0}


def _rep(n: int, h: str, status: str = "running", health: str | None = "healthy",
         code: int = 0, age: float = 60.0) -> dict[str, Any]:
    return {"name": f"p-web-{n}", "number": n, "hash": h, "status": status,
            "health": health, "exit": code, "ip": f"10.0.0.{n}" if status == "running"
            else "", "created": time.time() - age, "started": time.time() - age,
            "finished": time.time() - age / 2,
            "log": "boom", "error": ""}


class Plan(reconcile.Pass):
    """A pass that records what it would do."""

    def __init__(self, root: str, d: dict[str, Any], reps: list[dict[str, Any]]) -> None:
        super().__init__(root, "p", d)
        self.reps = {"web": reps}
        self.log: list[tuple[str, ...]] = []

    def create_all(self, svc: str, s: dict[str, Any], numbers: list[int]) -> None:
        self.log += [("create", str(n)) for n in numbers]

    def retire(self, r: dict[str, Any], grace: float) -> None:
        self.log.append(("retire", r["name"]))

    def restart(self, svc: str, s: dict[str, Any], r: dict[str, Any], reason: str) -> None:
        self.log.append(("restart", r["name"]))

    def publish(self, svc: str, s: dict[str, Any], backends: list[str]) -> None:
        self.log.append(("lb", *sorted(backends)))

    def event(self, svc: str, action: str, reason: str, **kw: object) -> None:
        self.log.append(("event", action, reason))


def _d(spec: dict[str, Any], want: int = 3, state: str | None = "updating",
       h: str = SPEC_V2) -> dict[str, Any]:
    prev = {"spec": {**spec, "image": "web:v1"}, "hash": SPEC_V1}
    return {"services": {"web": {"spec": spec, "hash": h, "replicas": want,
                                 "previous": prev if state else None,
                                 "rollout": {"state": state} if state else None}}}


def test_start_first_adds_before_it_retires(tmp_path: Path) -> None:
    d = _d(_spec())
    p = Plan(str(tmp_path), d, [_rep(n, SPEC_V1) for n in (1, 2, 3)])
    assert p.service("web") is False
    assert p.log == [("lb", "10.0.0.1", "10.0.0.2", "10.0.0.3"), ("create", "4")]
    # the new one is healthy: one old one leaves the lb, then is retired; next batch
    reps = [*(_rep(n, SPEC_V1) for n in (1, 2, 3)), _rep(4, SPEC_V2)]
    p = Plan(str(tmp_path), d, reps)
    d["services"]["web"]["rollout"]["next_batch"] = 0
    p.service("web")
    assert p.log[:2] == [("lb", "10.0.0.1", "10.0.0.2", "10.0.0.4"), ("retire", "p-web-3")]
    assert ("create", "3") in p.log  # the freed number


def test_start_first_waits_for_health(tmp_path: Path) -> None:
    reps = [*(_rep(n, SPEC_V1) for n in (1, 2, 3)), _rep(4, SPEC_V2, health="starting",
                                                      age=0.5)]
    p = Plan(str(tmp_path), _d(_spec()), reps)
    assert p.service("web") is False
    assert p.log == [("lb", "10.0.0.1", "10.0.0.2", "10.0.0.3")]  # nothing else yet


def test_stop_first_retires_parallelism_first(tmp_path: Path) -> None:
    p = Plan(str(tmp_path), _d(_spec(order="stop-first", par=2)),
             [_rep(n, SPEC_V1) for n in (1, 2, 3)])
    p.service("web")
    assert p.log[0] == ("lb", "10.0.0.1")
    assert [x for x in p.log if x[0] == "retire"] == [("retire", "p-web-3"),
                                                       ("retire", "p-web-2")]
    assert [x for x in p.log if x[0] == "create"] == [("create", "2"), ("create", "3")]


def test_unhealthy_new_version_rolls_back(tmp_path: Path) -> None:
    d = _d(_spec())
    reps = [*(_rep(n, SPEC_V1) for n in (1, 2, 3)), _rep(4, SPEC_V2, health="unhealthy")]
    p = Plan(str(tmp_path), d, reps)
    assert p.service("web") is False
    s = d["services"]["web"]
    assert s["hash"] == SPEC_V1 and s["spec"]["image"] == "web:v1"
    assert s["rollout"]["state"] == "rolling_back"
    assert p.log == [("event", "rollback", "p-web-4 unhealthy: boom")]
    # the next pass: the v2 replica is the old version now, not serving: out at once;
    # the v1 replicas stay in the lb
    p = Plan(str(tmp_path), d, reps)
    p.service("web")
    assert p.log[0] == ("lb", "10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert ("retire", "p-web-4") in p.log and not any(x[0] == "create" for x in p.log)


def test_failing_new_version_pauses(tmp_path: Path) -> None:
    d = _d(_spec(action="pause"))
    reps = [*(_rep(n, SPEC_V1) for n in (1, 2, 3)),
            _rep(4, SPEC_V2, status="exited", health=None, code=1)]
    p = Plan(str(tmp_path), d, reps)
    p.service("web")
    assert d["services"]["web"]["rollout"]["state"] == "paused"
    assert ("retire", "p-web-4") in p.log
    assert not any(x[0] == "create" for x in p.log)  # old ones serve; nothing new


def test_dead_replica_started_again_and_unhealthy_one_replaced(tmp_path: Path) -> None:
    reps = [_rep(1, SPEC_V2), _rep(2, SPEC_V2, status="exited", code=137),
            _rep(3, SPEC_V2, health="unhealthy")]
    p = Plan(str(tmp_path), _d(_spec(), state=None), reps)
    p.service("web")
    assert p.log[0] == ("lb", "10.0.0.1")
    assert ("restart", "p-web-2") in p.log
    assert ("retire", "p-web-3") in p.log and ("create", "3") in p.log
    assert ("event", "replace", "p-web-3 unhealthy: boom") in p.log


def test_clean_exit_is_final_unless_restart_says(tmp_path: Path) -> None:
    spec = _spec(health=False)
    p = Plan(str(tmp_path), _d(spec, want=1, state=None),
             [_rep(1, SPEC_V2, status="exited", health=None, code=0)])
    assert p.service("web") is True
    assert not [x for x in p.log if x[0] != "lb"]
    spec["restart"] = "always"
    p = Plan(str(tmp_path), _d(spec, want=1, state=None),
             [_rep(1, SPEC_V2, status="exited", health=None, code=0)])
    p.service("web")
    assert ("restart", "p-web-1") in p.log


def test_scale_down_retires_non_serving_then_highest(tmp_path: Path) -> None:
    reps = [_rep(1, SPEC_V2), _rep(2, SPEC_V2, health="starting"), _rep(3, SPEC_V2),
            _rep(4, SPEC_V2)]
    p = Plan(str(tmp_path), _d(_spec(), want=2, state=None), reps)
    p.service("web")
    assert p.log[0] == ("lb", "10.0.0.1", "10.0.0.3")
    assert [x for x in p.log if x[0] == "retire"] == [("retire", "p-web-2"),
                                                       ("retire", "p-web-4")]


def test_a_crash_loop_waits(tmp_path: Path) -> None:
    crashed = {**_rep(1, SPEC_V2, status="exited", code=1, age=1.0)}
    p = Plan(str(tmp_path), _d(_spec(), want=1, state=None), [crashed])
    assert p.service("web") is False
    assert not [x for x in p.log if x[0] != "lb"]  # not started again yet, nothing new
    crashed["finished"] = time.time() - 2.5
    p = Plan(str(tmp_path), _d(_spec(), want=1, state=None), [crashed])
    p.service("web")
    assert ("restart", "p-web-1") in p.log
