"""Containers, volumes, networks and the monitor: thin argparse front-ends over
cove/engine (parse, call, print)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from cove.cli.common import each, parse_bool, registry_flags, registry_options
from cove.errors import CoveError


def _root(a: argparse.Namespace) -> str:
    """The state root's path; nothing made (the engine makes what a command needs, and a
    command that only reads makes nothing)."""
    from cove.image.store import Store
    return Store(a.root, create=False).root


def _notice(msg: str) -> None:
    """A line the engine has for the user beside a command's output (stderr)."""
    print(f"cove: {msg}", file=sys.stderr)


def _json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


# -- run --------------------------------------------------------------------------------

def cmd_run(a: argparse.Namespace) -> int:
    """docker's `run`: the container's exit status, or 125 when cove fails before the
    container runs (a bad flag, no such image), 126 when its command can't be invoked
    and 127 when it isn't there."""
    try:
        return _run(a)
    except CoveError as e:
        if e.code == 1 and e.what != "run -it":  # (not a TTY: 1, as docker's CLI check)
            e.code = 125
        raise
    except BrokenPipeError:
        raise  # our reader left (`| head`): main's quiet 141
    except OSError as e:
        from cove.errors import os_why
        raise CoveError("run", os_why(e), 125) from None


class _Discard:
    """A stream not attached (`-a`): its output is dropped."""

    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass


ATTACHABLE = ("stdin", "stdout", "stderr")


def _run(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    from cove.engine import images
    from cove.image.store import Store
    attach = {s.lower() for s in a.attach}
    for s in attach - set(ATTACHABLE):
        raise CoveError(f"--attach {s}", "valid streams are STDIN, STDOUT and STDERR")
    if attach and a.detach:
        raise CoveError("-a and -d", "conflicting options: cannot attach to a detached "
                                     "container")
    root = _root(a)
    images.find_image(Store(root), a.image, lambda: registry_options(a), quiet=a.quiet,
                      pull=a.pull, platform=a.platform)
    o = run_options(a, attach)
    out = _Discard() if attach and "stdout" not in attach else None
    err = _Discard() if attach and "stderr" not in attach else None
    # attached, the container gets the signals meant to end us (docker's --sig-proxy)
    rec, code = C.run(root, o, out, err, sig_proxy=a.sig_proxy)
    if a.detach:
        print(rec["Id"])
    return code


def run_options(a: argparse.Namespace, attach: set[str]) -> Any:
    """The RunOptions of `run`'s flags (`_add_run_flags`); `create` builds its own too."""
    from cove.engine import containers as C
    return C.RunOptions(
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
        interactive=a.interactive and (not attach or "stdin" in attach),
        stop_signal=a.stop_signal or "SIGTERM", stop_timeout=a.stop_timeout,
        privileged=a.privileged, publish_all=a.publish_all, expose=a.expose,
        add_host=a.add_host, dns=a.dns, dns_search=a.dns_search, dns_option=a.dns_option,
        init=a.init, ulimits=a.ulimit, labels=a.label, label_files=a.label_file,
        shm_size=a.shm_size, sysctls=a.sysctl, platform=a.platform, group_add=a.group_add,
        cpuset_cpus=a.cpuset_cpus, cpu_shares=a.cpu_shares, memory_swap=a.memory_swap,
        memory_reservation=a.memory_reservation, oom_kill_disable=a.oom_kill_disable,
        devices=a.device, device_cgroup_rules=a.device_cgroup_rule, systemd=a.systemd,
        annotations=a.annotation,
        cgroup_parent=a.cgroup_parent, ipc=a.ipc, pid=a.pid, uts=a.uts,
        cidfile=a.cidfile)


class _RunParser(argparse.ArgumentParser):
    """`run`'s parser: a flag it can't take is docker's exit status 125, in one line
    (not argparse's usage screen and 2), and so are arguments it does not know."""

    def error(self, message: str) -> NoReturn:
        print(f"cove: run: {message} (see 'cove run --help')", file=sys.stderr)
        sys.exit(125)

    def parse_known_args(self, args: Any = None, namespace: Any = None  # type: ignore[override]
                         ) -> tuple[argparse.Namespace, list[str]]:
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unknown flag: {' '.join(extra)}")
        return ns, extra


def _add_run_flags(r: argparse.ArgumentParser) -> None:
    r.add_argument("-d", "--detach", action="store_true", help="run in the background")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("--name", help="container name")
    r.add_argument("--hostname", help="container host name")
    r.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE (or KEY)")
    r.add_argument("--env-file", action="append", default=[], help="file of KEY=VALUE lines")
    r.add_argument("-v", "--volume", action="append", default=[],
                   help="[SRC:]DST[:OPTS] (SRC a path: bind; a name: named volume; OPTS "
                        "ro|rw, z|Z, nocopy, [r]shared|[r]slave|[r]private)")
    r.add_argument("--mount", action="append", default=[],
                   help="type=bind|volume|tmpfs,source=S,target=T[,readonly]")
    r.add_argument("--tmpfs", action="append", default=[], help="a tmpfs at this path")
    r.add_argument("-p", "--publish", action="append", default=[],
                   help="[IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp] (no HOSTPORT: a free one, "
                        "see `cove port`)")
    r.add_argument("--isolation", choices=["container", "gvisor", "vm"], default="",
                   help="namespaces (the default), gVisor, or a micro-VM (docs/isolation.md)")
    r.add_argument("--network", "--net", default="bridge",
                   help="none, host, bridge (the default) or a network's name")
    r.add_argument("-m", "--memory", help="memory limit (e.g. 64m; 6m at least)")
    r.add_argument("--cpus", type=float,
                   help="CPU quota in CPUs (e.g. 0.5; 0.01 up to the CPUs available)")
    r.add_argument("--pids-limit", type=int, help="most processes")
    r.add_argument("-w", "--workdir", help="working directory in the container")
    r.add_argument("-u", "--user", help="USER[:GROUP] (names or numbers)")
    r.add_argument("--entrypoint", help="replace the image's Entrypoint ('' clears it)")
    r.add_argument("--read-only", action="store_true", help="a read-only root filesystem")
    r.add_argument("--cap-add", action="append", default=[],
                   help="add a capability to docker's default 14 (or ALL)")
    r.add_argument("--cap-drop", action="append", default=[],
                   help="drop a capability (or ALL)")
    r.add_argument("--security-opt", action="append", default=[],
                   help="seccomp=FILE|unconfined, no-new-privileges")
    r.add_argument("--restart", default="no",
                   help="no, on-failure[:N], always or unless-stopped (not with --rm)")
    r.add_argument("--health-cmd", help="a shell command; exit 0 means healthy")
    r.add_argument("--health-interval", default="30s")
    r.add_argument("--health-timeout", default="30s")
    r.add_argument("--health-retries", type=int, default=3)
    r.add_argument("--health-start-period", default="0s")
    r.add_argument("--health-on-failure", default="none", choices=["none", "kill", "restart"])
    r.add_argument("--log-opt", action="append", default=[], help="max-size=S, max-file=N")
    r.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    r.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    # docker's further flags (cove/engine/hostconfig.py)
    r.add_argument("-a", "--attach", action="append", default=[], metavar="STREAM",
                   help="attach to STDIN, STDOUT or STDERR (default: stdout and stderr)")
    r.add_argument("--sig-proxy", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="pass the signals this process gets to the "
                                        "container (default true; --sig-proxy=false)")
    r.add_argument("--cidfile", help="write the container's ID to this file (which must "
                                     "not exist)")
    r.add_argument("--pull", default="missing", choices=["always", "missing", "never"],
                   help="pull the image before running (default missing)")
    r.add_argument("--platform", help="os/arch[/variant] of the image")
    r.add_argument("--privileged", action="store_true",
                   help="every capability and host device, no seccomp, /sys writable")
    r.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every exposed port to a free host port")
    r.add_argument("--expose", action="append", default=[],
                   help="expose a port or range (PORT[-PORT][/tcp|udp])")
    r.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="an /etc/hosts entry (IP may be host-gateway)")
    r.add_argument("--dns", action="append", default=[], help="a DNS server")
    r.add_argument("--dns-search", action="append", default=[],
                   help="a DNS search domain ('.' for none)")
    r.add_argument("--dns-option", "--dns-opt", action="append", default=[],
                   help="a resolv.conf option (e.g. ndots:2)")
    r.add_argument("--init", action="store_true",
                   help="run tini as pid 1: it reaps zombies and forwards signals")
    r.add_argument("--ulimit", action="append", default=[],
                   help="NAME=SOFT[:HARD], e.g. nofile=1024:2048 (-1: unlimited)")
    r.add_argument("-l", "--label", action="append", default=[], help="KEY=VALUE")
    r.add_argument("--label-file", action="append", default=[],
                   help="a file of KEY=VALUE lines")
    r.add_argument("--stop-signal", help="the signal `stop` sends (default SIGTERM)")
    r.add_argument("--stop-timeout", type=int,
                   help="seconds `stop` waits before SIGKILL (default 10; -1: no limit)")
    r.add_argument("--shm-size", help="size of /dev/shm (default 64m)")
    r.add_argument("--sysctl", action="append", default=[],
                   help="NAME=VALUE, namespaced ones only (net.*, kernel.shm*, ...)")
    r.add_argument("--group-add", action="append", default=[],
                   help="an additional group (a name in the image, or a number)")
    r.add_argument("--cpuset-cpus", help="CPUs it may run on (0-3, 0,1)")
    r.add_argument("-c", "--cpu-shares", type=int, help="relative CPU weight")
    r.add_argument("--memory-swap", help="memory + swap limit (-1: unlimited swap)")
    r.add_argument("--memory-reservation", help="a soft memory limit")
    r.add_argument("--oom-kill-disable", action="store_true",
                   help="don't OOM-kill it (use with --memory)")
    r.add_argument("--device", action="append", default=[],
                   help="a host device: /dev/HOST[:/dev/CONTAINER][:rwm], or a CDI "
                        "device: vendor.com/class=name|all (docs/devices.md)")
    r.add_argument("--device-cgroup-rule", action="append", default=[], metavar="RULE",
                   help="allow devices in the cgroup: 'TYPE MAJOR:MINOR ACCESS' "
                        "(c 1:3 rwm, a *:* m)")
    r.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                   help="an annotation of the OCI config (cdi.k8s.io/NAME=vendor.com/"
                        "class=dev: a CDI device, as CRI passes them)")
    r.add_argument("--systemd", default="false", metavar="true|false|always",
                   help="systemd as pid 1: tmpfs /run, a writable cgroup, machine-id, "
                        "stop signal SIGRTMIN+3 (true: when the command is init or "
                        "systemd; default false)")
    r.add_argument("--cgroup-parent", help="the cgroup to put its cgroup under")
    r.add_argument("--ipc", help="private (default), shareable, none, host or "
                                 "container:NAME")
    r.add_argument("--pid", help="host or container:NAME (default: its own)")
    r.add_argument("--uts", help="host (default: its own)")


# -- lifecycle --------------------------------------------------------------------------

def cmd_start(a: argparse.Namespace) -> int:
    """docker start: each container started (its name printed); with -a or -i, one,
    followed as `attach` follows it (cove/cli/ops.py), returning its exit status."""
    from cove.engine import containers as C
    if a.attach or a.interactive:
        from cove.cli import ops
        return ops.start_attached(a)
    return each(a, lambda c: C.start(_root(a), c))


def cmd_stop(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return each(a, lambda c: C.stop(_root(a), c, a.time), parallel=True)


def cmd_restart(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return each(a, lambda c: C.restart(_root(a), c, a.time), parallel=True)


def cmd_kill(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return each(a, lambda c: C.kill(_root(a), c, a.signal), parallel=True)


def cmd_rm(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    return each(a, lambda c: C.remove(_root(a), c, force=a.force), parallel=True)


def cmd_wait(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    for c in a.containers:
        print(C.wait(_root(a), c))
    return 0


# -- queries ----------------------------------------------------------------------------

def cmd_ps(a: argparse.Namespace) -> int:
    """docker's `ps`: running containers (all with -a, -n, -l or a status filter),
    newest first, as its table, `-q` ids or a `--format` template; `--format json` is
    cove's JSON array."""
    from cove.cli import listing
    from cove.engine import containers as C
    root = _root(a)
    filters = listing.parse_filters(a.filter, listing.PS_FILTERS)
    last = 1 if a.latest else a.last
    if last is not None and last <= 0:  # docker: -n 0 or -1 is no limit
        last = None
    everything = a.all or last is not None or "status" in filters
    recs = C.ps(root, all=everything, notify=_notice)
    recs.sort(key=lambda r: str(r.get("Created", "")), reverse=True)
    recs = listing.filter_containers(root, recs, filters)
    if last is not None:
        recs = recs[:last]
    if a.quiet:
        for r in recs:
            print(r["Id"] if a.no_trunc else r["Id"][:12])
        return 0
    if a.format == "json":
        _json([{"Id": r["Id"], "Names": [r["Name"]], "Image": r["Image"],
                "Command": " ".join([r["Path"], *r["Args"]]), "Created": r["Created"],
                "State": r["State"]["Status"], "Status": C.status_line(r),
                "ExitCode": r["State"]["ExitCode"],
                "Health": (r["State"].get("Health") or {}).get("Status", ""),
                "RestartCount": r.get("RestartCount", 0),
                "Ports": r["NetworkSettings"].get("Ports") or {}} for r in recs])
        return 0
    from cove.cli.format import render_list
    sizes = _image_sizes(root, recs) if a.size else None
    table = listing.PS_TABLE + ("\t{{.Size}}" if a.size else "")
    render_list(a.format or "", [listing.container_item(root, r, not a.no_trunc, sizes)
                                 for r in recs], table, listing.PS_HEADERS)
    return 0


def _image_sizes(root: str, recs: list[dict[str, Any]]) -> dict[str, int]:
    """`ps -s`: each container's image size, for the "virtual" size."""
    from cove.image.store import Store
    st = Store(root, create=False)
    out: dict[str, int] = {}
    for r in recs:
        try:
            out[r["Name"]] = int(st.image(r.get("ImageDigest") or r["Image"]).size or 0)
        except (CoveError, OSError, ValueError):
            out[r["Name"]] = 0
    return out


def cmd_logs(a: argparse.Namespace) -> int:
    """docker's `logs`: stdout entries to stdout, stderr to stderr; `-t` the entry's
    time first, `--details` its attributes (none here: docker's lone space)."""
    from cove.engine import containers as C
    tail = -1
    if a.tail not in (None, "all"):
        try:
            tail = int(a.tail)
        except ValueError:
            raise CoveError(f"--tail {a.tail}", "expected a number of lines or all") from None
        tail = max(tail, -1)  # docker: a negative count means all
    details = " " if a.details else ""
    for e in C.logs(_root(a), a.container, follow=a.follow, since=a.since, tail=tail,
                    until=a.until):
        out = sys.stderr if e["stream"] == "stderr" else sys.stdout
        out.write((e["time"] + " " if a.timestamps else "") + details + e["log"])
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
    """docker stats (cove/cli/ops.py): streamed every second until ^C, or --no-stream."""
    from cove.cli import ops
    return ops.stats_command(a)


def cmd_port(a: argparse.Namespace) -> int:
    from cove.engine import containers as C
    for ctr, binds in C.port(_root(a), a.container).items():
        for b in binds:
            print(f"{ctr} -> {b.get('HostIp') or '0.0.0.0'}:{b['HostPort']}")
    return 0


# -- volumes, networks, monitor ---------------------------------------------------------

def cmd_volume(a: argparse.Namespace) -> int:
    from cove.engine import volumes as V
    root = _root(a)
    if a.vcmd == "create":
        print(V.create(root, a.name)["Name"])
    elif a.vcmd == "ls":
        vols = V.ls(root)
        if a.format == "json":
            _json(vols)
        elif a.format not in ("", "table"):
            _templated(a.format, [_listing().volume_item(v) for v in vols], "VOLUME")
        else:
            print("DRIVER    VOLUME NAME")
            for v in vols:
                print(f"{v['Driver']:<10}{v['Name']}")
    elif a.vcmd == "inspect":
        _inspected([V.inspect(root, n) for n in a.names], a.format)
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
        elif a.format not in ("", "table"):
            _templated(a.format, [_listing().network_item(n) for n in nets], "NETWORK")
        else:  # docker's columns: NETWORK ID, NAME, DRIVER, SCOPE
            _templated("table", [_listing().network_item(n) for n in nets], "NETWORK")
    elif a.ncmd == "inspect":
        _inspected([N.inspect(root, n) for n in a.names], a.format)
    elif a.ncmd == "rm":
        for n in a.names:
            print(N.remove(root, n))
    elif a.ncmd == "connect":
        from cove.engine import netcontainer
        netcontainer.connect(root, a.network, a.container, a.ip)
    elif a.ncmd == "disconnect":
        from cove.engine import netcontainer
        netcontainer.disconnect(root, a.network, a.container, a.force)
    elif a.ncmd == "prune":
        if not a.force and not _confirm("WARNING! This will remove all custom networks "
                                        "not used by at least one container."):
            return 0
        gone = N.prune(root)
        if gone:
            print("Deleted Networks:")
            for name in gone:
                print(name)
    return 0


def _confirm(warning: str) -> bool:
    """docker's prompt before a prune; only `y` (or `yes`) goes on."""
    print(f"{warning}\nAre you sure you want to continue? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    if not sys.stdin.isatty():
        print()
    return answer in ("y", "yes")


def _listing() -> Any:
    from cove.cli import listing
    return listing


def _templated(fmt: str, items: list[dict[str, Any]], kind: str) -> None:
    """`volume ls`/`network ls --format TEMPLATE` (or `table TEMPLATE`): docker's fields."""
    from cove.cli.format import render_list
    lst = _listing()
    render_list(fmt, items, getattr(lst, f"{kind}_TABLE"), getattr(lst, f"{kind}_HEADERS"))


def _inspected(objs: list[dict[str, Any]], fmt: str | None) -> None:
    """`volume inspect`/`network inspect`: JSON, or `-f TEMPLATE` once per object."""
    if fmt:
        from cove.cli.format import render_each
        render_each(fmt, objs)
    else:
        _json(objs)


def cmd_supervisor(a: argparse.Namespace) -> int:
    from cove.engine import monctl
    root = _root(a)
    if a.scmd == "start":
        print(monctl.ensure(root))
    elif a.scmd == "stop":
        monctl.stop(root)
    else:
        pid = monctl.running(root)
        print(f"running (pid {pid})" if pid else "not running")
        return 0 if pid else 1
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("run", help="run a command in a new container from an image")
    if isinstance(r, argparse.ArgumentParser):
        r.__class__ = _RunParser  # docker's 125 for a bad flag
    _add_run_flags(r)
    registry_flags(r)
    r.add_argument("image", help="the image (pulled when missing)")
    r.add_argument("command", nargs=argparse.REMAINDER,
                   help="the command and its arguments (default: the image's)")
    r.set_defaults(func=cmd_run)

    def many(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("containers", nargs="+", metavar="CONTAINER",
                       help="containers: names, IDs or ID prefixes")
        p.set_defaults(func=func)
        parser: argparse.ArgumentParser = p
        return parser
    p = many("start", "start stopped containers", cmd_start)
    p.add_argument("-a", "--attach", action="store_true",
                   help="follow its output (and forward signals) until it exits")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="attach its stdin too (a container created with -i)")
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q",
                   help="the keys that detach (docker's syntax)")
    many("stop", "stop containers (signal, then SIGKILL)", cmd_stop).add_argument(
        "-t", "--time", type=float,
        help="seconds before SIGKILL (default: its --stop-timeout, else 10)")
    many("restart", "stop, then start", cmd_restart).add_argument(
        "-t", "--time", type=float,
        help="seconds before SIGKILL (default: its --stop-timeout, else 10)")
    many("kill", "send a signal (default KILL)", cmd_kill).add_argument(
        "-s", "--signal", default="KILL")
    p = many("rm", "remove containers", cmd_rm)
    p.add_argument("-f", "--force", action="store_true", help="kill a running one first")
    p.add_argument("-v", "--volumes", action="store_true",
                   help="remove its anonymous volumes (cove always does)")
    many("wait", "wait for exit; print the exit code", cmd_wait)
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true",
                   help="show all containers (default shows just running)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FILTER",
                   help="KEY=VALUE: id, name, status, label, ancestor, exited, health, "
                        "before, since, network, volume (repeat: a key's values are "
                        "alternatives)")
    p.add_argument("--format", default="",
                   help="table, json, 'table TEMPLATE' or a Go TEMPLATE "
                        "(e.g. '{{.ID}} {{.Names}}')")
    p.add_argument("-n", "--last", type=int, metavar="N",
                   help="show the N last created containers (includes all states)")
    p.add_argument("-l", "--latest", action="store_true",
                   help="show the latest created container (includes all states)")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-s", "--size", action="store_true", help="display total file sizes")
    p.set_defaults(func=cmd_ps)
    p = sub.add_parser("logs", help="a container's output")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument("--since", help="logs since a time: RFC3339, a unix time or a duration "
                                   "before now (10m, 1h30m)")
    p.add_argument("--until", help="logs before a time (as --since)")
    p.add_argument("-n", "--tail", default="all",
                   help="number of lines to show from the end (default all)")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("--details", action="store_true",
                   help="show the extra attributes given to the log")
    p.add_argument("container", help="the container (name, ID or ID prefix)")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("container", help="a running container")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="the command and its arguments")
    p.set_defaults(func=cmd_exec)
    p = sub.add_parser("top", help="a container's processes")
    p.add_argument("container", help="a running container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, help="ps options (default -ef)")
    p.set_defaults(func=cmd_top)
    p = sub.add_parser("stats", help="containers' resource usage, refreshed every second")
    p.add_argument("containers", nargs="*", help="containers (default: the running ones)")
    p.add_argument("-a", "--all", action="store_true", help="stopped containers too")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--no-trunc", action="store_true", help="full container ids")
    p.add_argument("--format", default="",
                   help="table (the default), json, or a Go template ({{.Name}}, "
                        "{{.CPUPerc}}, {{.MemUsage}}, ...; `table ...` adds a header)")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("port", help="published ports")
    p.add_argument("container", help="the container")
    p.set_defaults(func=cmd_port)

    v = sub.add_parser("volume", help="manage volumes")
    vs = v.add_subparsers(dest="vcmd", required=True)
    x = vs.add_parser("create")
    x.add_argument("name", help="the volume's name")
    x = vs.add_parser("ls")
    x.add_argument("--format", default="table",
                   help="table, json, or a Go template ('{{.Name}}', 'table {{.Name}}')")
    for n in ("inspect", "rm"):
        x = vs.add_parser(n)
        x.add_argument("names", nargs="+", metavar="VOLUME", help="volume names")
        if n == "inspect":
            x.add_argument("-f", "--format", help="a Go template, once per volume")
    vs.add_parser("prune")
    v.set_defaults(func=cmd_volume)

    n = sub.add_parser("network", help="manage networks")
    ns = n.add_subparsers(dest="ncmd", required=True)
    x = ns.add_parser("create")
    x.add_argument("--subnet", help="IPv4, e.g. 10.90.0.0/24, overlapping no other "
                                    "network's (default: the next free /24)")
    x.add_argument("name", help="the network's name")
    x = ns.add_parser("ls")
    x.add_argument("--format", default="table",
                   help="table, json, or a Go template ('{{.Name}}', 'table {{.ID}}')")
    for c in ("inspect", "rm"):
        x = ns.add_parser(c)
        x.add_argument("names", nargs="+", metavar="NETWORK", help="network names")
        if c == "inspect":
            x.add_argument("-f", "--format", help="a Go template, once per network")
    x = ns.add_parser("connect", help="connect a container to a network")
    x.add_argument("--ip", help="its IPv4 address on the network")
    x.add_argument("network", help="the network")
    x.add_argument("container", help="the container to connect")
    x = ns.add_parser("disconnect", help="disconnect a container from a network")
    x.add_argument("-f", "--force", action="store_true",
                   help="no error when it is not connected")
    x.add_argument("network", help="the network")
    x.add_argument("container", help="the container to disconnect")
    x = ns.add_parser("prune", help="remove the networks no container uses")
    x.add_argument("-f", "--force", action="store_true", help="do not ask")
    n.set_defaults(func=cmd_network)

    s = sub.add_parser("supervisor", help="the root's monitor: logs, exit codes, restart "
                                          "policies, health checks (started on demand)")
    s.add_argument("scmd", choices=["start", "stop", "status"],
                   help="start it, stop it (and its keeper), or say whether it runs")
    s.set_defaults(func=cmd_supervisor)
