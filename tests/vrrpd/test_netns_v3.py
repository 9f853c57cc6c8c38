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
from vrrpd_lab import Router, make_router

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
START = 8.0  # bound for a daemon to start and settle


def v6_addresses(h: Host) -> list[str]:
    out = h.run(["ip", "-6", "-j", "addr", "show", "dev", "eth0"]).stdout
    return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]


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
    lab: Lab, vrrpd_prio: int, ka_prio: int, *, v2: bool = False
) -> tuple[Router, keepalived.Keepalived]:
    sw = lab.switch()
    h1 = lab.host("lb1", sysctls=IPV6_ON)
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
    wait_until(lambda: all(holds(r.host, v) for v in vips), 5, what="vrrpd holds both VIPs")
    # keepalived takes our adverts (pseudo-header checksum, hop limit 255, link-local source): it stays
    # BACKUP for many of its 0.36 s Master_Down_Intervals
    t_end = time.monotonic() + 2.0
    wait_until(lambda: time.monotonic() > t_end or not ka_holds_none(ka, vips), 5)
    assert ka_holds_none(ka, vips), ka.proc.output()[-3000:] if ka.proc else ""
    for n in ("V4", "V6"):
        inst = r.inst(n)
        assert inst["version"] == 3 and inst["advert_int"] == 0.1
        assert inst["family"] == (4 if n == "V4" else 6)
        assert inst["src_ip"].startswith("fe80:") if n == "V6" else inst["src_ip"] == "192.0.2.21"

    # graceful stop: priority 0, keepalived takes both over after Skew_Time
    assert r.proc is not None
    r.proc.term()
    assert r.proc.wait(5) == 0
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
        lambda: all(r.counters(n)["adverts_received"] >= 10 for n in ("V4", "V6")), 5, what="hears keepalived"
    )
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
    wait_until(lambda: all(holds(r.host, v) for v in vips), 2, what="vrrpd holds both VIPs")

    # keepalived comes back and preempts; vrrpd yields and drops the VIPs
    ka.start()
    both(r, "BACKUP", START)
    wait_until(lambda: not any(holds(r.host, v) for v in vips), 3, what="vrrpd drops the VIPs")

    # crash of keepalived: vrrpd takes over after Master_Down_Interval
    t0 = time.monotonic()
    ka.crash()
    both(r, "MASTER", TAKEOVER)
    assert time.monotonic() - t0 < TAKEOVER
    wait_until(lambda: all(holds(r.host, v) for v in vips), 2, what="vrrpd holds both VIPs")


def test_v2_and_v3_instances_on_one_interface(lab: Lab) -> None:
    r, ka = setup(lab, 150, 100, v2=True)
    vips = (VIP4, VIP2)
    both(r, "MASTER", START, ("V4", "V2"))
    assert r.inst("V2").get("version", 2) == 2 and r.inst("V4")["version"] == 3
    t_end = time.monotonic() + 4.0  # keepalived's v2 Master_Down_Interval is 3.6 s
    wait_until(lambda: time.monotonic() > t_end or not ka_holds_none(ka, vips), 6)
    assert ka_holds_none(ka, vips), ka.proc.output()[-3000:] if ka.proc else ""
    # keepalived's adverts of either version reach the right instance: none is discarded as "version"
    # (vrrpd is master: keepalived, lower, stays silent; the check is that ours were all accepted)
    for n in ("V4", "V2"):
        assert r.inst(n)["counters"]["discards"]["version"] == 0
    assert r.proc is not None
    r.proc.kill()
    wait_until(lambda: all(holds(ka.host, v) for v in vips), 3.61 + TAKEOVER, what="keepalived takes both")
