"""`cove login` / `cove logout`: credentials in a podman/docker-style auth.json."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from cove.cli.common import registry_flags
from cove.errors import CoveError
from cove.image import auth


def cmd_login(a: argparse.Namespace) -> int:
    from cove.image.registry import Registry
    user = a.username or input("Username: ")
    if a.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = a.password if a.password is not None else getpass.getpass("Password: ")
    if not user:
        raise CoveError("login", "no username")
    Registry(a.registry, tls_verify=a.tls_verify, cert_dir=a.cert_dir,
             creds=(user, password)).check()
    path = auth.store(a.registry, user, password, a.authfile)
    if not a.quiet:
        print(f"Login Succeeded (credentials in {path})")
    return 0


def cmd_logout(a: argparse.Namespace) -> int:
    if not auth.remove(a.registry, a.authfile):
        raise CoveError(f"logout {a.registry}", "not logged in")
    print(f"Removed login credentials for {a.registry}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("login", help="log in to a registry")
    registry_flags(p, creds=False)
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("registry", help="the registry's host[:port]")
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("logout", help="forget a registry's credentials")
    p.add_argument("--authfile")
    p.add_argument("registry", help="the registry's host[:port]")
    p.set_defaults(func=cmd_logout)
