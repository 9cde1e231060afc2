"""reconcile.py's decisions, on made-up replicas (no containers: the pass's actions are
recorded instead of done): rolling updates start-first and stop-first, pause and
rollback on a failing new version, replacement, scaling, and that the load balancer
loses a replica before it is stopped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.lib.plans import SPEC_V1, SPEC_V2, Plan, replica, service_spec


def _d(spec: dict[str, Any], want: int = 3, state: str | None = "updating",
       h: str = SPEC_V2) -> dict[str, Any]:
    prev = {"spec": {**spec, "image": "web:v1"}, "hash": SPEC_V1}
    return {"services": {"web": {"spec": spec, "hash": h, "replicas": want,
                                 "previous": prev if state else None,
                                 "rollout": {"state": state} if state else None}}}


def test_start_first_adds_before_it_retires(tmp_path: Path) -> None:
    d = _d(service_spec())
    p = Plan(str(tmp_path), d, [replica(n, SPEC_V1) for n in (1, 2, 3)])
    assert p.service("web") is False
    assert p.log == [("lb", "10.0.0.1", "10.0.0.2", "10.0.0.3"), ("create", "4")]
    # the new one is healthy: one old one leaves the lb, then is retired; next batch
    reps = [*(replica(n, SPEC_V1) for n in (1, 2, 3)), replica(4, SPEC_V2)]
    p = Plan(str(tmp_path), d, reps)
    d["services"]["web"]["rollout"]["next_batch"] = 0
    p.service("web")
    assert p.log[:2] == [("lb", "10.0.0.1", "10.0.0.2", "10.0.0.4"), ("retire", "p-web-3")]
    assert ("create", "3") in p.log  # the freed number


def test_start_first_waits_for_health(tmp_path: Path) -> None:
    reps = [*(replica(n, SPEC_V1) for n in (1, 2, 3)), replica(4, SPEC_V2, health="starting",
                                                      age=0.5)]
    p = Plan(str(tmp_path), _d(service_spec()), reps)
    assert p.service("web") is False
    assert p.log == [("lb", "10.0.0.1", "10.0.0.2", "10.0.0.3")]  # nothing else yet


def test_stop_first_retires_parallelism_first(tmp_path: Path) -> None:
    p = Plan(str(tmp_path), _d(service_spec(order="stop-first", par=2)),
             [replica(n, SPEC_V1) for n in (1, 2, 3)])
    p.service("web")
    assert p.log[0] == ("lb", "10.0.0.1")
    assert [x for x in p.log if x[0] == "retire"] == [("retire", "p-web-3"),
                                                       ("retire", "p-web-2")]
    assert [x for x in p.log if x[0] == "create"] == [("create", "2"), ("create", "3")]


def test_unhealthy_new_version_rolls_back(tmp_path: Path) -> None:
    d = _d(service_spec())
    reps = [*(replica(n, SPEC_V1) for n in (1, 2, 3)), replica(4, SPEC_V2, health="unhealthy")]
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
    d = _d(service_spec(action="pause"))
    reps = [*(replica(n, SPEC_V1) for n in (1, 2, 3)),
            replica(4, SPEC_V2, status="exited", health=None, code=1)]
    p = Plan(str(tmp_path), d, reps)
    p.service("web")
    assert d["services"]["web"]["rollout"]["state"] == "paused"
    assert ("retire", "p-web-4") in p.log
    assert not any(x[0] == "create" for x in p.log)  # old ones serve; nothing new


def test_dead_replica_started_again_and_unhealthy_one_replaced(tmp_path: Path) -> None:
    reps = [replica(1, SPEC_V2), replica(2, SPEC_V2, status="exited", code=137),
            replica(3, SPEC_V2, health="unhealthy")]
    p = Plan(str(tmp_path), _d(service_spec(), state=None), reps)
    p.service("web")
    assert p.log[0] == ("lb", "10.0.0.1")
    assert ("restart", "p-web-2") in p.log
    assert ("retire", "p-web-3") in p.log and ("create", "3") in p.log
    assert ("event", "replace", "p-web-3 unhealthy: boom") in p.log


def test_clean_exit_is_final_unless_restart_says(tmp_path: Path) -> None:
    spec = service_spec(health=False)
    p = Plan(str(tmp_path), _d(spec, want=1, state=None),
             [replica(1, SPEC_V2, status="exited", health=None, code=0)])
    assert p.service("web") is True
    assert not [x for x in p.log if x[0] != "lb"]
    spec["restart"] = "always"
    p = Plan(str(tmp_path), _d(spec, want=1, state=None),
             [replica(1, SPEC_V2, status="exited", health=None, code=0)])
    p.service("web")
    assert ("restart", "p-web-1") in p.log


def test_scale_down_retires_non_serving_then_highest(tmp_path: Path) -> None:
    reps = [replica(1, SPEC_V2), replica(2, SPEC_V2, health="starting"), replica(3, SPEC_V2),
            replica(4, SPEC_V2)]
    p = Plan(str(tmp_path), _d(service_spec(), want=2, state=None), reps)
    p.service("web")
    assert p.log[0] == ("lb", "10.0.0.1", "10.0.0.3")
    assert [x for x in p.log if x[0] == "retire"] == [("retire", "p-web-2"),
                                                       ("retire", "p-web-4")]


def test_a_crash_loop_waits(tmp_path: Path) -> None:
    crashed = {**replica(1, SPEC_V2, status="exited", code=1, age=1.0)}
    p = Plan(str(tmp_path), _d(service_spec(), want=1, state=None), [crashed])
    assert p.service("web") is False
    assert not [x for x in p.log if x[0] != "lb"]  # not started again yet, nothing new
    crashed["finished"] = time.time() - 2.5
    p = Plan(str(tmp_path), _d(service_spec(), want=1, state=None), [crashed])
    p.service("web")
    assert ("restart", "p-web-1") in p.log
