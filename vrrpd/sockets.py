"""Kernel sockets: the VRRP raw socket (IP protocol 112) and the AF_PACKET socket gratuitous ARPs go out on.

The VRRP socket follows keepalived's recipe (``vrrp_if.c``): ``SOCK_RAW`` protocol 112 bound to the interface
with ``SO_BINDTODEVICE``, ``IP_HDRINCL`` (we write the IP header: TOS 0xc0, TTL 255, an IP ID that increments
per packet), a join of 224.0.0.18 on that interface only, ``IP_MULTICAST_ALL`` 0 (so memberships of other
sockets do not leak in) and ``IP_MULTICAST_LOOP`` 0 (we never hear our own adverts).

:class:`RawVrrpSocket` is what the IPv4 socket and the IPv6 one (:class:`vrrpd.sockets6.Vrrp6Socket`) share:
opening, binding, the options of the family, joining and leaving the group; :class:`PacketSocket` is what
:class:`GarpSocket` and :class:`vrrpd.sockets6.NaSocket` share.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from ipaddress import IPv4Address, IPv6Address

from vrrpd import wire

__all__ = ["GarpSocket", "PacketSocket", "RawVrrpSocket", "VrrpSocket"]

IP_MULTICAST_ALL = 49  # linux/in.h; Python's socket module lacks the constant
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ETH_P_ARP = 0x0806


class RawVrrpSocket:
    """One raw VRRP socket (IP protocol / next header 112) on one interface, of either address family: what
    :class:`VrrpSocket` (IPv4) and :class:`vrrpd.sockets6.Vrrp6Socket` (IPv6) share. A subclass names its
    family, the socket options it sets after ``SO_BINDTODEVICE`` (in that order), the multicast group and how
    it joins and leaves it on the interface, and adds ``send``/``recv_all``."""

    FAMILY: socket.AddressFamily
    LEVEL: int  # IPPROTO_IP or IPPROTO_IPV6: the level of the options below
    GROUP: IPv4Address | IPv6Address
    JOIN: int  # the membership options
    LEAVE: int

    def __init__(self, ifname: str, ifindex: int, *, multicast: bool) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.joined = False
        s = socket.socket(self.FAMILY, socket.SOCK_RAW | socket.SOCK_CLOEXEC, wire.VRRP_PROTO)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            for opt, val in self.options():
                s.setsockopt(self.LEVEL, opt, val)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.multicast = multicast
        if multicast:
            self.join()

    def options(self) -> list[tuple[int, int]]:
        """The (option, value) pairs set at ``LEVEL`` when the socket opens."""
        raise NotImplementedError

    def mreq(self) -> bytes:
        """The membership request for ``GROUP`` on our interface."""
        raise NotImplementedError

    def before_join(self) -> None:
        """What the family needs set before each join (nothing by default)."""

    def join(self) -> None:
        """Join the VRRP group on our interface (idempotent; retried after the link comes back)."""
        if self.joined or not self.multicast:
            return
        self.before_join()
        try:
            self.sock.setsockopt(self.LEVEL, self.JOIN, self.mreq())
        except OSError as e:
            if e.errno != 98:  # EADDRINUSE: already a member
                raise
        self.joined = True

    def leave(self) -> None:
        """Drop the group membership (the interface became unicast-only on reload)."""
        if not self.joined:
            return
        with contextlib.suppress(OSError):
            self.sock.setsockopt(self.LEVEL, self.LEAVE, self.mreq())
        self.joined = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class VrrpSocket(RawVrrpSocket):
    """One raw socket per interface, shared by every instance on it (dispatch is by VRID)."""

    FAMILY = socket.AF_INET
    LEVEL = socket.IPPROTO_IP
    GROUP = wire.VRRP_GROUP
    JOIN = socket.IP_ADD_MEMBERSHIP
    LEAVE = socket.IP_DROP_MEMBERSHIP

    def __init__(self, ifname: str, ifindex: int, *, multicast: bool) -> None:
        self._ident = 0
        super().__init__(ifname, ifindex, multicast=multicast)

    def options(self) -> list[tuple[int, int]]:
        return [
            (socket.IP_HDRINCL, 1),
            (IP_MULTICAST_ALL, 0),
            (socket.IP_MULTICAST_LOOP, 0),
            (socket.IP_MULTICAST_TTL, wire.VRRP_TTL),
        ]

    def mreq(self) -> bytes:
        return struct.pack("=4s4si", wire.VRRP_GROUP.packed, b"\0\0\0\0", self.ifindex)

    def before_join(self) -> None:
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, self.mreq())

    def send(
        self,
        src: IPv4Address,
        dst: IPv4Address,
        adv: wire.Advert | wire.AdvertV3,
        *,
        checksum_as_v2: bool = False,
    ) -> None:
        """One advert: VRRPv2, or VRRPv3 (pseudo-header checksum over ``src``/``dst``, or message-only with
        ``checksum_as_v2``); v2 and v3 instances share the socket."""
        self._ident = (self._ident + 1) & 0xFFFF or 1
        if isinstance(adv, wire.AdvertV3):
            data = wire.encode_ip_v3(src, dst, adv, self._ident, checksum_as_v2=checksum_as_v2)
        else:
            data = wire.encode_ip(src, dst, adv, self._ident)
        self.sock.sendto(data, (str(dst), 0))

    def recv_all(self, limit: int = 256) -> list[bytes]:
        """Everything queued (up to ``limit`` datagrams), without blocking."""
        out: list[bytes] = []
        for _ in range(limit):
            try:
                out.append(self.sock.recv(4096))
            except (BlockingIOError, InterruptedError):
                break
        return out


class PacketSocket:
    """One unbound AF_PACKET socket, send only (protocol 0 receives nothing): frames go out on the interface
    each send names. Shared by :class:`GarpSocket` and :class:`vrrpd.sockets6.NaSocket`."""

    def __init__(self) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s

    def send_frames(self, ifname: str, proto: int, frames: list[bytes], count: int) -> int:
        """``count`` rounds of ``frames`` on ``ifname`` (EtherType ``proto``); the number of frames sent."""
        sent = 0
        for _ in range(count):
            for f in frames:
                self.sock.sendto(f, (ifname, proto))
                sent += 1
        return sent

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class GarpSocket(PacketSocket):
    """One AF_PACKET socket for gratuitous ARP on every interface (send only: protocol 0 receives nothing).

    Not bound to an interface: each send names the interface, which the kernel resolves at that moment, so a
    re-created interface (VLAN, bond, ifdown/ifup of a virtual device: a new ifindex) never leaves a stale
    socket behind that would swallow the first GARP burst after regaining master, and nothing needs pruning
    when instances or interfaces go away on reload."""

    def send(self, ifname: str, mac: bytes, ips: list[IPv4Address], count: int) -> int:
        """``count`` rounds of one GARP per address on ``ifname``; returns the number of frames sent."""
        return self.send_frames(ifname, ETH_P_ARP, [wire.garp_frame(mac, ip) for ip in ips], count)
