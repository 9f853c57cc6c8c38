"""Kernel sockets: the VRRP raw socket (IP protocol 112) and the AF_PACKET socket gratuitous ARPs go out on.

The VRRP socket follows keepalived's recipe (``vrrp_if.c``): ``SOCK_RAW`` protocol 112 bound to the interface
with ``SO_BINDTODEVICE``, ``IP_HDRINCL`` (we write the IP header: TOS 0xc0, TTL 255, an IP ID that increments
per packet), a join of 224.0.0.18 on that interface only, ``IP_MULTICAST_ALL`` 0 (so memberships of other
sockets do not leak in) and ``IP_MULTICAST_LOOP`` 0 (we never hear our own adverts).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from ipaddress import IPv4Address

from vrrpd import wire

__all__ = ["GarpSocket", "VrrpSocket"]

IP_MULTICAST_ALL = 49  # linux/in.h; Python's socket module lacks the constant
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ETH_P_ARP = 0x0806


class VrrpSocket:
    """One raw socket per interface, shared by every instance on it (dispatch is by VRID)."""

    def __init__(self, ifname: str, ifindex: int, *, multicast: bool) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.joined = False
        self._ident = 0
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, wire.VRRP_PROTO)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, wire.VRRP_TTL)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.multicast = multicast
        if multicast:
            self.join()

    def _mreqn(self) -> bytes:
        return struct.pack("=4s4si", wire.VRRP_GROUP.packed, b"\0\0\0\0", self.ifindex)

    def join(self) -> None:
        """Join 224.0.0.18 on our interface (idempotent; retried after the link comes back)."""
        if self.joined or not self.multicast:
            return
        mreqn = self._mreqn()
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        try:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        except OSError as e:
            if e.errno != 98:  # EADDRINUSE: already a member
                raise
        self.joined = True

    def leave(self) -> None:
        """Drop the 224.0.0.18 membership (the interface became unicast-only on reload)."""
        if not self.joined:
            return
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, self._mreqn())
        self.joined = False

    def fileno(self) -> int:
        return self.sock.fileno()

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

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class GarpSocket:
    """One AF_PACKET socket for gratuitous ARP on every interface (send only: protocol 0 receives nothing).

    Not bound to an interface: each send names the interface, which the kernel resolves at that moment, so a
    re-created interface (VLAN, bond, ifdown/ifup of a virtual device: a new ifindex) never leaves a stale
    socket behind that would swallow the first GARP burst after regaining master, and nothing needs pruning
    when instances or interfaces go away on reload."""

    def __init__(self) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s

    def send(self, ifname: str, mac: bytes, ips: list[IPv4Address], count: int) -> int:
        """``count`` rounds of one GARP per address on ``ifname``; returns the number of frames sent."""
        frames = [wire.garp_frame(mac, ip) for ip in ips]
        sent = 0
        for _ in range(count):
            for f in frames:
                self.sock.sendto(f, (ifname, ETH_P_ARP))
                sent += 1
        return sent

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
