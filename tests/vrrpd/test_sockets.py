"""The VRRP sockets of both families are one implementation (vrrpd.sockets.RawVrrpSocket): what each asks of
the kernel, in order, on a recording stand-in for the socket (no privileges needed; the real sockets are
exercised by the netns tests, test_netns_vrrpd.py and test_netns_v3.py)."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest

from vrrpd import sockets, sockets6, wire

BIND = (socket.SOL_SOCKET, sockets.SO_BINDTODEVICE, b"eth0")
RCVBUF = (socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)


class FakeSock:
    """Records setsockopt/sendto calls; ``fail`` maps an option to the errno its setsockopt raises."""

    made: list[FakeSock]

    def __init__(self, family: int, kind: int, proto: int) -> None:
        self.args = (family, kind, proto)
        self.calls: list[tuple[int, int, Any]] = []
        self.sent: list[tuple[bytes, Any]] = []
        self.fail: dict[int, int] = {}
        self.closed = False
        self.blocking = True
        FakeSock.made.append(self)

    def setsockopt(self, level: int, opt: int, val: Any) -> None:
        self.calls.append((level, opt, val))
        if opt in self.fail:
            raise OSError(self.fail[opt], "refused")

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[FakeSock]:
    FakeSock.made = []
    monkeypatch.setattr(socket, "socket", FakeSock)
    return FakeSock.made


def test_ipv4_socket_options_join_and_leave(fake: list[FakeSock]) -> None:
    s = sockets.VrrpSocket("eth0", 7, multicast=True)
    (k,) = fake
    mreqn = struct.pack("=4s4si", wire.VRRP_GROUP.packed, b"\0\0\0\0", 7)
    ip = socket.IPPROTO_IP
    assert k.args == (socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 112) and not k.blocking
    assert k.calls == [
        BIND,
        (ip, socket.IP_HDRINCL, 1),
        (ip, sockets.IP_MULTICAST_ALL, 0),
        (ip, socket.IP_MULTICAST_LOOP, 0),
        (ip, socket.IP_MULTICAST_TTL, 255),
        RCVBUF,
        (ip, socket.IP_MULTICAST_IF, mreqn),
        (ip, socket.IP_ADD_MEMBERSHIP, mreqn),
    ]
    assert s.joined and s.GROUP == wire.VRRP_GROUP
    s.join()  # idempotent
    s.leave()
    s.leave()
    assert k.calls[8:] == [(ip, socket.IP_DROP_MEMBERSHIP, mreqn)] and not s.joined
    s.close()
    assert k.closed


def test_ipv6_socket_options_join_and_leave(fake: list[FakeSock]) -> None:
    s = sockets6.Vrrp6Socket("eth0", 7, multicast=True)
    (k,) = fake
    mreq = wire.VRRP_GROUP6.packed + struct.pack("@I", 7)
    v6 = socket.IPPROTO_IPV6
    assert k.args == (socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 112) and not k.blocking
    assert k.calls == [
        BIND,
        (v6, socket.IPV6_RECVHOPLIMIT, 1),
        (v6, socket.IPV6_RECVPKTINFO, 1),
        (v6, socket.IPV6_MULTICAST_HOPS, 255),
        (v6, socket.IPV6_UNICAST_HOPS, 255),
        (v6, socket.IPV6_MULTICAST_LOOP, 0),
        (v6, socket.IPV6_MULTICAST_IF, 7),
        (v6, socket.IPV6_TCLASS, 0xC0),
        (v6, sockets6.IPV6_MULTICAST_ALL, 0),
        RCVBUF,
        (v6, socket.IPV6_JOIN_GROUP, mreq),
    ]
    assert s.joined and s.GROUP == wire.VRRP_GROUP6
    s.leave()
    assert k.calls[-1] == (v6, socket.IPV6_LEAVE_GROUP, mreq) and not s.joined


@pytest.mark.parametrize("kind", [sockets.VrrpSocket, sockets6.Vrrp6Socket])
def test_join_errors_and_unicast(monkeypatch: pytest.MonkeyPatch, kind: type[sockets.RawVrrpSocket]) -> None:
    made: list[FakeSock] = []

    def failing(errno_: int) -> type[FakeSock]:
        class F(FakeSock):
            def __init__(self, *a: int) -> None:
                super().__init__(*a)
                self.fail = {kind.JOIN: errno_}
                made.append(self)

        return F

    FakeSock.made = []
    monkeypatch.setattr(socket, "socket", failing(errno.EADDRINUSE))
    assert kind("eth0", 3, multicast=True).joined  # already a member: joined
    monkeypatch.setattr(socket, "socket", failing(errno.ENODEV))
    s = kind("eth0", 3, multicast=False)  # unicast: no join attempted
    assert not s.joined and all(c[1] != kind.JOIN for c in made[-1].calls)
    s.multicast = True
    with pytest.raises(OSError) as e:
        s.join()
    assert e.value.errno == errno.ENODEV and not s.joined
    with pytest.raises(OSError):
        kind("eth0", 3, multicast=True)


@pytest.mark.parametrize("kind", [sockets.VrrpSocket, sockets6.Vrrp6Socket])
def test_a_failed_option_closes_the_socket(
    monkeypatch: pytest.MonkeyPatch, kind: type[sockets.RawVrrpSocket]
) -> None:
    class F(FakeSock):
        def setsockopt(self, level: int, opt: int, val: Any) -> None:
            if opt == socket.SO_RCVBUF:
                raise OSError(errno.EPERM, "no")

    FakeSock.made = []
    monkeypatch.setattr(socket, "socket", F)
    with pytest.raises(OSError):
        kind("eth0", 3, multicast=False)
    assert FakeSock.made[0].closed


def test_garp_and_na_share_the_packet_socket(fake: list[FakeSock]) -> None:
    from ipaddress import IPv4Address, IPv6Address

    mac = bytes.fromhex("00005e000105")
    g = sockets.GarpSocket()
    assert g.send("eth0", mac, [IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")], 3) == 6
    n = sockets6.NaSocket()
    assert n.send("eth1", mac, [IPv6Address("2001:db8::1")], 2, router=True) == 2
    gk, nk = fake
    assert gk.args == nk.args == (socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    assert [a for _, a in gk.sent] == [("eth0", 0x0806)] * 6
    assert [d for d, _ in gk.sent[:2]] == [wire.garp_frame(mac, IPv4Address(f"192.0.2.{i}")) for i in (1, 2)]
    assert nk.sent == [(wire.na_frame(mac, IPv6Address("2001:db8::1"), router=True), ("eth1", 0x86DD))] * 2
    g.close()
    n.close()
    assert gk.closed and nk.closed
