"""Networks: none, host, and bridge networks (a Linux bridge made with pyroute2; one veth
pair per container, addresses from the network's subnet, made with a few rtnetlink
requests of cove/engine/rtnl.py) and nftables (masquerade out of the subnet, DNAT for
published ports), in the network namespace the engine runs in. A run costs no process:
the container's namespace is made by a thread (cove/engine/bridge.py: new_netns), and
`nft` runs only for a network's creation and for containers that publish ports.

    <root>/networks/<name>.json   the network: subnet, gateway, bridge, its containers
    <container>/netns             the container's network namespace (an nsfs bind mount)
    <container>/hosts, resolv.conf   bind-mounted over /etc/hosts and /etc/resolv.conf

Every network has its own nft table, `ip cove_<bridge>`, deleted with the network; each
container with published ports has `ip cove_c_<id>`, deleted when it stops. Names of the
containers on a user network resolve through their /etc/hosts files, rewritten in place
whenever a container joins or leaves.

Several state roots may share one network namespace (two engines, a test beside a
user's): their networks must not collide. The kernel is the one allocator they all
see: a new network's subnet is one that no route in the namespace covers yet (each
bridge brings its subnet's route), chosen under a lock that is itself per namespace (an
abstract unix socket, which network namespaces keep apart); the default network's
bridge is `cove0` for the default root and `cove0-<hash of the root>` for any other, so
one root's `network rm bridge` never touches another's. ip_forward is set to 1 with the
namespace's first Cove bridge and goes back to its old value with the last one, of
whichever root: the old value is kept in the kernel too, in each Cove bridge's alias
(`cove ip_forward=0`), so nothing on disk can disagree with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from typing import Any

from cove.engine import bridge, events, netetc, netrecords, rootless, state
from cove.engine.bridge import bridge_name as bridge_name
from cove.engine.bridge import plug as plug
from cove.engine.netrecords import DEFAULT as DEFAULT
from cove.engine.netrecords import DEFAULT_SUBNET as DEFAULT_SUBNET
from cove.engine.netrecords import endpoint as endpoint
from cove.engine.netrecords import free_ip as free_ip
from cove.engine.netrecords import netns_path as netns_path
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress

    from cove.engine.container.record import Record
else:
    from cove.lazy import lazy

    ipaddress = lazy("ipaddress")

# The records' functions under the names the engine's modules used before they moved to
# cove/engine/netrecords.py (services/names.py, rootless and netcontainer's callers).
_path = netrecords.path
_locked = netrecords.locked
_load = netrecords.load
_save = netrecords.save
_names = netrecords.names
_published = netrecords.published
_free_port = netrecords.free_port


# -- networks ---------------------------------------------------------------------------

def create(root: str, name: str, subnet: str | None = None) -> dict[str, Any]:
    paths = state.Paths(root)
    if name in ("none", "host") or not name.replace("-", "").replace("_", "").isalnum():
        raise CoveError(f"network {name!r}", "invalid name")
    if os.geteuid() != 0:
        raise CoveError(f"network create {name}", rootless.refusal())
    with netrecords.locked(paths), bridge.netns_locked():
        if netrecords.load(paths, name):
            raise CoveError(f"network {name}", "already exists")
        if subnet:
            sub = subnet
        elif name == DEFAULT:  # 10.88.0.0/24, unless another root's network has it
            free = not any(ipaddress.ip_network(DEFAULT_SUBNET).overlaps(r)
                           for r in bridge.routed())
            sub = DEFAULT_SUBNET if free else bridge.free_subnet(paths)
        else:
            sub = bridge.free_subnet(paths)
        net = bridge.check_subnet(paths, name, sub)
        nid = hashlib.sha256(f"{name}{state.now_rfc3339()}".encode()).hexdigest()
        n = {"Name": name, "Id": nid, "Driver": "bridge", "Subnet": str(net),
             "Gateway": str(next(net.hosts())), "Created": state.now_rfc3339(),
             "Bridge": bridge_name(root) if name == DEFAULT else f"cove-{nid[:8]}",
             "Containers": {}}
        try:
            bridge.ensure_bridge(paths, n)
        except BaseException:
            bridge.drop_bridge_locked(paths, n)
            raise
        netrecords.save(paths, n)
        events.emit(root, "network", "create", str(n["Id"]), name=name, type="bridge")
        return n


def ls(root: str) -> list[dict[str, Any]]:
    paths = state.Paths(root)
    return [n for n in (netrecords.load(paths, x) for x in netrecords.names(paths)) if n]


def inspect(root: str, name: str) -> dict[str, Any]:
    n = netrecords.load(state.Paths(root), name)
    if n is None:
        raise CoveError(f"network {name}", "no such network")
    return n


def remove(root: str, name: str) -> str:
    paths = state.Paths(root)
    with netrecords.locked(paths):
        n = netrecords.load(paths, name)
        if n is None:
            raise CoveError(f"network {name}", "no such network")
        if n["Containers"]:
            raise CoveError(f"network {name}",
                            f"in use by container {', '.join(n['Containers'])}")
        if os.geteuid() == 0:  # rootless: a stale record; the bridge is never ours
            bridge.drop_bridge(paths, n)
        os.unlink(_path(paths, name))
    events.emit(root, "network", "destroy", n["Id"], name=name, type="bridge")
    return name


def prune(root: str) -> list[str]:
    """`network prune`: the networks no container uses (running or not: a stopped one
    rejoins its networks when it starts), except the default one, which docker keeps
    (predefined). Their names."""
    paths = state.Paths(root)
    used = set()
    for cname in state.all_names(paths):
        rec: Mapping[str, Any] = state.load_record(paths.cdir(cname)) or {}
        used.add((rec.get("HostConfig") or {}).get("NetworkMode"))
        used.update(rec.get("Connected") or {})
    gone = []
    for n in ls(root):
        if n["Name"] != DEFAULT and n["Name"] not in used and not n["Containers"]:
            with contextlib.suppress(CoveError):  # (one that a container joined meanwhile)
                gone.append(remove(root, n["Name"]))
    return gone


def check_exists(paths: state.Paths, net: str) -> None:
    if rootless.is_slirp(net):
        return
    if net != DEFAULT and netrecords.load(paths, net) is None:
        raise CoveError(f"network {net}", "no such network")


def check_ports(paths: state.Paths, bindings: dict[str, list[dict[str, str]]],
                me: str | None = None) -> None:
    """Refuse host ports another running container publishes, or a socket in this
    network namespace holds (a DNAT rule would silently take them from it)."""
    import socket
    # (a binding without a host port gets a free one when the container starts)
    want = {(b["HostIp"], b["HostPort"], ctr.split("/")[1])
            for ctr, binds in bindings.items() for b in binds if b["HostPort"]}
    if not want:
        return
    for other, hip, port, proto in netrecords.published(paths, me):
        for ip, p, pr in want:
            if p == port and pr == proto and (not ip or not hip or ip == hip):
                raise CoveError(f"-p {ip + ':' if ip else ''}{p}/{pr}",
                                f"port is already allocated (container {other})")
    for ip, port, proto in want:
        s = socket.socket(socket.AF_INET,
                          socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
            s.bind((ip or "0.0.0.0", int(port)))
        except OSError as e:
            raise CoveError(f"-p {ip + ':' if ip else ''}{port}/{proto}",
                            f"port is already in use ({e.strerror})") from None
        finally:
            s.close()


# -- containers ---------------------------------------------------------------------------

def attach(paths: state.Paths, name: str) -> None:
    """Give a container (about to start) its network namespace on its network, and on
    those `network connect` added (eth1, eth2, ...)."""
    if rootless.attach(paths, name):  # slirp4netns (rootless): no bridge, veth or nft
        return
    cdir = paths.cdir(name)
    rec = state.load_record(cdir)
    assert rec is not None
    net = rec["HostConfig"]["NetworkMode"]
    detach(paths, name)
    if net == DEFAULT and netrecords.load(paths, DEFAULT) is None:
        with contextlib.suppress(CoveError):
            create(paths.root, DEFAULT)
    nsfile = netns_path(paths, name)
    nsock = bridge.new_netns(nsfile)
    try:
        networks, ip, gateway = _plug_all(paths, name, rec, nsfile, nsock)
    finally:
        os.close(nsock)
    ports = _publish(paths, name, rec, ip)

    def note(r: Record) -> None:
        r["NetworkSettings"] = {"Networks": networks, "IPAddress": ip,
                                "Gateway": gateway, "Ports": ports}
    state.update_record(cdir, note)


def _plug_all(paths: state.Paths, name: str, rec: Record, nsfile: str, nsock: int
              ) -> tuple[dict[str, Any], str, str]:
    """attach's interfaces: eth0 on the container's network, eth1... on those it was
    connected to; the members' /etc/hosts. Its Networks, address and gateway."""
    cdir = paths.cdir(name)
    net = rec["HostConfig"]["NetworkMode"]
    netetc.write_resolv_conf(cdir, rec)
    with open(os.path.join(cdir, "hosts"), "a"):
        pass
    networks: dict[str, Any] = {}
    with netrecords.locked(paths):
        n = netrecords.load(paths, net)
        if n is None:
            raise CoveError(f"network {net}", "no such network")
        ip = netrecords.free_ip(n)
        host_if = "cv" + rec["Id"][:10]
        mac = bridge.plug(paths, n, nsfile, host_if, "eth0", ip, primary=True,
                          nsock=nsock)
        subnet = ipaddress.ip_network(n["Subnet"])
        n["Containers"][name] = {"IPv4Address": f"{ip}/{subnet.prefixlen}",
                                 "MacAddress": mac, "Veth": host_if,
                                 "Hostname": rec["Config"]["Hostname"]}
        netrecords.save(paths, n)
        networks[net] = endpoint(n, n["Containers"][name])
        primary = n
        for k, (other, conf) in enumerate(sorted((rec.get("Connected") or {}).items()), 1):
            networks[other] = bridge.plug_connected(paths, rec, other,
                                                    conf.get("IPAddress"), k, nsfile)
        netetc.refresh_hosts(paths, networks, also=name)
    return networks, ip, str(primary["Gateway"])


def _publish(paths: state.Paths, name: str, rec: Record, ip: str
             ) -> dict[str, Any]:
    """The container's published ports (NetworkSettings.Ports, a free host port for
    `-p CTR`) and their DNAT rules to `ip`, in its own nft table."""
    bindings = rec["HostConfig"]["PortBindings"]
    ports: dict[str, Any] = netrecords.host_ports(paths, name, bindings)
    rules = []
    for ctr, binds in bindings.items():
        cport, proto = ctr.split("/")
        for b, got in zip(binds, ports[ctr], strict=True):
            match = f"ip daddr {b['HostIp']} " if b["HostIp"] else "fib daddr type local "
            rules.append(f"{match}{proto} dport {got['HostPort']} dnat to {ip}:{cport}")
    if rules:
        t = f"cove_c_{rec['Id'][:12]}"
        body = "\n    ".join(rules)
        bridge.nft(f"""table ip {t} {{
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
    {body}
  }}
  chain output {{ type nat hook output priority -100; policy accept;
    {body}
  }}
}}
""")
    return ports


def drop_port_table(cid: str) -> None:
    """Remove a container's DNAT table (its published ports), if it has one."""
    if os.geteuid() != 0:
        return  # rootless containers have none (slirp4netns forwards their ports)
    bridge.nft(f"delete table ip cove_c_{cid[:12]}\n", check=False)


def detach(paths: state.Paths, name: str) -> None:
    """Undo attach: ports, veth, address, netns; the hosts of the others."""
    if rootless.detach(paths, name):  # its slirp4netns stopped; rootless, nothing else
        return
    rec: Mapping[str, Any] = state.load_record(paths.cdir(name)) or {}
    # its DNAT table exists only if it publishes ports (_publish): no `nft` (an exec,
    # ~60 ms) for the others
    if rec.get("Id") and ((rec.get("HostConfig") or {}).get("PortBindings")
                          or (rec.get("NetworkSettings") or {}).get("Ports")):
        drop_port_table(rec["Id"])
    left = []
    nsfile = netns_path(paths, name)
    # The veths go with the namespace: its bind mount, dropped below, is its last
    # reference once the container's processes are gone, and the kernel then unregisters
    # every interface in it, the veths' host ends with them. Deleting each pair here
    # instead (RTM_DELLINK) waits out an RCU grace period per pair, 10-20 ms that a
    # `run --rm` would wait for; the kernel's namespace clean-up does the same work
    # after we return, and can't be skipped by an engine killed mid-teardown either.
    # Nothing of Cove's holds it then (`--network container:NAME` is refused, and
    # exec'd processes die with the container's pid namespace); a process that entered
    # it from outside (nsenter) keeps its veths until that process exits.
    dies = _bound(nsfile)
    with netrecords.locked(paths):
        for net in netrecords.names(paths):
            n = netrecords.load(paths, net)
            if n and name in n["Containers"]:
                c = n["Containers"].pop(name)
                if not dies:
                    bridge.unplug(c["Veth"])
                netrecords.save(paths, n)
                left.append(net)
        if left:
            netetc.refresh_hosts(paths, left)
    if os.path.exists(nsfile):
        from cove.sys import libc
        with contextlib.suppress(OSError):
            libc.umount2(nsfile, 2)
        with contextlib.suppress(OSError):
            os.unlink(nsfile)


def _bound(nsfile: str) -> bool:
    """Whether `nsfile` is a namespace's bind mount (nsfs), not the empty file under it."""
    try:
        return os.stat(nsfile).st_dev != os.stat(os.path.dirname(nsfile)).st_dev
    except OSError:
        return False


def rename_member(paths: state.Paths, old: str, new: str) -> None:
    """`cove rename` (cove/engine/ops.py): the container's entry in its networks under
    its new name, and the members' /etc/hosts with it."""
    changed = False
    with netrecords.locked(paths):
        for net in netrecords.names(paths):
            n = netrecords.load(paths, net)
            if n and old in n["Containers"]:
                n["Containers"][new] = n["Containers"].pop(old)
                netrecords.save(paths, n)
                changed = True
        if changed:
            netetc.refresh_hosts(paths)
