"""Named volumes: `<root>/volumes/<name>/_data` (bind-mounted into containers) and
`<name>/volume.json`. Data outlives the containers that use it; `rm` refuses a volume a
container still uses."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from cove.engine import events, state
from cove.errors import CoveError


def _check(name: str) -> None:
    if not name or name.startswith((".", "-")) or \
            not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise CoveError(f"volume {name!r}", "use letters, digits, '-', '_' and '.'")


def _dir(root: str, name: str) -> str:
    _check(name)
    return os.path.join(state.Paths(root).volumes, name)


def exists(root: str, name: str) -> bool:
    return os.path.exists(os.path.join(_dir(root, name), "volume.json"))


def create(root: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    d = _dir(root, name)
    if os.path.exists(os.path.join(d, "volume.json")):
        raise CoveError(f"volume {name}", "already exists")
    return ensure(root, name, labels)


def ensure(root: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    d = _dir(root, name)
    meta = os.path.join(d, "volume.json")
    if os.path.exists(meta):
        return inspect(root, name)
    os.makedirs(os.path.join(d, "_data"), mode=0o755, exist_ok=True)
    info = {"Name": name, "Driver": "local", "Mountpoint": os.path.join(d, "_data"),
            "CreatedAt": state.now_rfc3339(), "Labels": labels or {}, "Scope": "local"}
    state.write_atomic(meta, json.dumps(info, indent=1).encode(), 0o644)
    events.emit(root, "volume", "create", name, driver="local")
    return info


def inspect(root: str, name: str) -> dict[str, Any]:
    try:
        with open(os.path.join(_dir(root, name), "volume.json")) as f:
            info: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        raise CoveError(f"volume {name}", "no such volume") from None
    return info


def ls(root: str) -> list[dict[str, Any]]:
    d = state.Paths(root).volumes
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return []
    return [inspect(root, n) for n in names if os.path.exists(os.path.join(d, n, "volume.json"))]


def users(root: str, name: str) -> list[str]:
    paths = state.Paths(root)
    out = []
    for n in state.all_names(paths):
        rec: Mapping[str, Any] = state.load_record(paths.cdir(n)) or {}
        if any(m.get("Type") == "volume" and m.get("Name") == name
               for m in rec.get("Mounts", [])):
            out.append(n)
    return out


def remove(root: str, name: str, force: bool = False) -> str:
    inspect(root, name)
    used = users(root, name)
    if used:
        raise CoveError(f"volume {name}", f"in use by container {', '.join(used)}")
    from cove.image.layers import remove_tree  # rootless: files of subordinate ids too
    remove_tree(_dir(root, name))
    events.emit(root, "volume", "destroy", name, driver="local")
    return name


def prune(root: str) -> list[str]:
    gone = []
    for v in ls(root):
        if not users(root, v["Name"]):
            gone.append(remove(root, v["Name"]))
    return gone
