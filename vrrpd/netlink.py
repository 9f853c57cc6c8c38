"""A small rtnetlink client: link and address (IPv4, IPv6) queries, address add/remove, link/address events.

Why not pyroute2 here: importing ``pyroute2.iproute`` costs ~7 MiB of RSS and ~150 modules (the package's
``__init__`` imports every subsystem: ~13 MiB), which alone breaks the idle budget of 25 MiB on top of
asyncio + uvloop (~22 MiB). The handful of messages vrrpd needs (RTM_{GET,NEW,DEL}ADDR, RTM_GETLINK and the
RTMGRP_LINK / RTMGRP_IPV4_IFADDR multicast groups) are encoded here with :mod:`struct`; the namespace tests
check the result with ``ip -j addr`` and pyroute2 from the outside.

The daemon uses :class:`Channel`: one non-blocking socket, subscribed to link and IPv4 address events, that
also carries vrrpd's own requests. The kernel runs an rtnetlink request inside ``sendmsg`` (so "send advert,
add VIPs, send GARP" still happens in one event-loop callback, in that order), and the acknowledgement, the
dump parts and the events come back on the same socket and are read on the loop: nothing ever waits for the
kernel on the event loop (a stall there longer than Master_Down_Interval would cause a failover). Addresses
vrrpd adds carry ``IFA_PROTO`` :data:`VRRPD_PROTO` (Linux 6.1+), so vrrpd knows its own after a crash.
:class:`Netlink` (synchronous, with a timeout) is kept for tools and tests.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

__all__ = [
    "VRRPD_PROTO",
    "Ack",
    "Addr",
    "AddrMsg",
    "Channel",
    "DumpDone",
    "Link",
    "LinkEvent",
    "LinkMsg",
    "Netlink",
    "NetlinkError",
    "NlMsg",
    "encode_addr",
    "open_monitor",
    "read_events",
]

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST = 1, 2, 3, 4
IFA_CACHEINFO, IFA_FLAGS = 6, 8
IFA_PROTO = 11  # Linux 6.1+: who added the address (u8); older kernels ignore it
VRRPD_PROTO = 0x76  # our IFA_PROTO value ("v"): an address carrying it was added by vrrpd
IFA_F_SECONDARY = 0x01
IFA_F_NODAD, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x02, 0x08, 0x20, 0x40
RT_SCOPE_LINK = 253
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RT_SCOPE_UNIVERSE = 0

_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBi")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    pass


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    flags: int
    mac: bytes

    @property
    def up(self) -> bool:
        """Administratively up and operationally running (carrier present)."""
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_RUNNING)


@dataclass(frozen=True, slots=True)
class Addr:
    index: int
    address: IPv4Interface | IPv6Interface
    label: str
    secondary: bool
    proto: int = 0  # IFA_PROTO (0: unknown; VRRPD_PROTO: added by vrrpd)
    flags: int = 0  # IFA_FLAGS (IPv6: IFA_F_TENTATIVE, IFA_F_DADFAILED, IFA_F_NODAD ...)

    @property
    def usable(self) -> bool:
        """Usable as a source: not tentative (DAD pending) and DAD did not fail."""
        return not self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A link appeared/changed (``link`` set, ``deleted`` False), vanished (``deleted``), or an IPv4
    address changed on ``index`` (``link`` None)."""

    index: int
    link: Link | None
    deleted: bool = False


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _RTATTR.pack(4 + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        ln, kind = _RTATTR.unpack_from(buf, off)
        if ln < 4 or off + ln > end:
            break
        out[kind & 0x7FFF] = buf[off + 4 : off + ln]
        off += _align(ln)
    return out


def _messages(buf: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) for each netlink message in ``buf``."""
    off = 0
    while off + _NLMSGHDR.size <= len(buf):
        ln, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(buf, off)
        if ln < _NLMSGHDR.size or off + ln > len(buf):
            break
        yield kind, flags, seq, buf[off + _NLMSGHDR.size : off + ln]
        off += _align(ln)


def _parse_link(body: bytes) -> Link | None:
    if len(body) < _IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    at = _attrs(body, _IFINFOMSG.size, len(body))
    name = at.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
    return Link(index=index, name=name, flags=flags, mac=at.get(IFLA_ADDRESS, b""))


def _parse_addr(body: bytes) -> Addr | None:
    if len(body) < _IFADDRMSG.size:
        return None
    family, plen, flags, _scope, index = _IFADDRMSG.unpack_from(body)
    if family == socket.AF_INET6:
        return _parse_addr6(body, plen, flags, index)
    if family != socket.AF_INET:
        return None
    at = _attrs(body, _IFADDRMSG.size, len(body))
    raw = at.get(IFA_LOCAL) or at.get(IFA_ADDRESS)
    if raw is None or len(raw) != 4:
        return None
    label = at.get(IFA_LABEL, b"").split(b"\0", 1)[0].decode(errors="replace")
    proto = at.get(IFA_PROTO, b"")
    if plen > 32:
        return None
    return Addr(
        index=index,
        address=IPv4Interface((IPv4Address(raw), plen)),
        label=label,
        secondary=bool(flags & IFA_F_SECONDARY),
        proto=proto[0] if len(proto) == 1 else 0,
    )


def _parse_addr6(body: bytes, plen: int, flags: int, index: int) -> Addr | None:
    at = _attrs(body, _IFADDRMSG.size, len(body))
    raw = at.get(IFA_ADDRESS) or at.get(IFA_LOCAL)
    if raw is None or len(raw) != 16 or plen > 128:
        return None
    xflags = at.get(IFA_FLAGS, b"")
    if len(xflags) == 4:
        flags = struct.unpack("=I", xflags)[0]
    proto = at.get(IFA_PROTO, b"")
    return Addr(
        index=index,
        address=IPv6Interface((IPv6Address(raw), plen)),
        label="",
        secondary=False,
        proto=proto[0] if len(proto) == 1 else 0,
        flags=flags,
    )


def encode_addr(index: int, addr: IPv4Interface | IPv6Interface, label: str | None, proto: int = 0) -> bytes:
    """The body (ifaddrmsg + attributes) of an RTM_NEWADDR / RTM_DELADDR request.

    IPv6 addresses are added as keepalived adds VIPs: without duplicate address detection (``IFA_F_NODAD``:
    usable at once, never stuck ``dadfailed`` after a transient split brain), and a /128 deprecated
    (preferred lifetime 0: never chosen as a source address)."""
    if isinstance(addr, IPv6Interface):
        body = _IFADDRMSG.pack(socket.AF_INET6, addr.network.prefixlen, IFA_F_NODAD, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, addr.ip.packed) + _attr(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
        if addr.network.prefixlen == 128:
            body += _attr(IFA_CACHEINFO, struct.pack("=IIII", 0, 0xFFFFFFFF, 0, 0))
        if proto:
            body += _attr(IFA_PROTO, bytes([proto]))
        return body
    body = _IFADDRMSG.pack(socket.AF_INET, addr.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += _attr(IFA_LOCAL, addr.ip.packed) + _attr(IFA_ADDRESS, addr.ip.packed)
    if label:
        body += _attr(IFA_LABEL, label.encode() + b"\0")
    if proto:
        body += _attr(IFA_PROTO, bytes([proto]))
    return body


class Netlink:
    """Synchronous rtnetlink requests on one NETLINK_ROUTE socket."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._sock.settimeout(5.0)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        self._seq += 1
        seq = self._seq
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body
        self._sock.send(msg)
        out: list[tuple[int, bytes]] = []
        while True:
            buf = self._sock.recv(1 << 16)
            for mtype, _mflags, mseq, mbody in _messages(buf):
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", mbody)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return out
                out.append((mtype, mbody))

    def links(self) -> dict[int, Link]:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        out: dict[int, Link] = {}
        for mtype, mbody in self._request(RTM_GETLINK, NLM_F_DUMP, body):
            if mtype == RTM_NEWLINK:
                link = _parse_link(mbody)
                if link is not None:
                    out[link.index] = link
        return out

    def link(self, name: str) -> Link | None:
        for link in self.links().values():
            if link.name == name:
                return link
        return None

    def addresses(self, index: int | None = None) -> list[Addr]:
        body = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
        out: list[Addr] = []
        for mtype, mbody in self._request(RTM_GETADDR, NLM_F_DUMP, body):
            if mtype == RTM_NEWADDR:
                a = _parse_addr(mbody)
                if a is not None and (index is None or a.index == index):
                    out.append(a)
        return out

    def add_address(self, index: int, addr: IPv4Interface, label: str | None = None) -> bool:
        """Add ``addr`` to link ``index``; False if it was already there."""
        try:
            self._request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, encode_addr(index, addr, label))
        except NetlinkError as e:
            if e.errno == errno.EEXIST:
                return False
            raise
        return True

    def del_address(self, index: int, addr: IPv4Interface) -> bool:
        """Remove ``addr`` from link ``index``; False if it was not there."""
        try:
            self._request(RTM_DELADDR, NLM_F_ACK, encode_addr(index, addr, None))
        except NetlinkError as e:
            if e.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True


def open_monitor() -> socket.socket:
    """A non-blocking netlink socket subscribed to link and IPv4 address events (read it on the loop)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    s.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR))
    s.setblocking(False)
    return s


def read_events(sock: socket.socket) -> tuple[list[LinkEvent], bool]:
    """Drain ``sock``: (events, overflowed). On overflow (ENOBUFS) the caller must re-read the full state."""
    events: list[LinkEvent] = []
    overflow = False
    while True:
        try:
            buf = sock.recv(1 << 16)
        except BlockingIOError:
            break
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                overflow = True
                continue
            raise
        for mtype, _f, _s, body in _messages(buf):
            if mtype in (RTM_NEWLINK, RTM_DELLINK):
                link = _parse_link(body)
                if link is not None:
                    events.append(LinkEvent(link.index, link, deleted=mtype == RTM_DELLINK))
            elif mtype in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= _IFADDRMSG.size:
                events.append(LinkEvent(_IFADDRMSG.unpack_from(body)[4], None))
    return events, overflow


# --------------------------------------------------------------------------------------- the async channel


@dataclass(frozen=True, slots=True)
class LinkMsg:
    """A link appeared or changed (``deleted`` False) or vanished. ``dump``: the seq of the dump it is part
    of (None: an event)."""

    link: Link
    deleted: bool = False
    dump: int | None = None


@dataclass(frozen=True, slots=True)
class AddrMsg:
    """An address (IPv4 or IPv6) appeared, changed or vanished (``deleted``); ``dump`` as for
    :class:`LinkMsg`."""

    addr: Addr
    deleted: bool = False
    dump: int | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to request ``seq``: ``error`` 0 (done) or an errno."""

    seq: int
    error: int


@dataclass(frozen=True, slots=True)
class DumpDone:
    seq: int


NlMsg = LinkMsg | AddrMsg | Ack | DumpDone


def parse_messages(buf: bytes) -> list[NlMsg]:
    """Every message of one datagram read from a :class:`Channel`, as typed records (garbage is skipped)."""
    out: list[NlMsg] = []
    for mtype, mflags, mseq, body in _messages(buf):
        dump = mseq if mflags & NLM_F_MULTI else None
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            link = _parse_link(body)
            if link is not None:
                out.append(LinkMsg(link, mtype == RTM_DELLINK, dump))
        elif mtype in (RTM_NEWADDR, RTM_DELADDR):
            a = _parse_addr(body)
            if a is not None:
                out.append(AddrMsg(a, mtype == RTM_DELADDR, dump))
        elif mtype == NLMSG_DONE:
            out.append(DumpDone(mseq))
        elif mtype == NLMSG_ERROR and len(body) >= 4:
            out.append(Ack(mseq, -struct.unpack_from("=i", body)[0]))
    return out


class Channel:
    """One non-blocking NETLINK_ROUTE socket: link and address events, and our requests, whose answers
    (:class:`Ack`, dump parts, :class:`DumpDone`) arrive with the events. Never waits."""

    def __init__(self) -> None:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self._seq = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> int:
        """Send one request; its sequence number (the answer comes back through :meth:`read`)."""
        self._seq = self._seq % 0x7FFFFFFF + 1
        seq = self._seq
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body
        self.sock.send(msg)
        return seq

    def add_address(self, index: int, addr: IPv4Interface | IPv6Interface, label: str | None) -> int:
        body = encode_addr(index, addr, label, VRRPD_PROTO)
        return self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def del_address(self, index: int, addr: IPv4Interface | IPv6Interface) -> int:
        return self.request(RTM_DELADDR, NLM_F_ACK, encode_addr(index, addr, None))

    def dump_links(self) -> int:
        return self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))

    def dump_addresses(self) -> int:
        # every family: IPv6 link-local sources and VIPs (VRRPv3) as well as IPv4
        return self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))

    def read(self, limit: int = 256) -> tuple[list[NlMsg], bool]:
        """Everything queued (up to ``limit`` datagrams): (messages, overflowed). After an overflow (ENOBUFS)
        events and answers were lost: the caller must re-read the whole state."""
        out: list[NlMsg] = []
        overflow = False
        for _ in range(limit):
            try:
                buf = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    overflow = True
                    continue
                raise
            out.extend(parse_messages(buf))
        return out, overflow
