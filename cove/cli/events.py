"""`cove events`: the engine's event log (cove/engine/events.py) as docker prints it,
`2026-12-06T02:00:00.000000000Z container die ID (exitCode=0, image=busybox, name=x)`,
filtered (`--filter`) and formatted (`--format`) as docker's."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

EVENT_FILTERS = ("container", "event", "image", "label", "network", "type", "volume",
                 "scope")


def _event_time(ns: int) -> str:
    """docker's RFC3339NanoFixed in local time: `2026-12-06T02:00:00.000000000Z`."""
    s, frac = divmod(ns, 1_000_000_000)
    lt = time.localtime(s)
    off = lt.tm_gmtoff or 0
    zone = "Z" if off == 0 else f"{'+' if off > 0 else '-'}{abs(off) // 3600:02d}:" \
                               f"{abs(off) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{frac:09d}{zone}"


def _event_match(e: dict[str, Any], f: dict[str, list[str]]) -> bool:
    actor = e.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    aid = str(actor.get("ID", ""))
    kind = e.get("Type", "")

    def obj(v: str, t: str) -> bool:
        return kind == t and (aid == v or (aid.startswith(v) and len(v) >= 3)
                              or attrs.get("name") == v)
    checks: dict[str, Callable[[str], bool]] = {
        "container": lambda v: obj(v, "container"),
        "event": lambda v: e.get("Action") == v or str(e.get("Action", "")).startswith(v + ":"),
        "image": lambda v: (kind == "image" and aid == v) or attrs.get("image") == v
        or (kind == "image" and attrs.get("name") == v),
        "label": lambda v: v.partition("=")[0] in attrs and (
            "=" not in v or attrs[v.partition("=")[0]] == v.partition("=")[2]),
        "network": lambda v: obj(v, "network"),
        "volume": lambda v: obj(v, "volume"),
        "type": lambda v: kind == v,
        "scope": lambda v: e.get("scope", "local") == v,
    }
    return all(any(checks[k](v) for v in vals) for k, vals in f.items())


def _event_fields(e: dict[str, Any]) -> dict[str, Any]:
    """The event as docker's Go struct names it (`.Type`, `.Actor.ID`, `.TimeNano`)."""
    return {"Status": e.get("status", ""), "ID": e.get("id", ""), "From": e.get("from", ""),
            "Type": e.get("Type", ""), "Action": e.get("Action", ""),
            "Actor": e.get("Actor") or {"ID": "", "Attributes": {}},
            "Scope": e.get("scope", "local"), "Time": e.get("time", 0),
            "TimeNano": e.get("timeNano", 0)}


def cmd_events(a: argparse.Namespace) -> int:
    """docker's `events`: stored events from --since (up to --until), then new ones as
    they happen until --until has passed (forever without it)."""
    from cove.cli.format import Template, to_json
    from cove.cli.listing import parse_filters
    from cove.engine import events
    from cove.engine.logs import parse_since
    filters = parse_filters(a.filter, EVENT_FILTERS)
    since = parse_since(a.since, "--since") if a.since else None
    until = parse_since(a.until, "--until") if a.until else None
    fmt = (a.format or "").strip()
    raw = fmt in ("json", "{{json .}}")
    tmpl = Template(fmt) if fmt and not raw else None
    from cove.image.store import Store
    root = Store(a.root, create=False).root  # (nothing made: a reader)
    for e in events.follow(root, since, until):
        if not _event_match(e, filters):
            continue
        if raw:
            line = to_json(e)
        elif tmpl is not None:
            line = tmpl.render(_event_fields(e))
        else:
            actor = e.get("Actor") or {}
            attrs = actor.get("Attributes") or {}
            line = (f"{_event_time(e['timeNano'])} {e.get('Type', '')} {e.get('Action', '')} "
                    f"{actor.get('ID', '')}"
                    + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())) + ")"
                       if attrs else ""))
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


def flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="show events from this time: RFC3339, a unix time or a "
                                   "duration before now (10m)")
    p.add_argument("--until", help="stream events until this time (as --since)")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FILTER",
                   help="KEY=VALUE: container, event, image, label, network, type, volume")
    p.add_argument("--format", help="json, or a Go template (e.g. '{{.Action}} "
                                    "{{.Actor.Attributes.name}}')")
    p.set_defaults(func=cmd_events)
