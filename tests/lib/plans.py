"""Reconcile passes on made-up replicas (no containers): `Plan` records what a pass of
cove/engine/services/reconcile.py would do instead of doing it; `service_spec` and
`replica` make the service it judges and that service's replicas. Used by
tests/services/test_reconcile_plan.py (the pass's decisions) and test_serialize.py (a
pass raced against `cove rollout`)."""

from __future__ import annotations

import time
from typing import Any

from cove.engine.services import composekeys, reconcile

SPEC_V1 = "v1hash"
SPEC_V2 = "v2hash"


def service_spec(order: str = "start-first", action: str = "rollback", par: int = 1,
                 health: bool = True) -> dict[str, Any]:
    """The compose model of service `web` at v2, as composekeys makes it."""
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


def replica(n: int, h: str, status: str = "running", health: str | None = "healthy",
            code: int = 0, age: float = 60.0) -> dict[str, Any]:
    """Replica number `n` of `web` as replica.replicas lists it, of spec hash `h`."""
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
