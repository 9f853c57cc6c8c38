"""vrrpd's small rtnetlink codec (vrrpd/netlink.py) checked against pyroute2 as an independent encoder and
decoder, and against the kernel in a namespace (add/remove with a label, link events)."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Interface

import pytest
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


def test_garbage_never_crashes_the_parsers() -> None:
    for blob in (b"", b"\x00" * 3, b"\xff" * 40, struct.pack("=IHHII", 8, 16, 0, 0, 0)):
        list(nl._messages(blob))
        nl._parse_addr(blob)
        nl._parse_link(blob)


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
