"""Bridge networks' records and what they hand out: a network's file, the lock over
them, a container's address on a network and the host ports its `-p` bindings get.

    <root>/networks/<name>.json   the network: subnet, gateway, bridge, its containers
    <root>/networks/lock          held while a record changes
    <container>/netns             the container's network namespace (an nsfs bind mount)

Below the modules that act on them (cove/engine/network.py: networks and a container's
attach/detach; bridge.py: the kernel's side; netetc.py: /etc/hosts and resolv.conf;
netcontainer.py: connect/disconnect; rootless.py: slirp4netns), which all read these
records and none of which this module needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from cove.engine import state
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
else:
    from cove.lazy import lazy

    ipaddress = lazy("ipaddress")

DEFAULT = "bridge"


DEFAULT_SUBNET = "10.88.0.0/24"


def netns_path(paths: state.Paths, name: str) -> str:
    return os.path.join(paths.cdir(name), "netns")


def path(paths: state.Paths, net: str) -> str:
    return os.path.join(paths.networks, f"{net}.json")


@contextlib.contextmanager
def locked(paths: state.Paths) -> Iterator[None]:
    os.makedirs(paths.networks, exist_ok=True)
    fd = os.open(os.path.join(paths.networks, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load(paths: state.Paths, net: str) -> dict[str, Any] | None:
    try:
        with open(path(paths, net)) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except FileNotFoundError:
        return None


def save(paths: state.Paths, n: dict[str, Any]) -> None:
    state.write_atomic(path(paths, n["Name"]), json.dumps(n, indent=1).encode(), 0o644)


def names(paths: state.Paths) -> list[str]:
    try:
        return sorted(f[:-5] for f in os.listdir(paths.networks)
                      if f.endswith(".json") and f != "sysctl.json")
    except FileNotFoundError:
        return []


def free_ip(n: dict[str, Any], want: str | None = None) -> str:
    """An address of network `n` for a container: `want` (`--ip`), which must be one of
    its hosts and free, or the first free one."""
    subnet = ipaddress.ip_network(n["Subnet"])
    used = {c["IPv4Address"].split("/")[0] for c in n["Containers"].values()}
    used.add(n["Gateway"])
    if want:
        try:
            addr = ipaddress.ip_address(want)
        except ValueError:
            raise CoveError(f"--ip {want}", "not an IP address") from None
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise CoveError(f"--ip {want}", f"not in network {n['Name']}'s subnet "
                                            f"{n['Subnet']}")
        if want in used:
            raise CoveError(f"--ip {want}", "address already in use"
                            + (" (the gateway)" if want == n["Gateway"] else ""))
        return want
    ip = next((str(h) for h in subnet.hosts() if str(h) not in used), None)
    if ip is None:
        raise CoveError(f"network {n['Name']}", "no free address")
    return ip


def endpoint(n: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """NetworkSettings.Networks[NAME] of a container's entry `c` in network `n`."""
    ip, _, plen = c["IPv4Address"].partition("/")
    return {"IPAddress": ip, "Gateway": n["Gateway"], "IPPrefixLen": int(plen),
            "MacAddress": c["MacAddress"], "NetworkID": n["Id"]}


def published(paths: state.Paths, me: str | None) -> Iterator[tuple[str, str, str, str]]:
    """(container, host IP or "", host port, protocol) of what the running containers
    other than `me` publish; for a binding without a host port, the one picked when it
    started (its NetworkSettings.Ports)."""
    for other in state.all_names(paths):
        rec: Mapping[str, Any] = state.load_record(paths.cdir(other)) or {}
        if other == me or rec.get("State", {}).get("Status") not in ("running", "restarting"):
            continue
        actual = (rec.get("NetworkSettings") or {}).get("Ports") or {}
        for ctr, binds in rec["HostConfig"]["PortBindings"].items():
            for i, b in enumerate(binds):
                port = b["HostPort"]
                if not port:
                    got = actual.get(ctr) or []
                    port = got[i]["HostPort"] if i < len(got) else ""
                if port:
                    yield other, b["HostIp"], port, ctr.split("/")[1]


def free_port(ip: str, proto: str, taken: set[tuple[str, str]]) -> str:
    """A host port for `-p CTR` (docker's behaviour): one the kernel picks from the
    ephemeral range for a socket bound to port 0 here, and that no other container
    publishes (a DNAT rule holds no socket for the kernel to see)."""
    import socket
    for _ in range(64):
        s = socket.socket(socket.AF_INET,
                          socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        try:
            s.bind((ip or "0.0.0.0", 0))
            port = str(s.getsockname()[1])
        except OSError as e:
            raise CoveError(f"-p {ip + ':' if ip else ''}{proto}",
                            f"no free host port ({e.strerror})") from None
        finally:
            s.close()
        if (port, proto) not in taken:
            taken.add((port, proto))
            return port
    raise CoveError(f"-p {ip + ':' if ip else ''}{proto}", "no free host port")


def host_ports(paths: state.Paths, name: str,
               bindings: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    """NetworkSettings.Ports of container `name` as it starts: each of its `-p`
    bindings with its host port, a free one (docker's behaviour) for `-p CTR` that no
    other running container publishes; HostIp 0.0.0.0 for all addresses."""
    taken = {(p, pr) for _c, _i, p, pr in published(paths, name)}
    taken |= {(b["HostPort"], ctr.split("/")[1]) for ctr, binds in bindings.items()
              for b in binds if b["HostPort"]}
    out: dict[str, list[dict[str, str]]] = {}
    for ctr, binds in bindings.items():
        proto = ctr.split("/")[1]
        out[ctr] = [{"HostIp": b["HostIp"] or "0.0.0.0",
                     "HostPort": b["HostPort"] or free_port(b["HostIp"], proto, taken)}
                    for b in binds]
    return out
