"""Cove: an OCI runtime (`cove-runtime`) and a container platform (`cove`).

Kept empty on purpose: `cove-runtime` imports sub-packages on its hot path, and
anything imported here would cost every invocation start-up time.
"""

__version__ = "0.1.0"

_API = ("run", "containers", "volumes", "networks", "set_root", "Container")


def __getattr__(name: str) -> object:
    """The Python API (`cove.run`, `cove.containers`, ...), imported on first use."""
    if name in _API:
        from cove.engine import api
        return getattr(api, name)
    raise AttributeError(f"module 'cove' has no attribute {name!r}")
