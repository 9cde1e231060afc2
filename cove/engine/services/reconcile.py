"""Make a project's replicas match its desired state (services/state.py), one pass at a
time. A pass is idempotent and does not wait for health: it looks at every replica's
record, decides, acts, and returns whether the project has converged. The root's
monitor runs passes in children it forks (when a project's container exits or changes
health, every ~1.5 s while a project exists, and when it starts: cove/engine/policy.py),
and the CLI runs them in a loop to wait for what it asked. `reconcile.lock` keeps two
passes of one project from running at once.

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

import contextlib
import os
import sys
import time
from typing import Any

from cove.engine import state as S
from cove.engine.services import state as D
from cove.engine.services.replica import (
    PROJECT,
    alive,
    final_exit,
    replicas,
    resource_name,
    run_options,
    serving,
)
from cove.errors import CoveError

CRASHED, CRASH_DELAY = 2.0, 2.0  # a replica that ran less waits this long to restart
PARALLEL = True  # replicas of one batch are made at once (create_all)
DRAIN = 0.3  # seconds a retired replica keeps serving what it has, off the backends


class Pass:
    """One reconcile pass over a project."""

    def __init__(self, root: str, project: str, d: dict[str, Any]) -> None:
        self.root, self.project, self.d = root, project, d
        self.reps = replicas(root, project)
        self.errors: list[str] = []
        self.changed = False  # the desired state was changed (rollback, pause, applied)
        self.resources_ok = False

    def event(self, svc: str, action: str, reason: str, **kw: object) -> None:
        D.emit(self.root, self.project, svc, action, reason, **kw)

    def say(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"services {self.project}: {msg}", file=sys.stderr, flush=True)

    # -- resources ------------------------------------------------------------------------

    def ensure_resources(self) -> None:
        """The project's networks and named volumes (before the first replica is made:
        a pass that makes nothing imports none of this)."""
        if self.resources_ok:
            return
        from cove.engine import network, volumes
        paths = S.Paths(self.root)
        for n in self.d.get("networks", []):
            net = resource_name(self.project, n)
            try:
                network.check_exists(paths, net)
            except CoveError:
                with contextlib.suppress(CoveError):  # made by a racing pass
                    network.create(self.root, net)
        for v in self.d.get("volumes", []):
            volumes.ensure(self.root, resource_name(self.project, v),
                           {PROJECT: self.project, "com.docker.compose.volume": v})
        self.resources_ok = True

    # -- one replica ----------------------------------------------------------------------

    def create(self, svc: str, s: dict[str, Any], n: int) -> bool:
        from cove.engine import containers
        o = run_options(self.project, self.d.get("workdir", ""), svc, s, n)
        try:
            self.ensure_resources()
            with contextlib.suppress(CoveError):
                containers.remove(self.root, o.name, force=True)  # a leftover of a kill
            containers.create(self.root, o)
            rec = containers.start(self.root, o.name)
            self.announce(rec)
            return True
        except CoveError as e:
            self.say(f"{svc}: replica {n}: {e}")
            with contextlib.suppress(Exception):
                containers.remove(self.root, o.name, force=True)
            return False

    def restart(self, svc: str, s: dict[str, Any], r: dict[str, Any], reason: str) -> None:
        """Start an exited replica of the current version again (its rootfs, record and
        number kept: no create); one that won't start is replaced by a new one."""
        from cove.engine import containers
        try:
            rec = containers.start(self.root, r["name"])
        except CoveError as e:
            self.say(f"{svc}: restart {r['name']}: {e}")
            self.retire(r, 0)
            self.event(svc, "replace", f"{reason}; it would not start again: {e}",
                       container=r["name"])
            self.create(svc, s, r["number"])
            return
        self.announce(rec)
        self.event(svc, "replace", f"{reason}; started again", container=r["name"])

    def create_all(self, svc: str, s: dict[str, Any], numbers: list[int]) -> None:
        """Make the replicas `numbers`, at the same time when there are several (each
        in a forked child: a create and start is mostly waiting on the runtime, the
        monitor and the network; they share nothing but flocked records)."""
        if len(numbers) <= 1 or not PARALLEL:
            for n in numbers:
                self.create(svc, s, n)
            return
        self.ensure_resources()
        from cove.engine import containers, netcontainer  # noqa: F401 - once, not per child
        with contextlib.suppress(ImportError):
            from pyroute2 import IPRoute, NetNS  # noqa: F401 - what each attach uses
        sys.stderr.flush()
        pids = []
        for n in numbers:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    code = 0 if self.create(svc, s, n) else 1
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)

    def announce(self, rec: dict[str, Any]) -> None:
        """A gratuitous ARP from the new replica (announce.py: its address may be a
        dead one's, whose MAC its neighbours still hold)."""
        from cove.engine.services import announce
        ns = rec.get("NetworkSettings") or {}
        ip = ns.get("IPAddress") or ""
        mac = next((n.get("MacAddress") for n in (ns.get("Networks") or {}).values()
                    if n.get("IPAddress") == ip), "")
        announce.announce(os.path.join(S.Paths(self.root).cdir(rec["Name"]), "netns"),
                          mac or "", ip)

    def retire(self, r: dict[str, Any], grace: float) -> None:
        from cove.engine import containers
        try:
            if alive(r):
                containers.stop(self.root, r["name"], grace)
            containers.remove(self.root, r["name"], force=True)
        except CoveError as e:
            self.say(f"retire {r['name']}: {e}")

    # -- load balancer and names ----------------------------------------------------------

    def publish(self, svc: str, s: dict[str, Any], backends: list[str]) -> None:
        """Hand the serving set to the lb and the name service, when it changed."""
        backends = sorted(backends)
        if s.get("applied") == backends or (s.get("applied") is None and not backends):
            return  # (nothing given yet, nothing to give: the network may not be made)
        net = resource_name(self.project, s["spec"]["networks"][0])
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
                names.apply(self.root, net, svc, backends)
        except Exception as e:
            self.say(f"{svc}: load balancer: {e}")
            return
        s["applied"] = backends
        self.changed = True

    # -- a service ------------------------------------------------------------------------

    def deps_ready(self, svc: str, spec: dict[str, Any]) -> bool:
        for dep, cond in spec["depends_on"].items():
            want = self.d["services"].get(dep, {}).get("replicas", 1)
            reps = self.reps.get(dep, [])
            if cond == "service_started":
                if sum(alive(r) for r in reps) < min(want, 1):
                    return False
            elif cond == "service_healthy":
                if sum(r["status"] == "running" and r["health"] in (None, "healthy")
                       for r in reps) < want:
                    return False
            elif not reps or any(alive(r) for r in reps) or any(r["exit"] for r in reps):
                return False  # service_completed_successfully
        return True

    def placement(self, reservations: dict[str, Any], count: int) -> str | None:
        """Why `count` more replicas don't fit the host (autoscale.fits), or None."""
        try:
            from cove.engine.services import autoscale
        except ImportError:
            return None
        return autoscale.fits(self.root, reservations, count)

    def fail_rollout(self, svc: str, s: dict[str, Any], reason: str) -> None:
        ro = s.get("rollout") or {}
        uc = s["spec"]["update_config"]
        if ro.get("state") == "rolling_back" or uc["failure_action"] == "continue" \
                or not s.get("previous"):
            return
        if uc["failure_action"] == "rollback":
            prev = s["previous"]
            s["previous"] = {"spec": s["spec"], "hash": s["hash"]}
            s["spec"], s["hash"] = prev["spec"], prev["hash"]
            s["rollout"] = {"state": "rolling_back", "reason": reason, "at": time.time()}
            self.event(svc, "rollback", reason, image=s["spec"]["image"])
        else:
            s["rollout"] = {**ro, "state": "paused", "reason": reason, "at": time.time()}
            self.event(svc, "rollout paused", reason)
        self.changed = True

    def service(self, svc: str) -> bool:
        s = self.d["services"][svc]
        spec, h, want = s["spec"], s["hash"], int(s["replicas"])
        reps = self.reps.get(svc, [])
        ro = s.get("rollout") or {}
        updating = ro.get("state") in ("updating", "rolling_back")
        uc = spec["rollback_config" if ro.get("state") == "rolling_back"
                  else "update_config"]
        hc = spec["healthcheck"]
        now = time.time()
        # a new replica's time to prove itself during an update
        proof = uc["monitor"] + (hc["start_period"] + (hc["interval"] + hc["timeout"]) *
                                 (hc["retries"] + 1) if hc else 0.0)
        cur = [r for r in reps if r["hash"] == h]
        old = [r for r in reps if r["hash"] != h]
        retire: list[tuple[dict[str, Any], str, str]] = []  # replica, action, reason
        again: list[tuple[dict[str, Any], str]] = []  # exited replicas to start again
        hold: list[dict[str, Any]] = []  # ... and those that wait before they are
        # 1. the dead and the unhealthy
        for r in cur:
            failed = ""
            if not alive(r) and r["status"] != "created":
                if final_exit(spec, r["exit"]):
                    continue
                failed = f"{r['name']} exited with code {r['exit']}"
                if r["error"]:
                    failed += f" ({r['error']})"
            elif r["health"] == "unhealthy":
                failed = f"{r['name']} unhealthy: {r['log'].strip()[-200:]}".rstrip(": ")
            elif r["status"] == "created" and now - r["created"] > 30:
                failed = f"{r['name']} never started"
            elif updating and r["status"] == "running" and r["health"] == "starting" \
                    and now - r["started"] > proof:
                failed = f"{r['name']} not healthy within {proof:g}s"
            if failed:
                if updating:
                    self.fail_rollout(svc, s, failed)
                    if s["hash"] != h:
                        return False  # rolled back: the next pass works to the old spec
                if not alive(r) and r["status"] != "created" and not updating:
                    if r["finished"] - r["started"] < CRASHED and \
                            now - r["finished"] < CRASH_DELAY:
                        hold.append(r)  # it died at once: not in a tight loop
                        continue
                    again.append((r, failed))  # started again in place: the fast way
                else:
                    retire.append((r, "replace", failed))
        ro = s.get("rollout") or {}  # (a failure above may have paused the update)
        gone = {id(r) for r, _, _ in retire}
        back = {id(r) for r, _ in again} | {id(r) for r in hold}
        cur_live = [r for r in cur if id(r) not in gone and (alive(r) or id(r) in back or
                    (r["status"] != "created" and final_exit(spec, r["exit"])))]
        cur_serving = [r for r in cur_live if serving(r)]
        pending = [r for r in cur_live if (alive(r) or id(r) in back) and not serving(r)]
        old_serving = [r for r in old if serving(r)]
        for r in old:
            if not serving(r):
                retire.append((r, "replace", f"{r['name']}: old version, not serving"))
        paused = ro.get("state") == "paused"
        create = 0
        if old_serving and not paused:
            # 2. a rolling update
            par = uc["parallelism"]
            if pending or now < float(ro.get("next_batch", 0)):
                pass  # the last batch is still proving itself, or its delay runs
            elif uc["order"] == "start-first":
                excess = len(cur_serving) + len(old_serving) - want
                out = sorted(old_serving, key=lambda r: -r["number"])[:max(0, excess)]
                retire += [(r, "rollout", "replaced by the new version") for r in out]
                if len(cur_live) < want:
                    create = min(par, want - len(cur_live))
            else:
                if len(cur_live) < want:
                    out = sorted(old_serving, key=lambda r: -r["number"])[:par]
                else:
                    out = old_serving
                retire += [(r, "rollout", "replaced by the new version") for r in out]
                create = min(len(out), max(0, want - len(cur_live)))
            if create or any(a == "rollout" for _, a, _ in retire):
                s["rollout"] = {**(s.get("rollout") or {}), "next_batch": now + uc["delay"]}
                self.changed = True
        else:
            # 3. the count
            have = len(cur_live) + (len(old_serving) if paused else 0)
            if have > want:
                extra = sorted([r for r in cur_live if alive(r)],
                               key=lambda r: (serving(r), -r["number"]))
                n_out = have - want
                retire += [(r, "scale", f"scale to {want}") for r in extra[:n_out]]
            elif have < want:
                create = want - have
        if create and not reps and not self.deps_ready(svc, spec):
            return False
        # the lb first: what is retired leaves the backends before it stops
        out_ids = {id(r) for r, _, _ in retire}
        backends = [r["ip"] for r in [*cur_serving, *old_serving] if id(r) not in out_ids]
        self.publish(svc, s, backends)
        if any(serving(r) for r, _, _ in retire):
            time.sleep(DRAIN)
        for r, action, reason in retire:
            self.retire(r, spec["stop_grace_period"])
            if action != "rollout":
                self.event(svc, action, reason, container=r["name"])
        numbers = {r["number"] for r in reps if id(r) not in out_ids}
        if create and spec.get("reservations"):
            refused = self.placement(spec["reservations"], create)
            if refused:
                self.say(f"{svc}: {refused}")
                if s.get("refused") != refused:
                    self.event(svc, "placement refused", refused)
                    s["refused"] = refused
                    self.changed = True
                create = 0
        # a replacement takes the number (so the name) of the replica it replaces
        reuse = sorted(r["number"] for r, action, _ in retire
                       if action == "replace" and r["hash"] == h and r["number"] > 0)
        for r, reason in again:
            self.restart(svc, s, r, reason)
        new: list[int] = []
        for _ in range(create):
            n = next((i for i in reuse if i not in numbers), 0) or \
                next(i for i in range(1, len(numbers) + 2) if i not in numbers)
            numbers.add(n)
            new.append(n)
        self.create_all(svc, s, new)
        if retire or create or again or hold:
            if create:  # services after this one see these replicas in this pass
                self.reps[svc] = replicas(self.root, self.project).get(svc, [])
            return False
        if updating and not old and not pending and len(cur_serving) >= want:
            done = "rolled_back" if ro.get("state") == "rolling_back" else "done"
            s["rollout"] = {"state": done, "reason": ro.get("reason", ""), "at": now}
            self.event(svc, "rollout complete" if done == "done" else "rollback complete",
                       ro.get("reason", ""), image=spec["image"])
            self.changed = True
        return not old and not pending and len(cur_live) >= want

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


def reconcile(root: str, project: str, block: bool = True) -> bool | None:
    """One pass; whether the project has converged (None: another pass holds the lock,
    or the project has no desired state)."""
    with D.locked(root, project, "reconcile.lock", block=block) as got:
        if not got:
            return None
        d = D.load(root, project)
        if d is None:
            return None
        p = Pass(root, project, d)
        done = p.run()
        if p.changed:
            def merge(now: dict[str, Any]) -> None:
                # only what a pass owns: the rollout's progress, the applied backends,
                # a rollback's swap; replicas may have been changed by `scale` meanwhile
                for svc, s in d["services"].items():
                    t = now["services"].get(svc)
                    if t is None:
                        continue
                    if t["hash"] == s["hash"] or s.get("rollout", {}).get("state") in (
                            "rolling_back",):
                        for k in ("spec", "hash", "previous", "rollout", "applied"):
                            if k in s:
                                t[k] = s[k]
            with contextlib.suppress(CoveError):
                D.update(root, project, merge)
        return done


def engine_pass(root: str, project: str) -> int:
    """What the monitor's child runs: one pass, never waiting for the lock, then an
    autoscaling sample of the project's autoscaled services (its count changes go
    through `state.set_replicas`, which the next pass acts on)."""
    try:
        reconcile(root, project, block=False)
        autoscale_tick(root, project)
    except Exception as e:
        print(f"services {project}: reconcile: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


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
    d = D.load(root, project)
    if d is None:
        return True
    reps = replicas(root, project)
    for svc, s in d["services"].items():
        mine = [r for r in reps.get(svc, []) if r["hash"] == s["hash"]]
        if sum(alive(r) or (r["status"] == "exited" and final_exit(s["spec"], r["exit"]))
               for r in mine) < int(s["replicas"]):
            return False
    return True


def autoscale_tick(root: str, project: str) -> None:
    try:
        from cove.engine.services import autoscale
    except ImportError:
        return
    specs = autoscale.specs(root, project)
    if not specs:
        return
    d = D.load(root, project)
    if d is None:
        return
    reps = replicas(root, project)
    for svc, spec in specs.items():
        s = d["services"].get(svc)
        if s is None:
            continue
        running = [r["name"] for r in reps.get(svc, [])
                   if r["status"] == "running" and r["hash"] == s["hash"]]
        autoscale.tick(root, project, svc, running, int(s["replicas"]), spec)
