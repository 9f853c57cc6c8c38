"""VRRPv3 on vrrpd's host side without root: :class:`vrrpd.host.Host` on the fake platform in virtual time.

IPv4 VRRPv3 on the shared IPv4 socket (beside a VRRPv2 instance with another VRID), IPv6 instances on their
own socket (link-local source, FAULT while it is missing or tentative, hop limit, NAs instead of GARP, VIPs
added and removed), the learnt Master_Adver_Interval in the status, the receive boundary (garbage counted
and discarded), reloads that change the version.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address, IPv6Interface
from typing import Any

import pytest
from host_rig import OUR_IP, Rig, advert, config, inst
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrpd import fsm, wire
from vrrpd.host import plan_reload, source_address6
from vrrpd.netlink import IFA_F_DADFAILED, IFA_F_TENTATIVE, Addr
from vrrpd.sockets6 import Rx6

LL = "fe80::21"  # our link-local address
PEER_LL = "fe80::22"
VIP6 = "2001:db8::120"
VIP4 = "192.0.2.120"
MDI_01 = 0.3609375  # Master_Down_Interval at 10 cs, priority 100


def v3(name: str = "V4", vrid: int = 61, **kw: Any) -> dict[str, Any]:
    return inst(name, vrid, vips=[f"{VIP4}/24"], version=3, advert_int=0.1, **kw)


def v6(name: str = "V6", vrid: int = 62, **kw: Any) -> dict[str, Any]:
    return inst(name, vrid, vips=[f"{VIP6}/64"], advert_int=0.1, **kw)


def rig(*insts: dict[str, Any], ll: str | None = LL, ll_flags: int = 0) -> Rig:
    r = Rig(config(*insts), start=False)
    if ll is not None:
        r.fake.operator_add("eth0", f"{ll}/64", ll_flags)
        r.pump()
    r.host.start(r.now)
    r.pump()
    return r


def adv4(
    prio: int = 150, cs: int = 10, vrid: int = 61, src: str = "192.0.2.22", as_v2: bool = False
) -> bytes:
    a = wire.AdvertV3(vrid=vrid, priority=prio, max_advert_int=cs, addresses=(IPv4Address(VIP4),))
    return wire.encode_ip_v3(IPv4Address(src), wire.VRRP_GROUP, a, 1, checksum_as_v2=as_v2)


def rx6(prio: int = 150, cs: int = 10, vrid: int = 62, hop: int | None = 255, src: str = PEER_LL) -> Rx6:
    a = wire.AdvertV3(vrid=vrid, priority=prio, max_advert_int=cs, addresses=(IPv6Address(VIP6),), family=6)
    s = IPv6Address(src)
    return Rx6(wire.encode_v3(a, s, wire.VRRP_GROUP6), s, wire.VRRP_GROUP6, hop)


def receive6(r: Rig, *items: Rx6) -> None:
    r.host.receive6("eth0", list(items), r.now)
    r.pump()


def sent(r: Rig, name_family: int) -> list[tuple[Any, ...]]:
    return [s for s in r.fake.sent if (6 if isinstance(s[1], IPv6Address) else 4) == name_family]


# ------------------------------------------------------------------------------------------------ IPv4 v3


def test_v3_ipv4_master_sends_v3_adverts_with_the_pseudo_header_checksum() -> None:
    r = rig(v3())
    assert ("open", ("eth0", 2, True)) in [(c.kind, c.args) for c in r.fake.calls]
    assert not r.fake.sockets6  # no IPv6 instance: no IPv6 socket
    r.advance(MDI_01 + 0.01)
    assert r.state("V4") == "MASTER" and r.fake.has("eth0", VIP4)
    ifname, src, dst, adv, as_v2 = r.fake.sent[-1]
    assert (ifname, src, dst, as_v2) == ("eth0", IPv4Address(OUR_IP), wire.VRRP_GROUP, False)
    assert isinstance(adv, wire.AdvertV3) and adv.max_advert_int == 10 and adv.priority == 100
    n = len(r.fake.sent)
    r.advance(1.0)
    assert len(r.fake.sent) - n in (9, 10, 11)  # every 0.1 s


def test_v3_checksum_as_v2_is_passed_to_the_socket() -> None:
    r = rig(v3(v3_checksum_as_v2=True))
    r.advance(1)
    assert r.fake.sent and all(s[4] for s in r.fake.sent)


def test_v3_backup_learns_the_masters_interval_and_the_status_shows_it() -> None:
    r = rig(v3())
    r.advance(0.05)
    r.receive(adv4(cs=50))
    assert r.state("V4") == "BACKUP"
    st = r.host.status()[0]
    assert (st["version"], st["family"], st["advert_int"], st["master_adver_int"]) == (3, 4, 0.1, 0.5)
    assert st["master_ip"] == "192.0.2.22"
    # the learnt 0.5 s interval: no takeover within 3 x 0.5 s, one after 3 x 0.5 + skew
    r.advance(1.5)
    assert r.state("V4") == "BACKUP"
    r.advance(0.5)
    assert r.state("V4") == "MASTER"


def test_v2_and_v3_share_the_ipv4_socket_with_different_vrids() -> None:
    r = rig(inst("V2", 51), v3())
    assert [c for c in r.fake.calls if c.kind == "open"] == [r.fake.calls[0]] or len(r.fake.sockets) == 1
    r.advance(0.05)
    r.receive(advert(prio=150, vrid=51), adv4(prio=150))
    assert r.state("V2") == "BACKUP" and r.state("V4") == "BACKUP"
    c2, c3 = (r.host.describe(n) for n in ("V2", "V4"))
    assert c2["state"] == c3["state"] == "BACKUP"
    st = {s["name"]: s for s in r.host.status()}
    assert st["V2"]["counters"]["adverts_received"] == 1 and st["V4"]["counters"]["adverts_received"] == 1
    assert st["V2"]["version"] == 2 and st["V2"]["master_adver_int"] == 1
    # a v2 advert with the v3 instance's VRID (and the reverse) is a "version" discard, not obeyed
    r.receive(advert(prio=200, vrid=61), adv4(prio=200, vrid=51))
    st = {s["name"]: s for s in r.host.status()}
    assert st["V2"]["counters"]["discards"]["version"] == 1
    assert st["V4"]["counters"]["discards"]["version"] == 1


def test_message_only_checksum_received_is_accepted_and_counted() -> None:
    r = rig(v3())
    r.receive(adv4(as_v2=True))
    st = r.host.status()[0]
    assert r.state("V4") == "BACKUP"
    assert st["counters"]["checksum_as_v2_received"] == 1


# ----------------------------------------------------------------------------------------------------- IPv6


def test_v6_master_sends_from_the_link_local_to_ff02_12_and_announces_with_na() -> None:
    r = rig(v6())
    assert r.fake.sockets6 == {"eth0": (2, True)} and not r.fake.sockets
    r.advance(MDI_01 + 0.01)
    assert r.state("V6") == "MASTER"
    assert r.fake.has("eth0", VIP6)
    ifname, src, dst, adv, _ = r.fake.sent[-1]
    assert (ifname, src, dst) == ("eth0", IPv6Address(LL), wire.VRRP_GROUP6)
    assert isinstance(adv, wire.AdvertV3) and adv.family == 6 and adv.addresses == (IPv6Address(VIP6),)
    assert r.fake.of("na") and r.fake.of("na")[0][:2] == ("eth0", (IPv6Address(VIP6),))
    assert not r.fake.of("garp")
    st = r.host.status()[0]
    assert (st["version"], st["family"], st["src_ip"]) == (3, 6, LL)
    assert st["vips_installed"] == [f"{VIP6}/64"]


def test_v6_backup_obeys_a_higher_master_and_drops_its_vip() -> None:
    r = rig(v6())
    r.advance(1)
    assert r.state("V6") == "MASTER"
    receive6(r, rx6(prio=200, cs=20))
    assert r.state("V6") == "BACKUP"
    assert not r.fake.has("eth0", VIP6)
    st = r.host.status()[0]
    assert st["master_ip"] == PEER_LL and st["master_adver_int"] == 0.2
    from vrrpd.control import format_status

    text = format_status({"instances": r.host.status()})
    assert "VRRPv3 IPv6  advert_int 0.1s  master interval 0.2s" in text
    assert f"src {LL}" in text


def test_v6_hop_limit_other_than_255_is_discarded_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    r = rig(v6())
    with caplog.at_level(logging.WARNING, logger="vrrpd"):
        for _ in range(5):
            receive6(r, rx6(prio=200, hop=64))
    assert r.state("V6") != "BACKUP" or r.host.status()[0]["counters"]["adverts_received"] == 0
    st = r.host.status()[0]
    assert st["counters"]["discards"]["ttl"] == 5 and st["counters"]["adverts_received"] == 0
    assert sum("hop limit 64" in m for m in caplog.messages) == 1  # rate-limited


@pytest.mark.parametrize(
    "item",
    [
        Rx6(b"", IPv6Address(PEER_LL), wire.VRRP_GROUP6, 255),
        Rx6(b"\x31\x3e", IPv6Address(PEER_LL), wire.VRRP_GROUP6, 255),
        Rx6(b"\x31\x3e\x96\x01\x00\x0a\x00\x00" + bytes(16), IPv6Address(PEER_LL), wire.VRRP_GROUP6, 255),
        Rx6(b"\x21\x3e\x96\x01\x00\x0a\x00\x00" + bytes(16), IPv6Address(PEER_LL), wire.VRRP_GROUP6, 255),
        Rx6(b"x" * 24, None, wire.VRRP_GROUP6, 255),
        Rx6(b"x" * 24, IPv6Address(PEER_LL), None, 255),
        Rx6(b"x" * 24, IPv6Address(PEER_LL), wire.VRRP_GROUP6, None),
        Rx6(b"x" * 24, IPv6Address(PEER_LL), IPv6Address("ff02::1"), 255),
    ],
)
def test_v6_garbage_is_counted_and_discarded(item: Rx6) -> None:
    r = rig(v6())
    receive6(r, item)
    st = r.host.status()[0]
    assert sum(st["counters"]["discards"].values()) == 1
    assert st["counters"]["adverts_received"] == 0


@settings(max_examples=200, deadline=None)
@given(
    msg=st.binary(max_size=80),
    hop=st.one_of(st.none(), st.integers(0, 255)),
    dst=st.sampled_from([None, wire.VRRP_GROUP6, IPv6Address("ff02::1"), IPv6Address(LL)]),
)
def test_v6_any_datagram_is_handled_without_raising(
    msg: bytes, hop: int | None, dst: IPv6Address | None
) -> None:
    r = rig(v6())
    r.host.receive6("eth0", [Rx6(msg, IPv6Address(PEER_LL), dst, hop)], r.now)
    r.pump()
    st = r.host.status()[0]
    assert st["counters"]["adverts_received"] + sum(st["counters"]["discards"].values()) >= 1


def test_v6_without_a_link_local_is_in_fault_until_one_is_usable() -> None:
    r = rig(v6(), ll=LL, ll_flags=IFA_F_TENTATIVE)
    r.advance(1)
    assert r.state("V6") == "FAULT"
    assert "no IPv6 link-local address on eth0" in r.host.status()[0]["faults"]
    # DAD done: the kernel reports the address again without the tentative flag
    r.fake.operator_del("eth0", LL)
    r.fake.operator_add("eth0", f"{LL}/64")
    r.pump()
    assert r.state("V6") == "BACKUP"
    r.advance(1)
    assert r.state("V6") == "MASTER"
    assert r.fake.sent[-1][1] == IPv6Address(LL)


def test_link_local_source_is_never_a_vip_nor_tentative() -> None:
    def a(ip: str, flags: int = 0) -> Addr:
        return Addr(2, IPv6Interface(ip), "", False, 0, flags)

    vip_ll = IPv6Address("fe80::200:5eff:fe00:23e")
    addrs = [a(f"{vip_ll}/64"), a("2001:db8::1/64"), a("fe80::1/64", IFA_F_TENTATIVE), a("fe80::2/64")]
    assert source_address6(addrs, {vip_ll}) == IPv6Address("fe80::2")
    assert source_address6(addrs[:3], {vip_ll}) is None
    assert source_address6([a("fe80::3/64", IFA_F_DADFAILED)], set()) is None


def test_ipv4_and_ipv6_instances_may_share_a_vrid() -> None:
    r = rig(v3("A", 70), v6("B", 70))
    r.advance(1)
    assert r.state("A") == "MASTER" and r.state("B") == "MASTER"
    assert r.fake.has("eth0", VIP4) and r.fake.has("eth0", VIP6)
    receive6(r, rx6(prio=200, vrid=70))
    assert r.state("B") == "BACKUP" and r.state("A") == "MASTER"


def test_stop_sends_priority_zero_and_removes_ipv6_vips() -> None:
    r = rig(v6())
    r.advance(1)
    r.host.stop(r.now)
    r.pump()
    assert r.fake.sent[-1][3].priority == 0
    assert not r.fake.has("eth0", VIP6)


def test_reload_that_changes_the_version_restarts_the_instance() -> None:
    old = config(inst("V", 51, vips=[f"{VIP4}/24"]))
    new = config(inst("V", 51, vips=[f"{VIP4}/24"], version=3, advert_int=0.1))
    plan = plan_reload(old, new, [c.key for c in old.instances])
    assert plan.stop == (("eth0", 51, 4),) and [c.name for c in plan.start] == ["V"] and not plan.update
    r = Rig(old)
    r.advance(4)
    assert r.state("V") == "MASTER"
    r.host.reload(new, r.now)
    r.pump()
    r.advance(0.5)
    assert r.state("V") == "MASTER"
    assert isinstance(r.fake.sent[-1][3], wire.AdvertV3)
    assert r.fake.has("eth0", VIP4)


def test_reload_keeps_a_v3_instance_in_place() -> None:
    r = rig(v6())
    r.advance(1)
    assert r.state("V6") == "MASTER"
    r.host.reload(config(v6(priority=120)), r.now)
    r.pump()
    assert r.state("V6") == "MASTER" and r.fake.has("eth0", VIP6)
    assert r.host.status()[0]["priority"] == 120


def test_fsm_params_of_an_ipv6_instance() -> None:
    r = rig(v6(unicast_peer=[PEER_LL]))
    p = r.host.instances[("eth0", 62, 6)].vr.params
    assert (p.version, p.family, p.advert_cs, p.src_ip6) == (3, 6, 10, IPv6Address(LL))
    assert p.unicast_peers6 == (IPv6Address(PEER_LL),) and p.vips == ()
    assert r.fake.sockets6 == {"eth0": (2, False)}  # unicast: no ff02::12 membership
    r.advance(1)
    assert r.fake.sent[-1][2] == IPv6Address(PEER_LL)
    assert isinstance(r.host.instances[("eth0", 62, 6)].vr, fsm.VirtualRouter)
