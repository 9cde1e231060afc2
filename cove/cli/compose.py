"""`cove up`, `down`, `scale`, `rollout`, `rollback` and `cove compose ps|logs|ls|config`:
a Compose project as desired state that the engine keeps (cove/engine/services/).

The commands change the desired state and then run reconcile passes themselves only
to wait for what they asked (and to say how it went): the root's monitor keeps the
project at that state afterwards, whether or not any CLI process lives.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cove.cli.composeargs import compose_file as _file
from cove.cli.composeargs import project as _project
from cove.cli.composeargs import state_root as _root
from cove.errors import CoveError


def _check_images(root: str, model: dict[str, Any], fname: str, build: bool) -> None:
    """Every service's image is here (pulled if missing, built for `build:`), before the
    desired state changes."""
    from cove.engine import images
    from cove.image.store import Store
    st = Store(root)
    for svc, s in model["services"].items():
        if s["build"] is not None:
            try:
                if not build:
                    st.resolve(s["image"])
                    continue
            except CoveError:
                pass
            from cove.image.build.builder import Options
            from cove.image.build.builder import build as do_build
            b = s["build"]
            print(f"building {svc} ({s['image']})", file=sys.stderr, flush=True)
            try:
                do_build(st, Options(context=b["context"], dockerfile=b["dockerfile"],
                                     tags=[s["image"]], build_args=b.get("args") or {},
                                     target=b.get("target")))
            except CoveError as e:
                raise CoveError(f"{fname}: services.{svc}.build", str(e)) from None
            continue
        try:
            images.find_image(st, s["image"], quiet=True)
        except CoveError as e:
            raise CoveError(f"{fname}: services.{svc}.image", f"{s['image']}: {e.why or e}") \
                from None


def _check_ports(root: str, model: dict[str, Any], fname: str) -> None:
    """Each published host port is free: not another project's of this root, not a
    container's, no socket's in this network namespace (the load balancer's DNAT would
    silently take it)."""
    from cove.engine import network, state
    from cove.engine.services import state as desired_state
    taken: dict[tuple[int, str], tuple[str, str]] = {}
    for p in desired_state.projects(root):
        if p == model["name"]:
            continue
        for osvc, o in ((desired_state.load(root, p) or {}).get("services") or {}).items():
            for pt in o["spec"]["ports"]:
                if pt["host_port"]:
                    taken[(pt["host_port"], pt["proto"])] = (p, osvc)
    for svc, s in model["services"].items():
        for i, pt in enumerate(s["ports"]):
            if not pt["host_port"]:
                continue
            where = f"{fname}: services.{svc}.ports[{i}]"
            other = taken.get((pt["host_port"], pt["proto"]))
            if other:
                raise CoveError(where, f"host port {pt['host_port']}/{pt['proto']} is "
                                       f"already published by project {other[0]} "
                                       f"(service {other[1]})")
            try:
                network.check_ports(state.Paths(root), {f"{pt['target']}/{pt['proto']}": [
                    {"HostIp": pt["host_ip"], "HostPort": str(pt["host_port"])}]})
            except CoveError as e:
                raise CoveError(where, e.why) from None


def cmd_up(a: argparse.Namespace) -> int:
    from cove.engine.services import compose, reconcile
    from cove.engine.services import project as project_ops
    from cove.engine.services import state as desired_state
    from cove.engine.services.composekeys import spec_hash
    root = _root(a)
    f = _file(a)
    assert f is not None
    model = compose.load(f, a.project, a.profile)
    project = model["name"]
    fname = os.path.basename(f)
    _check_images(root, model, fname, a.build)
    _check_ports(root, model, fname)
    removed: list[str] = []
    rollouts: list[tuple[str, str]] = []

    def desired(old: dict[str, Any] | None) -> dict[str, Any]:
        svcs: dict[str, Any] = {}
        for svc, spec in model["services"].items():
            o = (old or {}).get("services", {}).get(svc)
            gen = int(o.get("generation", 0)) if o else 0
            h = spec_hash(spec, gen)
            n = spec["replicas"]
            if o and spec.get("autoscale"):
                n = o["replicas"]  # the autoscaler's word stands
            s = {"spec": spec, "hash": h, "generation": gen, "replicas": n,
                 "previous": o.get("previous") if o else None,
                 "rollout": o.get("rollout") if o else None,
                 "applied": o.get("applied") if o else None}
            if o and o["hash"] != h:
                s["previous"] = {"spec": o["spec"], "hash": o["hash"]}
                s["rollout"] = {"state": "updating", "reason": "cove up: config changed",
                                "at": 0}
                rollouts.append((svc, spec["image"]))
            svcs[svc] = s
        removed.extend(sorted(set((old or {}).get("services", {})) - set(svcs)))
        return {"project": project, "workdir": model["workdir"], "file": model["file"],
                "networks": model["networks"], "volumes": model["volumes"],
                "services": svcs}
    with desired_state.locked(root, project):
        d = desired(desired_state.load(root, project))
        desired_state.save(root, project, d)
    _autoscale_specs(root, project, model)
    for svc, image in rollouts:
        desired_state.emit(root, project, svc, "rollout", "cove up: config changed", image=image)
    if removed:
        project_ops.remove_services(root, project, removed)
    ok = reconcile.converge(root, project, a.timeout, until="started" if a.detach
                            else "converged")
    _summary(root, project, compose.order(model["services"]))
    reconcile.notify(root, project)  # the engine goes on from here
    if not ok:
        raise CoveError(f"up {project}", f"not all replicas running after {a.timeout:g}s "
                                         "(the engine keeps trying; `cove compose ps`)")
    if a.detach:
        # done: leave without the interpreter's teardown of everything a pass imported
        # (pyroute2, the image store...): ~50 ms of a ~1 s command
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    import signal

    def interrupted(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM ends an attached `up` as ^C does
    signal.signal(signal.SIGTERM, interrupted)
    try:
        from cove.cli.composeview import follow_logs
        follow_logs(root, project, [], follow=True)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
        project_ops.down(root, project, volumes=False)
        return 130
    return 0


def _autoscale_specs(root: str, project: str, model: dict[str, Any]) -> None:
    """`x-cove-autoscale` of each service, to the autoscaler (cove autoscale's store)."""
    try:
        from cove.engine.services import autoscale
    except ImportError:
        return
    have = autoscale.specs(root, project)
    for svc, s in model["services"].items():
        if s.get("autoscale") and have.get(svc) != s["autoscale"]:
            autoscale.set_spec(root, project, svc, s["autoscale"])


def _summary(root: str, project: str, svcs: list[str]) -> None:
    """One line per service on stderr: replicas running (and healthy) of those wanted."""
    from cove.engine.services import replica
    from cove.engine.services import state as desired_state
    d = desired_state.load(root, project) or {"services": {}}
    every = replica.replicas(root, project)
    for svc in svcs:
        s = d["services"].get(svc)
        reps = every.get(svc, [])
        run = sum(r["status"] == "running" for r in reps)
        healthy = sum(r["health"] == "healthy" for r in reps)
        want = s["replicas"] if s else 0
        print(f"{svc}: {run}/{want} running" + (
            f", {healthy} healthy" if s and s["spec"]["healthcheck"] else ""),
            file=sys.stderr)


def cmd_down(a: argparse.Namespace) -> int:
    from cove.engine.services import project as project_ops
    project_ops.down(_root(a), _project(a), a.volumes)
    return 0


def _wanted(root: str, project: str) -> dict[str, Any]:
    from cove.engine.services import state as desired_state
    d = desired_state.load(root, project)
    if d is None:
        raise CoveError(f"project {project}", "not up (run `cove up` first)")
    return d


def cmd_scale(a: argparse.Namespace) -> int:
    from cove.engine.services import reconcile
    from cove.engine.services import state as desired_state
    root, project = _root(a), _project(a)
    d = _wanted(root, project)
    asks: list[tuple[str, int]] = []
    for item in a.pairs:  # every one checked before any changes
        svc, eq, n = item.partition("=")
        if not eq or not svc:
            raise CoveError(f"scale {item}", "expected SERVICE=REPLICAS")
        desired_state.service(d, svc, project)
        if not n.lstrip("-").isdigit():
            raise CoveError(f"scale {item}", "replicas must be a whole number")
        if int(n) < 0:
            raise CoveError(f"scale {item}", "replicas must be 0 or more")
        cname = d["services"][svc]["spec"].get("container_name")
        if cname and int(n) > 1:
            raise CoveError(f"scale {item}", f"service has a fixed container_name "
                                             f"({cname}): one replica at most")
        asks.append((svc, int(n)))
    for svc, n in asks:
        desired_state.set_replicas(root, project, svc, n, "cove scale")
    reconcile.notify(root, project)
    if a.no_wait:
        return 0
    ok = reconcile.converge(root, project, a.timeout, until="started")
    _summary(root, project, [svc for svc, _ in asks])
    return 0 if ok else 1


def _wait_rollout(root: str, project: str, svc: str, timeout: float) -> int:
    import time

    from cove.engine.services import reconcile
    from cove.engine.services import state as desired_state
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconcile.reconcile(root, project)
        s = _wanted(root, project)["services"][svc]
        ro = s.get("rollout") or {}
        if ro.get("state") == "done":
            print(f"{svc}: rolled out {s['spec']['image']}", file=sys.stderr)
            return 0
        if ro.get("state") == "rolled_back":
            raise CoveError(f"rollout {svc}", f"rolled back to {s['spec']['image']}: "
                                              f"{ro.get('reason', '')}")
        if ro.get("state") == "paused":
            raise CoveError(f"rollout {svc}", f"paused: {ro.get('reason', '')} "
                                              "(`cove rollback` or `cove rollout` again)")
        time.sleep(0.1)
    desired_state.load(root, project)
    raise CoveError(f"rollout {svc}", f"not done after {timeout:g}s (the engine goes on)")


def cmd_rollout(a: argparse.Namespace) -> int:
    from cove.engine.services import reconcile
    from cove.engine.services import state as desired_state
    root, project = _root(a), _project(a)
    d = _wanted(root, project)
    desired_state.service(d, a.service, project)
    if a.image:
        from cove.engine import images
        from cove.image.store import Store
        try:
            images.find_image(Store(root), a.image, quiet=True)
        except CoveError as e:
            raise CoveError(f"rollout {a.service}: --image {a.image}", e.why or str(e)) \
                from None

    s = desired_state.rollout(root, project, a.service, a.image)
    desired_state.emit(root, project, a.service, "rollout", s["rollout"]["reason"],
                       image=s["spec"]["image"])
    reconcile.notify(root, project)
    if a.detach:
        return 0
    return _wait_rollout(root, project, a.service, a.timeout)


def cmd_rollback(a: argparse.Namespace) -> int:
    from cove.engine.services import reconcile
    from cove.engine.services import state as desired_state
    root, project = _root(a), _project(a)
    d = _wanted(root, project)
    if not desired_state.service(d, a.service, project).get("previous"):
        raise CoveError(f"rollback {a.service}", "no previous version to go back to")

    s = desired_state.rollback(root, project, a.service)
    desired_state.emit(root, project, a.service, "rollback", "cove rollback",
                       image=s["spec"]["image"])
    reconcile.notify(root, project)
    if a.detach:
        return 0
    try:
        return _wait_rollout(root, project, a.service, a.timeout)
    except CoveError as e:
        if "rolled back to" in str(e):  # the goal of this command
            print(f"{a.service}: rolled back to "
                  f"{_wanted(root, project)['services'][a.service]['spec']['image']}",
                  file=sys.stderr)
            return 0
        raise


def cmd_compose(a: argparse.Namespace) -> int:
    from cove.cli import composeview
    return composeview.cmd_compose(a)


def _common(p: argparse.ArgumentParser, short: bool = True) -> None:
    p.add_argument(*(["-f"] if short else []), "--file", metavar="FILE",
                   help="the compose file (default: compose.yaml, compose.yml, "
                        "docker-compose.yaml or docker-compose.yml here)")
    p.add_argument("-p", "--project-name", dest="project", metavar="PROJECT",
                   help="the project (default: the file's `name`, else its directory)")


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="create and start a compose project's services")
    _common(p)
    p.add_argument("-d", "--detach", action="store_true",
                   help="return once every replica runs (the engine keeps them)")
    p.add_argument("--build", action="store_true", help="build images before starting")
    p.add_argument("--profile", action="append", help="enable services of this profile")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="how long to wait for the replicas (default 120)")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop and remove a compose project")
    _common(p)
    p.add_argument("-v", "--volumes", action="store_true",
                   help="also remove the project's named volumes")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("scale", help="set the number of replicas of services")
    _common(p)
    p.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS",
                   help="the services and their new replica counts")
    p.add_argument("--no-wait", action="store_true", help="return at once")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S")
    p.set_defaults(func=cmd_scale)
    for verb, helptext in (("rollout", "roll a service out to a new image (or restart "
                                       "its replicas), gated on health"),
                           ("rollback", "go back to a service's previous version")):
        p = sub.add_parser(verb, help=helptext)
        _common(p)
        p.add_argument("service", metavar="SERVICE", help="the service, by its name in "
                       "the compose file")
        if verb == "rollout":
            p.add_argument("--image", metavar="IMAGE", help="the new image")
        p.add_argument("--detach", action="store_true",
                       help="return at once (the engine rolls it out)")
        p.add_argument("--timeout", type=float, default=300.0, metavar="S")
        p.set_defaults(func=cmd_rollout if verb == "rollout" else cmd_rollback)
    p = sub.add_parser("compose", help="a compose project's replicas: ps, logs, ls, "
                                       "config")
    c = p.add_subparsers(dest="what", required=True, metavar="COMMAND")
    q = c.add_parser("ps", help="the project's replicas")
    _common(q)
    q.add_argument("-a", "--all", action="store_true", help="also stopped ones")
    q.add_argument("--format", choices=["table", "json"], default="table")
    q.add_argument("services", nargs="*", metavar="SERVICE", help="only these services")
    q = c.add_parser("logs", help="the replicas' logs, each line after its name")
    _common(q, short=False)  # -f is --follow here, as in `docker compose logs`
    q.add_argument("-f", "--follow", action="store_true")
    q.add_argument("-n", "--tail", metavar="N")
    q.add_argument("services", nargs="*", metavar="SERVICE", help="only these services")
    q = c.add_parser("ls", help="the projects with a desired state")
    q = c.add_parser("config", help="the compose file, validated and normalized, as JSON")
    _common(q)
    q.add_argument("--profile", action="append")
    p.set_defaults(func=cmd_compose)
