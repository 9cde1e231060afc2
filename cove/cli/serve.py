"""`cove serve`: the Docker Engine API on a unix socket (cove/engine/dockerapi), so
the docker CLI, docker-compose and docker-py drive this engine:

    cove serve [-H unix:///run/cove/docker.sock] [--group docker] [--pid-file F]
    DOCKER_HOST=unix:///run/cove/docker.sock docker run --rm busybox echo hi

Foreground; SIGTERM or ^C stops the server and no container (they are the engine's)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from cove.errors import CoveError


def cmd_serve(a: argparse.Namespace) -> int:
    from cove.engine.dockerapi.app import default_socket, serve
    from cove.image.store import Store
    host = a.host or "unix://" + default_socket()
    if not host.startswith("unix://"):
        raise CoveError(f"-H {host}", "cove serves on a unix socket (unix:///path)")
    path = os.path.abspath(host.removeprefix("unix://"))
    root = Store(a.root).root
    if a.pid_file:
        with open(a.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        serve(root, path, a.group, a.quiet)
    finally:
        if a.pid_file:
            with_suppress_unlink(a.pid_file)
    # the socket is gone: exit now, rather than wait for an engine call still running
    # on a worker thread (its container goes on; the engine's state is on disk)
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def with_suppress_unlink(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the Docker Engine API (1.41) on a unix socket")
    p.add_argument("-H", "--host", help="unix:///PATH (default unix:///run/cove/docker.sock "
                                        "for root, $XDG_RUNTIME_DIR/cove/docker.sock "
                                        "otherwise)")
    p.add_argument("--group", help="the socket's group (mode 0660): its members may use "
                                   "the API (which is root's power over containers)")
    p.add_argument("--pid-file", help="write the server's pid here")
    p.add_argument("-q", "--quiet", action="store_true", help="no log lines on stderr")
    p.set_defaults(func=cmd_serve)
