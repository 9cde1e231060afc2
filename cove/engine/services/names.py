"""A service's name on its networks: containers on the network resolve it to the
service's healthy replicas.

How: the network's record (`<root>/networks/<net>.json`) keeps `"Services": {name:
[ip, ...]}`, and every member's /etc/hosts, which Cove already rewrites in place
whenever a member joins or leaves (cove/engine/netcontainer.py: refresh_hosts), gets
one line per replica (`IP<TAB>name`), each member with the list in a rotation of its
own (netcontainer.service_lines).

Why /etc/hosts lines rather than a virtual IP DNATed in each member's namespace:
- every resolver reads /etc/hosts (glibc, musl, busybox's static tools, Go's), with no
  DNS server to run and nothing to install per member: a container that joins later,
  or comes back with a fresh namespace after a restart, gets the names with the
  hosts file it gets anyway;
- libc resolvers keep no cache of /etc/hosts: a replica that leaves the list (dead,
  unhealthy, stopping) is out of the very next lookup, so a client that resolves per
  request (busybox wget, curl) never picks it again;
- nothing lives in members' namespaces that would need undoing, and the state is the
  network's record: it goes with `network rm`.
The price: a client connects to the first address it gets (most do), so one client
sticks to one replica and load spreads across clients (the per-member rotation), not
across one client's connections; a client that caches the address for its lifetime
keeps it after that replica leaves. Published ports (lb.py) spread per connection.
"""

from __future__ import annotations

from cove.engine import netcontainer, state
from cove.engine import network as engine_network
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
else:
    from cove.lazy import lazy

    ipaddress = lazy("ipaddress")


def _valid_name(service: str) -> bool:
    return bool(service) and len(service) <= 253 and not service.startswith(("-", ".")) \
        and all(c.isascii() and (c.isalnum() or c in "-_.") for c in service)


def apply(root: str, network: str, service: str, ips: list[str]) -> None:
    """Make `service` resolve to `ips` (in that order, rotated per member) for every
    container on `network`; an empty list removes the name. Idempotent: the members'
    hosts files are rewritten only when the list changes."""
    if not _valid_name(service):
        raise CoveError(f"service {service!r}", "not a valid host name")
    for ip in ips:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise CoveError(f"service {service}", f"{ip!r} is not an IPv4 address") \
                from None
    want = list(dict.fromkeys(ips))
    paths = state.Paths(root)
    with engine_network._locked(paths):
        n = engine_network._load(paths, network)
        if n is None:
            raise CoveError(f"network {network}", "no such network")
        services = dict(n.get("Services") or {})
        if services.get(service, []) == want:
            return
        if want:
            services[service] = want
        else:
            services.pop(service, None)
        if services:
            n["Services"] = services
        else:
            n.pop("Services", None)
        engine_network._save(paths, n)
        netcontainer.refresh_hosts(paths)


def remove(root: str, network: str, service: str) -> None:
    """Forget the service's name on `network` (nothing if the network is gone)."""
    try:
        apply(root, network, service, [])
    except CoveError:
        if engine_network._load(state.Paths(root), network) is not None:
            raise


def resolve(root: str, network: str, service: str) -> list[str]:
    """The addresses `service` resolves to on `network` now."""
    n = engine_network._load(state.Paths(root), network) or {}
    return list((n.get("Services") or {}).get(service) or [])
