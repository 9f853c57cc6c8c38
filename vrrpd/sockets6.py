"""IPv6 kernel sockets for VRRPv3 (RFC 5798 section 5.1.2), imported only when an IPv6 instance exists.

:class:`Vrrp6Socket` is one raw ``AF_INET6`` socket, next header 112, per interface (the IPv6 counterpart of
:class:`vrrpd.sockets.VrrpSocket`, both a :class:`vrrpd.sockets.RawVrrpSocket`; shared by the IPv6
instances on it, dispatched by VRID), following
keepalived 2.2.7 and FRR (``vrrp_if.c``, ``vrrpd/vrrp.c``):

* ``SO_BINDTODEVICE``; a member of ff02::12 on that interface only (``IPV6_JOIN_GROUP`` by ifindex) in
  multicast mode, ``IPV6_MULTICAST_ALL`` 0 (other sockets' memberships do not leak in), no loopback;
* sends with hop limit 255 (multicast and unicast), traffic class 0xc0, from the interface's link-local
  address given per packet (``IPV6_PKTINFO``: never a source the kernel picks, which could be a VIP,
  keepalived#1122); the checksum is :func:`vrrpd.wire.encode_v3`'s (the RFC 8200 pseudo-header over that
  source and the destination, the value the kernel would compute with ``IPV6_CHECKSUM``);
* receives with ``IPV6_RECVHOPLIMIT`` and ``IPV6_RECVPKTINFO``: each datagram is an :class:`Rx6` (the bare
  VRRP message, source, destination, hop limit). ``IPV6_CHECKSUM`` is *not* set (keepalived sets it): the
  kernel would then drop bad checksums silently, and vrrpd counts them (``wire.decode_ipv6`` verifies).

:class:`NaSocket` sends unsolicited Neighbor Advertisements (``wire.na_frame``) on one unbound ``AF_PACKET``
socket, as :class:`vrrpd.sockets.GarpSocket` does gratuitous ARP.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv6Address
from typing import NamedTuple

from vrrpd import wire
from vrrpd.sockets import PacketSocket, RawVrrpSocket

__all__ = ["NaSocket", "Rx6", "Vrrp6Socket", "ipv6_forwarding", "parse_ancillary"]

IPV6_MULTICAST_ALL = 29  # linux/in6.h; missing from Python's socket module
ETH_P_IPV6 = 0x86DD
VRRP_GROUP6 = wire.VRRP_GROUP6  # ff02::12
_ANC_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20) + 64
_INT = struct.Struct("@i")
_UINT = struct.Struct("@I")


class Rx6(NamedTuple):
    """One received datagram: the VRRP message and what ``recvmsg`` said about it (``dst``/``hop_limit``
    None when the ancillary data was missing)."""

    msg: bytes
    src: IPv6Address | None
    dst: IPv6Address | None
    hop_limit: int | None


def parse_ancillary(anc: list[tuple[int, int, bytes]]) -> tuple[IPv6Address | None, int | None]:
    """(destination from ``IPV6_PKTINFO``, hop limit from ``IPV6_HOPLIMIT``) from ``recvmsg`` ancillary data;
    None for what is missing or malformed."""
    dst: IPv6Address | None = None
    hlim: int | None = None
    for level, kind, data in anc:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_HOPLIMIT and len(data) >= _INT.size:
            v = _INT.unpack_from(data)[0]
            hlim = v if 0 <= v <= 255 else None
        elif kind == socket.IPV6_PKTINFO and len(data) >= 16:
            dst = IPv6Address(data[:16])
    return dst, hlim


class Vrrp6Socket(RawVrrpSocket):
    """One raw IPv6 socket per interface for VRRPv3 (see the module docstring)."""

    FAMILY = socket.AF_INET6
    LEVEL = socket.IPPROTO_IPV6
    GROUP = VRRP_GROUP6
    JOIN = socket.IPV6_JOIN_GROUP
    LEAVE = socket.IPV6_LEAVE_GROUP

    def options(self) -> list[tuple[int, int]]:
        return [
            (socket.IPV6_RECVHOPLIMIT, 1),
            (socket.IPV6_RECVPKTINFO, 1),
            (socket.IPV6_MULTICAST_HOPS, wire.VRRP_TTL),
            (socket.IPV6_UNICAST_HOPS, wire.VRRP_TTL),
            (socket.IPV6_MULTICAST_LOOP, 0),
            (socket.IPV6_MULTICAST_IF, self.ifindex),
            (socket.IPV6_TCLASS, wire.IP_TOS),
            (IPV6_MULTICAST_ALL, 0),
        ]

    def mreq(self) -> bytes:
        return VRRP_GROUP6.packed + _UINT.pack(self.ifindex)

    def send(self, src: IPv6Address, dst: IPv6Address, msg: bytes) -> None:
        """Send one VRRPv3 message from ``src`` (the link-local address) to ``dst`` (ff02::12 or a peer)."""
        pktinfo = src.packed + _UINT.pack(self.ifindex)
        self.sock.sendmsg(
            [msg], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo)], 0, (str(dst), 0, 0, self.ifindex)
        )

    def recv_all(self, limit: int = 4096) -> list[Rx6]:
        """Everything queued (up to ``limit`` datagrams), without blocking."""
        out: list[Rx6] = []
        for _ in range(limit):
            try:
                data, anc, _flags, addr = self.sock.recvmsg(4096, _ANC_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            dst, hlim = parse_ancillary(anc)
            try:
                src: IPv6Address | None = IPv6Address(addr[0].split("%", 1)[0])
            except (ValueError, IndexError, TypeError):
                src = None
            out.append(Rx6(data, src, dst, hlim))
        return out


class NaSocket(PacketSocket):
    """One AF_PACKET socket for unsolicited Neighbor Advertisements on every interface (send only)."""

    def send(self, ifname: str, mac: bytes, ips: list[IPv6Address], count: int, *, router: bool) -> int:
        """``count`` rounds of one NA (Override set) per address on ``ifname``; the number of frames sent."""
        return self.send_frames(
            ifname, ETH_P_IPV6, [wire.na_frame(mac, ip, router=router) for ip in ips], count
        )


def ipv6_forwarding(ifname: str) -> bool:
    """Whether ``ifname`` forwards IPv6 (keepalived sets the NA's Router flag then)."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/forwarding", "rb") as f:
            return f.read().strip() == b"1"
    except OSError:
        return False
