"""An in-memory host for :class:`vrrpd.host.Host`: links, IPv4 addresses (and who added each), the calls made,
and the netlink messages a kernel would send back. Tests only (never imported by the daemon).

Like the kernel, a request takes effect when it is made and its answer (an event, then the :class:`Ack`)
is queued; :meth:`FakePlatform.take` hands the queue to the test, which feeds it to ``Host.netlink``.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address, ip_interface

from vrrpd import wire
from vrrpd.netlink import IFF_RUNNING, IFF_UP, VRRPD_PROTO, Ack, Addr, AddrMsg, DumpDone, Link, LinkMsg, NlMsg

__all__ = ["Call", "FakePlatform"]

UP = IFF_UP | IFF_RUNNING
IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface


@dataclass(frozen=True, slots=True)
class Call:
    """One platform call: ``kind`` (advert, add, del, garp, notify, open, close) and its arguments."""

    kind: str
    args: tuple[object, ...]


class FakePlatform:
    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.addrs: dict[tuple[int, IPAddress], Addr] = {}
        self.by_operator: set[tuple[int, IPAddress]] = set()  # present and added by someone else
        self.calls: list[Call] = []
        self.inbox: list[NlMsg] = []
        self.sockets: dict[str, tuple[int, bool]] = {}  # ifname -> (index, multicast)
        self.sockets6: dict[str, tuple[int, bool]] = {}  # the IPv6 VRRP sockets (VRRPv3)
        self.sent: list[tuple[str, IPAddress, IPAddress, wire.Advert | wire.AdvertV3, bool]] = []
        self.fail_dumps = 0  # the next N dump requests are answered with EBUSY
        self.fail_open: set[str] = set()
        self.violations: list[str] = []  # vrrpd removed an address it did not add
        self._seq = 0

    # -- the test's side -----------------------------------------------------------------------------

    def take(self) -> list[NlMsg]:
        out, self.inbox = self.inbox, []
        return out

    def add_link(self, name: str, index: int, *, up: bool = True) -> Link:
        link = Link(index, name, UP if up else 0, bytes([2, 0, 0, 0, 0, index & 0xFF]))
        self.links[index] = link
        self.inbox.append(LinkMsg(link))
        return link

    def set_link(self, name: str, up: bool) -> None:
        link = self._link(name)
        new = Link(link.index, name, UP if up else 0, link.mac)
        self.links[link.index] = new
        self.inbox.append(LinkMsg(new))

    def delete_link(self, name: str) -> None:
        link = self._link(name)
        del self.links[link.index]
        for key in [k for k in self.addrs if k[0] == link.index]:
            del self.addrs[key]
            self.by_operator.discard(key)
        self.inbox.append(LinkMsg(link, deleted=True))

    def operator_add(self, name: str, cidr: str, flags: int = 0) -> None:
        """``ip addr add CIDR dev NAME`` (an operator, or the host's own address; IPv6 ``flags`` such as
        ``IFA_F_TENTATIVE``)."""
        link = self._link(name)
        iface = ip_interface(cidr)
        a = Addr(link.index, iface, name if iface.version == 4 else "", False, 0, flags)
        key = (link.index, a.address.ip)
        if key in self.addrs:
            return
        self.addrs[key] = a
        self.by_operator.add(key)
        self.inbox.append(AddrMsg(a))

    def operator_del(self, name: str, ip: str) -> None:
        """``ip addr del`` by someone else."""
        key = (self._link(name).index, ip_address(ip))
        a = self.addrs.pop(key, None)
        self.by_operator.discard(key)
        if a is not None:
            self.inbox.append(AddrMsg(a, deleted=True))

    def has(self, name: str, ip: str) -> bool:
        return (self._link(name).index, ip_address(ip)) in self.addrs

    def of(self, kind: str) -> list[tuple[object, ...]]:
        return [c.args for c in self.calls if c.kind == kind]

    def _link(self, name: str) -> Link:
        for link in self.links.values():
            if link.name == name:
                return link
        raise KeyError(name)

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    # -- Platform ------------------------------------------------------------------------------------

    def ensure_vrrp(self, ifname: str, index: int, *, multicast: bool, family: int = 4) -> None:
        if ifname in self.fail_open:
            raise OSError(errno.ENODEV, f"cannot open {ifname}")
        socks, kind = (self.sockets6, "open6") if family == 6 else (self.sockets, "open")
        if socks.get(ifname) != (index, multicast):
            self.calls.append(Call(kind, (ifname, index, multicast)))
        socks[ifname] = (index, multicast)

    def close_vrrp(self, ifname: str, family: int = 4) -> None:
        socks, kind = (self.sockets6, "close6") if family == 6 else (self.sockets, "close")
        if socks.pop(ifname, None) is not None:
            self.calls.append(Call(kind, (ifname,)))

    def send_advert(
        self,
        ifname: str,
        src: IPAddress,
        dst: IPAddress,
        advert: wire.Advert | wire.AdvertV3,
        *,
        checksum_as_v2: bool = False,
    ) -> None:
        if ifname not in (self.sockets6 if isinstance(src, IPv6Address) else self.sockets):
            raise OSError(errno.ENOTCONN, "no socket")
        self.calls.append(Call("advert", (ifname, src, dst, advert.priority)))
        self.sent.append((ifname, src, dst, advert, checksum_as_v2))

    def add_address(self, index: int, address: IPInterface, label: str | None) -> int:
        seq = self._next()
        self.calls.append(Call("add", (index, address)))
        key = (index, address.ip)
        if index not in self.links:
            self.inbox.append(Ack(seq, errno.ENODEV))
        elif key in self.addrs:
            self.inbox.append(Ack(seq, errno.EEXIST))
        else:
            name = label or self.links[index].name if address.version == 4 else ""
            a = Addr(index, address, name, False, VRRPD_PROTO)
            self.addrs[key] = a
            self.inbox += [AddrMsg(a), Ack(seq, 0)]
        return seq

    def del_address(self, index: int, address: IPInterface) -> int:
        seq = self._next()
        self.calls.append(Call("del", (index, address)))
        key = (index, address.ip)
        if key in self.by_operator:
            self.violations.append(f"removed {address} on {index}, added by someone else")
        a = self.addrs.pop(key, None)
        self.by_operator.discard(key)
        if a is None:
            self.inbox.append(Ack(seq, errno.EADDRNOTAVAIL))
        else:
            self.inbox += [AddrMsg(a, deleted=True), Ack(seq, 0)]
        return seq

    def dump_links(self) -> int:
        seq = self._next()
        if self.fail_dumps:
            self.fail_dumps -= 1
            self.inbox.append(Ack(seq, errno.EBUSY))
            return seq
        self.inbox += [LinkMsg(link, dump=seq) for link in self.links.values()]
        self.inbox.append(DumpDone(seq))
        return seq

    def dump_addresses(self) -> int:
        seq = self._next()
        if self.fail_dumps:
            self.fail_dumps -= 1
            self.inbox.append(Ack(seq, errno.EBUSY))
            return seq
        self.inbox += [AddrMsg(a, dump=seq) for a in self.addrs.values()]
        self.inbox.append(DumpDone(seq))
        return seq

    def send_garp(self, ifname: str, mac: bytes, ips: Sequence[IPv4Address], count: int) -> None:
        self.calls.append(Call("garp", (ifname, tuple(ips), count)))

    def send_na(self, ifname: str, mac: bytes, ips: Sequence[IPv6Address], count: int) -> None:
        self.calls.append(Call("na", (ifname, tuple(ips), count)))

    def run_notify(self, argv: Sequence[str], what: str) -> None:
        self.calls.append(Call("notify", tuple(argv)))
