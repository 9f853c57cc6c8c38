"""The platform seam: everything vrrpd does to the host, behind one small interface.

:class:`Platform` is what :class:`vrrpd.host.Host` (the daemon's decisions, sans-IO) calls; :class:`Linux` is
the real one (raw VRRP sockets, one AF_PACKET socket for gratuitous ARP, the rtnetlink :class:`Channel`, the
notify queue) and :class:`vrrpd.fakeplatform.FakePlatform` an in-memory one for tests without root.

What comes back from the host is not a call but an input of the core, fed by the driver (``vrrpd.daemon``):
datagrams read from the VRRP sockets (``Host.receive``), netlink messages (``Host.netlink``: link and address
events, request answers, dumps) and the clock (``now``, ``time.monotonic()``: docs/design.md, passed to
every core method).
Methods never wait for the kernel: address requests return a sequence number whose answer arrives later
as a :class:`vrrpd.netlink.Ack`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import TYPE_CHECKING, Protocol, TypeVar

from vrrpd import wire
from vrrpd.netlink import Channel, NlMsg
from vrrpd.sockets import GarpSocket, RawVrrpSocket, VrrpSocket

if TYPE_CHECKING:
    from vrrpd.scripts import NotifyQueue
    from vrrpd.sockets6 import NaSocket, Vrrp6Socket

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface
_S = TypeVar("_S", bound=RawVrrpSocket)

__all__ = ["Linux", "Platform"]

log = logging.getLogger("vrrpd")


class Platform(Protocol):
    """What the core may do to the host. Errors are ``OSError`` (the core logs them and carries on)."""

    def ensure_vrrp(self, ifname: str, index: int, *, multicast: bool, family: int = 4) -> None:
        """Have a VRRP socket of ``family`` (4, or 6 for VRRPv3 over IPv6) on ``ifname`` bound to link
        ``index`` (re-opened when the index changed), a member of 224.0.0.18 / ff02::12 iff ``multicast``.
        Idempotent; a failed join is retried on the next call."""

    def close_vrrp(self, ifname: str, family: int = 4) -> None:
        """Close ``ifname``'s VRRP socket of ``family``, if any."""

    def send_advert(
        self,
        ifname: str,
        src: IPAddress,
        dst: IPAddress,
        advert: wire.Advert | wire.AdvertV3,
        *,
        checksum_as_v2: bool = False,
    ) -> None:
        """Send one advert (VRRPv2, or VRRPv3 over IPv4 or IPv6 after the addresses' family) from
        ``ifname``'s VRRP socket; ``checksum_as_v2``: the message-only VRRPv3 IPv4 checksum."""

    def add_address(self, index: int, address: IPInterface, label: str | None) -> int:
        """Ask for ``address`` on link ``index``, tagged as vrrpd's (IPv6: without DAD); the request's
        sequence number."""

    def del_address(self, index: int, address: IPInterface) -> int:
        """Ask for ``address`` to be removed from link ``index``; the request's sequence number."""

    def dump_links(self) -> int:
        """Ask for every link (answered by LinkMsg(dump=seq)... DumpDone(seq))."""

    def dump_addresses(self) -> int:
        """Ask for every address, IPv4 and IPv6 (AddrMsg(dump=seq)... DumpDone(seq))."""

    def send_garp(self, ifname: str, mac: bytes, ips: Sequence[IPv4Address], count: int) -> None:
        """``count`` rounds of one gratuitous ARP per address on ``ifname``."""

    def send_na(self, ifname: str, mac: bytes, ips: Sequence[IPv6Address], count: int) -> None:
        """``count`` rounds of one unsolicited Neighbor Advertisement (Override set) per address on
        ``ifname``."""

    def run_notify(self, argv: Sequence[str], what: str) -> None:
        """Queue a notify script: they run one after another, in the order queued."""


class Linux:
    """The real platform. The driver reads :attr:`vrrp` sockets and :attr:`nl` on the event loop."""

    def __init__(self, notify: NotifyQueue) -> None:
        self.notify = notify
        self.nl = Channel()
        self.vrrp: dict[str, VrrpSocket] = {}
        self.vrrp6: dict[str, Vrrp6Socket] = {}  # VRRPv3 over IPv6 (vrrpd.sockets6, imported when needed)
        self._garp: GarpSocket | None = None
        self._na: NaSocket | None = None

    def close(self) -> None:
        for s in self.vrrp.values():
            s.close()
        self.vrrp.clear()
        for s6 in self.vrrp6.values():
            s6.close()
        self.vrrp6.clear()
        if self._garp is not None:
            self._garp.close()
            self._garp = None
        if self._na is not None:
            self._na.close()
            self._na = None
        self.nl.close()

    # -- Platform ----------------------------------------------------------------------------------------

    def ensure_vrrp(self, ifname: str, index: int, *, multicast: bool, family: int = 4) -> None:
        if family == 6:
            from vrrpd.sockets6 import Vrrp6Socket

            self._ensure(self.vrrp6, Vrrp6Socket, 6, ifname, index, multicast)
        else:
            self._ensure(self.vrrp, VrrpSocket, 4, ifname, index, multicast)

    def _ensure(
        self, socks: dict[str, _S], kind: type[_S], family: int, ifname: str, index: int, multicast: bool
    ) -> None:
        """The VRRP socket of one family on ``ifname`` (re-opened when the interface was re-created: a new
        ifindex), a member of the group or not as ``multicast`` says (a failed join is retried later)."""
        s = socks.get(ifname)
        if s is not None and s.ifindex != index:
            self.close_vrrp(ifname, family)
            s = None
        if s is None:
            try:
                s = socks[ifname] = kind(ifname, index, multicast=False)
            except OSError as e:
                if e.errno in (errno.EPERM, errno.EACCES):
                    raw = "raw IPv6 socket" if family == 6 else "raw socket"
                    raise OSError(
                        e.errno,
                        f"cannot open a {raw} on {ifname} (needs root or CAP_NET_RAW + CAP_NET_ADMIN)",
                    ) from e
                raise
        if multicast != s.multicast:
            s.multicast = multicast
            if not multicast:
                s.leave()
        if s.multicast and not s.joined:
            try:
                s.join()
            except OSError as e:
                log.warning("%s: cannot join %s yet: %s", ifname, s.GROUP, e)

    def close_vrrp(self, ifname: str, family: int = 4) -> None:
        s: VrrpSocket | Vrrp6Socket | None = (
            self.vrrp6.pop(ifname, None) if family == 6 else self.vrrp.pop(ifname, None)
        )
        if s is not None:
            s.close()

    def send_advert(
        self,
        ifname: str,
        src: IPAddress,
        dst: IPAddress,
        advert: wire.Advert | wire.AdvertV3,
        *,
        checksum_as_v2: bool = False,
    ) -> None:
        if (
            isinstance(src, IPv6Address)
            and isinstance(dst, IPv6Address)
            and isinstance(advert, wire.AdvertV3)
        ):
            s6 = self.vrrp6.get(ifname)
            if s6 is None:
                raise OSError(errno.ENOTCONN, f"no IPv6 VRRP socket on {ifname}")
            s6.send(src, dst, wire.encode_v3(advert, src, dst))
            return
        s = self.vrrp.get(ifname)
        if s is None:
            raise OSError(errno.ENOTCONN, f"no VRRP socket on {ifname}")
        if not isinstance(src, IPv4Address) or not isinstance(dst, IPv4Address):
            raise OSError(errno.EAFNOSUPPORT, f"IPv4 advert with addresses {src} -> {dst}")
        s.send(src, dst, advert, checksum_as_v2=checksum_as_v2)

    def add_address(self, index: int, address: IPInterface, label: str | None) -> int:
        return self.nl.add_address(index, address, label)

    def del_address(self, index: int, address: IPInterface) -> int:
        return self.nl.del_address(index, address)

    def dump_links(self) -> int:
        return self.nl.dump_links()

    def dump_addresses(self) -> int:
        return self.nl.dump_addresses()

    def send_garp(self, ifname: str, mac: bytes, ips: Sequence[IPv4Address], count: int) -> None:
        if self._garp is None:
            self._garp = GarpSocket()
        self._garp.send(ifname, mac, list(ips), count)

    def send_na(self, ifname: str, mac: bytes, ips: Sequence[IPv6Address], count: int) -> None:
        from vrrpd.sockets6 import NaSocket, ipv6_forwarding

        if self._na is None:
            self._na = NaSocket()
        # keepalived: the Router flag when the interface forwards IPv6
        self._na.send(ifname, mac, list(ips), count, router=ipv6_forwarding(ifname))

    def run_notify(self, argv: Sequence[str], what: str) -> None:
        self.notify.put(argv, what)

    # -- for the driver ----------------------------------------------------------------------------------

    def read_netlink(self) -> tuple[list[NlMsg], bool]:
        return self.nl.read()
