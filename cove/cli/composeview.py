"""`cove compose ps|logs|ls|config`: what a compose project is and does, read from its
desired state and its replicas' records (cove/cli/compose.py has the commands that
change it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from cove.cli.composeargs import compose_file as _file
from cove.cli.composeargs import project as _project
from cove.cli.composeargs import state_root as _root
from cove.errors import CoveError


def follow_logs(root: str, project: str, svcs: list[str], follow: bool,
                tail: int = -1) -> None:
    """The replicas' logs (of `svcs`, or all), each line after the replica's name."""
    import threading

    from cove.engine import containers
    from cove.engine.services import replica
    reps = replica.replicas(root, project)
    names = [r["name"] for svc, rs in sorted(reps.items()) if not svcs or svc in svcs
             for r in rs]
    width = max((len(n) for n in names), default=0)
    lock = threading.Lock()

    def one(name: str) -> None:
        try:
            for e in containers.logs(root, name, follow=follow, tail=tail):
                with lock:
                    out = sys.stderr if e["stream"] == "stderr" else sys.stdout
                    out.write(f"{name:<{width}} | {e['log']}")
                    out.flush()
        except CoveError:
            pass
    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)


def cmd_compose(a: argparse.Namespace) -> int:
    import json
    root = _root(a)
    if a.what == "config":
        from cove.engine.services import compose
        f = _file(a)
        assert f is not None
        print(json.dumps(compose.load(f, a.project, a.profile), indent=2))
        return 0
    if a.what == "ls":
        from cove.engine.services import replica
        from cove.engine.services import state as desired
        print(f"{'NAME':<20} {'SERVICES':<40} FILE")
        for p in desired.projects(root):
            d = desired.load(root, p) or {"services": {}}
            reps = replica.replicas(root, p)
            svcs = ", ".join(f"{s}({sum(r['status'] == 'running' for r in reps.get(s, []))}"
                             f"/{v['replicas']})" for s, v in d["services"].items())
            print(f"{p:<20} {svcs:<40} {d.get('file', '')}")
        return 0
    project = _project(a)
    if a.what == "logs":
        follow_logs(root, project, a.services, a.follow,
                    int(a.tail) if a.tail not in (None, "all") else -1)
        return 0
    from cove.engine import containers
    from cove.engine import state as engine_state
    from cove.engine.services import replica
    from cove.engine.services import state as desired
    d = desired.load(root, project) or {"services": {}}
    rows = []
    for svc, rs in sorted(replica.replicas(root, project).items()):
        if a.services and svc not in a.services:
            continue
        s = d["services"].get(svc) or {}
        ports = ", ".join(f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}->{p['target']}/"
                          f"{p['proto']}" for p in (s.get("spec") or {}).get("ports", []))
        for r in rs:
            if not a.all and not replica.alive(r):
                continue
            cdir = engine_state.Paths(root).cdir(r["name"])
            rec: Mapping[str, Any] = engine_state.load_record(cdir) or {}
            ver = "" if r["hash"] == s.get("hash") else " (old)"
            rows.append({"Name": r["name"], "Service": svc, "Image": rec.get("Image", ""),
                         "Status": (containers.status_line(rec) if rec else r["status"])
                         + ver, "IP": r["ip"], "Ports": ports})
    rollouts = {svc: _rollout_line(s) for svc, s in d["services"].items()
                if not a.services or svc in a.services}
    if a.format == "json":
        for r in rows:
            r["Rollout"] = rollouts.get(r["Service"], "")
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["Name", "Service", "Image", "Status", "IP", "Ports"]
    width = {k: max([len(k), *(len(r[k]) for r in rows)]) + 3 for k in cols}
    print("".join(f"{k.upper():<{width[k]}}" for k in cols).rstrip())
    for r in rows:
        print("".join(f"{r[k]:<{width[k]}}" for k in cols).rstrip())
    for svc, line in sorted(rollouts.items()):
        if line:
            print(f"{svc}: {line}")
    return 0


def _rollout_line(s: dict[str, Any]) -> str:
    """A service's rollout while it is not done: `rollout paused: <why> (...)`."""
    ro = s.get("rollout") or {}
    st = ro.get("state")
    if st not in ("updating", "rolling_back", "paused"):
        return ""
    what = {"updating": f"rollout to {s['spec']['image']} in progress",
            "rolling_back": f"rollback to {s['spec']['image']} in progress",
            "paused": f"rollout to {s['spec']['image']} paused"}[st]
    why = f": {ro['reason']}" if ro.get("reason") else ""
    return what + why + (" (`cove rollout` resumes it, `cove rollback` goes back)"
                         if st == "paused" else "")
