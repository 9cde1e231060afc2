"""`cove build --network bridge`: a network namespace on the engine's default bridge
network for a build's RUN steps, as docker's classic builder gives its build
containers the default bridge.

The build (cove.image.build, which imports no engine module) asks for it through
`Options.bridge` at its first bridged RUN and gives it back at its end; every
bridged RUN of the build joins the same namespace. The namespace is a member of the
`bridge` network like a container (an address from its subnet, a veth on its
bridge, the default route through its gateway; the masquerade the network already
has), recorded under a `buildnet-*` name so that addresses never collide with
containers', and removed, veth, record and nsfs mount, when the build ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

from cove.engine import netrecords, network, state
from cove.errors import CoveError


@contextlib.contextmanager
def bridge_netns(root: str) -> Iterator[str]:
    """The path of a network namespace plugged into `root`'s default bridge network
    (made when missing), for the life of the `with`."""
    if os.geteuid() != 0:
        raise CoveError("--network bridge", "needs root (a rootless build has none or "
                                            "host)")
    paths = state.Paths(root)
    name = "buildnet-" + secrets.token_hex(6)
    cdir = paths.cdir(name)
    os.makedirs(cdir, 0o700)
    try:
        if netrecords.load(paths, netrecords.DEFAULT) is None:
            with contextlib.suppress(CoveError):
                network.create(root, netrecords.DEFAULT)
        nsfile = netrecords.netns_path(paths, name)
        with open(nsfile, "w"):
            pass
        subprocess.run(["unshare", f"--net={nsfile}", "true"], check=True)
        with netrecords.locked(paths):
            n = netrecords.load(paths, netrecords.DEFAULT)
            if n is None:
                raise CoveError(f"network {netrecords.DEFAULT}", "no such network")
            ip = netrecords.free_ip(n)
            host_if = "cv" + secrets.token_hex(5)
            mac = _plug(paths, n, nsfile, host_if, ip)
            plen = n["Subnet"].partition("/")[2]
            n["Containers"][name] = {"IPv4Address": f"{ip}/{plen}", "MacAddress": mac,
                                     "Veth": host_if, "Hostname": name}
            netrecords.save(paths, n)
        yield nsfile
    finally:
        network.detach(paths, name)
        shutil.rmtree(cdir, ignore_errors=True)


def _plug(paths: state.Paths, n: dict[str, Any], nsfile: str, host_if: str, ip: str) -> str:
    """A veth pair from `n`'s bridge (`host_if`) into the namespace at `nsfile` (eth0
    with `ip`, loopback up, the default route through the gateway); its MAC address.

    What bridge.plug does for a container, but with the namespace's side set up by
    `ip` run in it (nsenter) rather than by pyroute2's NetNS, which forks this process
    to open its netlink socket there. Under `cove serve` this process is a threaded
    asyncio server and the build runs in a worker thread: the fork copies a threaded
    process (locks other threads hold at that moment stay held in the copy), and the
    copy inherits the server's SIGTERM handler, which ignores the signal outside the
    server's own pid, while pyroute2 ends the copy with SIGTERM and a blocking
    waitpid. A clean-clone CI run saw the server not stop after a bridged build
    (tests/api/test_build_bridge.py); an exec'd `ip` shares none of that state."""
    import shlex

    from pyroute2 import IPRoute

    from cove.engine import bridge
    peer = "ce" + host_if[2:]
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_if, kind="veth", peer=peer)
            pidx = ipr.link_lookup(ifname=peer)[0]
            mac: str = ipr.get_links(pidx)[0].get_attr("IFLA_ADDRESS")
            nsfd = os.open(nsfile, os.O_RDONLY)
            try:
                ipr.link("set", index=pidx, net_ns_fd=nsfd)
            finally:
                os.close(nsfd)
            hidx = ipr.link_lookup(ifname=host_if)[0]
            br = ipr.link_lookup(ifname=n["Bridge"])
            if not br:
                bridge.ensure_bridge(paths, n)
                br = ipr.link_lookup(ifname=n["Bridge"])
            ipr.link("set", index=hidx, master=br[0], state="up")
        plen = n["Subnet"].partition("/")[2]
        steps = [["ip", "link", "set", peer, "name", "eth0"],
                 ["ip", "addr", "add", f"{ip}/{plen}", "dev", "eth0"],
                 ["ip", "link", "set", "eth0", "up"],
                 ["ip", "link", "set", "lo", "up"],
                 ["ip", "route", "add", "default", "via", n["Gateway"]]]
        r = subprocess.run(["nsenter", f"--net={nsfile}", "sh", "-c",
                            " && ".join(shlex.join(x) for x in steps)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            raise CoveError("--network bridge", f"the build's namespace: {why}")
    except BaseException:
        bridge.unplug(host_if)
        raise
    return mac
