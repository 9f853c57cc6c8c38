"""The VRRPv3 codec against a real peer: Debian's keepalived 2.2.7 in v3 mode, on a real kernel.

The daemon does not speak v3 yet (docs/vrrpd.md), so a small sender built only from ``vrrpd.wire`` plays the
master: it sends priority-200 adverts every 0.2 s over IPv4 (``IP_HDRINCL`` socket, ``encode_ip_v3``) and
IPv6 (``AF_INET6`` raw socket from the link-local address, hop limit 255, the checksum computed by
``encode_v3``, not by the kernel). keepalived (priority 100, ``advert_int 0.1``) must take them: it
stays BACKUP, logs that it learnt the 200 ms interval from them (its ``-D`` detail log), and becomes MASTER
once they stop. keepalived verifies IPv6 checksums in the kernel (``IPV6_CHECKSUM``), so a wrong one would
be dropped silently and it would take over. With the RFC 9568 message-only IPv4 checksum
(``checksum_as_v2``) keepalived 2.2.7 logs "Invalid VRRPv3 checksum" and takes over: why the pseudo-header
form is the default.
"""

from __future__ import annotations

import time

import pytest
from vrrpd_lab import PY, ROOT

from netns import Host, Lab, Proc, keepalived, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.keepalived]

VIP4 = "192.0.2.120"
VIP6 = "2001:db8::120"
IPV6_ON = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
SLACK = 5.0  # bounds on a busy machine; the takeover itself is 3 x 0.2 + skew = 0.68 s after the last advert

SENDER = r"""
import socket, struct, sys, time
from ipaddress import IPv4Address, IPv6Address
from vrrpd import wire

as_v2 = sys.argv[1] == "message-only"
src4 = IPv4Address(sys.argv[2])
ifindex = socket.if_nametoindex("eth0")
src6 = None
for line in open("/proc/net/if_inet6"):
    f = line.split()
    if f[5] == "eth0" and f[3] == "20":  # link scope
        src6 = IPv6Address(bytes.fromhex(f[0]))
assert src6 is not None, "no IPv6 link-local on eth0"

s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s4.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
s4.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)
s6.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0xC0)

adv4 = wire.AdvertV3(61, 200, 20, (IPv4Address(sys.argv[3]),))
adv6 = wire.AdvertV3(62, 200, 20, (IPv6Address(sys.argv[4]),), family=6)
pktinfo = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, src6.packed + struct.pack("@I", ifindex))]
n = 0
while True:
    s4.sendto(wire.encode_ip_v3(src4, wire.VRRP_GROUP, adv4, checksum_as_v2=as_v2), (str(wire.VRRP_GROUP), 0))
    s6.sendmsg([wire.encode_v3(adv6, src6, wire.VRRP_GROUP6)], pktinfo, 0, ("ff02::12", 0, 0, ifindex))
    n += 1
    if n == 1:
        print("sending from", src4, src6, flush=True)
    time.sleep(0.2)
"""


def ka_conf() -> str:
    return (
        "global_defs {\n  router_id ka\n  vrrp_version 3\n}\n"
        "vrrp_instance VI_4 {\n  state BACKUP\n  interface eth0\n  virtual_router_id 61\n  priority 100\n"
        f"  advert_int 0.1\n  virtual_ipaddress {{\n    {VIP4}/24\n  }}\n}}\n"
        "vrrp_instance VI_6 {\n  state BACKUP\n  interface eth0\n  virtual_router_id 62\n  priority 100\n"
        f"  advert_int 0.1\n  virtual_ipaddress {{\n    {VIP6}/64\n  }}\n}}\n"
    )


def setup(lab: Lab, form: str) -> tuple[Proc, keepalived.Keepalived]:
    sw = lab.switch()
    ka_host = lab.host("ka", sysctls=IPV6_ON)
    tx_host = lab.host("tx", sysctls=IPV6_ON)
    lab.link(ka_host, sw, "192.0.2.21/24")
    lab.link(tx_host, sw, "192.0.2.22/24")
    sender = start_sender(tx_host, form)
    ka = keepalived.Keepalived(ka_host, ka_conf(), lab.workdir / "ka").start()
    return sender, ka


def start_sender(host: Host, form: str) -> Proc:
    return host.start(
        [PY, "-c", SENDER, form, "192.0.2.22", VIP4, VIP6],
        name=f"v3-sender-{form}",
        env={"PYTHONPATH": ROOT},
        ready_log="sending from",
    )


def log_of(ka: keepalived.Keepalived) -> str:
    assert ka.proc is not None
    return ka.proc.output()


def test_keepalived_v3_accepts_vrrpd_encoded_adverts_ipv4_and_ipv6(lab: Lab) -> None:
    sender, ka = setup(lab, "pseudo-header")
    for inst in ("VI_4", "VI_6"):
        wait_until(
            lambda i=inst: (
                f"({i}) advertisement interval updated from 100ms to 200ms by master" in log_of(ka)
            ),
            SLACK,
            what=f"keepalived {inst} learns the interval from our adverts",
        )
    # accepted and obeyed: several of its Master_Down_Intervals (0.68 s) pass without a takeover
    t_end = time.monotonic() + 2.0
    wait_until(lambda: time.monotonic() > t_end or "Entering MASTER STATE" in log_of(ka), SLACK)
    text = log_of(ka)
    assert "Entering MASTER STATE" not in text and "Invalid VRRPv3 checksum" not in text, text[-2000:]
    # the adverts stop (a crash: no priority 0): keepalived takes over both instances
    sender.kill()
    for inst in ("VI_4", "VI_6"):
        wait_until(
            lambda i=inst: f"({i}) Entering MASTER STATE" in log_of(ka),
            SLACK,
            what=f"keepalived {inst} takes over when our adverts stop",
        )
    assert ka.host.has_address(VIP4)


def test_keepalived_227_rejects_the_message_only_ipv4_checksum(lab: Lab) -> None:
    sender, ka = setup(lab, "message-only")
    wait_until(lambda: "(VI_4) Invalid VRRPv3 checksum" in log_of(ka), SLACK, what="checksum rejected")
    wait_until(lambda: "(VI_4) Entering MASTER STATE" in log_of(ka), SLACK, what="VI_4 dual master")
    # the IPv6 instance (always the pseudo-header) still accepts us and stays BACKUP
    assert "(VI_6) Entering MASTER STATE" not in log_of(ka)
    assert sender.alive()
