"""Turn a rootfs and a command into an OCI bundle (config.json) for cove-runtime."""

from __future__ import annotations

import json
import os

from cove.runtime.spec import default_spec


def write_bundle(bundle: str, rootfs: str, args: list[str], *, env: list[str] | None = None,
                 cwd: str = "/", uid: int = 0, gid: int = 0, terminal: bool = False,
                 hostname: str = "cove", readonly: bool = True) -> str:
    """Write `bundle/config.json` running `args` in `rootfs`; return the config path."""
    os.makedirs(bundle, exist_ok=True)
    spec = default_spec()
    proc = spec["process"]
    proc["args"] = args
    proc["terminal"] = terminal
    proc["cwd"] = cwd
    proc["user"] = {"uid": uid, "gid": gid}
    proc["env"] = [*proc["env"], *(env or [])]
    spec["root"] = {"path": os.path.abspath(rootfs), "readonly": readonly}
    spec["hostname"] = hostname
    # A read-only image root still needs scratch space where programs expect it.
    spec["mounts"] += [{"destination": d, "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "nodev", "mode=1777"]} for d in ("/tmp", "/run")]
    path = os.path.join(bundle, "config.json")
    with open(path, "w") as f:
        json.dump(spec, f, indent=2)
    return path
