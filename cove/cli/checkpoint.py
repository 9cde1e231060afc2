"""`cove checkpoint` and `cove restore`: CRIU's checkpoint/restore of running
containers (cove/engine/checkpoint.py)."""

from __future__ import annotations

import argparse
from typing import Any


def _root(a: argparse.Namespace) -> str:
    from cove.image.store import Store
    return Store(a.root, create=False).root


def cmd_checkpoint(a: argparse.Namespace) -> int:
    from cove.engine import checkpoint
    rec = checkpoint.checkpoint(_root(a), a.container, export=a.export or "",
                                leave_running=a.leave_running,
                                tcp_established=a.tcp_established)
    print(rec.get("Name", a.container))
    return 0


def cmd_restore(a: argparse.Namespace) -> int:
    from cove.engine import checkpoint
    rec = checkpoint.restore(_root(a), a.container or "", import_file=a.import_file or "",
                             new_name=a.name or "", tcp_established=a.tcp_established)
    print(rec.get("Name", ""))
    return 0


def register(sub: Any) -> None:
    """Add `checkpoint` and `restore` to `cove`'s sub-parsers."""
    p = sub.add_parser("checkpoint", help="checkpoint a running container (CRIU)")
    p.add_argument("container", help="the running container to checkpoint")
    p.add_argument("--export", metavar="FILE",
                   help="also write an archive that restores elsewhere (.tar or .tar.gz)")
    p.add_argument("--leave-running", action="store_true",
                   help="leave the container running after the checkpoint")
    p.add_argument("--tcp-established", action="store_true",
                   help="checkpoint established TCP connections")
    p.set_defaults(func=cmd_checkpoint)
    p = sub.add_parser("restore", help="restore a checkpointed container (CRIU)")
    p.add_argument("container", nargs="?", help="a checkpointed container (or --import)")
    p.add_argument("--import", dest="import_file", metavar="FILE",
                   help="restore a new container from an archive of checkpoint --export")
    p.add_argument("--name", help="the restored container's name (a copy, beside the "
                                  "source)")
    p.add_argument("--tcp-established", action="store_true",
                   help="restore established TCP connections")
    p.set_defaults(func=cmd_restore)
