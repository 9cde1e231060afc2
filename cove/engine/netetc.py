"""A container's /etc/hosts and /etc/resolv.conf, written by the engine and bind-mounted
over the image's:

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
starts from the host's own). Only the networks' records are needed here
(cove/engine/netrecords.py): a network's attach and a container's connect both call
in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Mapping
from typing import Any

from cove.engine import netrecords, state

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


def resolv_conf(rec: Mapping[str, Any], host_text: str | None = None) -> str:
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


def write_resolv_conf(cdir: str, rec: Mapping[str, Any]) -> None:
    # in place (truncated, not replaced): the file may be bind-mounted already
    with open(os.path.join(cdir, "resolv.conf"), "w") as f:
        f.write(resolv_conf(rec))


def host_gateway(paths: state.Paths, rec: Mapping[str, Any]) -> str:
    """`host-gateway` of --add-host: the host's address on the container's network (its
    gateway), else on the default network, as docker uses docker0's."""
    mode = rec["HostConfig"]["NetworkMode"]
    for net in (mode, netrecords.DEFAULT):
        n = netrecords.load(paths, net) if net not in ("host", "none") else None
        if n:
            return str(n["Gateway"])
    return str(next(ipaddress.ip_network(netrecords.DEFAULT_SUBNET).hosts()))


def hosts_text(paths: state.Paths, rec: Mapping[str, Any], nets: list[dict[str, Any]]) -> str:
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
        if n["Name"] != netrecords.DEFAULT:  # (no names on the default one, as docker)
            members += [f"{x['IPv4Address'].split('/')[0]}\t"
                        + " ".join([other, *_aliases(paths, other, n["Name"])])
                        for other, x in sorted(n["Containers"].items())]
            members += service_lines(n, name)
    extra = []
    for e in rec["HostConfig"].get("ExtraHosts") or []:
        host, _, ip = e.partition(":")
        extra.append(f"{host_gateway(paths, rec) if ip == 'host-gateway' else ip}\t{host}")
    return "\n".join([*base, *members, *extra, *own]) + "\n"


def service_lines(n: dict[str, Any], member: str) -> list[str]:
    """The names of the services on network `n` (its "Services", kept by
    cove/engine/services/names.py): one line per healthy replica, in a rotation of
    each member's own, so that clients that take the first address spread over them."""
    out = []
    for svc, ips in sorted((n.get("Services") or {}).items()):
        if ips:
            k = sum(member.encode()) % len(ips)
            out += [f"{ip}\t{svc}" for ip in [*ips[k:], *ips[:k]]]
    return out


def _aliases(paths: state.Paths, name: str, net: str) -> list[str]:
    """A member's further names on `net`: the aliases the Docker API gave it
    (NetworkingConfig / network connect, kept under the record's "Api" by
    cove/engine/dockerapi): compose reaches a service by its name that way."""
    rec = state.load_record(paths.cdir(name))
    api = rec.get("Api") if rec else None
    got = ((api or {}).get("Aliases") or {}).get(net) or []
    return [a for a in got if isinstance(a, str) and a and a != name
            and all(c.isalnum() or c in "-_." for c in a)]


def refresh_hosts(paths: state.Paths, changed: Collection[str] | None = None,
                  also: str = "") -> None:
    """Rewrite the /etc/hosts of every container on this root's networks, in place (the
    file is bind-mounted: a rename would leave the container with the old one). The
    caller holds the networks' lock.

    `changed`: only the networks whose members changed (a container joined or left
    them), and `also` (the container that joined): the others' files stay as they
    are. The default network lists no names, so a container that joins or leaves it
    rewrites only its own file, not every member's (a run per container on a root of
    hundreds). None: every member's, as after a rename or a service's change."""
    nets = [n for n in (netrecords.load(paths, x) for x in netrecords.names(paths)) if n]
    members = {c for n in nets for c in n["Containers"]}
    if changed is not None:
        members &= {also, *(c for n in nets if n["Name"] in changed
                            and n["Name"] != netrecords.DEFAULT for c in n["Containers"])}
    for cname in sorted(members):
        rec = state.load_record(paths.cdir(cname))
        if rec is None:
            continue
        text = hosts_text(paths, rec, nets)
        with contextlib.suppress(FileNotFoundError):
            with open(os.path.join(paths.cdir(cname), "hosts"), "r+") as f:
                f.truncate(0)
                f.write(text)


def write_etc(paths: state.Paths, rec: Mapping[str, Any], cdir: str) -> None:
    """hosts and resolv.conf of a container on `none` or `host` that asked for its own
    (--add-host, --dns...): written once, at create."""
    with open(os.path.join(cdir, "hosts"), "w") as f:
        f.write(hosts_text(paths, rec, []))
    write_resolv_conf(cdir, rec)
