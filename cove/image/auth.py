"""Registry credentials in a podman/docker-style auth.json:
`{"auths": {"HOST[:PORT]": {"auth": base64("user:pass")}}}`.

Where: `--authfile`, else `$REGISTRY_AUTH_FILE`, else podman's
`$XDG_RUNTIME_DIR/containers/auth.json` (`/run/containers/<uid>/auth.json` without
XDG_RUNTIME_DIR); reads fall back to docker's `~/.docker/config.json`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from typing import Any

from cove.errors import CoveError


def default_authfile() -> str:
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return env
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "containers", "auth.json")
    return f"/run/containers/{os.getuid()}/auth.json"


def _docker_config() -> str:
    return os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"),
                        "config.json")


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise CoveError(path, f"malformed auth file: {e}") from None
    if not isinstance(d, dict):
        raise CoveError(path, "malformed auth file: expected a JSON object")
    return d


def _key(host: str) -> list[str]:
    keys = [host]
    if host == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    return keys


def get(host: str, authfile: str | None = None) -> tuple[str, str] | None:
    """The stored (user, password) for a registry host, or None."""
    paths = [authfile] if authfile else [default_authfile(), _docker_config()]
    for path in paths:
        auths = _read(path).get("auths", {})
        if not isinstance(auths, dict):
            continue
        for k in _key(host):
            ent = auths.get(k) or auths.get(f"https://{k}") or auths.get(f"http://{k}")
            if isinstance(ent, dict) and isinstance(ent.get("auth"), str):
                try:
                    user, _, pw = base64.b64decode(ent["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise CoveError(path, f"auths.{k}.auth: not base64 of user:password") \
                        from None
                return user, pw
    return None


def _write(path: str, d: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".auth-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(d, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def store(host: str, user: str, password: str, authfile: str | None = None) -> str:
    path = authfile or default_authfile()
    d = _read(path)
    d.setdefault("auths", {})[host] = {
        "auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    _write(path, d)
    return path


def remove(host: str, authfile: str | None = None) -> bool:
    path = authfile or default_authfile()
    d = _read(path)
    auths = d.get("auths", {})
    if host not in auths:
        return False
    del auths[host]
    _write(path, d)
    return True
