"""The CLI side of the isolation handlers: which one a container uses, and the vm and
gvisor handlers themselves (cove-runtime's verbs call them through
cove.runtime.handler.Handler). Imported only when a config or a state names a handler
(or an entry point forces one), so the default `container` path never loads
cove.handlers.
"""

from __future__ import annotations

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.runtime.handler import Handler

HANDLERS = ("container", "gvisor", "vm")
ANNOTATION = "io.cove.isolation"


def from_config(raw: bytes, forced: str) -> str:
    """The handler for a new container: the entry point's, or the annotation's."""
    from cove.oci import jsonio

    try:
        cfg = jsonio.loads(raw)
    except jsonio.JSONError:
        return forced or "container"  # create reports the JSON error
    ann = (cfg.get("annotations") or {}).get(ANNOTATION) if isinstance(cfg, dict) else None
    if ann is not None and ann not in HANDLERS:
        raise CoveError(f"annotation {ANNOTATION}={ann}",
                        "unknown handler (expected container, gvisor or vm)")
    if forced and ann and ann != forced:
        # A RuntimeClass picks the binary: a pod's annotation must not weaken it.
        raise CoveError(f"annotation {ANNOTATION}={ann}",
                        f"conflicts with cove-runtime-{forced}, which runs only {forced}")
    return str(forced or ann or "container")


def from_state(raw: bytes) -> str:
    from cove.oci import jsonio

    try:
        h = jsonio.loads(raw).get("handler") or "container"
    except (jsonio.JSONError, AttributeError):
        return "container"
    return str(h)


def load(name: str) -> Handler:
    """The vm or gvisor handler (modules that implement cove.runtime.handler.Handler)."""
    if name == "vm":
        from cove.handlers.vm import handler as vm

        return vm
    if name == "gvisor":
        from cove.handlers import gvisor

        return gvisor
    raise CoveError(f"handler {name!r}", "unknown (expected container, gvisor or vm)")

