"""The kernel's side of bridge networks, in the network namespace the engine runs in:
the bridge and its nft table (masquerade out of the subnet), the subnet allocator that
several state roots share, and the veth pairs that put a container on a bridge. The
records these act on are cove/engine/netrecords.py's; why the allocator and
ip_forward work as they do is in cove/engine/network.py's docstring.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from cove.engine import netrecords, rtnl, state
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress

    from cove.engine.container.record import Record
else:
    from cove.lazy import lazy

    ipaddress = lazy("ipaddress")

FORWARD = "/proc/sys/net/ipv4/ip_forward"


@contextlib.contextmanager
def netns_locked() -> Iterator[None]:
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


def routed() -> list[ipaddress.IPv4Network]:
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


def cove_bridges() -> dict[str, str]:
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


def nft(script: str, check: bool = True) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise CoveError("nft", r.stderr.strip())


def subnets(paths: state.Paths) -> dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnet of every network, the default one's included before its first use
    (it is made on demand with DEFAULT_SUBNET: a network there would keep it from
    being made)."""
    out: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}
    default = ipaddress.ip_network(netrecords.DEFAULT_SUBNET)
    if netrecords.load(paths, netrecords.DEFAULT) is None \
            and not any(default.overlaps(r) for r in routed()):
        out[netrecords.DEFAULT] = default
    for name in netrecords.names(paths):
        n = netrecords.load(paths, name)
        if n:
            out[name] = ipaddress.ip_network(n["Subnet"])
    return out


def check_subnet(paths: state.Paths, name: str, sub: str) -> ipaddress.IPv4Network:
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
    for other, onet in subnets(paths).items():
        if other != name and net.overlaps(onet):
            raise CoveError(f"--subnet {sub}", f"overlaps with network {other} ({onet})")
    for r in routed():
        if net.overlaps(r):
            raise CoveError(f"--subnet {sub}", f"overlaps with {r}, routed in this network "
                                               "namespace (another engine's network?)")
    return net


def free_subnet(paths: state.Paths, first: int = 89) -> str:
    used = [*subnets(paths).values(), *routed()]
    for i in range(first, 255):
        cand = ipaddress.ip_network(f"10.{i}.0.0/24")
        if not any(cand.overlaps(u) for u in used):
            return str(cand)
    raise CoveError("network create", "no free subnet")


def ensure_bridge(paths: state.Paths, n: dict[str, Any]) -> None:
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
    nft(f"""table ip {t} {{
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
    # remembered in this bridge's alias (see cove/engine/network.py's docstring)
    others = {b: v for b, v in cove_bridges().items() if b != n["Bridge"]}
    if others:
        old = next(iter(others.values()))
    else:
        with open(FORWARD) as f:
            old = f.read().strip()
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=n["Bridge"])[0], ifalias=ALIAS + old)
    with open(FORWARD, "w") as f:
        f.write("1")


def drop_bridge(paths: state.Paths, n: dict[str, Any]) -> None:
    with netns_locked():
        drop_bridge_locked(paths, n)


def drop_bridge_locked(paths: state.Paths, n: dict[str, Any]) -> None:
    from pyroute2 import IPRoute
    old = cove_bridges().get(n["Bridge"])
    with IPRoute() as ipr:
        for idx in ipr.link_lookup(ifname=n["Bridge"]):
            ipr.link("del", index=idx)
    nft(f"delete table ip cove_{n['Bridge'].replace('-', '_')}\n", check=False)
    if old is not None and not cove_bridges():  # the namespace's last one
        with open(FORWARD, "w") as f:
            f.write(old)


def _in_netns(nsfile: str, new: bool) -> int:
    """A NETLINK_ROUTE socket (its fd) in the network namespace at `nsfile`; with `new`,
    a new namespace, bind-mounted on `nsfile` (which exists), its loopback up.

    A short thread enters the namespace (unshare or setns of CLONE_NEWNET change only
    the calling thread) and opens the socket there: a netlink socket stays in the
    namespace it was made in, whoever uses it. This is what `unshare --net=FILE` (an
    exec, ~60 ms here) and pyroute2's NetNS (a fork of this process, which runs
    `ldconfig -p`; unsafe in a threaded server) cost a process each for."""
    import threading

    from cove.sys import libc
    got: list[int] = []
    err: list[BaseException] = []

    def enter() -> None:
        try:
            if new:
                libc.unshare(libc.CLONE_NEWNET)
                libc.mount("/proc/thread-self/ns/net", nsfile, None, libc.MS_BIND)
                libc.link_up("lo")
            else:
                fd = os.open(nsfile, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    libc.setns(fd, libc.CLONE_NEWNET, nsfile)
                finally:
                    os.close(fd)
            got.append(rtnl.open_socket())
        except BaseException as e:
            err.append(e)
    t = threading.Thread(target=enter, name="cove-netns", daemon=True)
    t.start()
    t.join()
    if err:
        raise CoveError(f"network namespace {nsfile}", str(err[0]))
    return got[0]


def new_netns(nsfile: str) -> int:
    """A new network namespace bind-mounted on `nsfile` (made here), loopback up; a
    netlink socket in it (an fd, for plug's `nsock`; the caller closes it)."""
    with open(nsfile, "w"):
        pass
    return _in_netns(nsfile, new=True)


def _mac(ip: str) -> str:
    """The container's MAC address, from its IPv4 address as docker derives it
    (02:42 and the address's four bytes): unique on its bridge, known without asking."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def plug(paths: state.Paths, n: dict[str, Any], nsfile: str, host_if: str, ifname: str,
         ip: str, primary: bool, nsock: int = -1) -> str:
    """A veth pair from network `n`'s bridge (`host_if`, on the bridge) into the
    namespace at `nsfile` (`ifname`, with `ip`: the peer is made there, no rename); the
    primary interface brings the loopback up and the default route. `nsock`: a
    netlink socket in that namespace (new_netns's), else one is opened. Its MAC.
    Five requests in all (cove/engine/rtnl.py), seven with the loopback."""
    import socket
    subnet = ipaddress.ip_network(n["Subnet"])
    mac = _mac(ip)
    try:
        br = socket.if_nametoindex(n["Bridge"])
    except OSError:  # (its namespace's bridge went: `network rm` elsewhere, a reboot)
        ensure_bridge(paths, n)
        br = socket.if_nametoindex(n["Bridge"])
    host = rtnl.open_socket()
    try:
        nsfd = os.open(nsfile, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                rtnl.add_veth(host, host_if, br, ifname, nsfd, mac)
            except FileExistsError:  # a pair an engine killed mid-teardown left
                rtnl.del_link(host, host_if)
                rtnl.add_veth(host, host_if, br, ifname, nsfd, mac)
        except OSError as e:
            raise CoveError(f"veth {host_if}", e.strerror or str(e)) from None
        finally:
            os.close(nsfd)
        try:
            fd = os.dup(nsock) if nsock >= 0 else _in_netns(nsfile, new=False)
            try:
                idx = rtnl.link_index(fd, ifname)
                rtnl.add_address(fd, idx, ip, subnet.prefixlen)
                rtnl.link_up(fd, idx)
                if primary and nsock < 0:  # (new_netns's has it up)
                    rtnl.link_up(fd, rtnl.link_index(fd, "lo"))
                if primary:
                    rtnl.add_default_route(fd, n["Gateway"])
            finally:
                os.close(fd)
        except BaseException as e:
            with contextlib.suppress(OSError):  # no half-made pair left behind
                rtnl.del_link(host, host_if)
            if isinstance(e, OSError):
                raise CoveError(f"{ifname} in {nsfile}", e.strerror or str(e)) from None
            raise
    finally:
        os.close(host)
    return mac


def plug_connected(paths: state.Paths, rec: Record, net: str, want_ip: str | None,
                   k: int, nsfile: str) -> dict[str, Any]:
    """Interface eth<k> of the container on network `net` (the caller holds the
    networks' lock); its NetworkSettings entry. A failure leaves no interface."""
    n = netrecords.load(paths, net)
    if n is None:
        raise CoveError(f"network {net}", "no such network")
    ip = netrecords.free_ip(n, want_ip or None)
    host_if = f"cx{rec['Id'][:10]}{k}"
    try:
        mac = plug(paths, n, nsfile, host_if, f"eth{k}", ip, primary=False)
    except BaseException:
        unplug(host_if)
        raise
    plen = ipaddress.ip_network(n["Subnet"]).prefixlen
    n["Containers"][rec["Name"]] = {"IPv4Address": f"{ip}/{plen}", "MacAddress": mac,
                                    "Veth": host_if, "Ifname": f"eth{k}",
                                    "Hostname": rec["Config"]["Hostname"]}
    netrecords.save(paths, n)
    return netrecords.endpoint(n, n["Containers"][rec["Name"]])


def unplug(host_if: str) -> None:
    """Delete a veth pair by its host end (the container's end goes with it)."""
    fd = rtnl.open_socket()
    try:
        with contextlib.suppress(OSError):  # (gone already: ENODEV)
            rtnl.del_link(fd, host_if)
    finally:
        os.close(fd)
