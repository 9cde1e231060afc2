"""`spec`: write a starter config.json (runc's defaults; `--rootless` adapts them)."""

from __future__ import annotations

import os

from cove.errors import CoveError
from cove.oci import jsonio
from cove.oci.defaults import default_spec


def write_spec(bundle: str, rootless: bool) -> str:
    path = os.path.join(bundle or ".", "config.json")
    if os.path.exists(path):
        raise CoveError("spec", "File config.json exists. Remove it first")
    spec = default_spec(rootless, os.geteuid(), os.getegid())
    with open(path, "w") as f:
        f.write(jsonio.dumps(spec, indent=2) + "\n")
    return path
