"""The few rtnetlink requests a container's network takes on every run, spoken directly
on a NETLINK_ROUTE socket: a veth pair made in one request (the host end up and on the
bridge, the peer named, with its MAC, in the container's namespace), an address, the
default route, a link's index, a link deleted.

Why not pyroute2 for these: each of its IPRoute objects sets up an asyncio event loop
and a protocol (~6 ms here, three per run), for requests of a few dozen bytes. pyroute2
stays for the rest (bridges, route listings; cove/engine/bridge.py): rarer, and broader.
"""

from __future__ import annotations

import os
import socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_NEWROUTE = 20, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
IFF_UP = 0x1
NLA_F_NESTED = 0x8000


def open_socket() -> int:
    """A NETLINK_ROUTE socket (its fd) in the calling thread's network namespace."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
    try:
        s.connect((0, 0))  # the kernel: plain write/read from then on
    except OSError:
        s.close()
        raise
    return s.detach()


def _attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def _name(s: str) -> bytes:
    return s.encode() + b"\0"


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    flags = IFF_UP if up else 0
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, flags)


def request(fd: int, kind: int, flags: int, body: bytes) -> bytes:
    """Send one request and wait for its answer: the reply's payload (a GET), or b""
    for an acknowledgement. A kernel error raises OSError with its errno."""
    hdr = struct.pack("=IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK,
                      1, 0)
    os.write(fd, hdr + body)
    got = b""
    while True:
        data = os.read(fd, 65536)
        off = 0
        while off + 16 <= len(data):
            n, t, _f, _seq, _pid = struct.unpack_from("=IHHII", data, off)
            if t == NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, off + 16)[0]
                if err:
                    raise OSError(err, os.strerror(err))
                return got
            got = data[off + 16:off + n]
            off += (n + 3) & ~3


def link_index(fd: int, ifname: str) -> int:
    """The index of interface `ifname` in the socket's namespace."""
    reply = request(fd, RTM_GETLINK, 0, _ifinfo() + _attr(IFLA_IFNAME, _name(ifname)))
    return int(struct.unpack_from("=i", reply, 4)[0])


def add_veth(fd: int, host_if: str, master: int, peer: str, ns_fd: int, mac: str) -> None:
    """A veth pair: `host_if` up on bridge `master` (an index), its peer `peer` in the
    namespace `ns_fd` (an open nsfs file) with MAC address `mac`, down (up at birth is
    ENOTCONN: its other end is not registered yet; link_up it there)."""
    peer_msg = _ifinfo() + _attr(IFLA_IFNAME, _name(peer)) \
        + _attr(IFLA_NET_NS_FD, struct.pack("=I", ns_fd)) \
        + _attr(IFLA_ADDRESS, bytes(int(b, 16) for b in mac.split(":")))
    info = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(
        IFLA_INFO_DATA | NLA_F_NESTED, _attr(VETH_INFO_PEER | NLA_F_NESTED, peer_msg))
    body = _ifinfo(up=True) + _attr(IFLA_IFNAME, _name(host_if)) \
        + _attr(IFLA_MASTER, struct.pack("=I", master)) \
        + _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
    request(fd, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)


def link_up(fd: int, index: int) -> None:
    request(fd, RTM_NEWLINK, 0, _ifinfo(index, up=True))


def add_address(fd: int, index: int, ip: str, prefixlen: int) -> None:
    a = socket.inet_aton(ip)
    body = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, 0, index) \
        + _attr(IFA_LOCAL, a) + _attr(IFA_ADDRESS, a)
    request(fd, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)


def add_default_route(fd: int, gateway: str) -> None:
    # rtmsg: AF_INET, no destination (default), main table, proto static, unicast
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 4, 0, 1, 0) \
        + _attr(RTA_GATEWAY, socket.inet_aton(gateway))
    request(fd, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)


def del_link(fd: int, ifname: str) -> None:
    """Delete interface `ifname` (a veth's peer goes with it)."""
    request(fd, RTM_DELLINK, 0, _ifinfo() + _attr(IFLA_IFNAME, _name(ifname)))
