"""A gratuitous ARP from a new replica, so that its neighbours forget a dead one's MAC.

A replacement often gets the address its predecessor had (the network hands out the
lowest free one). The engine's namespace and the other members still hold the old
MAC in their neighbour tables, and for a stale entry Linux goes on sending to it for
seconds (DELAY, then PROBE) before it asks again: new connections the load balancer
sends to the new replica meanwhile time out. Docker's bridge driver avoids reuse; here
the new replica announces itself instead, as `arping -U` would: an ARP request for
its own address, broadcast on its interface, which every neighbour that has an entry
for that address takes as the new MAC (no `arp_accept` needed for an existing entry).
"""

from __future__ import annotations

import os
import socket

ETH_P_ARP = 0x0806


def frame(mac: str, ip: str) -> bytes:
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    eth = b"\xff" * 6 + hw + ETH_P_ARP.to_bytes(2, "big")
    arp = (b"\x00\x01\x08\x00\x06\x04\x00\x01" + hw + addr + b"\x00" * 6 + addr)
    return eth + arp


def announce(netns: str, mac: str, ip: str, ifname: str = "eth0") -> bool:
    """Send the announcement from inside the network namespace at `netns` (in a forked
    child: setns is per thread and for good); whether it went out."""
    if not (netns and mac and ip):
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            from cove.sys.libc import CLONE_NEWNET, setns
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            setns(fd, CLONE_NEWNET, netns)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
                s.bind((ifname, ETH_P_ARP))
                for _ in range(2):
                    s.send(frame(mac, ip))
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
