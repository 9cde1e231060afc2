"""What every part of the Python API shares: docker-py's errors (the engine's "no such
..." as NotFound), ExecResult, the state root that clients made without one use, and
docker's filter values."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.client import Client
    from cove.engine.pyapi.container import Container

_root: str | None = None


APIError = CoveError


class NotFound(CoveError):
    """No such container, image, volume or network (docker-py's NotFound)."""


class ImageNotFound(NotFound):
    """No such image in the store (docker-py's ImageNotFound)."""


class ContainerError(CoveError):
    """`containers.run` (not detached) saw the container exit with a non-zero code;
    `stderr` is its standard error (bytes), as docker-py's ContainerError."""

    def __init__(self, container: Container, exit_status: int, command: object,
                 image: str, stderr: bytes | None) -> None:
        self.container = container
        self.exit_status = exit_status
        self.command = command
        self.image = image
        self.stderr = stderr
        err = f": {stderr.decode(errors='replace').strip()}" if stderr else ""
        super().__init__(f"Command '{command}' in image '{image}' returned non-zero exit "
                         f"status {exit_status}{err}")


class ExecResult(NamedTuple):
    """What `Container.exec_run` returns, as docker-py: the exit code (None when
    detached or streamed) and the output (bytes; a (stdout, stderr) pair with `demux`;
    an iterator when streamed)."""
    exit_code: int | None
    output: Any


_MISSING = {"no such container": NotFound, "no such volume": NotFound,
            "no such network": NotFound, "not found in the local store": ImageNotFound}


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """The engine's "no such ..." errors as NotFound (docker-py code catches that)."""
    try:
        yield
    except NotFound:
        raise
    except CoveError as e:
        kind = _MISSING.get(e.why)
        if kind is None:
            raise
        raise kind(e.what, e.why, e.code) from None


class Model:
    """What docker-py's objects share: `id` (each kind says where it has it), `short_id`
    (its first SHORT characters), and equality and hashing by kind and id."""

    SHORT = 12

    @property
    def id(self) -> str:
        raise NotImplementedError

    @property
    def short_id(self) -> str:
        return self.id[:self.SHORT]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other.id == self.id

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.id))


class Described(Model):
    """An image, volume or network: `attrs` is what the engine said when the object was
    made (reload() asks again); `id` its "Id" unless the kind says otherwise."""

    def __init__(self, attrs: dict[str, Any], client: Client) -> None:
        self.attrs = attrs
        self.client = client

    @property
    def id(self) -> str:
        return str(self.attrs["Id"])


def set_root(root: str | None) -> None:
    """The state root that clients made without one (and `cove.run`, `cove.containers`,
    ...) use from now on."""
    global _root
    _root = root


def resolve_root(root: str | None) -> str:
    """`root`, else the one `set_root` gave, else the engine's default (as `cove`)."""
    from cove.image.store import Store
    return Store(root or _root).root


def filter_values(key: str, v: object) -> builtins.list[str]:
    if isinstance(v, str | int | bool):
        v = [v]
    if not isinstance(v, list | tuple):
        raise TypeError(f"list(): filters[{key!r}]: expected a str or a list, got {v!r}")
    return [str(x).lower() if isinstance(x, bool) else str(x) for x in v]
