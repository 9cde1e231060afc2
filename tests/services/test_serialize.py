"""A service's desired state has one writer at a time: a reconcile pass that rolls a
failing update back (the engine's doing) and a `cove rollout` run meanwhile (the
person's) both read-modify-write it under the project's `lock`, and the pass changes
it only while it is still the version it judged. Provoked with real processes: the
`cove rollout` CLI runs in a process of its own at the worst moment of a pass (after
the pass read the state, before it acts on the failure), and while the pass is inside
its own write. No containers: the pass's replicas are made up (tests/lib/plans.py's
Plan records what it would do)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cove.engine.services import state as desired
from tests.lib.plans import SPEC_V1, SPEC_V2, Plan, replica, service_spec


def _up(root: str) -> dict[str, Any]:
    """A project `p` whose web service is rolling out to v2 (v1 before it). (At 0
    replicas: the CLI starts no monitor for it — this root has no engine — and the
    failing new replica is judged all the same.)"""
    spec = service_spec()
    d = {"project": "p", "workdir": "/", "file": "/compose.yaml", "networks": [],
         "volumes": [], "services": {"web": {
             "spec": spec, "hash": SPEC_V2, "generation": 0, "replicas": 0,
             "previous": {"spec": {**spec, "image": "web:v1"}, "hash": SPEC_V1},
             "rollout": {"state": "updating", "reason": "cove rollout web:v2", "at": 0},
             "applied": None}}}
    desired.save(root, "p", d)
    return d


def _cli_rollout(root: str) -> subprocess.Popen[str]:
    """`cove rollout web --detach` (a new generation of the same spec: no image to
    look up), a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "cove.cli.main", "--root", root,
                             "rollout", "-p", "p", "web", "--detach"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _failing_reps() -> list[dict[str, Any]]:
    return [*(replica(n, SPEC_V1) for n in (1, 2, 3)), replica(4, SPEC_V2, health="unhealthy")]


class Racing(Plan):
    """A pass whose rollback decision is delayed until `cove rollout` ran."""

    def fail_rollout(self, svc: str, reason: str) -> None:
        p = _cli_rollout(self.root)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        super().fail_rollout(svc, reason)


def test_rollout_during_a_pass_is_not_overwritten(tmp_path: Path) -> None:
    root = str(tmp_path)
    d = _up(root)
    p = Racing(root, json.loads(json.dumps(d)), _failing_reps())
    assert p.service("web") is False
    now = desired.load(root, "p")
    assert now is not None
    s = now["services"]["web"]
    # the person's rollout stands: a new generation of v2, v2 kept as the previous
    assert s["rollout"]["state"] == "updating", s["rollout"]
    assert s["generation"] == 1 and s["hash"] not in (SPEC_V1, SPEC_V2)
    assert s["spec"]["image"] == "web:v2" and s["previous"]["hash"] == SPEC_V2
    # the pass dropped its rollback (no event for what did not happen) and acted on
    # nothing of the old picture
    assert not any(x[:2] == ("event", "rollback") for x in p.log), p.log
    assert not any(x[0] in ("create", "retire") for x in p.log), p.log
    assert "web" in p.stale


def test_pass_and_cli_write_one_after_the_other(tmp_path: Path) -> None:
    """The CLI's rollout starts while the pass is inside its write (its lock held): it
    waits, then works on the rolled-back state; neither write is lost."""
    root = str(tmp_path)
    d = _up(root)
    inside = threading.Event()
    save = desired.save
    procs: list[subprocess.Popen[str]] = []

    def slow_save(root_: str, project: str, doc: dict[str, Any]) -> None:
        procs.append(_cli_rollout(root))  # now, while this pass holds the lock
        time.sleep(1.0)  # time enough for it to try (and have to wait)
        inside.set()
        save(root_, project, doc)

    p = Plan(root, json.loads(json.dumps(d)), _failing_reps())
    desired.save = slow_save  # type: ignore[assignment]
    try:
        p.service("web")
    finally:
        desired.save = save
    assert inside.is_set() and len(procs) == 1
    _, err = procs[0].communicate(timeout=60)
    assert procs[0].returncode == 0, err
    s = (desired.load(root, "p") or {})["services"]["web"]
    # the pass's rollback went in first (v1 desired, v2 as previous), then the CLI's
    # rollout on top of it: a new generation of v1, with v1 as the previous
    assert ("event", "rollback", "p-web-4 unhealthy: boom") in p.log
    assert s["spec"]["image"] == "web:v1" and s["previous"]["hash"] == SPEC_V1
    assert s["rollout"]["state"] == "updating" and s["generation"] == 1
