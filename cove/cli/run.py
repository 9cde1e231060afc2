"""Containers, volumes, networks and the supervisor: thin argparse front-ends over
cove/engine (parse, call, print)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cove.cli.common import registry_flags, registry_options
from cove.errors import CoveError


def _root(a: argparse.Namespace) -> str:
    from cove.image.store import Store
    return Store(a.root).root


def _json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


# -- run --------------------------------------------------------------------------------

def cmd_run(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    from cove.engine import images
    from cove.image.store import Store
    root = _root(a)
    images.find_image(Store(root), a.image, lambda: registry_options(a), quiet=a.quiet)
    o = C.RunOptions(
        image=a.image, command=a.command, name=a.name, detach=a.detach, rm=a.rm,
        env=a.env, env_files=a.env_file, volumes=a.volume, mounts=a.mount, tmpfs=a.tmpfs,
        publish=a.publish, network=a.network, memory=a.memory, cpus=a.cpus,
        pids_limit=a.pids_limit, user=a.user, workdir=a.workdir, entrypoint=a.entrypoint,
        hostname=a.hostname, read_only=a.read_only, isolation=a.isolation,
        cap_add=a.cap_add, cap_drop=a.cap_drop,
        security_opt=a.security_opt, restart=a.restart, health_cmd=a.health_cmd,
        health_interval=C.parse_duration(a.health_interval),
        health_timeout=C.parse_duration(a.health_timeout), health_retries=a.health_retries,
        health_start_period=C.parse_duration(a.health_start_period),
        health_on_failure=a.health_on_failure, log_opts=a.log_opt, tty=a.tty,
        interactive=a.interactive)
    rec, code = C.run(root, o)
    if a.detach:
        print(rec["Id"])
    return code


def _add_run_flags(r: argparse.ArgumentParser) -> None:
    r.add_argument("-d", "--detach", action="store_true", help="run in the background")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("--name", help="container name")
    r.add_argument("--hostname", help="container host name")
    r.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE (or KEY)")
    r.add_argument("--env-file", action="append", default=[], help="file of KEY=VALUE lines")
    r.add_argument("-v", "--volume", action="append", default=[],
                   help="SRC:DST[:ro] (SRC a path: bind; a name: named volume)")
    r.add_argument("--mount", action="append", default=[],
                   help="type=bind|volume|tmpfs,source=S,target=T[,readonly]")
    r.add_argument("--tmpfs", action="append", default=[], help="a tmpfs at this path")
    r.add_argument("-p", "--publish", action="append", default=[],
                   help="[IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
    r.add_argument("--isolation", choices=["container", "gvisor", "vm"], default="",
                   help="namespaces (the default), gVisor, or a micro-VM (docs/isolation.md)")
    r.add_argument("--network", "--net", default="bridge",
                   help="none, host, bridge (the default) or a network's name")
    r.add_argument("-m", "--memory", help="memory limit (e.g. 64m)")
    r.add_argument("--cpus", type=float, help="CPU quota in CPUs (e.g. 0.5)")
    r.add_argument("--pids-limit", type=int, help="most processes")
    r.add_argument("-w", "--workdir", help="working directory in the container")
    r.add_argument("-u", "--user", help="USER[:GROUP] (names or numbers)")
    r.add_argument("--entrypoint", help="replace the image's Entrypoint ('' clears it)")
    r.add_argument("--read-only", action="store_true", help="a read-only root filesystem")
    r.add_argument("--cap-add", action="append", default=[], help="add a capability")
    r.add_argument("--cap-drop", action="append", default=[], help="drop a capability")
    r.add_argument("--security-opt", action="append", default=[],
                   help="seccomp=FILE|unconfined, no-new-privileges")
    r.add_argument("--restart", default="no",
                   help="no, on-failure[:N], always or unless-stopped")
    r.add_argument("--health-cmd", help="a shell command; exit 0 means healthy")
    r.add_argument("--health-interval", default="30s")
    r.add_argument("--health-timeout", default="30s")
    r.add_argument("--health-retries", type=int, default=3)
    r.add_argument("--health-start-period", default="0s")
    r.add_argument("--health-on-failure", default="none", choices=["none", "kill", "restart"])
    r.add_argument("--log-opt", action="append", default=[], help="max-size=S, max-file=N")
    r.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    r.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")


# -- lifecycle --------------------------------------------------------------------------

def _each(a: argparse.Namespace, fn: Any) -> int:
    rc = 0
    for c in a.containers:
        try:
            fn(c)
            print(c)
        except CoveError as e:
            print(f"cove: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_start(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return _each(a, lambda c: C.start(_root(a), c))


def cmd_stop(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return _each(a, lambda c: C.stop(_root(a), c, a.time))


def cmd_restart(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return _each(a, lambda c: C.restart(_root(a), c, a.time))


def cmd_kill(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return _each(a, lambda c: C.kill(_root(a), c, a.signal))


def cmd_rm(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return _each(a, lambda c: C.remove(_root(a), c, force=a.force))


def cmd_wait(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    for c in a.containers:
        print(C.wait(_root(a), c))
    return 0


# -- queries ----------------------------------------------------------------------------

def cmd_ps(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    recs = C.ps(_root(a), all=a.all)
    if a.format == "json":
        _json([{"Id": r["Id"], "Names": [r["Name"]], "Image": r["Image"],
                "Command": " ".join([r["Path"], *r["Args"]]), "Created": r["Created"],
                "State": r["State"]["Status"], "Status": C.status_line(r),
                "ExitCode": r["State"]["ExitCode"],
                "Health": (r["State"].get("Health") or {}).get("Status", ""),
                "RestartCount": r.get("RestartCount", 0),
                "Ports": r["NetworkSettings"].get("Ports") or {}} for r in recs])
        return 0
    if a.quiet:
        for r in recs:
            print(r["Id"][:12])
        return 0
    print(f"{'CONTAINER ID':<14}{'IMAGE':<22}{'COMMAND':<24}{'STATUS':<26}NAMES")
    for r in recs:
        cmd = " ".join([r["Path"], *r["Args"]])
        cmd = cmd if len(cmd) < 22 else cmd[:19] + "..."
        print(f"{r['Id'][:12]:<14}{r['Image'][:20]:<22}{cmd:<24}{C.status_line(r):<26}"
              f"{r['Name']}")
    return 0


def cmd_logs(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    tail = -1 if a.tail in (None, "all") else int(a.tail)
    for e in C.logs(_root(a), a.container, follow=a.follow, since=a.since, tail=tail):
        out = sys.stderr if e["stream"] == "stderr" else sys.stdout
        out.write((e["time"] + " " if a.timestamps else "") + e["log"])
        out.flush()
    return 0


def cmd_exec(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return C.exec_(_root(a), a.container, a.command, tty=a.tty, interactive=a.interactive,
                   detach=a.detach, env=a.env, user=a.user, workdir=a.workdir)


def cmd_top(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    sys.stdout.write(C.top(_root(a), a.container, a.ps_args))
    return 0


def cmd_stats(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    rows = [C.stats(_root(a), c) for c in a.containers]
    if a.format == "json":
        _json([{k: v for k, v in r.items() if k != "Raw"} for r in rows])
        return 0
    print(f"{'NAME':<20}{'CPU TIME':>12}{'MEM USAGE / LIMIT':>28}{'PIDS':>6}")
    for r in rows:
        mem = f"{r['MemUsage'] / 2**20:.1f}MiB / {r['MemLimit'] / 2**20:.1f}MiB"
        print(f"{r['Name']:<20}{r['CPUNanos'] / 1e9:>11.2f}s{mem:>28}{r['Pids']:>6}")
    return 0


def cmd_port(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    for ctr, binds in C.port(_root(a), a.container).items():
        for b in binds:
            print(f"{ctr} -> {b.get('HostIp') or '0.0.0.0'}:{b['HostPort']}")
    return 0


# -- volumes, networks, supervisor ------------------------------------------------------

def cmd_volume(a: argparse.Namespace) -> int:
    from cove.engine import volumes as V
    root = _root(a)
    if a.vcmd == "create":
        print(V.create(root, a.name)["Name"])
    elif a.vcmd == "ls":
        vols = V.ls(root)
        if a.format == "json":
            _json(vols)
        else:
            print("DRIVER    VOLUME NAME")
            for v in vols:
                print(f"{v['Driver']:<10}{v['Name']}")
    elif a.vcmd == "inspect":
        _json([V.inspect(root, n) for n in a.names])
    elif a.vcmd == "rm":
        for n in a.names:
            print(V.remove(root, n))
    elif a.vcmd == "prune":
        for n in V.prune(root):
            print(n)
    return 0


def cmd_network(a: argparse.Namespace) -> int:
    from cove.engine import network as N
    root = _root(a)
    if a.ncmd == "create":
        print(N.create(root, a.name, subnet=a.subnet)["Id"])
    elif a.ncmd == "ls":
        nets = N.ls(root)
        if a.format == "json":
            _json(nets)
        else:
            print(f"{'NETWORK ID':<14}{'NAME':<20}{'DRIVER':<10}SUBNET")
            for n in nets:
                print(f"{n['Id'][:12]:<14}{n['Name']:<20}{n['Driver']:<10}{n['Subnet']}")
    elif a.ncmd == "inspect":
        _json([N.inspect(root, n) for n in a.names])
    elif a.ncmd == "rm":
        for n in a.names:
            print(N.remove(root, n))
    return 0


def cmd_supervisor(a: argparse.Namespace) -> int:
    from cove.engine import supervisor
    root = _root(a)
    if a.scmd == "start":
        print(supervisor.ensure(root))
    elif a.scmd == "stop":
        supervisor.stop(root)
    else:
        pid = supervisor.running_pid(root)
        print(f"running (pid {pid})" if pid else "not running")
        return 0 if pid else 1
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("run", help="run a command in a new container from an image")
    _add_run_flags(r)
    registry_flags(r)
    r.add_argument("image")
    r.add_argument("command", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_run)

    def many(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("containers", nargs="+")
        p.set_defaults(func=func)
        return p
    many("start", "start stopped containers", cmd_start)
    many("stop", "stop containers (signal, then SIGKILL)", cmd_stop).add_argument(
        "-t", "--time", type=float, default=10.0, help="seconds before SIGKILL")
    many("restart", "stop, then start", cmd_restart).add_argument(
        "-t", "--time", type=float, default=10.0)
    many("kill", "send a signal (default KILL)", cmd_kill).add_argument(
        "-s", "--signal", default="KILL")
    many("rm", "remove containers", cmd_rm).add_argument(
        "-f", "--force", action="store_true", help="kill a running one first")
    many("wait", "wait for exit; print the exit code", cmd_wait)
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_ps)
    p = sub.add_parser("logs", help="a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--since", help="RFC3339, unix time or a duration (10m)")
    p.add_argument("--tail", help="the last N lines (or all)")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("container")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)
    p = sub.add_parser("top", help="a container's processes")
    p.add_argument("container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_top)
    p = many("stats", "resource usage (one sample, from the cgroup)", cmd_stats)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--no-stream", action="store_true", help="(always: one sample)")
    p = sub.add_parser("port", help="published ports")
    p.add_argument("container")
    p.set_defaults(func=cmd_port)

    v = sub.add_parser("volume", help="named volumes")
    vs = v.add_subparsers(dest="vcmd", required=True)
    x = vs.add_parser("create")
    x.add_argument("name")
    x = vs.add_parser("ls")
    x.add_argument("--format", choices=["table", "json"], default="table")
    for n in ("inspect", "rm"):
        x = vs.add_parser(n)
        x.add_argument("names", nargs="+")
    vs.add_parser("prune")
    v.set_defaults(func=cmd_volume)

    n = sub.add_parser("network", help="networks")
    ns = n.add_subparsers(dest="ncmd", required=True)
    x = ns.add_parser("create")
    x.add_argument("--subnet", help="e.g. 10.90.0.0/24 (default: the next free /24)")
    x.add_argument("name")
    x = ns.add_parser("ls")
    x.add_argument("--format", choices=["table", "json"], default="table")
    for c in ("inspect", "rm"):
        x = ns.add_parser(c)
        x.add_argument("names", nargs="+")
    n.set_defaults(func=cmd_network)

    s = sub.add_parser("supervisor", help="the restart/health supervisor (on demand)")
    s.add_argument("scmd", choices=["start", "stop", "status"])
    s.set_defaults(func=cmd_supervisor)
