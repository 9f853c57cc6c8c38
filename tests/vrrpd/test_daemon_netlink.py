"""vrrpd's small rtnetlink codec (vrrpd/netlink.py) checked against pyroute2 as an independent encoder and
decoder, and against the kernel in a namespace (add/remove with a label, link events)."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Interface
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from vrrpd_lab import PY, ROOT, topology

from netns import Lab, wait_until
from vrrpd import netlink as nl


def test_encode_addr_decodes_with_pyroute2() -> None:
    body = nl.encode_addr(7, IPv4Interface("192.0.2.100/24"), "eth0:vip")
    raw = struct.pack("=IHHII", 16 + len(body), nl.RTM_NEWADDR, 0, 1, 0) + body
    m = ifaddrmsg(raw)
    m.decode()
    assert (m["family"], m["prefixlen"], m["index"]) == (socket.AF_INET, 24, 7)
    assert m.get_attr("IFA_LOCAL") == "192.0.2.100" and m.get_attr("IFA_ADDRESS") == "192.0.2.100"
    assert m.get_attr("IFA_LABEL") == "eth0:vip"
    assert nl._parse_addr(body) == nl.Addr(7, IPv4Interface("192.0.2.100/24"), "eth0:vip", False)


def test_parse_pyroute2_messages() -> None:
    a = ifaddrmsg()
    a["header"]["type"] = nl.RTM_NEWADDR
    a["family"], a["prefixlen"], a["flags"], a["index"] = socket.AF_INET, 25, nl.IFA_F_SECONDARY, 3
    a["attrs"] = [("IFA_ADDRESS", "198.51.100.9"), ("IFA_LOCAL", "198.51.100.9"), ("IFA_LABEL", "eth1")]
    a.encode()
    i = ifinfmsg()
    i["header"]["type"] = nl.RTM_NEWLINK
    i["index"], i["flags"] = 3, nl.IFF_UP | nl.IFF_RUNNING
    i["attrs"] = [("IFLA_IFNAME", "eth1"), ("IFLA_ADDRESS", "02:00:00:00:00:09")]
    i.encode()
    msgs = list(nl._messages(bytes(a.data) + bytes(i.data)))
    assert [t for t, *_ in msgs] == [nl.RTM_NEWADDR, nl.RTM_NEWLINK]
    addr = nl._parse_addr(msgs[0][3])
    assert addr == nl.Addr(3, IPv4Interface("198.51.100.9/25"), "eth1", True)
    link = nl._parse_link(msgs[1][3])
    assert link == nl.Link(3, "eth1", nl.IFF_UP | nl.IFF_RUNNING, bytes.fromhex("020000000009"))
    assert link.up
    assert not nl.Link(3, "eth1", nl.IFF_UP, b"").up  # administratively up, no carrier


def _msg(kind: int, body: bytes, seq: int = 0) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def test_short_or_foreign_bodies_parse_to_none() -> None:
    good = nl.encode_addr(7, IPv4Interface("192.0.2.100/24"), "eth0:vip")
    for n in range(8):  # shorter than ifaddrmsg / ifinfomsg
        assert nl._parse_addr(good[:n]) is None
    for n in range(16):
        assert nl._parse_link(b"\x00" * n) is None
    inet6 = bytes([socket.AF_INET6]) + good[1:]
    assert nl._parse_addr(inet6) is None  # not IPv4: not ours
    header_only = good[:8]
    assert nl._parse_addr(header_only) is None  # no IFA_LOCAL/IFA_ADDRESS
    # an attribute running past the end is dropped, not read out of bounds: the address is then missing
    cut = header_only + struct.pack("=HH", 8 + 100, nl.IFA_LOCAL) + bytes([192, 0, 2, 1])
    assert nl._parse_addr(cut) is None
    wrong_size = header_only + struct.pack("=HH", 4 + 3, nl.IFA_LOCAL) + bytes([192, 0, 2]) + b"\0"
    assert nl._parse_addr(wrong_size) is None
    link = nl._parse_link(struct.pack("=BxHiII", 0, 1, 5, nl.IFF_UP, 0) + b"\xff\xff")  # stray bytes
    assert link == nl.Link(5, "", nl.IFF_UP, b"")


@given(
    addrs=st.lists(
        st.tuples(
            st.integers(1, 2**31 - 1),
            st.ip_addresses(v=4),
            st.integers(0, 32),
            st.one_of(st.none(), st.text("abcdefgh0123:.", min_size=1, max_size=15)),
        ),
        max_size=5,
    ),
    tail=st.binary(max_size=40),
)
@settings(max_examples=200, deadline=None)
def test_messages_yield_each_whole_message_then_stop_at_garbage(
    addrs: list[tuple[int, Any, int, str | None]], tail: bytes
) -> None:
    wanted = [nl.Addr(i, IPv4Interface((ip, plen)), label or "", False) for i, ip, plen, label in addrs]
    buf = b"".join(
        _msg(nl.RTM_NEWADDR, nl.encode_addr(a.index, a.address, a.label or None), seq=n)
        for n, a in enumerate(wanted)
    )
    # a tail too short for a header, or one whose length field does not fit: never a message
    tail = tail[:15] if len(tail) < 16 else struct.pack("=I", 16 + len(tail)) + tail[4:]
    got = list(nl._messages(buf + tail))
    assert [(k, seq) for k, _f, seq, _b in got] == [(nl.RTM_NEWADDR, n) for n in range(len(wanted))]
    assert [nl._parse_addr(body) for *_h, body in got] == wanted


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_parse_to_none_or_a_value(blob: bytes) -> None:
    for _kind, _flags, _seq, body in nl._messages(blob):
        assert len(body) <= len(blob) - 16
    link = nl._parse_link(blob)
    assert link is None if len(blob) < 16 else isinstance(link, nl.Link)
    assert len(link.mac) <= len(blob) if link else True
    addr = nl._parse_addr(blob)  # never raises
    assert addr is None or addr.address.version == 4


def test_prefix_length_over_32_parses_to_none() -> None:
    body = (
        struct.pack("=BBBBi", socket.AF_INET, 200, 0, 0, 3) + struct.pack("=HH", 8, nl.IFA_LOCAL) + bytes(4)
    )
    assert nl._parse_addr(body) is None


@pytest.mark.netns
def test_against_the_kernel(lab: Lab) -> None:
    _sw, (h,) = topology(lab, 1)
    code = r"""
import socket, sys
from ipaddress import IPv4Interface
from vrrpd import netlink as nl
n = nl.Netlink()
link = n.link("eth0")
mon = nl.open_monitor()
vip = IPv4Interface("192.0.2.100/24")
print(n.add_address(link.index, vip, "eth0:vip"), n.add_address(link.index, vip, "eth0:vip"))
print(sorted((str(a.address), a.label, a.secondary) for a in n.addresses(link.index)))
events, overflow = nl.read_events(mon)
print(any(e.index == link.index and e.link is None for e in events), overflow)
print(n.del_address(link.index, vip), n.del_address(link.index, vip))
print(link.up, len(link.mac))
"""
    out = h.run([PY, "-c", code], env={"PYTHONPATH": ROOT}).stdout.splitlines()
    assert out[0] == "True False"  # added, then "already there"
    assert out[1] == "[('192.0.2.100/24', 'eth0:vip', True), ('192.0.2.21/24', 'eth0', False)]"
    assert out[2] == "True False"  # the address event arrived on the monitor socket
    assert out[3] == "True False"  # removed, then "not there"
    assert out[4] == "True 6"
    wait_until(lambda: not h.has_address("192.0.2.100"), 2)
