"""`cove autoscale [-p PROJECT] SERVICE --min N --max N --cpu 70% [--window 60s]`: a
service's replicas follow its average CPU use (cove/engine/services/autoscale.py), as
`x-cove-autoscale` in the compose file says; `--off` stops it (the count stays where
it is); with no flags, the spec in force."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from cove.errors import CoveError


def _project(a: argparse.Namespace) -> str:
    """-p, else COMPOSE_PROJECT_NAME, else the current directory's name (compose's)."""
    name = a.project or os.environ.get("COMPOSE_PROJECT_NAME") or \
        os.path.basename(os.getcwd())
    norm = "".join(c for c in name.lower() if c.isalnum() or c in "-_")
    if not norm:
        raise CoveError(f"project {name!r}", "not a valid project name")
    return norm


def cmd_autoscale(a: argparse.Namespace) -> int:
    from cove.engine.services import autoscale
    from cove.image.store import Store
    root = Store(a.root, create=False).root
    project = _project(a)
    what = f"autoscale {a.service}"
    from cove.engine.services import state as desired
    d = desired.load(root, project)
    if d is None:
        raise CoveError(what, f"no project {project} (cove up it first, or say -p)")
    if a.service not in (d.get("services") or {}):
        raise CoveError(what, f"no such service in project {project}")
    flags = {k: v for k, v in (("min", a.min), ("max", a.max), ("cpu", a.cpu),
                               ("window", a.window)) if v is not None}
    if a.off:
        if flags:
            raise CoveError(what, "--off takes no other flag")
        autoscale.set_spec(root, project, a.service, None)
        return 0
    if not flags:
        have = autoscale.specs(root, project).get(a.service)
        if have is None:
            raise CoveError(what, "the service is not autoscaled")
        print(json.dumps(have))
        return 0
    missing = [f"--{k}" for k in ("min", "max", "cpu") if k not in flags]
    if missing:
        raise CoveError(what, f"{' and '.join(missing)} required")
    try:
        spec: dict[str, Any] = autoscale.parse_spec(flags, where="flags")
    except CoveError as e:
        raise CoveError(what, f"--{e.what.rpartition('.')[2]}: {e.why}") from None
    autoscale.set_spec(root, project, a.service, spec)
    from cove.engine.services import reconcile
    reconcile.notify(root, project)  # the monitor samples it from now on
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("autoscale", help="scale a service's replicas with its CPU use")
    p.add_argument("-p", "--project-name", dest="project", help="project name (default: "
                   "$COMPOSE_PROJECT_NAME, else the current directory's name)")
    p.add_argument("service", metavar="SERVICE", help="the service to scale with its CPU use")
    p.add_argument("--min", type=int, help="fewest replicas")
    p.add_argument("--max", type=int, help="most replicas")
    p.add_argument("--cpu", help="target average CPU use per replica (70%%: 0.7 of a CPU)")
    p.add_argument("--window", help="how long the load must stay low before scaling down "
                                    "(default 60s)")
    p.add_argument("--off", action="store_true", help="stop autoscaling the service")
    p.set_defaults(func=cmd_autoscale)
