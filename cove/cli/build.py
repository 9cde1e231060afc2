"""`cove build`: a Dockerfile/Containerfile into an image (cove.image.build)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cove.errors import CoveError


def _kv(items: list[str] | None, flag: str, env_ok: bool = False) -> dict[str, str]:
    import os
    out: dict[str, str] = {}
    for it in items or []:
        k, eq, v = it.partition("=")
        if not k:
            raise CoveError(f"{flag} {it}", "expected KEY=VALUE")
        if not eq:
            if not env_ok:
                raise CoveError(f"{flag} {it}", "expected KEY=VALUE")
            if k not in os.environ:
                continue       # docker: a bare name takes the caller's value, if any
            v = os.environ[k]
        out[k] = v
    return out


def cmd_build(a: argparse.Namespace) -> int:
    from cove.image.build.builder import Options, build
    from cove.image.build.mounts import parse_secret_flag
    from cove.image.store import Store
    secrets = dict(parse_secret_flag(s) for s in a.secret or [])
    store = Store(a.root)
    bridge = None
    if a.network == "bridge":
        import functools

        from cove.engine.buildnet import bridge_netns
        bridge = functools.partial(bridge_netns, store.root)
    opts = Options(secrets=secrets, bridge=bridge,
                   context=a.context, dockerfile=a.file, tags=a.tag or [],
                   build_args=_kv(a.build_arg, "--build-arg", env_ok=True),
                   target=a.target, no_cache=a.no_cache, pull=a.pull,
                   network="none" if a.network in ("none", "default") else a.network,
                   labels=_kv(a.label, "--label"), platform=a.platform,
                   stdin=sys.stdin.buffer if a.context == "-" else None)

    def out(line: str) -> None:
        if not a.quiet:
            print(line, flush=True)
    import signal

    def interrupted(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt   # cleaned up as Ctrl-C is: nothing left, nothing tagged
    signal.signal(signal.SIGTERM, interrupted)
    res = build(store, opts, out)
    if a.quiet:
        print(res.image_id)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("context", metavar="CONTEXT",
                   help="a directory, a tarball, or - for a tar on stdin")
    p.add_argument("-t", "--tag", action="append", metavar="NAME[:TAG]")
    p.add_argument("-f", "--file", metavar="FILE",
                   help="the Dockerfile (default: CONTEXT/Containerfile, then Dockerfile)")
    p.add_argument("--build-arg", action="append", metavar="K=V")
    p.add_argument("--target", metavar="STAGE", help="build up to this stage only")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--pull", action="store_true", help="always pull the base images")
    p.add_argument("--network", default="none",
                   choices=["none", "default", "host", "bridge"],
                   help="RUN's network: none (loopback only; the default), host, or "
                        "bridge (the engine's default bridge network)")
    p.add_argument("--platform", help="only this host's platform can be built")
    p.add_argument("--label", action="append", metavar="K=V")
    p.add_argument("--secret", action="append", metavar="id=X,src=F",
                   help="a file (or env=VAR) that RUN --mount=type=secret,id=X reads at "
                        "/run/secrets/X; kept out of the image")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.set_defaults(func=cmd_build)
