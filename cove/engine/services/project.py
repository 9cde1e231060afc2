"""Taking a project (or some of its services) away: the desired state first, so that no
reconcile pass brings anything back, then the load balancer's rules and the names,
the replicas, the networks and, when asked, the named volumes."""

from __future__ import annotations

import os
import sys
from typing import Any

from cove.errors import CoveError


def remove_services(root: str, project: str, svcs: list[str]) -> None:
    """Take away services that left the compose file (`cove up` of the new file)."""
    from cove.engine import containers
    from cove.engine.services import replica
    reps = replica.replicas(root, project)
    lb_remove(root, project, svcs)
    for svc in svcs:
        for r in reps.get(svc, []):
            try:
                containers.remove(root, r["name"], force=True)
            except CoveError:
                pass


def lb_remove(root: str, project: str, svcs: list[str]) -> None:
    """Drop the services' load balancer tables (lb.py; skipped where it is not here)."""
    try:
        from cove.engine.services import lb
    except ImportError:
        return  # the networking work is not here yet
    for svc in svcs:
        try:
            lb.remove(root, project, svc)
        except Exception as e:
            print(f"cove: {svc}: load balancer: {e}", file=sys.stderr)


def down(root: str, project: str, volumes: bool) -> bool:
    """Forget the desired state, then take away the replicas, the lb rules, the
    networks and (with `volumes`) the named volumes; whether there was anything."""
    from cove.engine import containers, network
    from cove.engine import volumes as engine_volumes
    from cove.engine.services import replica
    from cove.engine.services import state as desired
    with desired.locked(root, project):
        d = desired.load(root, project)
        if d is not None:
            os.unlink(os.path.join(desired.pdir(root, project), desired.DESIRED))
    # a pass that started before holds this lock until it is done
    with desired.locked(root, project, "reconcile.lock"):
        reps = replica.replicas(root, project)
    svcs = sorted({*reps, *((d or {}).get("services") or {})})
    lb_remove(root, project, svcs)
    try:
        from cove.engine.services import names
        for svc, s in ((d or {}).get("services") or {}).items():
            for net in s["spec"]["networks"]:
                names.remove(root, replica.resource_name(project, net), svc)
    except ImportError:
        pass
    except Exception as e:
        print(f"cove: names: {e}", file=sys.stderr)
    from concurrent.futures import ThreadPoolExecutor

    def rm(r: dict[str, Any]) -> None:
        grace = 10.0
        if d and r["name"] and replica.alive(r):
            spec = (d["services"].get(r.get("service", "")) or {}).get("spec") or {}
            grace = float(spec.get("stop_grace_period", 10.0))
        try:
            if replica.alive(r):
                containers.stop(root, r["name"], grace)
            containers.remove(root, r["name"], force=True)
            print(f"removed {r['name']}", file=sys.stderr)
        except CoveError as e:
            print(f"cove: {e}", file=sys.stderr)
    every = [{**r, "service": svc} for svc, rs in reps.items() for r in rs]
    if every:
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(rm, every))
    nets = set((d or {}).get("networks") or [])
    vols = set((d or {}).get("volumes") or [])
    for n in sorted(nets):
        try:
            network.remove(root, replica.resource_name(project, n))
        except CoveError:
            pass
    if volumes:
        for v in engine_volumes.ls(root):
            labels = v.get("Labels") or {}
            if labels.get(replica.PROJECT) == project or v["Name"] in {
                    replica.resource_name(project, x) for x in vols}:
                try:
                    engine_volumes.remove(root, v["Name"])
                except CoveError as e:
                    print(f"cove: {e}", file=sys.stderr)
    try:
        from cove.engine.services import autoscale
        autoscale.forget(root, project)
    except ImportError:
        pass
    desired.remove(root, project)
    return bool(d or every)
