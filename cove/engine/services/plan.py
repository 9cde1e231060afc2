"""What a reconcile pass decides for one service, before it acts (reconcile.py acts):
which replicas failed, what a rolling update or the count asks for, and when the next
pass is due when nothing but time will change the picture (a rollout's `delay`, a new
replica's time to prove itself, a crash loop's back-off).

Pure decisions on the replicas' records and the desired state: no container is touched
here, so tests/services/test_reconcile_plan.py checks them on made-up replicas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cove.engine.services.replica import alive, final_exit, serving

CRASHED, CRASH_DELAY = 2.0, 2.0  # a replica that ran less waits this long to restart
NEVER_STARTED = 30.0  # a replica still `created` this long after is replaced

Rep = dict[str, Any]


@dataclass
class View:
    """One service as a pass sees it, and what the pass decided for it."""

    svc: str
    s: dict[str, Any]
    reps: list[Rep]
    now: float = field(default_factory=time.time)
    retire: list[tuple[Rep, str, str]] = field(default_factory=list)  # rep, action, why
    again: list[tuple[Rep, str]] = field(default_factory=list)  # exited: start again
    hold: list[Rep] = field(default_factory=list)  # ... after their crash back-off
    failed: list[str] = field(default_factory=list)  # new replicas failing an update
    cur_live: list[Rep] = field(default_factory=list)  # (sets() fills these four)
    cur_serving: list[Rep] = field(default_factory=list)
    pending: list[Rep] = field(default_factory=list)
    old_serving: list[Rep] = field(default_factory=list)
    create: int = 0
    wake: float | None = None  # wall clock: a pass is due then, whatever happens

    def __post_init__(self) -> None:
        self.spec: dict[str, Any] = self.s["spec"]
        self.h: str = self.s["hash"]
        self.want = int(self.s["replicas"])
        self.cur = [r for r in self.reps if r["hash"] == self.h]
        self.old = [r for r in self.reps if r["hash"] != self.h]
        self.set_rollout(self.s.get("rollout") or {})
        hc = self.spec["healthcheck"]
        # a new replica's time to prove itself during an update
        self.proof: float = self.uc["monitor"] + (
            hc["start_period"] + (hc["interval"] + hc["timeout"]) * (hc["retries"] + 1)
            if hc else 0.0)

    def set_rollout(self, ro: dict[str, Any]) -> None:
        self.ro = ro
        self.updating = ro.get("state") in ("updating", "rolling_back")
        self.paused = ro.get("state") == "paused"
        self.uc: dict[str, Any] = self.spec["rollback_config" if ro.get("state") ==
                                            "rolling_back" else "update_config"]

    def due(self, t: float) -> None:
        """A pass is wanted at `t` (wall clock) at the latest."""
        self.wake = t if self.wake is None else min(self.wake, t)


def failures(v: View) -> None:
    """1. The current version's dead and unhealthy replicas: started again in place
    (the fast way), replaced, or — during an update — failures of the update; while an
    update is paused, the new version's failures are only retired (nothing new)."""
    for r in v.cur:
        failed = _why_failed(v, r)
        if not failed:
            continue
        if v.updating:
            v.failed.append(failed)
        if not alive(r) and r["status"] != "created" and not v.updating \
                and not v.paused:
            if r["finished"] - r["started"] < CRASHED and \
                    v.now - r["finished"] < CRASH_DELAY:
                v.hold.append(r)  # it died at once: not in a tight loop
                v.due(r["finished"] + CRASH_DELAY)
                continue
            v.again.append((r, failed))
        else:
            v.retire.append((r, "replace", failed))


def _why_failed(v: View, r: Rep) -> str:
    if not alive(r) and r["status"] != "created":
        if final_exit(v.spec, r["exit"]):
            return ""
        why = f"{r['name']} exited with code {r['exit']}"
        return why + (f" ({r['error']})" if r["error"] else "")
    if r["health"] == "unhealthy":
        return f"{r['name']} unhealthy: {r['log'].strip()[-200:]}".rstrip(": ")
    if r["status"] == "created":
        if v.now - r["created"] > NEVER_STARTED:
            return f"{r['name']} never started"
        v.due(r["created"] + NEVER_STARTED)
    elif v.updating and r["status"] == "running" and r["health"] == "starting":
        if v.now - r["started"] > v.proof:
            return f"{r['name']} not healthy within {v.proof:g}s"
        v.due(r["started"] + v.proof)
    return ""


def sets(v: View) -> None:
    """The replicas that count: the current version's live ones (and those started
    again), which of them serve and which are still proving themselves; the old
    version's serving ones (those not serving leave at once)."""
    gone = {id(r) for r, _, _ in v.retire}
    back = {id(r) for r, _ in v.again} | {id(r) for r in v.hold}
    v.cur_live = [r for r in v.cur if id(r) not in gone and (
        alive(r) or id(r) in back or
        (r["status"] != "created" and final_exit(v.spec, r["exit"])))]
    v.cur_serving = [r for r in v.cur_live if serving(r)]
    v.pending = [r for r in v.cur_live if (alive(r) or id(r) in back) and not serving(r)]
    v.old_serving = [r for r in v.old if serving(r)]
    for r in v.old:
        if not serving(r):
            v.retire.append((r, "replace", f"{r['name']}: old version, not serving"))


def rolling(v: View) -> bool:
    """2. A rolling update's next batch (whether it made one): `start-first` adds
    `parallelism` new replicas and retires as many old ones once they serve;
    `stop-first` retires `parallelism` old ones and adds as many new ones, so that no
    more than `replicas` run and no fewer than `replicas - parallelism` serve."""
    par = v.uc["parallelism"]
    next_batch = float(v.ro.get("next_batch", 0))
    if v.pending:
        return False  # the last batch is still proving itself
    if v.now < next_batch:
        v.due(next_batch)  # its delay runs
        return False
    out: list[Rep]
    if v.uc["order"] == "start-first":
        excess = len(v.cur_serving) + len(v.old_serving) - v.want
        out = sorted(v.old_serving, key=lambda r: -r["number"])[:max(0, excess)]
        if len(v.cur_live) < v.want:
            v.create = min(par, v.want - len(v.cur_live))
    else:
        room = v.want - len(v.cur_live)
        out = sorted(v.old_serving, key=lambda r: -r["number"])[:par] if room > 0 \
            else v.old_serving
        v.create = min(len(out), max(0, room))
    v.retire += [(r, "rollout", "replaced by the new version") for r in out]
    return bool(v.create or out)


def count(v: View) -> None:
    """3. The count: extra replicas retired (those not serving first, then the highest
    numbers), missing ones made — none while an update is paused (the old version
    serves as it is until `cove rollout` resumes or `cove rollback`)."""
    have = len(v.cur_live) + (len(v.old_serving) if v.paused else 0)
    if have > v.want:
        extra = sorted([r for r in v.cur_live if alive(r)],
                       key=lambda r: (serving(r), -r["number"]))
        v.retire += [(r, "scale", f"scale to {v.want}") for r in extra[:have - v.want]]
    elif have < v.want and not v.paused:
        v.create = v.want - have


def numbers(v: View, out_ids: set[int]) -> list[int]:
    """The numbers of the replicas to make: a replacement takes the number (so the
    name) of the replica it replaces, else the lowest free one."""
    used = {r["number"] for r in v.reps if id(r) not in out_ids}
    reuse = sorted(r["number"] for r, action, _ in v.retire
                   if action == "replace" and r["hash"] == v.h and r["number"] > 0)
    new: list[int] = []
    for _ in range(v.create):
        n = next((i for i in reuse if i not in used), 0) or \
            next(i for i in range(1, len(used) + 2) if i not in used)
        used.add(n)
        new.append(n)
    return new


def deps_ready(d: dict[str, Any], reps: dict[str, list[Rep]], spec: dict[str, Any]
               ) -> bool:
    """A service's `depends_on` conditions hold (before its first replica is made)."""
    for dep, cond in spec["depends_on"].items():
        want = d["services"].get(dep, {}).get("replicas", 1)
        theirs = reps.get(dep, [])
        if cond == "service_started":
            if sum(alive(r) for r in theirs) < min(want, 1):
                return False
        elif cond == "service_healthy":
            if sum(r["status"] == "running" and r["health"] in (None, "healthy")
                   for r in theirs) < want:
                return False
        elif not theirs or any(alive(r) for r in theirs) or any(r["exit"] for r in theirs):
            return False  # service_completed_successfully
    return True
