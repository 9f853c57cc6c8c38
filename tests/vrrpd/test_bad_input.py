"""Bad input: adverts with each wrong field, truncated, oversized and off-link (TTL < 255), injected
with scapy from another namespace. Each must be discarded with its counter raised (read through
`vrrpd status --json`) and the daemon must carry on as if nothing happened. Every bad advert claims
priority 254 so that, if it were wrongly accepted, the Master (150) would yield."""

from __future__ import annotations

import json
import os

import pytest
from vrrpd_lab import PY, ROOT, VIP, instance_toml, make_router, topology

from netns import Lab, wait_until

pytestmark = pytest.mark.netns

INJECT = r"""
import sys
from scapy.all import Ether, IP, Raw, sendp
from scapy.layers.vrrp import VRRP, VRRPv3

VIP = sys.argv[1]
N = int(sys.argv[2])
PASS = b"rmqlab51"

def vrrp(**kw):
    f = dict(vrid=51, priority=254, ipcount=1, addrlist=[VIP], authtype=1, adv=1,
             auth1=int.from_bytes(PASS[:4], "big"), auth2=int.from_bytes(PASS[4:], "big"))
    f.update(kw)
    return VRRP(**f)

def ip(ttl=255):
    eth = Ether(dst="01:00:5e:00:00:12")
    return eth / IP(src="192.0.2.50", dst="224.0.0.18", ttl=ttl, proto=112, tos=0xC0)

good = bytes(vrrp())
wrong = b"badpass!"
w1, w2 = int.from_bytes(wrong[:4], "big"), int.from_bytes(wrong[4:], "big")
cases = {
    "ttl": ip(ttl=64) / vrrp(),
    # a well-formed VRRPv3 advert for this VRRPv2 instance's VRID (v2 and v3 may share an interface)
    "version": ip() / VRRPv3(vrid=51, priority=254, ipcount=1, addrlist=[VIP], adv=100),
    "type": ip() / vrrp(type=2),
    "checksum": ip() / vrrp(chksum=0x1234),
    "vrid": ip() / vrrp(vrid=99),
    "auth_type": ip() / vrrp(authtype=0, auth1=0, auth2=0),
    "auth_pass": ip() / vrrp(auth1=w1, auth2=w2),
    "interval": ip() / vrrp(adv=2),
    "length_truncated": ip() / Raw(good[:-4]),
    "length_oversized": ip() / Raw(good + b"\0" * 8),
    "length_short": ip() / Raw(good[:4]),
    "addr_list": ip() / vrrp(priority=1, addrlist=["192.0.2.222"]),
}
for name, pkt in cases.items():
    for _ in range(N):
        sendp(pkt, iface="eth0", verbose=False)
print("sent", len(cases) * N)
"""


def test_each_bad_advert_is_discarded_and_counted(lab: Lab) -> None:
    _sw, (h1, attacker) = topology(lab, 2)
    r1 = make_router(lab, h1, instance_toml(prio=150))
    r1.start()
    r1.wait_state("MASTER", 3.41 + 1 + 3.0)  # Master_Down_Interval + start-up + a busy machine's slack
    n = 3
    res = attacker.run([PY, "-c", INJECT, VIP, str(n)], timeout=60)
    assert "sent" in res.stdout, res.stderr

    def counters() -> dict[str, object]:
        out = h1.run([PY, "-m", "vrrpd", "status", "--json", "--socket", r1.sock], env={"PYTHONPATH": ROOT})
        st = json.loads(out.stdout)
        return dict(st["instances"][0]["counters"])

    want = {
        "ttl": n,
        "version": n,
        "type": n,
        "checksum": n,
        "vrid": n,
        "auth_type": n,
        "auth_pass": n,
        "interval": n,
        "length": 3 * n,
        "addr_list": n,
        "owner": 0,
        "peer": 0,
        "ip_header": 0,
    }

    def settled() -> dict[str, object] | None:
        c = counters()
        got = c["discards"]
        assert isinstance(got, dict)
        return c if sum(got.values()) >= sum(want.values()) else None

    c = wait_until(settled, 30, what="every injected advert counted")  # a `vrrpd status` process per poll
    assert c["discards"] == want
    # Only the addr_list adverts (counted, but used: priority 1 < 150, the Master answers) were accepted.
    assert c["adverts_received"] == n
    assert c["became_master"] == 1 and c["released_master"] == 0
    assert r1.state() == "MASTER" and r1.has_vip()
    assert r1.proc is not None and r1.proc.alive()
    log = r1.proc.output()
    assert "discarded advert: ttl" in log and "discarded advert: checksum" in log
    # rate-limited: one line per reason per 10 s, not one per packet
    assert log.count("discarded advert: vrid") == 1
    assert os.path.exists(r1.sock)
