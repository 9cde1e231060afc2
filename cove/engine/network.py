"""Networks: none, host, and bridge networks built with pyroute2 (a Linux bridge, one veth
pair per container, addresses from the network's subnet) and nftables (masquerade out
of the subnet, DNAT for published ports), in the network namespace the engine runs in.

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
import fcntl
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from cove.engine import events
from cove.engine import state as S
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
else:
    from cove.lazy import lazy

    ipaddress = lazy("ipaddress")

DEFAULT = "bridge"
DEFAULT_SUBNET = "10.88.0.0/24"
FORWARD = "/proc/sys/net/ipv4/ip_forward"


def netns_path(paths: S.Paths, name: str) -> str:
    return os.path.join(paths.cdir(name), "netns")


def _path(paths: S.Paths, net: str) -> str:
    return os.path.join(paths.networks, f"{net}.json")


@contextlib.contextmanager
def _locked(paths: S.Paths) -> Iterator[None]:
    os.makedirs(paths.networks, exist_ok=True)
    fd = os.open(os.path.join(paths.networks, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load(paths: S.Paths, net: str) -> dict[str, Any] | None:
    try:
        with open(_path(paths, net)) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except FileNotFoundError:
        return None


def _save(paths: S.Paths, n: dict[str, Any]) -> None:
    S.write_atomic(_path(paths, n["Name"]), json.dumps(n, indent=1).encode(), 0o644)


def _names(paths: S.Paths) -> list[str]:
    try:
        return sorted(f[:-5] for f in os.listdir(paths.networks)
                      if f.endswith(".json") and f != "sysctl.json")
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def _netns_locked() -> Iterator[None]:
    """A lock shared by every state root in this network namespace: an abstract unix
    socket name (the namespace keeps them apart; the kernel drops it with the holder)."""
    import socket
    import time
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                s.bind("\0cove-network-allocator")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise CoveError("network", "timed out waiting for another Cove "
                                    "engine's network change in this namespace") from None
                time.sleep(0.01)
        yield
    finally:
        s.close()


def _routed() -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations routed in this namespace (bridges of other roots, the
    host's own networks): a subnet that overlaps one would be ambiguous."""
    from pyroute2 import IPRoute
    out = []
    with IPRoute() as ipr:
        for r in ipr.get_routes(family=2, table=254):
            dst, plen = r.get_attr("RTA_DST"), r["dst_len"]
            if dst and plen:
                out.append(ipaddress.IPv4Network(f"{dst}/{plen}", strict=False))
    return out


def bridge_name(root: str) -> str:
    """The default network's bridge: `cove0` for the default state root, else
    `cove0-<8 hex>` derived from the root (15 characters at most, IFNAMSIZ)."""
    from cove.image.store import default_root
    if os.path.abspath(root) == os.path.abspath(default_root()):
        return "cove0"
    return "cove0-" + hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:8]


ALIAS = "cove ip_forward="


def _cove_bridges() -> dict[str, str]:
    """Cove bridges in this namespace (any root's) and the ip_forward value each
    remembers (their alias)."""
    from pyroute2 import IPRoute
    out = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            alias = link.get_attr("IFLA_IFALIAS") or ""
            if alias.startswith(ALIAS):
                out[link.get_attr("IFLA_IFNAME")] = alias[len(ALIAS):]
    return out


def _nft(script: str, check: bool = True) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise CoveError("nft", r.stderr.strip())


# -- networks ---------------------------------------------------------------------------

def _subnets(paths: S.Paths) -> dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnet of every network, the default one's included before its first use
    (it is made on demand with DEFAULT_SUBNET: a network there would keep it from
    being made)."""
    out: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}
    default = ipaddress.ip_network(DEFAULT_SUBNET)
    if _load(paths, DEFAULT) is None and not any(default.overlaps(r) for r in _routed()):
        out[DEFAULT] = default
    for name in _names(paths):
        n = _load(paths, name)
        if n:
            out[name] = ipaddress.ip_network(n["Subnet"])
    return out


def _check_subnet(paths: S.Paths, name: str, sub: str) -> ipaddress.IPv4Network:
    """A subnet a new network may have: IPv4 (the nft tables are `ip`), room for a
    gateway and a container, and no address shared with another network (two bridges
    routing the same addresses: which one a packet takes is up to the routing table)."""
    try:
        net = ipaddress.ip_network(sub)
    except ValueError as e:
        raise CoveError(f"--subnet {sub}", str(e)) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise CoveError(f"--subnet {sub}", "only IPv4 subnets are supported")
    if net.prefixlen > 30:
        raise CoveError(f"--subnet {sub}", "too small: /30 at most, for a gateway and a "
                                           "container")
    for other, onet in _subnets(paths).items():
        if other != name and net.overlaps(onet):
            raise CoveError(f"--subnet {sub}", f"overlaps with network {other} ({onet})")
    for r in _routed():
        if net.overlaps(r):
            raise CoveError(f"--subnet {sub}", f"overlaps with {r}, routed in this network "
                                               "namespace (another engine's network?)")
    return net


def _free_subnet(paths: S.Paths, first: int = 89) -> str:
    used = [*_subnets(paths).values(), *_routed()]
    for i in range(first, 255):
        cand = ipaddress.ip_network(f"10.{i}.0.0/24")
        if not any(cand.overlaps(u) for u in used):
            return str(cand)
    raise CoveError("network create", "no free subnet")


def _ensure_bridge(paths: S.Paths, n: dict[str, Any]) -> None:
    from pyroute2 import IPRoute
    net = ipaddress.ip_network(n["Subnet"])
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=n["Bridge"]):
            ipr.link("add", ifname=n["Bridge"], kind="bridge")
            idx = ipr.link_lookup(ifname=n["Bridge"])[0]
            ipr.addr("add", index=idx, address=n["Gateway"], prefixlen=net.prefixlen)
            ipr.link("set", index=idx, state="up")
    # published ports on 127.0.0.1: the output hook DNATs locally generated traffic to
    # the container; packets from 127.0.0.1 may then leave through the bridge
    # (route_localnet, a setting of the bridge that goes with it) and are masqueraded
    with open(f"/proc/sys/net/ipv4/conf/{n['Bridge']}/route_localnet", "w") as f:
        f.write("1")
    t = f"cove_{n['Bridge'].replace('-', '_')}"
    _nft(f"""table ip {t} {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {n['Subnet']} oifname != "{n['Bridge']}" masquerade
    ip saddr 127.0.0.0/8 oifname "{n['Bridge']}" masquerade
  }}
  chain forward {{ type filter hook forward priority filter; policy accept;
    iifname "{n['Bridge']}" accept
    oifname "{n['Bridge']}" ct state established,related accept
  }}
}}
""")
    # ip_forward as it was before the namespace's first Cove bridge (any root's),
    # remembered in this bridge's alias (see the module's docstring)
    others = {b: v for b, v in _cove_bridges().items() if b != n["Bridge"]}
    if others:
        old = next(iter(others.values()))
    else:
        with open(FORWARD) as f:
            old = f.read().strip()
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=n["Bridge"])[0], ifalias=ALIAS + old)
    with open(FORWARD, "w") as f:
        f.write("1")


def _drop_bridge(paths: S.Paths, n: dict[str, Any]) -> None:
    with _netns_locked():
        _drop_bridge_locked(paths, n)


def _drop_bridge_locked(paths: S.Paths, n: dict[str, Any]) -> None:
    from pyroute2 import IPRoute
    old = _cove_bridges().get(n["Bridge"])
    with IPRoute() as ipr:
        for idx in ipr.link_lookup(ifname=n["Bridge"]):
            ipr.link("del", index=idx)
    _nft(f"delete table ip cove_{n['Bridge'].replace('-', '_')}\n", check=False)
    if old is not None and not _cove_bridges():  # the namespace's last one
        with open(FORWARD, "w") as f:
            f.write(old)


def create(root: str, name: str, subnet: str | None = None) -> dict[str, Any]:
    paths = S.Paths(root)
    if name in ("none", "host") or not name.replace("-", "").replace("_", "").isalnum():
        raise CoveError(f"network {name!r}", "invalid name")
    if os.geteuid() != 0:
        from cove.engine import rootless
        raise CoveError(f"network create {name}", rootless.refusal())
    with _locked(paths), _netns_locked():
        if _load(paths, name):
            raise CoveError(f"network {name}", "already exists")
        if subnet:
            sub = subnet
        elif name == DEFAULT:  # 10.88.0.0/24, unless another root's network has it
            free = not any(ipaddress.ip_network(DEFAULT_SUBNET).overlaps(r)
                           for r in _routed())
            sub = DEFAULT_SUBNET if free else _free_subnet(paths)
        else:
            sub = _free_subnet(paths)
        net = _check_subnet(paths, name, sub)
        nid = hashlib.sha256(f"{name}{S.now_rfc3339()}".encode()).hexdigest()
        n = {"Name": name, "Id": nid, "Driver": "bridge", "Subnet": str(net),
             "Gateway": str(next(net.hosts())), "Created": S.now_rfc3339(),
             "Bridge": bridge_name(root) if name == DEFAULT else f"cove-{nid[:8]}",
             "Containers": {}}
        try:
            _ensure_bridge(paths, n)
        except BaseException:
            _drop_bridge_locked(paths, n)
            raise
        _save(paths, n)
        events.emit(root, "network", "create", str(n["Id"]), name=name, type="bridge")
        return n


def ls(root: str) -> list[dict[str, Any]]:
    paths = S.Paths(root)
    return [n for n in (_load(paths, x) for x in _names(paths)) if n]


def inspect(root: str, name: str) -> dict[str, Any]:
    n = _load(S.Paths(root), name)
    if n is None:
        raise CoveError(f"network {name}", "no such network")
    return n


def remove(root: str, name: str) -> str:
    paths = S.Paths(root)
    with _locked(paths):
        n = _load(paths, name)
        if n is None:
            raise CoveError(f"network {name}", "no such network")
        if n["Containers"]:
            raise CoveError(f"network {name}",
                            f"in use by container {', '.join(n['Containers'])}")
        if os.geteuid() == 0:  # rootless: a stale record; the bridge is never ours
            _drop_bridge(paths, n)
        os.unlink(_path(paths, name))
    events.emit(root, "network", "destroy", n["Id"], name=name, type="bridge")
    return name


def prune(root: str) -> list[str]:
    """`network prune`: the networks no container uses (running or not: a stopped one
    rejoins its networks when it starts), except the default one, which docker keeps
    (predefined). Their names."""
    paths = S.Paths(root)
    used = set()
    for cname in S.all_names(paths):
        rec = S.load(paths.cdir(cname)) or {}
        used.add((rec.get("HostConfig") or {}).get("NetworkMode"))
        used.update(rec.get("Connected") or {})
    gone = []
    for n in ls(root):
        if n["Name"] != DEFAULT and n["Name"] not in used and not n["Containers"]:
            with contextlib.suppress(CoveError):  # (one that a container joined meanwhile)
                gone.append(remove(root, n["Name"]))
    return gone


def check_exists(paths: S.Paths, net: str) -> None:
    from cove.engine import rootless
    if rootless.is_slirp(net):
        return
    if net != DEFAULT and _load(paths, net) is None:
        raise CoveError(f"network {net}", "no such network")


def check_ports(paths: S.Paths, bindings: dict[str, list[dict[str, str]]],
                me: str | None = None) -> None:
    """Refuse host ports another running container publishes, or a socket in this
    network namespace holds (a DNAT rule would silently take them from it)."""
    import socket
    # (a binding without a host port gets a free one when the container starts)
    want = {(b["HostIp"], b["HostPort"], ctr.split("/")[1])
            for ctr, binds in bindings.items() for b in binds if b["HostPort"]}
    if not want:
        return
    for other, hip, port, proto in _published(paths, me):
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


def _published(paths: S.Paths, me: str | None) -> Iterator[tuple[str, str, str, str]]:
    """(container, host IP or "", host port, protocol) of what the running containers
    other than `me` publish; for a binding without a host port, the one picked when it
    started (its NetworkSettings.Ports)."""
    for other in S.all_names(paths):
        rec = S.load(paths.cdir(other)) or {}
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


def _free_port(ip: str, proto: str, taken: set[tuple[str, str]]) -> str:
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


# -- containers ---------------------------------------------------------------------------

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


def plug(paths: S.Paths, n: dict[str, Any], nsfile: str, host_if: str, ifname: str,
         ip: str, primary: bool) -> str:
    """A veth pair from network `n`'s bridge (`host_if`, on the bridge) into the
    namespace at `nsfile` (`ifname`, with `ip`); the primary interface brings the
    loopback up and the default route. Its MAC address."""
    from pyroute2 import IPRoute, NetNS
    subnet = ipaddress.ip_network(n["Subnet"])
    peer_name = "ce" + host_if[2:]
    with IPRoute() as ipr:
        ipr.link("add", ifname=host_if, kind="veth", peer=peer_name)
        peer = ipr.link_lookup(ifname=peer_name)[0]
        nsfd = os.open(nsfile, os.O_RDONLY)
        try:
            ipr.link("set", index=peer, net_ns_fd=nsfd)
        finally:
            os.close(nsfd)
        hidx = ipr.link_lookup(ifname=host_if)[0]
        br = ipr.link_lookup(ifname=n["Bridge"])
        if not br:
            _ensure_bridge(paths, n)
            br = ipr.link_lookup(ifname=n["Bridge"])
        ipr.link("set", index=hidx, master=br[0], state="up")
    with NetNS(nsfile, flags=0) as ns:
        idx = ns.link_lookup(ifname=peer_name)[0]
        ns.link("set", index=idx, ifname=ifname)
        ns.addr("add", index=idx, address=ip, prefixlen=subnet.prefixlen)
        ns.link("set", index=idx, state="up")
        if primary:
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
            ns.route("add", dst="default", gateway=n["Gateway"])
        mac: str = ns.get_links(idx)[0].get_attr("IFLA_ADDRESS")
    return mac


def endpoint(n: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """NetworkSettings.Networks[NAME] of a container's entry `c` in network `n`."""
    ip, _, plen = c["IPv4Address"].partition("/")
    return {"IPAddress": ip, "Gateway": n["Gateway"], "IPPrefixLen": int(plen),
            "MacAddress": c["MacAddress"], "NetworkID": n["Id"]}


def attach(paths: S.Paths, name: str) -> None:
    """Give a container (about to start) its network namespace on its network, and on
    those `network connect` added (eth1, eth2, ...)."""
    from cove.engine import rootless
    if rootless.attach(paths, name):  # slirp4netns (rootless): no bridge, veth or nft
        return
    from cove.engine import netcontainer as NC
    cdir = paths.cdir(name)
    rec = S.load(cdir)
    assert rec is not None
    net = rec["HostConfig"]["NetworkMode"]
    detach(paths, name)
    if net == DEFAULT and _load(paths, DEFAULT) is None:
        with contextlib.suppress(CoveError):
            create(paths.root, DEFAULT)
    nsfile = netns_path(paths, name)
    with open(nsfile, "w"):
        pass
    subprocess.run(["unshare", f"--net={nsfile}", "true"], check=True)
    NC.write_resolv_conf(cdir, rec)
    with open(os.path.join(cdir, "hosts"), "a"):
        pass
    networks: dict[str, Any] = {}
    with _locked(paths):
        n = _load(paths, net)
        if n is None:
            raise CoveError(f"network {net}", "no such network")
        ip = free_ip(n)
        host_if = "cv" + rec["Id"][:10]
        mac = plug(paths, n, nsfile, host_if, "eth0", ip, primary=True)
        subnet = ipaddress.ip_network(n["Subnet"])
        n["Containers"][name] = {"IPv4Address": f"{ip}/{subnet.prefixlen}",
                                 "MacAddress": mac, "Veth": host_if,
                                 "Hostname": rec["Config"]["Hostname"]}
        _save(paths, n)
        networks[net] = endpoint(n, n["Containers"][name])
        primary = n
        for k, (other, conf) in enumerate(sorted((rec.get("Connected") or {}).items()), 1):
            networks[other] = NC.plug_connected(paths, rec, other, conf.get("IPAddress"),
                                                k, nsfile)
        NC.refresh_hosts(paths)
    ports = _publish(rec, ip, primary,
                     {(p, pr) for _c, _i, p, pr in _published(paths, name)})

    def note(r: dict[str, Any]) -> None:
        r["NetworkSettings"] = {"Networks": networks, "IPAddress": ip,
                                "Gateway": primary["Gateway"], "Ports": ports}
    S.update(cdir, note)


def _publish(rec: dict[str, Any], ip: str, n: dict[str, Any],
             taken: set[tuple[str, str]]) -> dict[str, Any]:
    ports: dict[str, Any] = {}
    rules = []
    taken |= {(b["HostPort"], ctr.split("/")[1])
              for ctr, binds in rec["HostConfig"]["PortBindings"].items() for b in binds
              if b["HostPort"]}
    for ctr, binds in rec["HostConfig"]["PortBindings"].items():
        cport, proto = ctr.split("/")
        out = []
        for b in binds:
            hport = b["HostPort"] or _free_port(b["HostIp"], proto, taken)
            match = f"ip daddr {b['HostIp']} " if b["HostIp"] else "fib daddr type local "
            rules.append(f"{match}{proto} dport {hport} dnat to {ip}:{cport}")
            out.append({"HostIp": b["HostIp"] or "0.0.0.0", "HostPort": hport})
        ports[ctr] = out
    if rules:
        t = f"cove_c_{rec['Id'][:12]}"
        body = "\n    ".join(rules)
        _nft(f"""table ip {t} {{
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
    _nft(f"delete table ip cove_c_{cid[:12]}\n", check=False)


def detach(paths: S.Paths, name: str) -> None:
    """Undo attach: ports, veth, address, netns; the hosts of the others."""
    from cove.engine import rootless
    if rootless.detach(paths, name):  # its slirp4netns stopped; rootless, nothing else
        return
    rec = S.load(paths.cdir(name)) or {}
    if rec.get("Id"):
        drop_port_table(rec["Id"])
    changed = False
    with _locked(paths):
        for net in _names(paths):
            n = _load(paths, net)
            if n and name in n["Containers"]:
                c = n["Containers"].pop(name)
                with contextlib.suppress(Exception):
                    from pyroute2 import IPRoute
                    with IPRoute() as ipr:
                        for idx in ipr.link_lookup(ifname=c["Veth"]):
                            ipr.link("del", index=idx)
                _save(paths, n)
                changed = True
        if changed:
            from cove.engine import netcontainer as NC
            NC.refresh_hosts(paths)
    nsfile = netns_path(paths, name)
    if os.path.exists(nsfile):
        from cove.sys import libc
        with contextlib.suppress(OSError):
            libc.umount2(nsfile, 2)
        with contextlib.suppress(OSError):
            os.unlink(nsfile)


def rename_member(paths: S.Paths, old: str, new: str) -> None:
    """`cove rename` (cove/engine/ops.py): the container's entry in its networks under
    its new name, and the members' /etc/hosts with it."""
    changed = False
    with _locked(paths):
        for net in _names(paths):
            n = _load(paths, net)
            if n and old in n["Containers"]:
                n["Containers"][new] = n["Containers"].pop(old)
                _save(paths, n)
                changed = True
        if changed:
            from cove.engine import netcontainer as NC
            NC.refresh_hosts(paths)
