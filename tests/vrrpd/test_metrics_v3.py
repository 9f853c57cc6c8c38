"""Prometheus metrics of VRRPv3 instances: version, address family, configured and learnt interval."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from vrrpd import fsm, wire
from vrrpd.metrics import render


def _status(*vrs: fsm.VirtualRouter) -> dict[str, object]:
    insts = []
    for vr in vrs:
        snap = vr.snapshot()
        snap["interface"] = "eth0"
        insts.append(snap)
    return {"instances": insts}


def test_v2_v3_and_ipv6_instances_are_labelled_and_the_learnt_interval_shown() -> None:
    v2 = fsm.VirtualRouter(
        fsm.Params(vrid=1, priority=100, advert_int=1, src_ip=IPv4Address("192.0.2.1")), "v2"
    )
    v3 = fsm.VirtualRouter(
        fsm.Params(
            vrid=2,
            priority=100,
            advert_int=1,
            src_ip=IPv4Address("192.0.2.1"),
            vips=(IPv4Address("192.0.2.100"),),
            version=3,
            advert_cs=10,
        ),
        "v3",
    )
    v6 = fsm.VirtualRouter(
        fsm.Params(
            vrid=2,
            priority=100,
            advert_int=1,
            src_ip=IPv4Address("0.0.0.0"),
            version=3,
            advert_cs=10,
            src_ip6=IPv6Address("fe80::1"),
            vips6=(IPv6Address("fe80::100"),),
        ),
        "v6",
    )
    for vr in (v2, v3, v6):
        vr.handle(fsm.Startup(), 0.0)
    # the IPv4 v3 backup hears a master advertising every 50 cs: it learns it
    adv = wire.AdvertV3(vrid=2, priority=200, max_advert_int=50, addresses=(IPv4Address("192.0.2.100"),))
    pkt = wire.decode_ip_v3(wire.encode_ip_v3(IPv4Address("192.0.2.9"), wire.VRRP_GROUP, adv))
    v3.handle(fsm.AdvertReceived(pkt), 0.1)
    text = render(_status(v2, v3, v6))
    assert (
        'vrrpd_instance_info{vrrp_instance="v2",vrid="1",interface="eth0",version="2",family="4",'
        'mode="multicast"} 1' in text
    )
    assert 'vrrpd_instance_info{vrrp_instance="v3",vrid="2",interface="eth0",version="3",family="4",' in text
    assert 'vrrpd_instance_info{vrrp_instance="v6",vrid="2",interface="eth0",version="3",family="6",' in text
    assert 'vrrpd_advert_interval_seconds{vrrp_instance="v2",vrid="1",interface="eth0"} 1\n' in text
    assert 'vrrpd_advert_interval_seconds{vrrp_instance="v3",vrid="2",interface="eth0"} 0.1\n' in text
    assert 'vrrpd_master_advert_interval_seconds{vrrp_instance="v3",vrid="2",interface="eth0"} 0.5\n' in text
    assert 'vrrpd_master_advert_interval_seconds{vrrp_instance="v6",vrid="2",interface="eth0"} 0.1\n' in text
    assert 'vrrpd_checksum_as_v2_received_total{vrrp_instance="v3",vrid="2",interface="eth0"} 0\n' in text
    assert 'vrrpd_checksum_as_v2_received_total{vrrp_instance="v2"' not in text
