"""A restored container's network, with the address and MAC it had when checkpointed.

`network.attach` gives a starting container the first free address of its network.
A restored one (in place, or migrated to a host whose network has the same name and
subnet, on the same L2 segment) must get its own back: its established TCP
connections (CRIU's --tcp-established) are bound to that address, and its peers' ARP
caches name that MAC. So the namespace is made and plugged as attach does, asking
for the old address, and the old MAC is set on eth0 before CRIU restores into it.
Where that address is taken (a `restore --name` copy beside its running source), the
container gets a new one as attach would, and its TCP connections cannot come along.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

from cove.engine import bridge, netetc, netrecords, state
from cove.errors import CoveError

TYPE_CHECKING = False
if TYPE_CHECKING:  # (record.py imports the flags' parsers: not at run time)
    from cove.engine.container.record import Record


def old_address(rec: Record) -> tuple[str, str]:
    """(IP, MAC) of the container's primary network when it was checkpointed."""
    ns = rec.get("NetworkSettings") or {}
    net = (rec.get("HostConfig") or {}).get("NetworkMode", "")
    ep = (ns.get("Networks") or {}).get(net) or {}
    return str(ns.get("IPAddress") or ""), str(ep.get("MacAddress") or "")


def attach(paths: state.Paths, name: str, rec: Record) -> bool:
    """Plug the container back into its network at its old address and MAC; False (and
    nothing done) where it had none or the address is taken now."""
    from cove.engine import network

    ip, mac = old_address(rec)
    net = rec["HostConfig"]["NetworkMode"]
    if not ip or rec.get("Connected") or rec["HostConfig"].get("PortBindings"):
        return False  # the plain attach handles what this does not (eth1.., ports)
    with netrecords.locked(paths):
        n = netrecords.load(paths, net)
        if n is None:
            raise CoveError(f"network {net}", "no such network on this host")
        try:
            netrecords.free_ip(n, ip)
        except CoveError:
            return False
    network.detach(paths, name)
    cdir = paths.cdir(name)
    nsfile = netrecords.netns_path(paths, name)
    with open(nsfile, "w"):
        pass
    subprocess.run(["unshare", f"--net={nsfile}", "true"], check=True)
    netetc.write_resolv_conf(cdir, rec)
    with open(os.path.join(cdir, "hosts"), "a"):
        pass
    with netrecords.locked(paths):
        n = netrecords.load(paths, net)
        assert n is not None
        ip = netrecords.free_ip(n, ip)
        host_if = "cv" + rec["Id"][:10]
        got = bridge.plug(paths, n, nsfile, host_if, "eth0", ip, primary=True)
        if mac and mac != got:
            _set_mac(nsfile, "eth0", mac, n["Gateway"])
        prefix = n["Subnet"].split("/")[1]
        n["Containers"][name] = {"IPv4Address": f"{ip}/{prefix}",
                                 "MacAddress": mac or got, "Veth": host_if,
                                 "Hostname": rec["Config"]["Hostname"]}
        netrecords.save(paths, n)
        ep = netrecords.endpoint(n, n["Containers"][name])
        gateway = n["Gateway"]
        netetc.refresh_hosts(paths)

    def note(r: Record) -> None:
        r["NetworkSettings"] = {"Networks": {net: ep}, "IPAddress": ip,
                                "Gateway": gateway, "Ports": {}}
    state.update_record(cdir, note)
    return True


def _set_mac(nsfile: str, ifname: str, mac: str, gateway: str) -> None:
    """eth0's MAC back to the old one (down and up again: the default route, which
    went with the link, is added back)."""
    from pyroute2 import NetNS

    with NetNS(nsfile, flags=0) as ns:
        idx = ns.link_lookup(ifname=ifname)[0]
        ns.link("set", index=idx, state="down")
        ns.link("set", index=idx, address=mac)
        ns.link("set", index=idx, state="up")
        with contextlib.suppress(Exception):  # still there: nothing to add
            ns.route("add", dst="default", gateway=gateway)
