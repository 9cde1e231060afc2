"""Containers: thin argparse front-ends over cove/engine (parse, call, print); volumes,
networks and the monitor are cove/cli/manage.py's."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from cove.cli.common import each, registry_flags, registry_options
from cove.cli.runflags import add_run_flags, run_options
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:  # (the CLI imports the engine lazily)
    from cove.engine.container.record import Record


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
    from cove.engine import containers, images
    from cove.image.store import Store
    attach = {s.lower() for s in a.attach}
    for s in attach - set(ATTACHABLE):
        raise CoveError(f"--attach {s}", "valid streams are STDIN, STDOUT and STDERR")
    if attach and a.detach:
        raise CoveError("-a and -d", "conflicting options: cannot attach to a detached "
                                     "container")
    if a.detach_keys:  # checked before anything is pulled or made
        from cove.engine.detachkeys import parse_detach_keys
        parse_detach_keys(a.detach_keys)
    root = _root(a)
    images.find_image(Store(root), a.image, lambda: registry_options(a), quiet=a.quiet,
                      pull=a.pull, platform=a.platform)
    o = run_options(a, attach)
    out = _Discard() if attach and "stdout" not in attach else None
    err = _Discard() if attach and "stderr" not in attach else None
    # attached, the container gets the signals meant to end us (docker's --sig-proxy)
    rec, code = containers.run(root, o, out, err, sig_proxy=a.sig_proxy)
    if a.detach:
        print(rec["Id"])
    from cove.cli import runclient  # the next run, in a warm server (cove/cli/runserver.py)
    runclient.start(root)
    return code


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


# -- lifecycle --------------------------------------------------------------------------

def cmd_start(a: argparse.Namespace) -> int:
    """docker start: each container started (its name printed); with -a or -i, one,
    followed as `attach` follows it (cove/cli/ops.py), returning its exit status."""
    from cove.engine import containers
    if a.attach or a.interactive:
        from cove.cli import ops
        return ops.start_attached(a)
    return each(a, lambda c: containers.start(_root(a), c))


def cmd_stop(a: argparse.Namespace) -> int:
    from cove.engine import containers
    return each(a, lambda c: containers.stop(_root(a), c, a.time), parallel=True)


def cmd_restart(a: argparse.Namespace) -> int:
    from cove.engine import containers
    return each(a, lambda c: containers.restart(_root(a), c, a.time), parallel=True)


def cmd_kill(a: argparse.Namespace) -> int:
    from cove.engine import containers
    return each(a, lambda c: containers.kill(_root(a), c, a.signal), parallel=True)


def cmd_rm(a: argparse.Namespace) -> int:
    from cove.engine import containers
    return each(a, lambda c: containers.remove(_root(a), c, force=a.force), parallel=True)


def cmd_wait(a: argparse.Namespace) -> int:
    from cove.engine import containers
    for c in a.containers:
        print(containers.wait(_root(a), c))
    return 0


# -- queries ----------------------------------------------------------------------------

def cmd_ps(a: argparse.Namespace) -> int:
    """docker's `ps`: running containers (all with -a, -n, -l or a status filter),
    newest first, as its table, `-q` ids or a `--format` template; `--format json` is
    cove's JSON array."""
    from cove.cli import listing
    from cove.engine import containers
    root = _root(a)
    filters = listing.parse_filters(a.filter, listing.PS_FILTERS)
    last = 1 if a.latest else a.last
    if last is not None and last <= 0:  # docker: -n 0 or -1 is no limit
        last = None
    everything = a.all or last is not None or "status" in filters
    recs = containers.ps_records(root, all=everything, notify=_notice)
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
                "State": r["State"]["Status"], "Status": containers.status_line(r),
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


def _image_sizes(root: str, recs: list[Record]) -> dict[str, int]:
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
    from cove.engine import containers
    tail = -1
    if a.tail not in (None, "all"):
        try:
            tail = int(a.tail)
        except ValueError:
            raise CoveError(f"--tail {a.tail}", "expected a number of lines or all") from None
        tail = max(tail, -1)  # docker: a negative count means all
    details = " " if a.details else ""
    for e in containers.logs(_root(a), a.container, follow=a.follow, since=a.since, tail=tail,
                    until=a.until):
        out = sys.stderr if e["stream"] == "stderr" else sys.stdout
        out.write((e["time"] + " " if a.timestamps else "") + details + e["log"])
        out.flush()
    return 0


def cmd_exec(a: argparse.Namespace) -> int:
    from cove.engine import containers
    return containers.exec_(_root(a), a.container, a.command, tty=a.tty, interactive=a.interactive,
                   detach=a.detach, env=a.env, user=a.user, workdir=a.workdir)


def cmd_top(a: argparse.Namespace) -> int:
    from cove.engine import containers
    sys.stdout.write(containers.top(_root(a), a.container, a.ps_args))
    return 0


def cmd_stats(a: argparse.Namespace) -> int:
    """docker stats (cove/cli/ops.py): streamed every second until ^C, or --no-stream."""
    from cove.cli import ops
    return ops.stats_command(a)


def cmd_port(a: argparse.Namespace) -> int:
    from cove.engine import containers
    for ctr, binds in containers.port(_root(a), a.container).items():
        for b in binds:
            print(f"{ctr} -> {b.get('HostIp') or '0.0.0.0'}:{b['HostPort']}")
    return 0


def register(sub: Any) -> None:
    """The containers' commands, one parser each (`volume`, `network` and `supervisor`
    are cove/cli/manage.py's)."""
    _register_run(sub)
    _register_lifecycle(sub)
    _register_ps(sub)
    _register_logs(sub)
    _register_exec(sub)
    _register_top(sub)
    _register_stats(sub)
    _register_port(sub)


def _register_run(sub: Any) -> None:
    r = sub.add_parser("run", help="run a command in a new container from an image")
    if isinstance(r, argparse.ArgumentParser):
        r.__class__ = _RunParser  # docker's 125 for a bad flag
    add_run_flags(r)
    registry_flags(r)
    r.add_argument("--detach-keys", help="the keys that detach from a -t container's "
                                         "terminal (docker's syntax; default ctrl-p,ctrl-q)")
    r.add_argument("image", help="the image (pulled when missing)")
    r.add_argument("command", nargs=argparse.REMAINDER,
                   help="the command and its arguments (default: the image's)")
    r.set_defaults(func=cmd_run)


def _many(sub: Any, name: str, help: str, func: Any) -> argparse.ArgumentParser:
    """A command over one or more containers (`start`, `stop`, `rm`, ...)."""
    p = sub.add_parser(name, help=help)
    p.add_argument("containers", nargs="+", metavar="CONTAINER",
                   help="containers: names, IDs or ID prefixes")
    p.set_defaults(func=func)
    parser: argparse.ArgumentParser = p
    return parser


def _register_lifecycle(sub: Any) -> None:
    """start, stop, restart, kill, rm and wait."""
    p = _many(sub, "start", "start stopped containers", cmd_start)
    p.add_argument("-a", "--attach", action="store_true",
                   help="follow its output (and forward signals) until it exits")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="attach its stdin too (a container created with -i)")
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q",
                   help="the keys that detach (docker's syntax)")
    _many(sub, "stop", "stop containers (signal, then SIGKILL)", cmd_stop).add_argument(
        "-t", "--time", type=float,
        help="seconds before SIGKILL (default: its --stop-timeout, else 10)")
    _many(sub, "restart", "stop, then start", cmd_restart).add_argument(
        "-t", "--time", type=float,
        help="seconds before SIGKILL (default: its --stop-timeout, else 10)")
    _many(sub, "kill", "send a signal (default KILL)", cmd_kill).add_argument(
        "-s", "--signal", default="KILL")
    p = _many(sub, "rm", "remove containers", cmd_rm)
    p.add_argument("-f", "--force", action="store_true", help="kill a running one first")
    p.add_argument("-v", "--volumes", action="store_true",
                   help="remove its anonymous volumes (cove always does)")
    _many(sub, "wait", "wait for exit; print the exit code", cmd_wait)


def _register_ps(sub: Any) -> None:
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


def _register_logs(sub: Any) -> None:
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


def _register_exec(sub: Any) -> None:
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


def _register_top(sub: Any) -> None:
    p = sub.add_parser("top", help="a container's processes")
    p.add_argument("container", help="a running container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, help="ps options (default -ef)")
    p.set_defaults(func=cmd_top)


def _register_stats(sub: Any) -> None:
    p = sub.add_parser("stats", help="containers' resource usage, refreshed every second")
    p.add_argument("containers", nargs="*", help="containers (default: the running ones)")
    p.add_argument("-a", "--all", action="store_true", help="stopped containers too")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--no-trunc", action="store_true", help="full container ids")
    p.add_argument("--format", default="",
                   help="table (the default), json, or a Go template ({{.Name}}, "
                        "{{.CPUPerc}}, {{.MemUsage}}, ...; `table ...` adds a header)")
    p.set_defaults(func=cmd_stats)


def _register_port(sub: Any) -> None:
    p = sub.add_parser("port", help="published ports")
    p.add_argument("container", help="the container")
    p.set_defaults(func=cmd_port)
