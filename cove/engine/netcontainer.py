"""A container's side of its networks: `cove network connect` and `disconnect` (another
interface in a container's namespace, or a network it joins when it next starts), and
its /etc/hosts and /etc/resolv.conf.

    /etc/hosts        localhost; on user networks every member by name (all the networks
                      it is on); --add-host entries (host-gateway: its network's
                      gateway, the host's side of the bridge); its own addresses with
                      its host name. Rewritten in place (it is bind-mounted) whenever a
                      member joins or leaves, or the container is connected.
    /etc/resolv.conf  the host's, without loopback name servers (unreachable from
                      the container's namespace), or --dns servers; --dns-search and
                      --dns-option replace the search and options lines (docker's).

On `--network none` and `host` the container keeps the image's files unless one of
those flags asks for something (then `create` writes them once; on host, /etc/hosts
starts from the host's own).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from cove.engine import network as N
from cove.engine import state as S
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
else:
    from cove.lazy import lazy

    ipaddress = lazy("ipaddress")

LOCALHOST = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
             "ff02::2\tip6-allrouters"]
# docker's name servers when the host has none a container can reach
DEFAULT_DNS = ["8.8.8.8", "8.8.4.4"]


# -- /etc/resolv.conf -------------------------------------------------------------------

def resolv_conf(rec: dict[str, Any], host_text: str | None = None) -> str:
    """The container's resolv.conf: the host's lines with --dns, --dns-search and
    --dns-option in place of theirs (`--dns-search .` means no search line)."""
    hc = rec["HostConfig"]
    if host_text is None:
        try:
            with open("/etc/resolv.conf") as f:
                host_text = f.read()
        except OSError:
            host_text = ""
    servers, search, options = [], [], []
    for line in host_text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            options += words[1:]
    if hc["NetworkMode"] != "host":
        # a loopback server is the host's own (systemd-resolved...): not there from
        # the container's namespace
        servers = [s for s in servers if not s.startswith("127.") and s != "::1"]
    servers = list(hc.get("Dns") or []) or servers or DEFAULT_DNS
    if hc.get("DnsSearch"):
        search = [d for d in hc["DnsSearch"] if d != "."]
    if hc.get("DnsOptions"):
        options = list(hc["DnsOptions"])
    lines = [*(["search " + " ".join(search)] if search else []),
             *(f"nameserver {s}" for s in servers),
             *(["options " + " ".join(options)] if options else [])]
    return "\n".join(lines) + "\n"


def write_resolv_conf(cdir: str, rec: dict[str, Any]) -> None:
    # in place (truncated, not replaced): the file may be bind-mounted already
    with open(os.path.join(cdir, "resolv.conf"), "w") as f:
        f.write(resolv_conf(rec))


# -- /etc/hosts -------------------------------------------------------------------------

def host_gateway(paths: S.Paths, rec: dict[str, Any]) -> str:
    """`host-gateway` of --add-host: the host's address on the container's network (its
    gateway), else on the default network, as docker uses docker0's."""
    mode = rec["HostConfig"]["NetworkMode"]
    for net in (mode, N.DEFAULT):
        n = N._load(paths, net) if net not in ("host", "none") else None
        if n:
            return str(n["Gateway"])
    return str(next(ipaddress.ip_network(N.DEFAULT_SUBNET).hosts()))


def hosts_text(paths: S.Paths, rec: dict[str, Any], nets: list[dict[str, Any]]) -> str:
    name, hostname = rec["Name"], rec["Config"]["Hostname"]
    if rec["HostConfig"]["NetworkMode"] == "host":
        try:
            with open("/etc/hosts") as f:
                base = f.read().splitlines()
        except OSError:
            base = list(LOCALHOST)
    else:
        base = list(LOCALHOST)
    members, own = [], []
    for n in nets:
        c = n["Containers"].get(name)
        if c is None:
            continue
        own.append(f"{c['IPv4Address'].split('/')[0]}\t{hostname}")
        if n["Name"] != N.DEFAULT:  # (the default network has no names, as docker's)
            members += [f"{x['IPv4Address'].split('/')[0]}\t"
                        + " ".join([other, *_aliases(paths, other, n["Name"])])
                        for other, x in sorted(n["Containers"].items())]
    extra = []
    for e in rec["HostConfig"].get("ExtraHosts") or []:
        host, _, ip = e.partition(":")
        extra.append(f"{host_gateway(paths, rec) if ip == 'host-gateway' else ip}\t{host}")
    return "\n".join([*base, *members, *extra, *own]) + "\n"


def _aliases(paths: S.Paths, name: str, net: str) -> list[str]:
    """A member's further names on `net`: the aliases the Docker API gave it
    (NetworkingConfig / network connect, kept under the record's "Api" by
    cove/engine/dockerapi): compose reaches a service by its name that way."""
    rec = S.load(paths.cdir(name)) or {}
    got = ((rec.get("Api") or {}).get("Aliases") or {}).get(net) or []
    return [a for a in got if isinstance(a, str) and a and a != name
            and all(c.isalnum() or c in "-_." for c in a)]


def refresh_hosts(paths: S.Paths) -> None:
    """Rewrite the /etc/hosts of every container on this root's networks, in place (the
    file is bind-mounted: a rename would leave the container with the old one). The
    caller holds the networks' lock."""
    nets = [n for n in (N._load(paths, x) for x in N._names(paths)) if n]
    for cname in sorted({c for n in nets for c in n["Containers"]}):
        rec = S.load(paths.cdir(cname))
        if rec is None:
            continue
        text = hosts_text(paths, rec, nets)
        with contextlib.suppress(FileNotFoundError):
            with open(os.path.join(paths.cdir(cname), "hosts"), "r+") as f:
                f.truncate(0)
                f.write(text)


def write_etc(paths: S.Paths, rec: dict[str, Any], cdir: str) -> None:
    """hosts and resolv.conf of a container on `none` or `host` that asked for its own
    (--add-host, --dns...): written once, at create."""
    with open(os.path.join(cdir, "hosts"), "w") as f:
        f.write(hosts_text(paths, rec, []))
    write_resolv_conf(cdir, rec)


# -- network connect / disconnect -------------------------------------------------------

def _ifnames(paths: S.Paths, name: str) -> set[str]:
    return {c.get("Ifname", "eth0") for n in (N._load(paths, x) for x in N._names(paths))
            if n for cn, c in n["Containers"].items() if cn == name}


def plug_connected(paths: S.Paths, rec: dict[str, Any], net: str, want_ip: str | None,
                   k: int, nsfile: str) -> dict[str, Any]:
    """Interface eth<k> of the container on network `net` (the caller holds the
    networks' lock); its NetworkSettings entry. A failure leaves no interface."""
    n = N._load(paths, net)
    if n is None:
        raise CoveError(f"network {net}", "no such network")
    ip = N.free_ip(n, want_ip or None)
    host_if = f"cx{rec['Id'][:10]}{k}"
    try:
        mac = N.plug(paths, n, nsfile, host_if, f"eth{k}", ip, primary=False)
    except BaseException:
        _unplug(host_if)
        raise
    plen = ipaddress.ip_network(n["Subnet"]).prefixlen
    n["Containers"][rec["Name"]] = {"IPv4Address": f"{ip}/{plen}", "MacAddress": mac,
                                    "Veth": host_if, "Ifname": f"eth{k}",
                                    "Hostname": rec["Config"]["Hostname"]}
    N._save(paths, n)
    return N.endpoint(n, n["Containers"][rec["Name"]])


def _unplug(host_if: str) -> None:
    """Delete a veth pair by its host end (the container's end goes with it)."""
    from pyroute2 import IPRoute
    with contextlib.suppress(Exception), IPRoute() as ipr:
        for idx in ipr.link_lookup(ifname=host_if):
            ipr.link("del", index=idx)


def _container(root: str, container: str) -> tuple[S.Paths, str, dict[str, Any]]:
    paths = S.Paths(root)
    name = S.lookup(paths, container)
    return paths, name, S.current(paths, name)


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
    if net == N.DEFAULT and N._load(paths, N.DEFAULT) is None:
        with contextlib.suppress(CoveError):  # another made it meanwhile
            N.create(root, N.DEFAULT)
    N.check_exists(paths, net)
    nsfile = N.netns_path(paths, name)
    running = rec["State"]["Status"] == "running" and os.path.exists(nsfile)
    ep: dict[str, Any] | None = None
    with N._locked(paths):
        n = N._load(paths, net)
        if n is None:
            raise CoveError(f"network {net}", "no such network")
        if running:
            used = _ifnames(paths, name)
            k = next((i for i in range(1, 10) if f"eth{i}" not in used), 0)
            if not k:
                raise CoveError(what, "the container is on 10 networks already")
            ep = plug_connected(paths, rec, net, ip, k, nsfile)
            refresh_hosts(paths)
        elif ip:
            N.free_ip(n, ip)  # checked now; taken when it starts

    def note(r: dict[str, Any]) -> None:
        r.setdefault("Connected", {})[net] = {"IPAddress": ip or ""}
        if ep is not None:
            r.setdefault("NetworkSettings", {}).setdefault("Networks", {})[net] = ep
    S.update(paths.cdir(name), note)


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
    with N._locked(paths):
        n = N._load(paths, net)
        if n is not None and name in n["Containers"]:
            c = n["Containers"].pop(name)
            _unplug(c["Veth"])
            N._save(paths, n)
        refresh_hosts(paths)

    def note(r: dict[str, Any]) -> None:
        (r.get("Connected") or {}).pop(net, None)
        ((r.get("NetworkSettings") or {}).get("Networks") or {}).pop(net, None)
    S.update(paths.cdir(name), note)
