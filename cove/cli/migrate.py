"""`cove migrate` and `cove migrate-receive`: live migration of a running container
between two Cove hosts (cove/engine/migrate.py)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def _root(a: argparse.Namespace) -> str:
    from cove.image.store import Store
    return Store(a.root, create=False).root


def _token(a: argparse.Namespace) -> str:
    from cove.errors import CoveError

    tok = a.token or os.environ.get("COVE_MIGRATE_TOKEN", "")
    if not tok:
        raise CoveError("--token", "a token is needed (or COVE_MIGRATE_TOKEN)")
    return str(tok)


def cmd_migrate(a: argparse.Namespace) -> int:
    from cove.engine import migrate
    out = migrate.migrate(_root(a), a.container, a.to, _token(a), rounds=a.rounds,
                          threshold=a.threshold << 20, tcp_established=a.tcp_established)
    if a.json:
        print(json.dumps(out))
    else:
        mib = ", ".join(f"{n / (1 << 20):.1f}" for n in out["rounds"]) or "none"
        print(f"{out['name']} migrated to {a.to}: pre-dump rounds (MiB) {mib}; "
              f"downtime {out['downtime_s']:.3f}s, total {out['total_s']:.3f}s")
    return 0


def cmd_receive(a: argparse.Namespace) -> int:
    from cove.engine import migrate

    def ready(addr: str) -> None:
        print(f"listening on {addr}", flush=True)
    out = migrate.receive(_root(a), a.listen, _token(a), ready)
    print(json.dumps(out), flush=True)
    return 0


def register(sub: Any) -> None:
    """Add `migrate` and `migrate-receive` to `cove`'s sub-parsers."""
    p = sub.add_parser("migrate", help="move a running container to another Cove host")
    p.add_argument("container", help="the running container to move")
    p.add_argument("--to", required=True, metavar="HOST[:PORT]",
                   help="where `cove migrate-receive` listens (port 7077 by default)")
    p.add_argument("--token", help="the receiver's token (or COVE_MIGRATE_TOKEN)")
    p.add_argument("--rounds", type=int, default=4,
                   help="pre-dump rounds at most (0: stop and copy)")
    p.add_argument("--threshold", type=int, default=4, metavar="MIB",
                   help="stop pre-dumping once a round's dirty memory is under this")
    p.add_argument("--tcp-established", action="store_true",
                   help="move established TCP connections too")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("migrate-receive",
                       help="receive one container that `cove migrate` sends")
    p.add_argument("--listen", required=True, metavar="ADDR:PORT",
                   help="the address and port to listen on")
    p.add_argument("--token", help="the token a sender must give (or COVE_MIGRATE_TOKEN)")
    p.set_defaults(func=cmd_receive)

