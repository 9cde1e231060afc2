"""Cove: an OCI runtime (`cove-runtime`) and a container platform (`cove`).

Kept empty on purpose: `cove-runtime` imports sub-packages on its hot path, and
anything imported here would cost every invocation start-up time.
"""

__version__ = "0.1.0"

# The Python API (cove/engine/api.py, docs/python-api.md). Type checkers see its names
# here; at run time they are loaded by __getattr__ on first use.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.api import (
        APIError,
        Client,
        Container,
        ContainerError,
        ExecResult,
        Image,
        ImageNotFound,
        Network,
        NotFound,
        Volume,
        containers,
        from_env,
        images,
        networks,
        run,
        set_root,
        volumes,
    )

__all__ = ["APIError", "Client", "Container", "ContainerError", "ExecResult", "Image",
           "ImageNotFound", "Network", "NotFound", "Volume", "containers", "from_env",
           "images", "networks", "run", "set_root", "volumes"]
_API = frozenset(__all__)


def __getattr__(name: str) -> object:
    """The Python API (`cove.run`, `cove.from_env`, `cove.containers`, ...), imported on
    first use: `import cove` alone costs nothing more."""
    if name in _API:
        from cove.engine import api
        return getattr(api, name)
    raise AttributeError(f"module 'cove' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
