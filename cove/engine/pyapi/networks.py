"""`Network` and `client.networks`: create, get, list, prune."""

from __future__ import annotations

import builtins
import contextlib
from typing import Any

from cove.engine.pyapi.common import Described, NotFound, api_errors, filter_values
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.client import Client
    from cove.engine.pyapi.container import Container


class Network(Described):
    """A bridge network: `name`, `id`, `attrs` (Name, Id, Driver, Subnet, Gateway,
    Bridge, Containers), `containers`, `remove()`."""

    def __repr__(self) -> str:
        return f"<Network: {self.short_id} {self.name}>"

    @property
    def name(self) -> str:
        return str(self.attrs["Name"])

    @property
    def containers(self) -> builtins.list[Container]:
        out = []
        for n in self.attrs.get("Containers") or {}:
            with contextlib.suppress(NotFound):
                out.append(self.client.containers.get(n))
        return out

    def reload(self) -> None:
        self.attrs = self.client.networks.get(self.name).attrs

    def remove(self) -> None:
        """Remove it (refused while a container is on it)."""
        from cove.engine import network
        with api_errors():
            network.remove(self.client.root, self.name)


class NetworkCollection:
    """`client.networks`: create, get, list, prune."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, name: str, driver: str | None = None, **kwargs: Any) -> Network:
        """A bridge network; its subnet from `ipam` (docker-py's IPAMConfig, one pool
        with a Subnet) or cove's `subnet=`, else the next free 10.network.0.0/24."""
        from cove.engine import network
        known = {"options", "ipam", "check_duplicate", "internal", "labels", "enable_ipv6",
                 "attachable", "scope", "ingress", "subnet"}
        bad = sorted(set(kwargs) - known)
        if bad:
            raise TypeError(f"networks.create() got an unexpected keyword argument {bad[0]!r}")
        if driver not in (None, "bridge"):
            raise TypeError(f"networks.create(): driver: {driver!r}: cove has bridge")
        for k in ("options", "internal", "labels", "enable_ipv6", "attachable", "ingress"):
            if kwargs.get(k):
                raise TypeError(f"networks.create(): {k}: not supported by cove")
        if kwargs.get("scope") not in (None, "local"):
            raise TypeError(f"networks.create(): scope: {kwargs['scope']!r}: cove has local")
        subnet = kwargs.get("subnet")
        ipam = kwargs.get("ipam")
        if ipam:
            pools = (ipam.get("Config") or []) if isinstance(ipam, dict) else None
            if pools is None or len(pools) > 1 or not all(isinstance(p, dict) for p in pools) \
                    or ipam.get("Driver") not in (None, "default") or ipam.get("Options") \
                    or any(k not in ("Subnet", "Gateway") and v for p in pools
                           for k, v in p.items()):
                raise TypeError("networks.create(): ipam: cove takes the default driver "
                                "and one pool with a Subnet")
            if pools:
                if subnet:
                    raise TypeError("networks.create(): subnet and ipam together")
                subnet = pools[0].get("Subnet")
                gw = pools[0].get("Gateway")
                if gw:
                    import ipaddress
                    first = str(next(ipaddress.ip_network(subnet or "").hosts()))
                    if gw != first:
                        raise TypeError(f"networks.create(): ipam Gateway {gw}: cove's "
                                        f"gateway is the subnet's first address ({first})")
        with api_errors():
            return Network(network.create(self.client.root, name, subnet), self.client)

    def get(self, network_id: str) -> Network:
        """By name, id or a unique prefix of its id."""
        from cove.engine import network
        root = self.client.root
        with api_errors():
            try:
                return Network(network.inspect(root, network_id), self.client)
            except CoveError:
                hits = [n for n in network.ls(root)
                        if network_id and n["Id"].startswith(network_id)]
                if len(hits) != 1:
                    raise
                return Network(hits[0], self.client)

    def list(self, names: builtins.list[str] | None = None,
             ids: builtins.list[str] | None = None,
             filters: dict[str, Any] | None = None, greedy: bool = False) -> builtins.list[
                 Network]:
        """This root's networks; by `names`, `ids`, filters name, id, driver."""
        from cove.engine import network
        out = []
        for n in network.ls(self.client.root):
            if names is not None and n["Name"] not in names:
                continue
            if ids is not None and n["Id"] not in ids:
                continue
            ok = True
            for key, vals in (filters or {}).items():
                got = filter_values(key, vals)
                field = {"name": "Name", "id": "Id", "driver": "Driver"}.get(key)
                if field is None:
                    raise TypeError(f"networks.list(): filters: {key!r}: cove filters by "
                                    "name, id and driver")
                ok = ok and any(p in str(n[field]) for p in got)
            if ok:
                out.append(Network(n, self.client))
        return out

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Remove the networks no container is on."""
        from cove.engine import network
        gone = []
        for n in self.list(filters=filters):
            if not n.attrs.get("Containers"):
                with contextlib.suppress(CoveError):
                    network.remove(self.client.root, n.name)
                    gone.append(n.name)
        return {"NetworksDeleted": gone}
