"""Interop with Debian's keepalived 2.2.7 on the same bridge, in both roles.

keepalived runs as `keepalived -n -l -D -P -f CONF -p PID -r VRRP_PID` with per-test pid files (its default
pid files are not per namespace). A keepalived "crash" is SIGSTOP parent, SIGKILL the VRRP child, SIGKILL
parent: killing only the parent makes the child shut down gracefully (priority 0).
keepalived's state is read from where the VIP is; vrrpd's from its status socket.
"""

from __future__ import annotations

import time

import pytest
from vrrpd_lab import VIP, Router, instance_toml, make_router, topology, vip_holders

from netns import Host, Lab, keepalived, wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.keepalived,
]

SLACK = 3.0  # scheduling slack on a busy machine; precise figures: bench/vrrp_failover.py
BEFORE_MDI = 2.4  # a priority-0 takeover (Skew_Time) must beat Master_Down_Interval - advert_int (2.61 s)
READY = 30.0  # bound of a wait for a state that is not a timing claim (a busy machine is slow, not wrong)


class Keepalived(keepalived.Keepalived):
    def __init__(self, lab: Lab, host: Host, prio: int, auth: str | None = "rmqlab51") -> None:
        conf = keepalived.instance_conf(
            f"ka-{host.name}", priority=prio, vips=[f"{VIP}/24"], auth_pass=auth, script_security=True
        )
        super().__init__(host, conf, lab.workdir / f"ka-{host.name}")

    def has_vip(self) -> bool:
        return self.host.has_address(VIP)


def setup(
    lab: Lab, vrrpd_prio: int, ka_prio: int, ka_auth: str | None = "rmqlab51"
) -> tuple[Router, Keepalived]:
    _sw, (h1, h2) = topology(lab, 2)
    r = make_router(lab, h1, instance_toml(prio=vrrpd_prio))
    ka = Keepalived(lab, h2, ka_prio, ka_auth)
    ka.start()
    r.start()
    return r, ka


@pytest.mark.slow
def test_vrrpd_master_keepalived_backup(lab: Lab) -> None:
    r, ka = setup(lab, 150, 100)
    r.wait_state("MASTER", 3.41 + 1 + SLACK)
    wait_until(lambda: vip_holders([r.host, ka.host]) == ["lb1"], READY, what="VIP on vrrpd only")
    # keepalived accepts our adverts (PASS match): it stays backup for several Master_Down_Intervals
    t_end = time.monotonic() + 4.5
    wait_until(lambda: time.monotonic() > t_end or ka.has_vip(), READY)
    assert not ka.has_vip() and r.state() == "MASTER"

    # graceful stop of vrrpd: keepalived takes over Skew_Time (0.61 s) after our priority-0 advert
    assert r.proc is not None
    # (the takeover is waited for before vrrpd's exit: its exit time is not the takeover's)
    t0 = time.monotonic()
    r.proc.term()
    wait_until(ka.has_vip, BEFORE_MDI, what="keepalived takes over after priority 0")
    assert time.monotonic() - t0 < BEFORE_MDI
    assert r.proc.wait(READY) == 0

    # vrrpd restarts and preempts back (keepalived yields to the higher priority)
    r.start()
    r.wait_state("MASTER", 3.41 + SLACK)
    wait_until(lambda: not ka.has_vip(), READY, what="keepalived drops the VIP")
    assert r.counters()["adverts_received"] >= 1  # keepalived's adverts (100) were heard and used

    # frozen vrrpd master: keepalived takes over; after SIGCONT vrrpd takes back at once
    r.proc.stop()
    try:
        wait_until(ka.has_vip, 3.61 + SLACK, what="keepalived master while vrrpd frozen")
    finally:
        r.proc.cont()
    wait_until(lambda: not ka.has_vip() and r.state() == "MASTER", 1 + SLACK, what="vrrpd back")

    # crash of vrrpd: keepalived takes over after its Master_Down_Interval (3.61 s)
    t0 = time.monotonic()
    r.proc.kill()
    wait_until(ka.has_vip, 3.61 + SLACK, what="keepalived takes over after crash")
    assert time.monotonic() - t0 > 2.0


@pytest.mark.slow
def test_keepalived_master_vrrpd_backup(lab: Lab) -> None:
    r, ka = setup(lab, 100, 150)
    wait_until(ka.has_vip, 3.41 + 1 + SLACK, what="keepalived master")
    r.wait_state("BACKUP", READY)
    wait_until(lambda: r.counters()["adverts_received"] >= 2, READY, what="vrrpd hears keepalived")
    inst = r.inst()
    assert inst["master_ip"] == "192.0.2.22"
    assert sum(inst["counters"]["discards"].values()) == 0  # keepalived's adverts pass every check
    assert not r.has_vip()

    # graceful stop of keepalived (TERM to the parent): priority 0, vrrpd takes over after Skew_Time
    # (as ka.stop(), but the takeover is waited for before keepalived's exit, which is not the takeover)
    kparent = ka.proc
    assert kparent is not None
    t0 = time.monotonic()
    kparent.term()
    r.wait_state("MASTER", BEFORE_MDI)
    assert time.monotonic() - t0 < BEFORE_MDI
    assert kparent.wait(READY) is not None
    assert r.counters()["priority_zero_received"] == 1

    # keepalived restarts and preempts back; vrrpd yields and drops the VIP
    ka.start()
    wait_until(ka.has_vip, 3.41 + 1 + SLACK, what="keepalived preempts back")
    r.wait_state("BACKUP", READY)
    wait_until(lambda: not r.has_vip(), READY)

    # frozen keepalived master: vrrpd takes over; after SIGCONT keepalived takes back
    ka.freeze()
    try:
        r.wait_state("MASTER", 3.61 + SLACK)
    finally:
        ka.thaw()
    r.wait_state("BACKUP", 1 + SLACK)
    wait_until(lambda: ka.has_vip() and not r.has_vip(), READY)

    # keepalived crash: vrrpd takes over after Master_Down_Interval
    t0 = time.monotonic()
    ka.crash()
    r.wait_state("MASTER", 3.61 + SLACK)
    assert time.monotonic() - t0 > 2.0
    assert r.has_vip()


@pytest.mark.parametrize(
    ("ka_auth", "reason", "ka_says"),
    [
        ("wrongpw", "auth_pass", "received an invalid passwd"),
        (None, "auth_type", "received a 1 auth, expecting 0"),
    ],
)
def test_auth_mismatch_is_discarded(lab: Lab, ka_auth: str | None, reason: str, ka_says: str) -> None:
    # keepalived (higher priority) with another password, or none: each side discards the other's adverts and
    # counts them, and (as the RFC demands) does not obey them: both become Master.
    # (Observed: keepalived 2.2.7 as Master re-arms its advert timer on every packet it receives, even a
    # rejected one, so while our 1 s adverts keep arriving it sends only when its timer wins the race.)
    r, ka = setup(lab, 100, 150, ka_auth=ka_auth)
    wait_until(ka.has_vip, 3.41 + 1 + SLACK, what="keepalived master")
    r.wait_state("MASTER", 3.61 + SLACK)
    wait_until(lambda: r.counters()["discards"][reason] >= 1, READY, what=f"{reason} discards")
    assert r.counters()["adverts_received"] == 0
    kproc = ka.proc
    assert kproc is not None
    wait_until(lambda: ka_says in kproc.output(), READY, what="keepalived rejects our adverts too")
    assert ka.has_vip() and r.has_vip()
