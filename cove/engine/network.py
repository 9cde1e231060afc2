"""Networks: none, host, and bridge networks built with pyroute2 (a Linux bridge, one veth
pair per container, addresses from the network's subnet) and nftables (masquerade out
of the subnet, DNAT for published ports), in the network namespace the engine runs in.

    <root>/networks/<name>.json   the network: subnet, gateway, bridge, its containers
    <root>/networks/sysctl.json   net.ipv4.ip_forward as it was before the first bridge
    <container>/netns             the container's network namespace (an nsfs bind mount)
    <container>/hosts, resolv.conf   bind-mounted over /etc/hosts and /etc/resolv.conf

Every network has its own nft table, `ip cove_<bridge>`, deleted with the network; each
container with published ports has `ip cove_c_<id>`, deleted when it stops. Names of the
containers on a user network resolve through their /etc/hosts files, rewritten in place
whenever a container joins or leaves. ip_forward goes back to its old value when the last
network goes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from cove.engine import state as S
from cove.errors import CoveError

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


def _nft(script: str, check: bool = True) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise CoveError("nft", r.stderr.strip())


# -- networks ---------------------------------------------------------------------------

def _free_subnet(paths: S.Paths) -> str:
    used = {(_load(paths, n) or {}).get("Subnet") for n in _names(paths)}
    for i in range(89, 255):
        cand = f"10.{i}.0.0/24"
        if cand not in used:
            return cand
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
    sysctl = os.path.join(paths.networks, "sysctl.json")
    if not os.path.exists(sysctl):
        with open(FORWARD) as f:
            old = f.read().strip()
        S.write_atomic(sysctl, json.dumps({"ip_forward": old}).encode(), 0o644)
        if old != "1":
            with open(FORWARD, "w") as f:
                f.write("1")


def _drop_bridge(paths: S.Paths, n: dict[str, Any]) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for idx in ipr.link_lookup(ifname=n["Bridge"]):
            ipr.link("del", index=idx)
    _nft(f"delete table ip cove_{n['Bridge'].replace('-', '_')}\n", check=False)
    if not [x for x in _names(paths) if x != n["Name"]]:
        sysctl = os.path.join(paths.networks, "sysctl.json")
        with contextlib.suppress(FileNotFoundError):
            with open(sysctl) as f:
                old = json.load(f)["ip_forward"]
            with open(FORWARD, "w") as f:
                f.write(old)
            os.unlink(sysctl)


def create(root: str, name: str, subnet: str | None = None) -> dict[str, Any]:
    paths = S.Paths(root)
    if name in ("none", "host") or not name.replace("-", "").replace("_", "").isalnum():
        raise CoveError(f"network {name!r}", "invalid name")
    with _locked(paths):
        if _load(paths, name):
            raise CoveError(f"network {name}", "already exists")
        sub = subnet or (DEFAULT_SUBNET if name == DEFAULT else _free_subnet(paths))
        try:
            net = ipaddress.ip_network(sub)
        except ValueError as e:
            raise CoveError(f"--subnet {sub}", str(e)) from None
        nid = hashlib.sha256(f"{name}{S.now_rfc3339()}".encode()).hexdigest()
        n = {"Name": name, "Id": nid, "Driver": "bridge", "Subnet": str(net),
             "Gateway": str(next(net.hosts())), "Created": S.now_rfc3339(),
             "Bridge": "cove0" if name == DEFAULT else f"cove-{nid[:8]}",
             "Containers": {}}
        try:
            _ensure_bridge(paths, n)
        except BaseException:
            _drop_bridge(paths, n)
            raise
        _save(paths, n)
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
        _drop_bridge(paths, n)
        os.unlink(_path(paths, name))
    return name


def check_exists(paths: S.Paths, net: str) -> None:
    if net != DEFAULT and _load(paths, net) is None:
        raise CoveError(f"network {net}", "no such network")


def check_ports(paths: S.Paths, bindings: dict[str, list[dict[str, str]]],
                me: str | None = None) -> None:
    """Refuse host ports another running container publishes, or a socket in this
    network namespace holds (a DNAT rule would silently take them from it)."""
    import socket
    want = {(b["HostIp"], b["HostPort"] or ctr.split("/")[0], ctr.split("/")[1])
            for ctr, binds in bindings.items() for b in binds}
    if not want:
        return
    for other in S.all_names(paths):
        rec = S.load(paths.cdir(other)) or {}
        if other == me or rec.get("State", {}).get("Status") not in ("running", "restarting"):
            continue
        for ctr, binds in rec["HostConfig"]["PortBindings"].items():
            for b in binds:
                port, proto = b["HostPort"] or ctr.split("/")[0], ctr.split("/")[1]
                for ip, p, pr in want:
                    if p == port and pr == proto and (not ip or not b["HostIp"]
                                                      or ip == b["HostIp"]):
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


# -- containers -------------------------------------------------------------------------

def _write_hosts(paths: S.Paths, n: dict[str, Any]) -> None:
    """Every member's /etc/hosts lists the members of a user network (by name)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if n["Name"] != DEFAULT:
        lines += [f"{c['IPv4Address'].split('/')[0]}\t{cname}"
                  for cname, c in sorted(n["Containers"].items())]
    for cname, c in n["Containers"].items():
        own = f"{c['IPv4Address'].split('/')[0]}\t{c.get('Hostname', cname)}"
        text = "\n".join([*lines, own]) + "\n"
        with contextlib.suppress(FileNotFoundError):
            # in place, not renamed: the file is bind-mounted into the container
            with open(os.path.join(paths.cdir(cname), "hosts"), "r+") as f:
                f.truncate(0)
                f.write(text)


def attach(paths: S.Paths, name: str) -> None:
    """Give a container (about to start) its network namespace on its network."""
    from pyroute2 import IPRoute, NetNS
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
    for f in ("hosts", "resolv.conf"):
        with open(os.path.join(cdir, f), "a"):
            pass
    with open("/etc/resolv.conf") as src, open(os.path.join(cdir, "resolv.conf"), "w") as dst:
        dst.write("".join(x for x in src if not x.startswith("nameserver 127.")))
    with _locked(paths):
        n = _load(paths, net)
        if n is None:
            raise CoveError(f"network {net}", "no such network")
        subnet = ipaddress.ip_network(n["Subnet"])
        used = {c["IPv4Address"].split("/")[0] for c in n["Containers"].values()}
        used.add(n["Gateway"])
        ip = next((str(h) for h in subnet.hosts() if str(h) not in used), None)
        if ip is None:
            raise CoveError(f"network {net}", "no free address")
        host_if = "cv" + rec["Id"][:10]
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_if, kind="veth", peer="ce" + rec["Id"][:10])
            peer = ipr.link_lookup(ifname="ce" + rec["Id"][:10])[0]
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
            idx = ns.link_lookup(ifname="ce" + rec["Id"][:10])[0]
            ns.link("set", index=idx, ifname="eth0")
            ns.addr("add", index=idx, address=ip, prefixlen=subnet.prefixlen)
            ns.link("set", index=idx, state="up")
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
            ns.route("add", dst="default", gateway=n["Gateway"])
            mac = ns.get_links(idx)[0].get_attr("IFLA_ADDRESS")
        n["Containers"][name] = {"IPv4Address": f"{ip}/{subnet.prefixlen}",
                                 "MacAddress": mac, "Veth": host_if,
                                 "Hostname": rec["Config"]["Hostname"]}
        _save(paths, n)
        _write_hosts(paths, n)
    ports = _publish(rec, ip, n)

    def note(r: dict[str, Any]) -> None:
        r["NetworkSettings"] = {
            "Networks": {net: {"IPAddress": ip, "Gateway": n["Gateway"],
                               "IPPrefixLen": subnet.prefixlen, "MacAddress": mac,
                               "NetworkID": n["Id"]}},
            "IPAddress": ip, "Gateway": n["Gateway"], "Ports": ports}
    S.update(cdir, note)


def _publish(rec: dict[str, Any], ip: str, n: dict[str, Any]) -> dict[str, Any]:
    ports: dict[str, Any] = {}
    rules = []
    for ctr, binds in rec["HostConfig"]["PortBindings"].items():
        cport, proto = ctr.split("/")
        out = []
        for b in binds:
            hport = b["HostPort"] or cport
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


def detach(paths: S.Paths, name: str) -> None:
    """Undo attach: ports, veth, address, netns; the hosts of the others."""
    rec = S.load(paths.cdir(name)) or {}
    if rec.get("Id"):
        _nft(f"delete table ip cove_c_{rec['Id'][:12]}\n", check=False)
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
                _write_hosts(paths, n)
    nsfile = netns_path(paths, name)
    if os.path.exists(nsfile):
        from cove.sys import libc
        with contextlib.suppress(OSError):
            libc.umount2(nsfile, 2)
        with contextlib.suppress(OSError):
            os.unlink(nsfile)
