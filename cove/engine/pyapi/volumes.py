"""`Volume` and `client.volumes`: create, get, list, prune."""

from __future__ import annotations

import builtins
import contextlib
import os
from typing import Any

from cove.engine.pyapi.common import Described, api_errors, filter_values
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.client import Client


class Volume(Described):
    """A named volume: `name` (= `id`), `attrs` (Name, Driver, Mountpoint, CreatedAt,
    Labels, Scope), `remove()`."""

    def __repr__(self) -> str:
        return f"<Volume: {self.short_id}>"

    @property
    def id(self) -> str:
        return str(self.attrs["Name"])

    name = id

    def reload(self) -> None:
        self.attrs = self.client.volumes.get(self.id).attrs

    def remove(self, force: bool = False) -> None:
        """Remove it (refused while a container uses it)."""
        from cove.engine import volumes
        with api_errors():
            volumes.remove(self.client.root, self.id, force=force)


ANONYMOUS = "cove.anonymous"   # the label of volumes made without a name (the engine's)


class VolumeCollection:
    """`client.volumes`: create, get, list, prune."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, name: str | None = None, **kwargs: Any) -> Volume:
        """A volume (`name`, else a random one); as docker, creating one that exists
        returns it. `driver` "local", `labels` a dict; no driver_opts."""
        from cove.engine import volumes
        bad = sorted(set(kwargs) - {"driver", "driver_opts", "labels"})
        if bad:
            raise TypeError(f"volumes.create() got an unexpected keyword argument {bad[0]!r}")
        if kwargs.get("driver") not in (None, "local"):
            raise TypeError(f"volumes.create(): driver: {kwargs['driver']!r}: cove has local")
        if kwargs.get("driver_opts"):
            raise TypeError("volumes.create(): driver_opts: not supported by cove")
        labels = kwargs.get("labels") or {}
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise TypeError("volumes.create(): labels: expected a dict of str to str")
        if name is None:
            name, labels = os.urandom(32).hex(), {**labels, ANONYMOUS: "true"}
        with api_errors():
            return Volume(volumes.ensure(self.client.root, name, labels), self.client)

    def get(self, volume_id: str) -> Volume:
        from cove.engine import volumes
        with api_errors():
            return Volume(volumes.inspect(self.client.root, volume_id), self.client)

    def list(self, filters: dict[str, Any] | None = None) -> builtins.list[Volume]:
        """This root's volumes; filters: name (a substring), label, dangling."""
        from cove.engine import volumes
        root = self.client.root
        out = []
        for info in volumes.ls(root):
            ok = True
            for key, vals in (filters or {}).items():
                got = filter_values(key, vals)
                if key == "name":
                    ok = ok and any(p in info["Name"] for p in got)
                elif key == "label":
                    labels = info.get("Labels") or {}
                    ok = ok and all(k in labels and (not eq or labels[k] == v)
                                    for k, eq, v in (p.partition("=") for p in got))
                elif key == "dangling":
                    ok = ok and (not volumes.users(root, info["Name"])) == (got[0] in ("true", "1"))
                else:
                    raise TypeError(f"volumes.list(): filters: {key!r}: cove filters by "
                                    "name, label and dangling")
            if ok:
                out.append(Volume(info, self.client))
        return out

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Remove the unused anonymous volumes, as docker's (filters={"all": True}:
        every unused volume, named ones too)."""
        from cove.engine import volumes
        f = dict(filters or {})
        every = filter_values("all", f.pop("all", False))[0] in ("true", "1")
        root = self.client.root
        gone = []
        for vol in self.list(filters={**f, "dangling": True}):
            if every or (vol.attrs.get("Labels") or {}).get(ANONYMOUS) == "true":
                with contextlib.suppress(CoveError):
                    volumes.remove(root, vol.id)
                    gone.append(vol.id)
        return {"VolumesDeleted": gone, "SpaceReclaimed": 0}
