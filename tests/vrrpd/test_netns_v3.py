"""vrrpd in VRRPv3 against Debian's keepalived 2.2.7 in v3 mode, real kernel, ``advert_int = 0.1``.

Each node runs two instances on eth0: IPv4 (VRID 61, VIP 192.0.2.120/24) and IPv6 (VRID 62, VIP
2001:db8::120/64, adverts from the link-local address to ff02::12, unsolicited NAs). Both roles: vrrpd
master with keepalived backup, and the reverse; crash, graceful stop, preemption back. Then a VRRPv2 and a
VRRPv3 instance on one interface with different VRIDs.

Timing bounds are generous (a busy 2-core machine): at 0.1 s, Master_Down_Interval is 0.36 s at priority 100
and Skew_Time 0.06 s; the exact figures belong to bench/vrrp_failover.py. keepalived 2.2.7 drops adverts
whose address set differs from its own, so both sides configure the same VIP lists.
Run one file at a time under ``flock /tmp/rmqfd-heavy.lock``.
"""

from __future__ import annotations

import json
import time

import pytest
from vrrpd_lab import PY, ROOT, Router, make_router

from netns import Host, Lab, keepalived, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.keepalived]

VIP4 = "192.0.2.120"
VIP6 = "2001:db8::120"
VIP2 = "192.0.2.100"
IPV6_ON = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
TAKEOVER = 3.0  # bound for a takeover (MDI 0.36 s at 0.1 s adverts, + scheduling and process start)
START = 30.0  # bound for a daemon to start and settle (readiness: a busy machine is slow, not wrong)
READY = 30.0  # bound of a wait for a state that is not a timing claim


# priority-254 adverts from lb2's link-local address: one with a corrupted checksum, one with hop limit 64
BAD6 = r"""
import socket, struct
from ipaddress import IPv6Address
from vrrpd import wire
idx = socket.if_nametoindex("eth0")
src = next(IPv6Address(bytes.fromhex(f[0])) for f in (l.split() for l in open("/proc/net/if_inet6"))
           if f[5] == "eth0" and f[3] == "20")
adv = wire.AdvertV3(62, 254, 10, (IPv6Address("VIP6"),), family=6)
msg = bytearray(wire.encode_v3(adv, src, wire.VRRP_GROUP6))
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
info = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, src.packed + struct.pack("@I", idx))]
good = bytes(msg)
msg[7] ^= 0xFF
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.sendmsg([bytes(msg)], info, 0, ("ff02::12", 0, 0, idx))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 64)
s.sendmsg([good], info, 0, ("ff02::12", 0, 0, idx))
""".replace("VIP6", VIP6)


def v6_info(h: Host) -> list[dict[str, object]]:
    out = h.run(["ip", "-6", "-j", "addr", "show", "dev", "eth0"]).stdout
    return [a for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


def v6_addresses(h: Host) -> list[str]:
    return [str(a["local"]) for a in v6_info(h)]


def neigh_mac(h: Host, ip: str) -> str | None:
    out = h.run(["ip", "-6", "-j", "neigh", "show", ip, "dev", "eth0"], check=False).stdout
    entries = json.loads(out or "[]")
    return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None


def holds(h: Host, ip: str) -> bool:
    return ip in v6_addresses(h) if ":" in ip else h.has_address(ip)


def vrrpd_toml(prio: int, *, v2: bool = False) -> str:
    body = (
        "[[vrrp_instance]]\n"
        'name = "V4"\ninterface = "eth0"\nvirtual_router_id = 61\nversion = 3\n'
        f"priority = {prio}\nadvert_int = 0.1\n"
        f'virtual_ipaddress = ["{VIP4}/24"]\n'
    )
    if v2:
        body += (
            "[[vrrp_instance]]\n"
            'name = "V2"\ninterface = "eth0"\nvirtual_router_id = 51\n'
            f'priority = {prio}\nadvert_int = 1\nvirtual_ipaddress = ["{VIP2}/24"]\n'
        )
    else:
        body += (
            "[[vrrp_instance]]\n"
            'name = "V6"\ninterface = "eth0"\nvirtual_router_id = 62\n'
            f"priority = {prio}\nadvert_int = 0.1\n"
            f'virtual_ipaddress = ["{VIP6}/64"]\n'
        )
    return body


def ka_conf(prio: int, *, v2: bool = False) -> str:
    def inst(name: str, vrid: int, vip: str, interval: str, version: str = "") -> str:
        return (
            f"vrrp_instance {name} {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {vrid}\n"
            f"  priority {prio}\n  advert_int {interval}\n{version}"
            f"  virtual_ipaddress {{\n    {vip}\n  }}\n}}\n"
        )

    text = "global_defs {\n  router_id ka\n  vrrp_version 3\n}\n" + inst("V4", 61, f"{VIP4}/24", "0.1")
    if v2:
        return text + inst("V2", 51, f"{VIP2}/24", "1", "  version 2\n")
    return text + inst("V6", 62, f"{VIP6}/64", "0.1")


def setup(
    lab: Lab, vrrpd_prio: int, ka_prio: int, *, v2: bool = False, lb1_sysctls: dict[str, str] | None = None
) -> tuple[Router, keepalived.Keepalived]:
    sw = lab.switch()
    h1 = lab.host("lb1", sysctls={**IPV6_ON, **(lb1_sysctls or {})})
    h2 = lab.host("lb2", sysctls=IPV6_ON)
    lab.link(h1, sw, "192.0.2.21/24")
    lab.link(h2, sw, "192.0.2.22/24")
    wait_until(
        lambda: any(a.startswith("fe80:") for a in v6_addresses(h1) + v6_addresses(h2)),
        START,
        what="IPv6 link-local addresses",
    )
    r = make_router(lab, h1, vrrpd_toml(vrrpd_prio, v2=v2))
    ka = keepalived.Keepalived(h2, ka_conf(ka_prio, v2=v2), lab.workdir / "ka")
    ka.start()
    r.start()
    return r, ka


def both(r: Router, state: str, timeout: float, names: tuple[str, ...] = ("V4", "V6")) -> None:
    wait_until(
        lambda: all(r.state(n) == state for n in names), timeout, what=f"vrrpd {'+'.join(names)} {state}"
    )


def ka_holds_none(ka: keepalived.Keepalived, vips: tuple[str, ...]) -> bool:
    return not any(holds(ka.host, v) for v in vips)


def test_vrrpd_master_keepalived_backup_ipv4_and_ipv6(lab: Lab) -> None:
    r, ka = setup(lab, 150, 100)
    vips = (VIP4, VIP6)
    both(r, "MASTER", START)
    wait_until(lambda: all(holds(r.host, v) for v in vips), READY, what="vrrpd holds both VIPs")
    # keepalived takes our adverts (pseudo-header checksum, hop limit 255, link-local source): it stays
    # BACKUP for many of its 0.36 s Master_Down_Intervals
    t_end = time.monotonic() + 2.0
    wait_until(lambda: time.monotonic() > t_end or not ka_holds_none(ka, vips), READY)
    assert ka_holds_none(ka, vips), ka.proc.output()[-3000:] if ka.proc else ""
    for n in ("V4", "V6"):
        inst = r.inst(n)
        assert inst["version"] == 3 and inst["advert_int"] == 0.1
        assert inst["family"] == (4 if n == "V4" else 6)
        assert inst["src_ip"].startswith("fe80:") if n == "V6" else inst["src_ip"] == "192.0.2.21"

    # the receive boundary on the real socket: an IPv6 advert with a bad checksum and one with hop limit 64
    # are counted (the kernel does not drop them silently: no IPV6_CHECKSUM on vrrpd's socket), not obeyed
    ka.host.run([PY, "-c", BAD6], env={"PYTHONPATH": ROOT})
    wait_until(
        lambda: (
            r.inst("V6")["counters"]["discards"]["checksum"] >= 1
            and r.inst("V6")["counters"]["discards"]["ttl"] >= 1
        ),
        READY,
        what="bad IPv6 adverts counted",
    )
    assert r.state("V6") == "MASTER"

    # graceful stop: priority 0, keepalived takes both over after Skew_Time
    assert r.proc is not None
    r.proc.term()
    assert r.proc.wait(READY) == 0
    wait_until(lambda: all(holds(ka.host, v) for v in vips), TAKEOVER, what="keepalived takes over")
    assert not any(holds(r.host, v) for v in vips)

    # vrrpd restarts and preempts back
    r.start()
    both(r, "MASTER", START)
    wait_until(lambda: ka_holds_none(ka, vips), TAKEOVER, what="keepalived yields to vrrpd")

    # crash: keepalived takes over after Master_Down_Interval
    t0 = time.monotonic()
    r.proc.kill()
    wait_until(lambda: all(holds(ka.host, v) for v in vips), TAKEOVER, what="keepalived takes over")
    assert time.monotonic() - t0 < TAKEOVER


def test_keepalived_master_vrrpd_backup_ipv4_and_ipv6(lab: Lab) -> None:
    r, ka = setup(lab, 100, 150)
    vips = (VIP4, VIP6)
    wait_until(lambda: all(holds(ka.host, v) for v in vips), START, what="keepalived master")
    both(r, "BACKUP", START)
    wait_until(
        lambda: all(r.counters(n)["adverts_received"] >= 10 for n in ("V4", "V6")),
        READY,
        what="hears keepalived",
    )
    # a client on the segment talks to the IPv6 VIP: its neighbour entry points at keepalived's MAC
    client = lab.host("client", sysctls=IPV6_ON)
    lab.link(client, lab.switches["sw"], "192.0.2.50/24")
    client.run(["ip", "-6", "addr", "add", "2001:db8::50/64", "dev", "eth0", "nodad"])
    poke = f"import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'x', ('{VIP6}', 9))"
    client.run([PY, "-c", poke])  # resolves the VIP's MAC (Neighbor Solicitation, keepalived answers)
    wait_until(lambda: neigh_mac(client, VIP6) == ka.host.mac(), START, what="client resolves the VIP")
    v4, v6 = r.inst("V4"), r.inst("V6")
    assert v4["master_ip"] == "192.0.2.22"
    assert v6["master_ip"].startswith("fe80:")
    assert v4["master_adver_int"] == 0.1 and v6["master_adver_int"] == 0.1
    for inst in (v4, v6):
        assert sum(inst["counters"]["discards"].values()) == 0, inst["counters"]
    assert not any(holds(r.host, v) for v in vips)

    # graceful stop of keepalived: priority 0, vrrpd takes over after Skew_Time
    ka.stop()
    both(r, "MASTER", TAKEOVER)
    assert all(r.counters(n)["priority_zero_received"] >= 1 for n in ("V4", "V6"))
    wait_until(lambda: all(holds(r.host, v) for v in vips), READY, what="vrrpd holds both VIPs")
    # vrrpd's unsolicited Neighbor Advertisement (Override) moved the client's entry at once: without it the
    # entry would stay on keepalived's MAC until NUD re-probes it (REACHABLE for 15-45 s, then 5 s DELAY): a
    # bound of 10 s (a busy machine) still tells the two apart
    wait_until(lambda: neigh_mac(client, VIP6) == r.host.mac(), 10, what="client's neighbour entry moved")
    vip_flags = next(a for a in v6_info(r.host) if a["local"] == VIP6)
    assert not vip_flags.get("tentative") and not vip_flags.get("dadfailed"), vip_flags

    # keepalived comes back and preempts; vrrpd yields and drops the VIPs
    ka.start()
    both(r, "BACKUP", START)
    wait_until(lambda: not any(holds(r.host, v) for v in vips), READY, what="vrrpd drops the VIPs")

    # crash of keepalived: vrrpd takes over after Master_Down_Interval
    t0 = time.monotonic()
    ka.crash()
    both(r, "MASTER", TAKEOVER)
    assert time.monotonic() - t0 < TAKEOVER
    wait_until(lambda: all(holds(r.host, v) for v in vips), READY, what="vrrpd holds both VIPs")


def test_v2_and_v3_instances_on_one_interface(lab: Lab) -> None:
    r, ka = setup(lab, 150, 100, v2=True)
    vips = (VIP4, VIP2)
    both(r, "MASTER", START, ("V4", "V2"))
    assert r.inst("V2").get("version", 2) == 2 and r.inst("V4")["version"] == 3
    t_end = time.monotonic() + 4.0  # keepalived's v2 Master_Down_Interval is 3.6 s
    wait_until(lambda: time.monotonic() > t_end or not ka_holds_none(ka, vips), READY)
    assert ka_holds_none(ka, vips), ka.proc.output()[-3000:] if ka.proc else ""
    # keepalived's adverts of either version reach the right instance: none is discarded as "version"
    # (vrrpd is master: keepalived, lower, stays silent; the check is that ours were all accepted)
    for n in ("V4", "V2"):
        assert r.inst(n)["counters"]["discards"]["version"] == 0
    assert r.proc is not None
    r.proc.kill()
    wait_until(lambda: all(holds(ka.host, v) for v in vips), 3.61 + TAKEOVER, what="keepalived takes both")


def test_ipv6_link_flap_fault_until_the_link_local_is_usable_and_vips_without_dad(lab: Lab) -> None:
    # keepalived#2275: the link comes (back) up after start, and the IPv6 link-local address is tentative
    # while DAD runs. Here DAD is on and slow (4 s retransmit timer): the instance must stay in FAULT until
    # the kernel reports the address usable, then take over; the VIP is added without DAD (IFA_F_NODAD),
    # so it is usable at once although DAD is on.
    r, ka = setup(lab, 150, 100)
    both(r, "MASTER", START)
    assert r.proc is not None
    proc = r.proc
    h = r.host
    h.link_down()
    both(r, "FAULT", READY)
    for key, value in (("accept_dad", "1"), ("dad_transmits", "1")):
        h.sysctl(f"net.ipv6.conf.eth0.{key}", value)
    h.sysctl("net.ipv6.neigh.eth0.retrans_time_ms", "4000")
    h.link_up()
    wait_until(
        lambda: any(a.get("tentative") for a in v6_info(h) if str(a["local"]).startswith("fe80:")),
        2,
        what="a tentative link-local",
    )
    wait_until(lambda: "no IPv6 link-local address on eth0" in proc.output(), TAKEOVER, what="the fault")
    assert r.state("V6") == "FAULT"
    assert r.state("V4") in ("BACKUP", "MASTER")  # IPv4 does not wait for IPv6 DAD
    both(r, "MASTER", 4 + START)
    assert "fault no IPv6 link-local address on eth0 cleared" in proc.output()
    assert r.inst("V6")["src_ip"].startswith("fe80:")
    info = next(a for a in v6_info(h) if a["local"] == VIP6)
    assert not info.get("tentative") and not info.get("dadfailed"), info
    wait_until(lambda: ka_holds_none(ka, (VIP4, VIP6)), TAKEOVER, what="keepalived backs off")
