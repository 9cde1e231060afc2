"""What every compose command reads from its flags: the state root, the compose file
(-f, else one found from the working directory) and the project name (-p, else the
file's `name`, else its directory's). Its own module so that the commands that change
a project (compose.py) and those that show it (composeview.py) share it one way."""

from __future__ import annotations

import argparse
import os

from cove.errors import CoveError


def state_root(a: argparse.Namespace) -> str:
    from cove.image.store import Store
    return Store(a.root).root


def compose_file(a: argparse.Namespace, required: bool = True) -> str | None:
    from cove.engine.services import compose
    if a.file:
        if not os.path.exists(a.file):
            raise CoveError(f"-f {a.file}", "no such file")
        return str(a.file)
    try:
        return compose.find(os.getcwd())
    except CoveError:
        if required:
            raise
        return None


def project(a: argparse.Namespace) -> str:
    """-p, else the compose file's `name`, else its directory's name."""
    from cove.engine.services import compose
    if a.project:
        return compose.project_name(a.project)
    f = compose_file(a, required=False)
    if f is None:
        raise CoveError("compose", "no compose file here: give -p PROJECT or -f FILE")
    try:
        import yaml
        with open(f) as fh:
            doc = yaml.safe_load(fh)
        if isinstance(doc, dict) and isinstance(doc.get("name"), str):
            return compose.project_name(doc["name"])
    except Exception:
        pass
    return compose.project_name(os.path.basename(os.path.dirname(os.path.abspath(f))))
