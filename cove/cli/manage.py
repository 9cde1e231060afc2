"""Volumes, networks and the monitor: `volume`, `network` and `supervisor`, thin
argparse front-ends over cove/engine (parse, call, print)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _root(a: argparse.Namespace) -> str:
    """The state root's path; nothing made (the engine makes what a command needs, and a
    command that only reads makes nothing)."""
    from cove.image.store import Store
    return Store(a.root, create=False).root


def _json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def cmd_volume(a: argparse.Namespace) -> int:
    from cove.engine import volumes
    root = _root(a)
    if a.vcmd == "create":
        print(volumes.create(root, a.name)["Name"])
    elif a.vcmd == "ls":
        vols = volumes.ls(root)
        if a.format == "json":
            _json(vols)
        elif a.format not in ("", "table"):
            _templated(a.format, [_listing().volume_item(v) for v in vols], "VOLUME")
        else:
            print("DRIVER    VOLUME NAME")
            for v in vols:
                print(f"{v['Driver']:<10}{v['Name']}")
    elif a.vcmd == "inspect":
        _inspected([volumes.inspect(root, n) for n in a.names], a.format)
    elif a.vcmd == "rm":
        for n in a.names:
            print(volumes.remove(root, n))
    elif a.vcmd == "prune":
        for n in volumes.prune(root):
            print(n)
    return 0


def cmd_network(a: argparse.Namespace) -> int:
    from cove.engine import network
    root = _root(a)
    if a.ncmd == "create":
        print(network.create(root, a.name, subnet=a.subnet)["Id"])
    elif a.ncmd == "ls":
        nets = network.ls(root)
        if a.format == "json":
            _json(nets)
        elif a.format not in ("", "table"):
            _templated(a.format, [_listing().network_item(n) for n in nets], "NETWORK")
        else:  # docker's columns: NETWORK ID, NAME, DRIVER, SCOPE
            _templated("table", [_listing().network_item(n) for n in nets], "NETWORK")
    elif a.ncmd == "inspect":
        _inspected([network.inspect(root, n) for n in a.names], a.format)
    elif a.ncmd == "rm":
        for n in a.names:
            print(network.remove(root, n))
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
        gone = network.prune(root)
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
    _register_volume(sub)
    _register_network(sub)
    _register_supervisor(sub)


def _register_volume(sub: Any) -> None:
    v = sub.add_parser("volume", help="manage volumes")
    vs = v.add_subparsers(dest="vcmd", required=True)
    x = vs.add_parser("create")
    x.add_argument("name", help="the volume's name")
    _ls_inspect_rm(vs, "volume", "{{.Name}}")
    vs.add_parser("prune")
    v.set_defaults(func=cmd_volume)


def _register_network(sub: Any) -> None:
    n = sub.add_parser("network", help="manage networks")
    ns = n.add_subparsers(dest="ncmd", required=True)
    x = ns.add_parser("create")
    x.add_argument("--subnet", help="IPv4, e.g. 10.90.0.0/24, overlapping no other "
                                    "network's (default: the next free /24)")
    x.add_argument("name", help="the network's name")
    _ls_inspect_rm(ns, "network", "{{.ID}}")
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


def _register_supervisor(sub: Any) -> None:
    s = sub.add_parser("supervisor", help="the root's monitor: logs, exit codes, restart "
                                          "policies, health checks (started on demand)")
    s.add_argument("scmd", choices=["start", "stop", "status"],
                   help="start it, stop it (and its keeper), or say whether it runs")
    s.set_defaults(func=cmd_supervisor)


def _ls_inspect_rm(sub: Any, kind: str, column: str) -> None:
    """`volume`'s and `network`'s ls, inspect and rm subcommands (the same flags)."""
    x = sub.add_parser("ls")
    x.add_argument("--format", default="table",
                   help=f"table, json, or a Go template ('{{{{.Name}}}}', 'table {column}')")
    for c in ("inspect", "rm"):
        x = sub.add_parser(c)
        x.add_argument("names", nargs="+", metavar=kind.upper(), help=f"{kind} names")
        if c == "inspect":
            x.add_argument("-f", "--format", help=f"a Go template, once per {kind}")
