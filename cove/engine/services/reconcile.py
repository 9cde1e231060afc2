"""Make a project's replicas match its desired state (services/state.py), one pass at a
time. A pass is idempotent and does not wait for health: it looks at every replica's
record, decides (plan.py), acts, and returns whether the project has converged and when
the next pass is due if nothing else happens. The root's monitor runs passes in
children it forks — on events: a project's container exits or changes health, the CLI
changed the desired state (`notify`), the monitor starts; and at the time the last
pass asked for (a rollout's delay, a new replica's deadline, an autoscaled service's
next CPU sample): cove/engine/policy.py — and the CLI runs them in a loop to wait for
what it asked. `reconcile.lock` keeps two passes of one project from running at once;
what a pass changes in the desired state it changes under the project's `lock`, as
the CLI does, and only if the service is still at the version the pass read
(`commit`): a `cove rollout` during a pass is never overwritten by it.

Per service, in dependency order:

1. replicas that exited are replaced (removed, then made again under the same number),
   unless the restart policy says a clean exit is final (`restart: "no"`,
   `on-failure`, `deploy.restart_policy.condition`; with none set, exit 0 is final and
   anything else is replaced); unhealthy ones are replaced;
2. a rolling update (replicas whose config hash is not the desired one) proceeds by
   `update_config`: `start-first` makes `parallelism` new replicas and retires as many
   old ones once they are healthy, `stop-first` retires first; `delay` between batches;
   a new replica that exits, turns unhealthy, or is not healthy within its checks'
   time plus `monitor` fails the update: `failure_action: rollback` puts the previous
   spec back (and rolls to it the same way), `pause` stops there;
3. the count follows `replicas` (extra ones retired: those not serving first, then the
   highest numbers).

The load balancer (lb.py) gets the serving replicas (running, healthy when there is a
health check, not about to be retired) before any replica is stopped, and a serving
replica gets DRAIN seconds after it left before it is stopped. Every scale, replace,
rollout and rollback is a `service` event with its reason.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from cove.engine.services import plan
from cove.engine.services import state as desired
from cove.engine.services.actions import Actions
from cove.engine.services.replica import (
    alive,
    final_exit,
    replicas,
    resource_name,
    serving,
)
from cove.errors import CoveError

AFTER_ACTING = 0.3  # s: a pass that acted has the next one look at what it did
RETRY, RETRY_ERRORS = 2.0, 5.0  # s: a pass not converged and waiting on no event
AUTOSCALE_TICK = 10.0  # s: the autoscaled services' CPU samples (the only timer left)
DRAIN = 0.3  # seconds a retired replica keeps serving what it has, off the backends


class Pass(Actions):
    """One reconcile pass over a project (its actions on replicas: actions.py)."""

    def __init__(self, root: str, project: str, d: dict[str, Any]) -> None:
        self.root, self.project, self.d = root, project, d
        self.reps = replicas(root, project)
        self.errors: list[str] = []
        self.resources_ok = False
        # the version of each service this pass decides for (commit() checks it)
        self.base = {svc: _version(s) for svc, s in d["services"].items()}
        self.stale: set[str] = set()  # services changed by someone else meanwhile
        self.wake: float | None = None  # when the next pass is due, events aside

    def event(self, svc: str, action: str, reason: str, **kw: object) -> None:
        desired.emit(self.root, self.project, svc, action, reason, **kw)

    def say(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"services {self.project}: {msg}", file=sys.stderr, flush=True)

    # -- load balancer and names ----------------------------------------------------------

    def publish(self, svc: str, s: dict[str, Any], backends: list[str]) -> None:
        """Hand the serving set to the lb and the name service, when it changed (on
        any of the service's networks: a replica started again may have new
        addresses on its further ones)."""
        backends = sorted(backends)
        addrs = self.addresses(svc, s, backends)
        if (s.get("applied") == backends and s.get("applied_names", addrs) == addrs) \
                or (s.get("applied") is None and not backends):
            return  # (nothing given yet, nothing to give: the network may not be made)
        try:
            from cove.engine.services import lb
        except ImportError:
            lb = None  # type: ignore[assignment]  # the networking work is not here yet
        try:
            from cove.engine.services import names
        except ImportError:
            names = None  # type: ignore[assignment]
        try:
            # (a port without a host port is only exposed: no lb for it)
            ports = [p for p in s["spec"]["ports"] if p["host_port"]]
            if lb is not None and ports:
                lb.apply(self.root, self.project, svc, ports, backends)
            if names is not None:
                for net, ips in addrs.items():
                    names.apply(self.root, net, svc, ips)
        except Exception as e:
            self.say(f"{svc}: load balancer: {e}")
            return

        def applied(t: dict[str, Any]) -> None:
            t["applied"] = backends
            if len(addrs) > 1:
                t["applied_names"] = addrs
        self.commit(svc, applied, always=True)

    def addresses(self, svc: str, s: dict[str, Any], backends: list[str]
                  ) -> dict[str, list[str]]:
        """The serving replicas' addresses on each of the service's networks (the
        backends are their addresses on the first)."""
        nets = [resource_name(self.project, n) for n in s["spec"]["networks"]]
        by_ip = {r["ip"]: r for r in self.reps.get(svc, []) if r["ip"]}
        out: dict[str, list[str]] = {nets[0]: backends}
        for net in nets[1:]:
            out[net] = [ip for b in backends
                        if (ip := (by_ip.get(b) or {}).get("ips", {}).get(net))]
        return out

    # -- a service ------------------------------------------------------------------------

    def placement(self, reservations: dict[str, Any], count: int) -> str | None:
        """Why `count` more replicas don't fit the host (autoscale.fits), or None."""
        try:
            from cove.engine.services import autoscale
        except ImportError:
            return None
        return autoscale.fits(self.root, reservations, count)

    def fail_rollout(self, svc: str, reason: str) -> None:
        """A new replica failed the update: `failure_action` says what now — committed
        at once, under the project's lock, unless a `cove rollout`/`rollback` changed
        the service since this pass read it (then theirs stands)."""
        uc = self.d["services"][svc]["spec"]["update_config"]
        acted: list[tuple[str, str]] = []

        def change(s: dict[str, Any]) -> None:
            ro = s.get("rollout") or {}
            if ro.get("state") == "rolling_back" or uc["failure_action"] == "continue" \
                    or not s.get("previous"):
                return
            if uc["failure_action"] == "rollback":
                prev = s["previous"]
                s["previous"] = {"spec": s["spec"], "hash": s["hash"]}
                s["spec"], s["hash"] = prev["spec"], prev["hash"]
                s["rollout"] = {"state": "rolling_back", "reason": reason,
                                "at": time.time()}
                acted.append(("rollback", s["spec"]["image"]))
            else:
                s["rollout"] = {**ro, "state": "paused", "reason": reason,
                                "at": time.time()}
                acted.append(("rollout paused", s["spec"]["image"]))
        if self.commit(svc, change) and acted:
            action, image = acted[-1]
            self.event(svc, action, reason, **({"image": image}
                                               if action == "rollback" else {}))

    def service(self, svc: str) -> bool:
        """Decide (plan.py) and act for one service; whether it has converged."""
        s = self.d["services"][svc]
        v = plan.View(svc, s, self.reps.get(svc, []))
        plan.failures(v)
        if v.failed:
            self.fail_rollout(svc, v.failed[0])
            s = self.d["services"][svc]
            if svc in self.stale or s["hash"] != v.h:
                return self.later(v, time.time())  # the next pass works to the new spec
            v.set_rollout(s.get("rollout") or {})
        plan.sets(v)
        if v.old_serving and not v.paused:
            if plan.rolling(v):
                nb = v.now + v.uc["delay"]
                if not self.commit(svc, lambda t: t.__setitem__(
                        "rollout", {**(t.get("rollout") or {}), "next_batch": nb})):
                    return self.later(v, time.time())  # a newer rollout: next pass
        else:
            plan.count(v)
        if v.create and not v.reps and not plan.deps_ready(self.d, self.reps, v.spec):
            return self.later(v, None)
        return self.act(v)

    def act(self, v: plan.View) -> bool:
        """Carry out what was decided: the lb first, then retire, start again, make."""
        svc, s, spec = v.svc, v.s, v.spec
        out_ids = {id(r) for r, _, _ in v.retire}
        backends = [r for r in [*v.cur_serving, *v.old_serving] if id(r) not in out_ids]
        self.publish(svc, s, [r["ip"] for r in backends])
        if any(serving(r) for r, _, _ in v.retire):
            time.sleep(DRAIN)
        for r, action, reason in v.retire:
            self.retire(r, spec["stop_grace_period"])
            if action != "rollout":
                self.event(svc, action, reason, container=r["name"])
        if v.create and spec.get("reservations"):
            refused = self.placement(spec["reservations"], v.create)
            if refused:
                self.say(f"{svc}: {refused}")
                if s.get("refused") != refused:
                    self.event(svc, "placement refused", refused)
                    self.commit(svc, lambda t: t.__setitem__("refused", refused))
                v.create = 0
        new = plan.numbers(v, out_ids)
        for r, reason in v.again:
            self.restart(svc, s, r, reason)
        self.create_all(svc, s, new)
        if v.retire or new or v.again or v.hold:
            if new:  # services after this one see these replicas in this pass
                self.reps[svc] = replicas(self.root, self.project).get(svc, [])
            return self.later(v, v.now + AFTER_ACTING)
        if v.updating and not v.old and not v.pending and len(v.cur_serving) >= v.want:
            done = "rolled_back" if v.ro.get("state") == "rolling_back" else "done"
            why = v.ro.get("reason", "")
            if self.commit(svc, lambda t: t.__setitem__(
                    "rollout", {"state": done, "reason": why, "at": v.now})):
                self.event(svc, "rollout complete" if done == "done" else
                           "rollback complete", why, image=spec["image"])
        done_ = not v.old and not v.pending and len(v.cur_live) >= v.want
        return True if done_ else self.later(v, None)

    def later(self, v: plan.View, at: float | None) -> bool:
        """Not converged: the next pass is due by `at`, by what the plan waits for, or
        by events alone (an exit, a health change) when neither says."""
        if at is not None:
            v.due(at)
        if v.wake is not None:
            self.wake = v.wake if self.wake is None else min(self.wake, v.wake)
        return False

    def commit(self, svc: str, fn: Callable[[dict[str, Any]], None],
               always: bool = False) -> bool:
        """Change the service's desired state now: read, change, write under the
        project's lock (the one `cove rollout`, `rollback`, `scale`, `up` and the
        autoscaler change it under), and only while it is still the version this pass
        read (`always`: what the pass owns whatever the version, the lb's backends).
        Whether it was done; when not, the pass holds the newer state and leaves that
        service to the next pass."""
        mine = self.d["services"][svc]
        with desired.locked(self.root, self.project):
            now = desired.load(self.root, self.project)
            t = (now or {}).get("services", {}).get(svc)
            if now is None:  # taken down meanwhile (or a made-up state: tests)
                fn(mine)
                return True
            if t is None or (not always and _version(t) != self.base.get(svc)):
                self.stale.add(svc)
                if t is not None:
                    self.d["services"][svc] = t
                return False
            fn(t)
            desired.save(self.root, self.project, now)
        fn(mine)
        self.base[svc] = _version(mine)
        return True

    def run(self) -> bool:
        from cove.engine.services import compose
        done = True
        for svc in compose.order({k: v["spec"] for k, v in self.d["services"].items()}):
            try:
                done = self.service(svc) and done
            except CoveError as e:
                self.say(f"{svc}: {e}")
                done = False
        return done


def _version(s: dict[str, Any]) -> tuple[str, str]:
    """What a pass's changes are made against: the desired version and the rollout's
    state (a `cove rollout`, `rollback`, `up` of a changed service, or a resumed
    rollout changes it)."""
    return s["hash"], str((s.get("rollout") or {}).get("state"))


def run_pass(root: str, project: str, block: bool = True
             ) -> tuple[bool | None, float | None, bool]:
    """One pass: whether the project converged (None: another pass holds the lock, or
    no desired state), when the next one is due (wall clock; None: on events only),
    and whether the lock was busy."""
    with desired.locked(root, project, "reconcile.lock", block=block) as got:
        if not got:
            return None, None, True
        d = desired.load(root, project)
        if d is None:
            return None, None, False
        p = Pass(root, project, d)
        done = p.run()
        wake = p.wake
        if not done and wake is None:
            wake = time.time() + (RETRY_ERRORS if p.errors else RETRY)
        return done, wake, False


def reconcile(root: str, project: str, block: bool = True) -> bool | None:
    """One pass; whether the project has converged (None: another pass holds the lock,
    or the project has no desired state)."""
    return run_pass(root, project, block)[0]


def notify(root: str, project: str) -> None:
    """Tell the root's monitor that the project's desired state changed (a pass now, in
    its child, whose answer says when the next is due). With no monitor running, one
    is started when the project wants replicas (the monitor keeps it from then on: a
    project at 0 replicas and no container has nothing to keep)."""
    from cove.engine import monctl
    try:
        if not monctl.running(root):
            d = desired.load(root, project)
            if d is None or not any(int(s["replicas"]) for s in d["services"].values()):
                return
        monctl.request(root, "reconcile", project)
    except (CoveError, OSError):
        pass


def wake_code(delay: float | None) -> int:
    """The monitor's child says when the next pass is due in its exit status: 0 none
    (events only), 2 + tenths of a second otherwise (at most 25.3 s: a longer wait
    gets an early pass, which is harmless); 1 is an error."""
    if delay is None:
        return 0
    return 2 + max(1, min(253, round(delay * 10)))


def engine_pass(root: str, project: str) -> int:
    """What the monitor's child runs: one pass, never waiting for the lock, then an
    autoscaling sample of the project's autoscaled services (its count changes go
    through `state.set_replicas`, which the next pass acts on). Its exit status says
    when the next pass is due (wake_code): the monitor runs none on a timer otherwise,
    only on events (an exit, a health change, `notify`, its own start)."""
    try:
        sampled = autoscale_tick(root, project)  # (first: the pass acts on its count)
        _, wake, busy = run_pass(root, project, block=False)
        if busy:
            wake = time.time() + 0.5  # another pass (the CLI's) holds it: look again
        if sampled:
            t = time.time() + AUTOSCALE_TICK
            wake = t if wake is None else min(wake, t)
    except Exception as e:
        print(f"services {project}: reconcile: {e}", file=sys.stderr, flush=True)
        return 1
    return wake_code(None if wake is None else max(0.0, wake - time.time()))


def converge(root: str, project: str, timeout: float, until: str = "converged",
             tick: float = 0.05) -> bool:
    """Passes until the project converges (or, with until="started", until every replica
    runs), or `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        done = reconcile(root, project)
        if done or (until == "started" and started(root, project)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(tick)


def started(root: str, project: str) -> bool:
    d = desired.load(root, project)
    if d is None:
        return True
    reps = replicas(root, project)
    for svc, s in d["services"].items():
        mine = [r for r in reps.get(svc, []) if r["hash"] == s["hash"]]
        if sum(alive(r) or (r["status"] == "exited" and final_exit(s["spec"], r["exit"]))
               for r in mine) < int(s["replicas"]):
            return False
    return True


def autoscale_tick(root: str, project: str) -> bool:
    """A CPU sample of each autoscaled service; whether there is any (they need the
    next sample on a timer)."""
    try:
        from cove.engine.services import autoscale
    except ImportError:
        return False
    specs = autoscale.specs(root, project)
    if not specs:
        return False
    d = desired.load(root, project)
    if d is None:
        return False
    reps = replicas(root, project)
    for svc, spec in specs.items():
        s = d["services"].get(svc)
        if s is None:
            continue
        running = [r["name"] for r in reps.get(svc, [])
                   if r["status"] == "running" and r["hash"] == s["hash"]]
        autoscale.tick(root, project, svc, running, int(s["replicas"]), spec)
    return True
