"""vrrpd.fsm in VRRPv3 mode (RFC 5798 section 6): centisecond timers, Master_Adver_Interval learnt from the
master, IPv6 instances, version separation; one VirtualRouter fed events in virtual time."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrrpd import fsm, wire
from vrrpd.fsm import (
    Action,
    AddVips,
    AdvertReceived,
    Discard,
    FaultCleared,
    FaultRaised,
    Log,
    Params,
    ParamsChanged,
    PriorityChanged,
    RemoveVips,
    SendAdvert,
    SendGarp,
    Shutdown,
    Startup,
    State,
    TimerDue,
    UpdateVips6,
    VirtualRouter,
)
from vrrpd.wire import Reason

ME = IPv4Address("192.0.2.21")
LOWER_IP = IPv4Address("192.0.2.5")
HIGHER_IP = IPv4Address("192.0.2.200")
VIP = IPv4Address("192.0.2.100")
ME6 = IPv6Address("fe80::21")
LOWER6 = IPv6Address("fe80::5")
HIGHER6 = IPv6Address("fe80::1:0:0:0:200")
VIP6 = IPv6Address("2001:db8::100")
EPS = 1e-9


def params(**kw: Any) -> Params:
    base: dict[str, Any] = {"vrid": 51, "priority": 100, "advert_int": 1, "src_ip": ME, "vips": (VIP,)}
    base.update({"version": 3, "advert_cs": 100})
    base.update(kw)
    return Params(**base)


def params6(**kw: Any) -> Params:
    base: dict[str, Any] = {"src_ip": IPv4Address(0), "vips": (), "src_ip6": ME6, "vips6": (VIP6,)}
    base.update(kw)
    return params(**base)


def advert(
    priority: int, cs: int = 100, src: IPv4Address = LOWER_IP, ttl: int = 255, **kw: Any
) -> AdvertReceived:
    fields: dict[str, Any] = {"vrid": 51, "priority": priority, "max_advert_int": cs, "addresses": (VIP,)}
    fields.update(kw)
    as_v2 = fields.pop("as_v2", False)
    return AdvertReceived(wire.PacketV3(src, wire.VRRP_GROUP, ttl, wire.AdvertV3(**fields), as_v2))


def advert6(priority: int, cs: int = 100, src: IPv6Address = LOWER6, ttl: int = 255) -> AdvertReceived:
    adv = wire.AdvertV3(51, priority, cs, (VIP6,), family=6)
    return AdvertReceived(wire.PacketV3(src, wire.VRRP_GROUP6, ttl, adv))


def quiet(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


def backup(now: float = 0.0, p: Params | None = None, **kw: Any) -> VirtualRouter:
    vr = VirtualRouter(p or params(**kw), "VI_3")
    vr.handle(Startup(), now)
    assert vr.state is State.BACKUP
    return vr


def master(now: float = 0.0, p: Params | None = None, **kw: Any) -> VirtualRouter:
    vr = backup(now, p, **kw)
    deadline = vr.next_deadline()
    assert deadline is not None
    vr.handle(TimerDue(), deadline)
    assert vr.state is State.MASTER
    return vr


def down_at(vr: VirtualRouter) -> float:
    d = vr.deadlines()["master_down"]
    assert d is not None
    return d


# ------------------------------------------------------------------------------------------------- timers


@pytest.mark.parametrize(
    ("cs", "prio", "mdi_ms", "skew_ms"),
    [  # ../shared/reference/vrrpv3.md section 2 table (exact RFC/keepalived values, to 0.1 ms)
        (100, 100, 3609.4, 609.4),
        (100, 200, 3218.8, None),
        (100, 254, 3007.8, None),
        (50, 100, 1804.7, 304.7),
        (20, 240, 612.5, None),
        (10, 100, 360.9, 60.9),
        (10, 254, 300.8, None),
        (5, 100, 180.5, 30.5),
        (1, 100, 36.1, 6.1),
        (1, 254, 30.1, None),
    ],
)
def test_v3_timer_formulas_match_the_reference_table(
    cs: int, prio: int, mdi_ms: float, skew_ms: float | None
) -> None:
    assert round(fsm.master_down_interval_v3(cs, prio) * 1000, 1) == mdi_ms
    if skew_ms is not None:
        assert round(fsm.skew_time_v3(prio, cs) * 1000, 1) == skew_ms
    # the v3 skew scales with the interval; at 1 s it equals the v2 skew (RFC 3768 is the cs=100 case)
    assert fsm.skew_time_v3(prio, 100) == fsm.skew_time(prio)


def test_startup_backup_uses_own_interval() -> None:
    vr = backup(0.0, advert_cs=10)
    assert vr.master_adver_cs == 10
    assert down_at(vr) == pytest.approx(0.3609375, abs=EPS)
    vr.handle(TimerDue(), 0.36)
    assert vr.state is State.BACKUP
    vr.handle(TimerDue(), 0.3609375)
    assert vr.state is State.MASTER


def test_master_adverts_every_advert_cs() -> None:
    vr = master(0.0, advert_cs=10)
    t0 = vr.deadlines()["adver"]
    assert t0 is not None
    sent = []
    t = t0
    for _ in range(5):
        sent += [a for a in vr.handle(TimerDue(), t) if isinstance(a, SendAdvert)]
        nxt = vr.deadlines()["adver"]
        assert nxt is not None and nxt == pytest.approx(t + 0.1, abs=EPS)
        t = nxt
    assert sent == [SendAdvert(100)] * 5


def test_backup_learns_master_interval_from_an_accepted_advert() -> None:
    """Our interval is 1 s; the master advertises every 10 cs: the advert is used (v2 would discard it) and
    Master_Down_Interval follows the master's interval."""
    vr = backup(0.0)
    out = vr.handle(advert(200, cs=10), 1.0)
    assert not [a for a in out if isinstance(a, Discard)]
    assert vr.master_adver_cs == 10
    assert down_at(vr) == pytest.approx(1.0 + fsm.master_down_interval_v3(10, 100), abs=EPS)
    assert any(isinstance(a, Log) and "updated from 1000ms to 100ms" in a.message for a in out)
    # an equal-priority master (accepted too) teaches its interval as well
    vr.handle(advert(100, cs=250, src=HIGHER_IP), 1.2)
    assert vr.master_adver_cs == 250
    assert down_at(vr) == pytest.approx(1.2 + fsm.master_down_interval_v3(250, 100), abs=EPS)


def test_lower_priority_advert_discarded_under_preempt_teaches_nothing() -> None:
    vr = backup(0.0)
    vr.handle(advert(200, cs=10), 1.0)
    d = down_at(vr)
    vr.handle(advert(50, cs=400), 1.1)
    assert vr.master_adver_cs == 10 and down_at(vr) == d


def test_nopreempt_backup_learns_from_lower_priority_master() -> None:
    vr = backup(0.0, preempt=False)
    vr.handle(advert(50, cs=20), 1.0)
    assert vr.master_adver_cs == 20
    assert down_at(vr) == pytest.approx(1.0 + fsm.master_down_interval_v3(20, 100), abs=EPS)


def test_preempt_delay_window_learns_too() -> None:
    vr = backup(0.0, preempt_delay=5)
    vr.handle(advert(50, cs=30), 1.0)
    assert vr.master_adver_cs == 30 and vr.preempt_until == 6.0


def test_priority_zero_uses_learnt_interval_for_skew() -> None:
    vr = backup(0.0, priority=100)
    vr.handle(advert(200, cs=10), 1.0)
    vr.handle(advert(0, cs=400), 1.05)  # priority 0 does not teach an interval (RFC 5798 section 6.4.2)
    assert vr.master_adver_cs == 10
    assert down_at(vr) == pytest.approx(1.05 + fsm.skew_time_v3(100, 10), abs=EPS)  # 6.09 ms
    vr.handle(TimerDue(), 1.05 + 0.0609375)
    assert vr.state is State.MASTER


def test_master_yields_and_learns_the_winners_interval() -> None:
    vr = master(0.0, advert_cs=100)
    t = 10.0
    out = quiet(vr.handle(advert(200, cs=7, src=HIGHER_IP), t))
    assert out[-1] == fsm.StateChanged(State.MASTER, State.BACKUP, 100)
    assert vr.master_adver_cs == 7
    assert down_at(vr) == pytest.approx(t + fsm.master_down_interval_v3(7, 100), abs=EPS)


def test_becoming_master_returns_to_own_interval() -> None:
    vr = backup(0.0, advert_cs=50)
    vr.handle(advert(200, cs=10), 1.0)
    assert vr.master_adver_cs == 10
    vr.handle(TimerDue(), down_at(vr))
    assert vr.state is State.MASTER and vr.master_adver_cs == 50
    adver = vr.deadlines()["adver"]
    assert adver is not None and adver == pytest.approx(1.0 + fsm.master_down_interval_v3(10, 100) + 0.5)


def test_master_answers_priority_zero_within_own_interval() -> None:
    vr = master(0.0, advert_cs=10)
    t = 0.4  # became master at 0.3609; next advert due at 0.4609
    out = quiet(vr.handle(advert(0, cs=100), t))
    assert out == [SendAdvert(100)]
    assert vr.deadlines()["adver"] == pytest.approx(t + 0.1)


def test_leaving_fault_forgets_learnt_interval() -> None:
    vr = backup(0.0, advert_cs=50)
    vr.handle(advert(200, cs=10), 1.0)
    vr.handle(FaultRaised("link"), 1.1)
    vr.handle(FaultCleared("link"), 2.0)
    assert vr.state is State.BACKUP and vr.master_adver_cs == 50
    assert down_at(vr) == pytest.approx(2.0 + fsm.master_down_interval_v3(50, 100), abs=EPS)


def test_priority_change_rescales_with_learnt_interval() -> None:
    vr = backup(0.0)
    vr.handle(advert(200, cs=10), 1.0)
    before = down_at(vr)
    vr.handle(PriorityChanged(50), 1.01)
    assert down_at(vr) == pytest.approx(
        before + fsm.skew_time_v3(50, 10) - fsm.skew_time_v3(100, 10), abs=EPS
    )


def test_reload_while_master_changes_interval() -> None:
    vr = master(0.0, advert_cs=100)
    t = 5.0
    vr.handle(ParamsChanged(params(advert_cs=10)), t)
    assert vr.master_adver_cs == 10
    adver = vr.deadlines()["adver"]
    assert adver is not None and adver <= t + 0.1 + EPS


# ----------------------------------------------------------------------------------------- receive checks


def test_versions_never_mix() -> None:
    v3 = backup(0.0)
    v2adv = AdvertReceived(wire.Packet(HIGHER_IP, wire.VRRP_GROUP, 255, wire.Advert(51, 200, 1, (VIP,))))
    out = v3.handle(v2adv, 1.0)
    assert [a.reason for a in out if isinstance(a, Discard)] == [Reason.VERSION]
    assert v3.counters.discards[Reason.VERSION] == 1 and v3.counters.adverts_received == 0
    v2 = VirtualRouter(Params(vrid=51, priority=100, advert_int=1, src_ip=ME, vips=(VIP,)), "v2")
    v2.handle(Startup(), 0.0)
    d = v2.deadlines()["master_down"]
    out = v2.handle(advert(200), 1.0)
    assert [a.reason for a in out if isinstance(a, Discard)] == [Reason.VERSION]
    assert v2.deadlines()["master_down"] == d  # a v3 master does not hold a v2 backup


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (advert(200, cs=0), Reason.INTERVAL),
        (advert(200, ttl=254), Reason.TTL),
        (advert(200, vrid=52), Reason.VRID),
        (advert6(200), Reason.IP_HEADER),  # an IPv6 advert routed to an IPv4 instance
    ],
)
def test_discards_change_nothing(event: AdvertReceived, reason: Reason) -> None:
    vr = backup(0.0)
    d = down_at(vr)
    out = vr.handle(event, 1.0)
    assert [a.reason for a in out if isinstance(a, Discard)] == [reason]
    assert down_at(vr) == d and vr.master_adver_cs == 100


def test_checksum_form_is_counted_and_both_accepted() -> None:
    vr = backup(0.0)
    vr.handle(advert(200, as_v2=True), 1.0)
    vr.handle(advert(200, as_v2=False), 2.0)
    assert vr.counters.adverts_received == 2 and vr.counters.checksum_as_v2_received == 1
    snap = json.loads(json.dumps(vr.snapshot()))
    assert snap["counters"]["checksum_as_v2_received"] == 1
    assert (snap["version"], snap["family"], snap["advert_int"], snap["master_adver_int"]) == (3, 4, 1.0, 1.0)


# -------------------------------------------------------------------------------------------------- IPv6


def test_ipv6_instance_elects_on_link_local_and_sends_na() -> None:
    p = params6(advert_cs=10)
    vr = master(0.0, p)
    snap = json.loads(json.dumps(vr.snapshot()))
    assert (snap["family"], snap["src_ip"], snap["vips"], snap["master_ip"]) == (
        6,
        str(ME6),
        [str(VIP6)],
        str(ME6),
    )
    # equal priority: the higher 128-bit link-local wins (unsigned compare)
    out = quiet(vr.handle(advert6(100, cs=10, src=LOWER6), 1.0))
    assert SendGarp(5) in out and vr.state is State.MASTER  # answers the lower one (NAs for IPv6)
    vr.handle(advert6(100, cs=20, src=HIGHER6), 1.05)
    assert vr.state is State.BACKUP and vr.master_ip == HIGHER6 and vr.master_adver_cs == 20
    # an IPv4 advert never reaches an IPv6 instance's election
    out = vr.handle(advert(255), 1.1)
    assert [a.reason for a in out if isinstance(a, Discard)] == [Reason.IP_HEADER]


def test_ipv6_hop_limit_checked() -> None:
    vr = backup(0.0, params6())
    out = vr.handle(advert6(200, ttl=64), 1.0)
    assert [a.reason for a in out if isinstance(a, Discard)] == [Reason.TTL]


def test_ipv6_reload_updates_vips6() -> None:
    vr = master(0.0, params6())
    extra = IPv6Address("2001:db8::101")
    out = quiet(vr.handle(ParamsChanged(params6(vips6=(VIP6, extra))), 4.0))
    assert out == [UpdateVips6(add=(extra,), remove=()), SendGarp(5)]


def test_v3_params_validation() -> None:
    bad: list[dict[str, Any]] = [
        {"advert_cs": 0},
        {"advert_cs": 4096},
        {"advert_cs": None, "advert_int": 41},  # 4100 cs does not fit 12 bits
        {"auth_type": wire.AUTH_PASS, "auth_data": b"secret\0\0"},
        {"version": 4},
        {"vips6": (VIP6,)},  # IPv6 VIPs without an IPv6 source
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            params(**kw)
    with pytest.raises(ValueError, match="IPv6 instance"):
        params6(vips=(VIP,))
    with pytest.raises(ValueError, match="VRRPv3 only"):
        Params(vrid=1, priority=100, advert_int=1, src_ip=ME, advert_cs=10)
    with pytest.raises(ValueError, match="needs VRRPv3"):
        Params(vrid=1, priority=100, advert_int=1, src_ip=ME, src_ip6=ME6)
    assert params(advert_cs=None, advert_int=2).interval_cs == 200
    assert params(advert_cs=5).interval == 0.05
    v2 = Params(vrid=1, priority=100, advert_int=3, src_ip=ME)
    assert (v2.interval, v2.interval_cs, v2.family, v2.source) == (3, 300, 4, ME)


def test_reload_cannot_change_version_or_family() -> None:
    vr = backup(0.0)
    with pytest.raises(ValueError, match="version or address family"):
        vr.handle(ParamsChanged(Params(vrid=51, priority=100, advert_int=1, src_ip=ME, vips=(VIP,))), 1.0)
    with pytest.raises(ValueError, match="version or address family"):
        vr.handle(ParamsChanged(params6()), 1.0)


# ------------------------------------------------------------------------------------- random sequences

V3_EVENTS: list[fsm.Event] = [
    Startup(),
    TimerDue(),
    TimerDue(),
    Shutdown(),
    advert(0),
    advert(50, cs=1),
    advert(100, cs=10, src=LOWER_IP),
    advert(100, cs=4095, src=HIGHER_IP),
    advert(200, cs=7, src=HIGHER_IP),
    advert(200, cs=0, src=HIGHER_IP),
    advert(255, cs=100, src=HIGHER_IP),
    advert(200, ttl=1),
    PriorityChanged(1),
    PriorityChanged(150),
    PriorityChanged(254),
    FaultRaised("link"),
    FaultCleared("link"),
    ParamsChanged(params(advert_cs=10)),
    ParamsChanged(params(advert_cs=300, preempt=False)),
    ParamsChanged(params(advert_cs=25, preempt_delay=1)),
    fsm.Maintenance(True),
    fsm.Maintenance(False),
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(V3_EVENTS), st.floats(0, 2)), max_size=40), st.integers(1, 4095))
def test_random_v3_sequences_keep_invariants(steps: list[tuple[fsm.Event, float]], own_cs: int) -> None:
    """Whatever arrives: deadlines are in the future, the learnt interval is a valid one, a Backup's down
    timer never runs longer than the Master_Down_Interval it is based on, and VIPs are up exactly in
    MASTER."""
    now = 100.0
    vr = backup(now, advert_cs=own_cs)
    vips_up = False
    for event, dt in steps:
        now += dt
        for a in vr.handle(event, now):
            if isinstance(a, AddVips):
                assert not vips_up
                vips_up = True
            elif isinstance(a, RemoveVips):
                assert vips_up
                vips_up = False
        assert 1 <= vr.master_adver_cs <= 4095
        for name, d in vr.deadlines().items():
            assert d is None or d > now, (name, d, now)
        if vr.state is State.BACKUP:
            assert (
                down_at(vr)
                <= now + fsm.master_down_interval_v3(vr.master_adver_cs, vr.effective_priority) + EPS
            )
        if vr.state is State.MASTER:
            assert vr.master_adver_cs == vr.params.interval_cs
            adver = vr.deadlines()["adver"]
            assert adver is not None and adver <= now + vr.params.interval + EPS
        assert vips_up == (vr.state is State.MASTER)


# --------------------------------------------------------------- replaying adverts captured from keepalived


@pytest.mark.parametrize("family", [4, 6])
def test_replay_keepalived_v3_capture_into_a_backup(family: int) -> None:
    """keepalived 2.2.7's captured v3 adverts (golden.CAPTURED_V3), decoded by vrrpd.wire, drive a vrrpd
    backup configured with another interval (1 s): the master's interval is learnt, nothing is discarded,
    the priority-0 advert hands over after the Skew_Time of the *learnt* interval, and vrrpd's own advert is
    keepalived's byte for byte (the prio-100 / prio-50 frame of the same run)."""
    from golden import CAPTURED_V3

    run = [f for f in CAPTURED_V3 if f.family == family and f.dst in ("224.0.0.18", "ff02::12")]
    hi, zero, mine = run[0], run[1], run[2]
    if family == 4:
        p = params(vrid=hi.vrid, priority=mine.priority, src_ip=IPv4Address(mine.src), advert_cs=100,
                   vips=tuple(IPv4Address(a) for a in mine.addresses))  # fmt: skip

        def decode(f: Any) -> wire.PacketV3:
            return wire.decode_ip_v3(f.l3)
    else:
        p = params6(vrid=hi.vrid, priority=mine.priority, src_ip6=IPv6Address(mine.src), advert_cs=100,
                    vips6=tuple(IPv6Address(a) for a in mine.addresses))  # fmt: skip

        def decode(f: Any) -> wire.PacketV3:
            src, dst = IPv6Address(f.src), IPv6Address(f.dst)
            return wire.decode_ipv6(f.l3, src=src, dst=dst, hop_limit=255)

    vr = backup(0.0, p)
    out = vr.handle(AdvertReceived(decode(hi)), 1.0)
    assert not [a for a in out if isinstance(a, Discard)]
    assert vr.master_adver_cs == hi.max_advert_int
    out = vr.handle(AdvertReceived(decode(zero)), 2.0)
    assert not [a for a in out if isinstance(a, Discard)]
    skew = fsm.skew_time_v3(mine.priority, hi.max_advert_int)
    assert down_at(vr) == pytest.approx(2.0 + skew, abs=EPS)
    out = quiet(vr.handle(TimerDue(), 2.0 + skew))
    assert out[0] == SendAdvert(mine.priority) and vr.state is State.MASTER
    adv = wire.AdvertV3(p.vrid, mine.priority, mine.max_advert_int, p.addresses, p.family)
    if family == 4:
        assert wire.encode_ip_v3(p.src_ip, wire.VRRP_GROUP, adv, ident=mine.ip_id) == mine.l3
    else:
        assert wire.encode_v3(adv, p.source, wire.VRRP_GROUP6) == mine.l3
    assert logging.INFO  # the Log actions carry levels from the logging module
