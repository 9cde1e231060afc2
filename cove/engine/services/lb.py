"""One address per service: a published port of a service spreads new connections over
its healthy replicas, with nftables in the engine's network namespace.

Each (root, project, service) has one table, `ip cove_s_<12 hex>` (a hash of the three,
so that two roots or projects sharing a namespace never touch each other's):

    prerouting (dstnat)   traffic from outside the namespace to a published port
    output (dstnat)       the namespace's own traffic (127.0.0.1:PORT, as `-p` does;
                          the network's route_localnet and 127/8 masquerade, set up
                          with its bridge, carry it out: cove/engine/network.py)
        ... tcp dport P dnat to numgen inc mod N map { 0 : ip0, 1 : ip1, ... } : T
    postrouting (srcnat)  hairpin: a replica's own network reaching the service through
                          the host's address on it gets its answers back through the
                          host (masqueraded), not straight from the replica over the
                          bridge (where br_netfilter is loaded, conntrack sees bridged
                          answers anyway; without it, this rule is what makes it work)
    input (filter)        only while there is no backend: the port answers with a reset
                          (UDP: port unreachable), so clients fail at once instead of
                          waiting on a port nobody holds

`<root>/lb/<table>.json` records what the service publishes (a port asked for as 0 gets
a free one, kept across calls): `check` refuses a port another service or container of
the root has, and `remove` leaves neither table nor record.

Why numgen and a whole-table replace: the kernel's NAT decides once per connection (its
conntrack entry keeps the mapping), so replacing the table changes where *new*
connections go while established ones stay with their replica until they end.
`apply` replaces the table in one transaction (`add table; delete table; table {...}`
in one `nft -f`): at no instant is the port without rules, and calling it again with
the same arguments changes nothing a client sees. A round robin (`inc`) rather than a
random pick spreads any N successive connections evenly. UDP flows stay with the
replica their conntrack entry names until it times out (30 s without traffic).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
else:
    from cove.lazy import lazy

    ipaddress = lazy("ipaddress")


def table(root: str, project: str, service: str) -> str:
    """The nft table of a service's published ports."""
    key = f"{os.path.abspath(root)}\0{project}\0{service}".encode()
    return "cove_s_" + hashlib.sha256(key).hexdigest()[:12]


def _host_ip(p: dict[str, Any]) -> str:
    """A port's host address; "" for all of them ("0.0.0.0", and "::": the tables are
    IPv4 ones, so all IPv4 addresses)."""
    ip = str(p.get("host_ip") or "")
    return "" if ip in ("0.0.0.0", "::") else ip


def _check(ports: list[dict[str, Any]], backends: list[str]) -> None:
    for p in ports:
        what = f"port {p.get('host_ip') or ''}:{p.get('host_port')}/{p.get('proto')}"
        if p.get("proto") not in ("tcp", "udp"):
            raise CoveError(what, "protocol must be tcp or udp")
        for k, lo in (("host_port", 0), ("target", 1)):
            v = p.get(k)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v < 65536:
                raise CoveError(what, f"{k} must be a port number ({lo}-65535)")
        if _host_ip(p):
            try:
                ipaddress.IPv4Address(p["host_ip"])
            except ValueError:
                raise CoveError(what, "host_ip must be an IPv4 address") from None
    for b in backends:
        try:
            ipaddress.IPv4Address(b)
        except ValueError:
            raise CoveError(f"backend {b!r}", "not an IPv4 address") from None


def _networks(root: str, backends: list[str]) -> list[tuple[str, str]]:
    """(bridge, subnet) of the root's networks that hold a backend: where a hairpinned
    connection must be masqueraded."""
    from cove.engine import network
    out = []
    addrs = [ipaddress.IPv4Address(b) for b in backends]
    for n in network.ls(root):
        sub = ipaddress.ip_network(n["Subnet"])
        if any(a in sub for a in addrs):
            out.append((str(n["Bridge"]), str(sub)))
    return out


def script(root: str, project: str, service: str, ports: list[dict[str, Any]],
           backends: list[str]) -> str:
    """The nft transaction that makes the service's table what `apply` says."""
    t = table(root, project, service)
    head = f"add table ip {t}\ndelete table ip {t}\n"
    if not ports:
        return head
    nat, refuse = [], []
    for p in ports:
        ip = _host_ip(p)
        match = f"ip daddr {ip} " if ip else "fib daddr type local "
        match += f"{p['proto']} dport {p['host_port']} "
        if backends:
            n = len(backends)
            to = (backends[0] if n == 1 else f"numgen inc mod {n} map {{ "
                  + ", ".join(f"{i} : {b}" for i, b in enumerate(backends)) + " }")
            nat.append(f"{match}dnat to {to} : {p['target']}")
        else:
            refuse.append(match + ("reject with tcp reset" if p["proto"] == "tcp"
                                   else "reject"))
    body = [f"table ip {t} {{"]
    if nat:
        rules = "\n    ".join(nat)
        body += [f"  chain prerouting {{ type nat hook prerouting priority dstnat; "
                 f"policy accept;\n    {rules}\n  }}",
                 f"  chain output {{ type nat hook output priority -100; policy accept;"
                 f"\n    {rules}\n  }}"]
        hair = [f'oifname "{br}" ip saddr {sub} ip daddr {{ {", ".join(backends)} }} '
                "ct status dnat masquerade" for br, sub in _networks(root, backends)]
        if hair:
            body.append("  chain postrouting { type nat hook postrouting priority srcnat; "
                        "policy accept;\n    " + "\n    ".join(hair) + "\n  }")
    if refuse:
        body.append("  chain input { type filter hook input priority filter; "
                    "policy accept;\n    " + "\n    ".join(refuse) + "\n  }")
    return head + "\n".join(body) + "\n}\n"


def _nft(text: str) -> None:
    import subprocess
    r = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True)
    if r.returncode != 0:
        raise CoveError("nft", r.stderr.strip() or f"exit status {r.returncode}")


# -- the ports each service publishes: <root>/lb/<table>.json -------------------------------

def _record(root: str, t: str) -> str:
    return os.path.join(root, "lb", f"{t}.json")


def _load(path: str) -> dict[str, Any]:
    import json
    try:
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (FileNotFoundError, ValueError):
        return {}


def _others(root: str, t: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what, port) of what the root's other services publish."""
    d = os.path.join(root, "lb")
    try:
        files = sorted(f for f in os.listdir(d) if f.endswith(".json") and f != f"{t}.json")
    except FileNotFoundError:
        return
    for f in files:
        rec = _load(os.path.join(d, f))
        for p in rec.get("ports") or []:
            yield f"service {rec.get('project')}/{rec.get('service')}", p


def _key(p: dict[str, Any]) -> tuple[str, str, int]:
    return (_host_ip(p), p["proto"], p["target"])


def _resolve(root: str, t: str, ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ports with a host port for each one that asked for any (host_port 0): the one
    it got before, else a free one (cove/engine/network.py's choice, none another
    service or container of the root publishes)."""
    if all(p["host_port"] for p in ports):
        return ports
    from cove.engine import network, state
    before = {_key(p): p["host_port"] for p in _load(_record(root, t)).get("ports") or []}
    taken = {(str(p["host_port"]), p["proto"]) for _w, p in _others(root, t)}
    taken |= {(port, proto) for _c, _ip, port, proto in network._published(state.Paths(root), None)}
    taken |= {(str(p["host_port"]), p["proto"]) for p in ports if p["host_port"]}
    out = []
    for p in ports:
        if not p["host_port"]:
            hp = before.get(_key(p)) or int(network._free_port(_host_ip(p), p["proto"], taken))
            p = {**p, "host_port": hp}
        out.append(p)
    return out


def published(root: str, project: str, service: str) -> list[dict[str, Any]]:
    """The ports the service publishes now, host ports picked for it included."""
    return list(_load(_record(root, table(root, project, service))).get("ports") or [])


def check(root: str, project: str, service: str, ports: list[dict[str, Any]]) -> None:
    """Refuse a host port that another service or a running container of the root
    publishes, or a socket in this network namespace holds (the DNAT would take it from
    it); the service's own ports pass. Call before the first `apply` (`cove up`)."""
    import socket

    from cove.engine import network, state
    _check(ports, [])
    mine = {(p["host_port"], p["proto"]) for p in published(root, project, service)}
    t = table(root, project, service)
    busy = [(w, _host_ip(p), int(p["host_port"]), p["proto"])
            for w, p in _others(root, t)]
    busy += [(f"container {c}", ip, int(port), proto)
             for c, ip, port, proto in network._published(state.Paths(root), None)]
    for p in ports:
        if not p["host_port"] or (p["host_port"], p["proto"]) in mine:
            continue
        ip = _host_ip(p)
        what = f"{service}: port {ip + ':' if ip else ''}{p['host_port']}/{p['proto']}"
        for w, oip, port, proto in busy:
            if port == p["host_port"] and proto == p["proto"] and \
                    (not ip or oip in ("", "0.0.0.0", "::", ip)):
                raise CoveError(what, f"already published by {w}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if p["proto"] == "tcp"
                             else socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip or "0.0.0.0", p["host_port"]))
        except OSError as e:
            raise CoveError(what, f"port is already in use ({e.strerror})") from None
        finally:
            sock.close()


def apply(root: str, project: str, service: str, ports: list[dict[str, Any]],
          backends: list[str]) -> None:
    """Make the service's published `ports` ([{"host_ip", "host_port", "proto",
    "target"}]; host_port 0: a free one, kept across calls, see `published`) spread new
    connections over `backends` (its serving replicas' addresses on the project
    network; none: the ports refuse connections). Atomic, idempotent."""
    _check(ports, backends)
    backends = list(dict.fromkeys(backends))  # (one address twice would weigh double)
    t = table(root, project, service)
    ports = _resolve(root, t, ports)
    rec = {"project": project, "service": service, "ports": ports}
    path = _record(root, t)
    if _load(path) != rec:  # (written first: a crash after it leaves a record to remove)
        import json

        from cove.engine import state
        os.makedirs(os.path.dirname(path), exist_ok=True)
        state.write_atomic(path, json.dumps(rec).encode(), 0o644)
    _nft(script(root, project, service, ports, backends))


def remove(root: str, project: str, service: str) -> None:
    """Drop the service's table and record; nothing of it stays (no error if there was
    none)."""
    t = table(root, project, service)
    _nft(f"add table ip {t}\ndelete table ip {t}\n")
    path = _record(root, t)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))  # (the last one)
