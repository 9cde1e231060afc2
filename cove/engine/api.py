"""Cove's Python API: the engine the `cove` command uses, called in-process.

    import cove
    c = cove.run("busybox", "echo hi")            # waits; c.exit_code, c.logs() == b"hi\\n"
    s = cove.run("busybox", ["sleep", "60"], detach=True, name="s", restart="always")
    cove.containers.list(all=True); cove.containers.get("s").stop(timeout=1)
    cove.volumes.create("data"); cove.networks.create("app")

    client = cove.from_env()                      # docker-py's model (cove/engine/client.py)
    client.containers.run("busybox", "echo hi", network="none")   # b"hi\\n"

`cove.run` is cove's own shortcut: it returns the Container (having waited for it,
unless `detach`), and runs on no network unless ports are published. Everything else
is docker-py's: `cove.containers`, `cove.images`, `cove.volumes` and `cove.networks` are
the collections of a Client on the default root (`cove.set_root(DIR)` sets it for the
process; `cove.Client(root=DIR)` for one client). Both take the same keywords, docker-
py's and `cove run`'s (cove/engine/runargs.py).
"""

from __future__ import annotations

from typing import Any

from cove.engine.client import (
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
    from_env,
    set_root,
)

__all__ = ["APIError", "Client", "Container", "ContainerError", "ExecResult", "Image",
           "ImageNotFound", "Network", "NotFound", "Volume", "containers", "from_env",
           "images", "networks", "run", "set_root", "volumes"]

_default = Client()
containers = _default.containers
images = _default.images
volumes = _default.volumes
networks = _default.networks


def run(image: str, command: str | list[str] | None = None, *, root: str | None = None,
        **kwargs: Any) -> Container:
    """Run `command` (a string is split as a shell splits words) in a new container and
    return it: waited for unless `detach` (read `exit_code`, `logs()`). Keywords as
    `client.containers.run`'s, less stdout/stderr/stream; the network is none unless
    ports are published (then bridge) or one is named. With `remove` (or `rm`) and no
    `detach`, it is removed once it exited; the object keeps its last record and its
    logs."""
    bad = sorted({"stdout", "stderr", "stream"} & set(kwargs))
    if bad:
        raise TypeError(f"cove.run(): {bad[0]}: cove.run returns the Container (read its "
                        "logs()); client.containers.run returns the output")
    client = Client(root) if root else _default
    c, plan = client.containers._make(image, command, kwargs, "cove.run", True, "auto")
    if plan.detach:
        return c
    try:
        c.wait()
    finally:
        if plan.remove:
            _remove_keeping(c)
    return c


def _remove_keeping(c: Container) -> None:
    """Remove a container that `run` waited for, keeping what its object answers with:
    the last record and the log (it was asked for, then removed: docker's `run --rm`,
    anonymous volumes too)."""
    from cove.engine.containers import logs
    from cove.errors import CoveError
    try:
        c._kept_logs = list(logs(c.root, c.name))
        c.remove(v=True, force=True)
    except CoveError:
        pass
