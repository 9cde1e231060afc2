"""docker-py's client model, in-process over the engine: code written for docker-py
runs with `client = cove.from_env()` in place of `docker.from_env()`.

    client = cove.from_env()                 # or cove.Client(root="/tmp/r")
    client.containers.run("busybox", "echo hi", network="none")     # b"hi\\n"
    c = client.containers.run("busybox", "sleep 60", detach=True, network="none")
    c.exec_run("uname -r")                   # ExecResult(exit_code=0, output=b"...")
    c.stop(timeout=1); c.wait()["StatusCode"]; c.remove()
    client.volumes.create("data").name; client.images.get("busybox").tags

There is no daemon: every call runs the engine's own functions (cove/engine/
containers.py, volumes.py, network.py, images.py) in this process, on the state root
the client was given, as the `cove` command does with `--root`. What docker-py takes
is translated (cove/engine/runargs.py) or refused with a TypeError; it never means
something else without a word.

Differences that remain, on purpose:
- A Container reads its record afresh on every `attrs`/`status` (a file read):
  `reload()` is there for docker-py code, and is never needed.
- The default network is `bridge`, as docker's; `network="none"` for none.
- `images`, `volumes` and `networks` list what this root has: there are no built-in
  `bridge`/`host`/`none` network objects.

The objects live in cove/engine/pyapi/, a module per kind (container.py, containers.py,
images.py, volumes.py, networks.py; common.py for the errors and the root); this
module is the client and the names code imports (`cove.engine.api` re-exports them as
`cove.*`).
"""

from __future__ import annotations

import os
from typing import Any

from cove.engine import containers
from cove.engine.pyapi.common import APIError as APIError
from cove.engine.pyapi.common import ContainerError as ContainerError
from cove.engine.pyapi.common import ExecResult as ExecResult
from cove.engine.pyapi.common import ImageNotFound as ImageNotFound
from cove.engine.pyapi.common import NotFound as NotFound
from cove.engine.pyapi.common import api_errors as api_errors
from cove.engine.pyapi.common import filter_values as filter_values
from cove.engine.pyapi.common import resolve_root as resolve_root
from cove.engine.pyapi.common import set_root as set_root
from cove.engine.pyapi.container import Container as Container
from cove.engine.pyapi.container import _system_cpu_ns as _system_cpu_ns
from cove.engine.pyapi.containers import ContainerCollection as ContainerCollection
from cove.engine.pyapi.images import Image as Image
from cove.engine.pyapi.images import ImageCollection as ImageCollection
from cove.engine.pyapi.networks import Network as Network
from cove.engine.pyapi.networks import NetworkCollection as NetworkCollection
from cove.engine.pyapi.volumes import ANONYMOUS as ANONYMOUS
from cove.engine.pyapi.volumes import Volume as Volume
from cove.engine.pyapi.volumes import VolumeCollection as VolumeCollection

# (names the engine's modules used before the split)
_errors = api_errors
_filter_values = filter_values


class Client:
    """docker-py's DockerClient over one state root (`root`; else `cove.set_root`'s,
    else the engine's default, resolved on each call)."""

    def __init__(self, root: str | None = None) -> None:
        self._root = root
        self.containers = ContainerCollection(self)
        self.images = ImageCollection(self)
        self.volumes = VolumeCollection(self)
        self.networks = NetworkCollection(self)

    def __repr__(self) -> str:
        return f"<cove.Client root={self.root!r}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root(self) -> str:
        return resolve_root(self._root)

    def close(self) -> None:
        """Nothing to close (no connection): for docker-py code."""

    def ping(self) -> bool:
        return True

    def version(self) -> dict[str, Any]:
        import platform

        import cove
        return {"Version": cove.__version__, "Os": "linux", "Arch": platform.machine(),
                "Components": [{"Name": "cove", "Version": cove.__version__}]}

    def info(self) -> dict[str, Any]:
        recs = containers.ps_records(self.root, all=True)
        running = sum(r["State"]["Status"] == "running" for r in recs)
        return {"Containers": len(recs), "ContainersRunning": running,
                "ContainersStopped": len(recs) - running,
                "Images": len(self.images.list()), "DockerRootDir": self.root,
                "Driver": "overlay", "OperatingSystem": "linux"}


def from_env(environment: dict[str, str] | None = None, **kwargs: Any) -> Client:
    """A Client on the state root in $COVE_ROOT (of `environment`, else this process's),
    else the default. docker-py's transport settings (`version`, `timeout`, ...) mean
    nothing in-process and are accepted and ignored."""
    bad = sorted(set(kwargs) - {"version", "timeout", "max_pool_size", "use_ssh_client"})
    if bad:
        raise TypeError(f"from_env() got an unexpected keyword argument {bad[0]!r}")
    env = os.environ if environment is None else environment
    return Client(env.get("COVE_ROOT") or None)
