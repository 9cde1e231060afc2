"""Registry credentials as docker clients send them: `X-Registry-Auth`, base64url JSON
({"username", "password", "serveraddress"} or {"identitytoken"}). Registries on
loopback are reached without TLS verification, as dockerd's default insecure
127.0.0.0/8."""

from __future__ import annotations

import base64
import json

from cove.engine.dockerapi.server import ApiError

TYPE_CHECKING = False
if TYPE_CHECKING:  # the registry client: imported by the requests that pull or push
    from cove.image.transfer import RegistryOptions


def registry_options(header: str | None, ref: str = "") -> RegistryOptions:
    from cove.image.transfer import RegistryOptions
    opts = RegistryOptions()
    host = ref.partition("/")[0] if "/" in ref else ""
    if host.startswith(("localhost", "127.")):
        opts.tls_verify = False
    if not header:
        return opts
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        doc = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "X-Registry-Auth: invalid base64 JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "X-Registry-Auth: expected an object")
    if doc.get("username") and doc.get("password"):
        opts.creds = (str(doc["username"]), str(doc["password"]))
    return opts
