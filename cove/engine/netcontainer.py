"""A container's side of its networks: `cove network connect` and `disconnect` (another
interface in a container's namespace, or a network it joins when it next starts).

Its /etc/hosts and /etc/resolv.conf are cove/engine/netetc.py's, the veth pairs
cove/engine/bridge.py's; their names stay importable from here (the engine's callers
and the Docker API name them so).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from cove.engine import bridge, netrecords, network, state
from cove.engine.bridge import plug_connected as plug_connected
from cove.engine.netetc import DEFAULT_DNS as DEFAULT_DNS
from cove.engine.netetc import LOCALHOST as LOCALHOST
from cove.engine.netetc import host_gateway as host_gateway
from cove.engine.netetc import hosts_text as hosts_text
from cove.engine.netetc import refresh_hosts as refresh_hosts
from cove.engine.netetc import resolv_conf as resolv_conf
from cove.engine.netetc import service_lines as service_lines
from cove.engine.netetc import write_etc as write_etc
from cove.engine.netetc import write_resolv_conf as write_resolv_conf
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.engine.container.record import Record


def _ifnames(paths: state.Paths, name: str) -> set[str]:
    nets = (netrecords.load(paths, x) for x in netrecords.names(paths))
    return {c.get("Ifname", "eth0") for n in nets
            if n for cn, c in n["Containers"].items() if cn == name}


def _container(root: str, container: str) -> tuple[state.Paths, str, Record]:
    paths = state.Paths(root)
    name = state.lookup(paths, container)
    return paths, name, state.current_record(paths, name)


def connect(root: str, net: str, container: str, ip: str | None = None) -> None:
    """`cove network connect [--ip IP] NET CONTAINER`: a running container gets an
    interface on NET now (eth1, eth2, ...; no default route: its first network keeps
    that), and its hosts entries; a stopped one joins NET when it next starts. Either
    way it stays on NET across restarts, as docker's."""
    paths, name, rec = _container(root, container)
    what = f"network connect {net} {name}"
    mode = rec["HostConfig"]["NetworkMode"]
    if net in ("host", "none"):
        raise CoveError(what, "container cannot be disconnected from host network or "
                              "connected to host network")
    if mode in ("host", "none"):
        raise CoveError(what, f"the container runs with --network {mode}: it has no "
                              "network namespace of its own to connect")
    connected = dict(rec.get("Connected") or {})
    if net == mode or net in connected:
        raise CoveError(what, f"endpoint with name {name} already exists in network {net}")
    if net == netrecords.DEFAULT and netrecords.load(paths, netrecords.DEFAULT) is None:
        with contextlib.suppress(CoveError):  # another made it meanwhile
            network.create(root, netrecords.DEFAULT)
    network.check_exists(paths, net)
    nsfile = netrecords.netns_path(paths, name)
    running = rec["State"]["Status"] == "running" and os.path.exists(nsfile)
    ep: dict[str, Any] | None = None
    with netrecords.locked(paths):
        n = netrecords.load(paths, net)
        if n is None:
            raise CoveError(f"network {net}", "no such network")
        if running:
            used = _ifnames(paths, name)
            k = next((i for i in range(1, 10) if f"eth{i}" not in used), 0)
            if not k:
                raise CoveError(what, "the container is on 10 networks already")
            ep = plug_connected(paths, rec, net, ip, k, nsfile)
            refresh_hosts(paths, {net}, also=name)
        elif ip:
            netrecords.free_ip(n, ip)  # checked now; taken when it starts

    def note(r: Record) -> None:
        r.setdefault("Connected", {})[net] = {"IPAddress": ip or ""}
        if ep is not None:
            r["NetworkSettings"].setdefault("Networks", {})[net] = ep
    state.update_record(paths.cdir(name), note)


def disconnect(root: str, net: str, container: str, force: bool = False) -> None:
    """`cove network disconnect [-f] NET CONTAINER`: the interface on NET goes (and the
    names with it); NET is no longer joined at the next start. The network a container
    was created on (--network) stays: its namespace, default route and published ports
    hang on it."""
    paths, name, rec = _container(root, container)
    what = f"network disconnect {net} {name}"
    if net == rec["HostConfig"]["NetworkMode"]:
        raise CoveError(what, "it is the network the container was created on "
                              "(--network); cove disconnects the networks "
                              "`network connect` added")
    if net not in (rec.get("Connected") or {}):
        if force:
            return
        raise CoveError(what, f"container {name} is not connected to network {net}")
    with netrecords.locked(paths):
        n = netrecords.load(paths, net)
        if n is not None and name in n["Containers"]:
            c = n["Containers"].pop(name)
            bridge.unplug(c["Veth"])
            netrecords.save(paths, n)
        refresh_hosts(paths, {net}, also=name)

    def note(r: Record) -> None:
        (r.get("Connected") or {}).pop(net, None)
        ((r.get("NetworkSettings") or {}).get("Networks") or {}).pop(net, None)
    state.update_record(paths.cdir(name), note)
