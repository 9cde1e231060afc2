"""Flags and helpers shared by `cove`'s subcommands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:  # the registry client costs `cove ps` and `cove run` 0.1 s to import
    from cove.image.store import Store
    from cove.image.transfer import RegistryOptions


def parse_bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {s!r}")


def registry_flags(p: argparse.ArgumentParser, creds: bool = True) -> None:
    p.add_argument("--tls-verify", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="verify TLS (and allow plain HTTP when false)")
    p.add_argument("--cert-dir", help="CA directory: DIR/HOST[:PORT]/ca.crt "
                                      "(default /etc/containers/certs.d)")
    p.add_argument("--authfile", help="auth.json (default: podman's)")
    if creds:
        p.add_argument("--creds", help="USER:PASSWORD for this command only")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def registry_options(a: argparse.Namespace) -> RegistryOptions:
    from cove.image.transfer import RegistryOptions
    creds = None
    if getattr(a, "creds", None):
        user, sep, pw = a.creds.partition(":")
        if not sep:
            raise CoveError("--creds", "expected USER:PASSWORD")
        creds = (user, pw)
    return RegistryOptions(tls_verify=a.tls_verify, cert_dir=a.cert_dir,
                           authfile=a.authfile, creds=creds)


def store(a: argparse.Namespace) -> Store:
    from cove.image.store import Store
    return Store(a.root)


def each(a: argparse.Namespace, fn: Any, parallel: bool = False) -> int:
    """`fn` for each named container, printing its name or `cove: ...`; exit status 1
    if any failed. With `parallel` (stop, kill, restart, rm: as docker's CLI does them),
    up to 16 at a time: `stop` of many containers would otherwise wait out each one's
    timeout in turn. Output stays in the order the names were given."""
    names = list(a.containers)
    if parallel and len(names) > 1:
        from concurrent.futures import ThreadPoolExecutor

        def one(c: str) -> str:
            try:
                fn(c)
                return ""
            except CoveError as e:
                return str(e)
        with ThreadPoolExecutor(min(16, len(names))) as ex:
            errors = list(ex.map(one, names))
    else:
        errors = []
        for c in names:
            try:
                fn(c)
                errors.append("")
            except CoveError as e:
                errors.append(str(e))
            _say(c, errors[-1])
        return 1 if any(errors) else 0
    for c, err in zip(names, errors, strict=True):
        _say(c, err)
    return 1 if any(errors) else 0


def _say(name: str, error: str) -> None:
    if error:
        print(f"cove: {error}", file=sys.stderr)
    else:
        print(name, flush=True)
