"""vrrpd.fsm: one VirtualRouter fed events in virtual time (RFC 3768 section 6 and keepalived behaviour)."""

from __future__ import annotations

import dataclasses
import logging
from ipaddress import IPv4Address
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
    Maintenance,
    Malformed,
    Params,
    ParamsChanged,
    PriorityChanged,
    RemoveVips,
    SendAdvert,
    SendGarp,
    Shutdown,
    Startup,
    State,
    StateChanged,
    TimerDue,
    UpdateVips,
    VirtualRouter,
)
from vrrpd.wire import Reason

ME = IPv4Address("192.0.2.21")
LOWER_IP = IPv4Address("192.0.2.5")
HIGHER_IP = IPv4Address("192.0.2.200")
VIP = IPv4Address("192.0.2.100")
PW = wire.password("secret")


def params(**kw: Any) -> Params:
    base: dict[str, Any] = {
        "vrid": 51,
        "priority": 100,
        "advert_int": 1,
        "src_ip": ME,
        "vips": (VIP,),
        "auth_type": PW[0],
        "auth_data": PW[1],
    }
    base.update(kw)
    return Params(**base)


def advert(priority: int, src: IPv4Address = LOWER_IP, ttl: int = 255, **kw: Any) -> AdvertReceived:
    fields: dict[str, Any] = {
        "vrid": 51,
        "priority": priority,
        "advert_int": 1,
        "addresses": (VIP,),
        "auth_type": PW[0],
        "auth_data": PW[1],
    }
    fields.update(kw)
    return AdvertReceived(wire.Packet(src, wire.VRRP_GROUP, ttl, wire.Advert(**fields)))


def quiet(actions: list[Action]) -> list[Action]:
    """Actions without Log lines."""
    return [a for a in actions if not isinstance(a, Log)]


def backup(now: float = 0.0, **kw: Any) -> VirtualRouter:
    vr = VirtualRouter(params(**kw), "VI_1")
    vr.handle(Startup(), now)
    assert vr.state is State.BACKUP
    return vr


def master(now: float = 0.0, **kw: Any) -> VirtualRouter:
    vr = backup(now, **kw)
    deadline = vr.next_deadline()
    assert deadline is not None
    vr.handle(TimerDue(), deadline)
    assert vr.state is State.MASTER
    return vr


# ------------------------------------------------------------------------------------------------- timers


def test_skew_and_master_down_interval_v2() -> None:
    # vrrp.md section 3.3 table; the skew is not scaled by the interval in VRRPv2
    assert fsm.skew_time(100) == pytest.approx(0.609375)
    assert fsm.master_down_interval(1, 100) == pytest.approx(3.609375)
    assert fsm.master_down_interval(1, 128) == pytest.approx(3.5)
    assert fsm.master_down_interval(1, 254) == pytest.approx(3.0078125)
    assert fsm.master_down_interval(2, 100) == pytest.approx(6.609375)


def test_startup_goes_backup_with_master_down_interval() -> None:
    vr = VirtualRouter(params(), "VI_1")
    out = vr.handle(Startup(), 10.0)
    assert quiet(out) == [StateChanged(State.INIT, State.BACKUP, 100)]
    assert vr.next_deadline() == pytest.approx(13.609375)


def test_early_and_stale_timer_does_nothing() -> None:
    vr = backup(10.0)
    assert vr.handle(TimerDue(), 11.0) == []
    assert vr.handle(TimerDue(), 13.6) == []
    assert vr.state is State.BACKUP


def test_becoming_master_order_advert_vips_garp_then_notify() -> None:
    vr = backup(0.0)
    out = quiet(vr.handle(TimerDue(), 3.609375))
    assert out == [SendAdvert(100), AddVips(), SendGarp(5), StateChanged(State.BACKUP, State.MASTER, 100)]
    assert vr.master_ip == ME
    assert vr.counters.became_master == 1
    assert vr.deadlines()["adver"] == pytest.approx(4.609375)
    assert vr.deadlines()["garp_delayed"] == pytest.approx(8.609375)


def test_master_adverts_and_second_garp_burst() -> None:
    vr = master(0.0, garp_master_repeat=3, garp_master_delay=5)
    t0 = 3.609375
    sent: list[tuple[float, Action]] = []
    t = t0
    while t < t0 + 6.5:
        nd = vr.next_deadline()
        assert nd is not None
        t = nd
        sent.extend((t - t0, a) for a in quiet(vr.handle(TimerDue(), t)))
    adverts = [round(dt, 6) for dt, a in sent if isinstance(a, SendAdvert)]
    assert adverts[:6] == [1, 2, 3, 4, 5, 6]
    garps = [(round(dt, 6), a) for dt, a in sent if isinstance(a, SendGarp)]
    assert garps == [(5, SendGarp(3))]


def test_garp_refresh() -> None:
    vr = master(0.0, garp_master_refresh=2, garp_master_refresh_repeat=2, garp_master_delay=0)
    t0 = vr.deadlines()["adver"]
    assert t0 is not None
    garps = []
    t = t0
    while t < t0 + 7:
        nd = vr.next_deadline()
        assert nd is not None
        t = nd
        garps += [(round(t - 3.609375, 6), a) for a in vr.handle(TimerDue(), t) if isinstance(a, SendGarp)]
    assert garps[:3] == [(2, SendGarp(2)), (4, SendGarp(2)), (6, SendGarp(2))]


def test_owner_goes_master_at_startup() -> None:
    vr = VirtualRouter(params(priority=255))
    out = quiet(vr.handle(Startup(), 0.0))
    assert out == [SendAdvert(255), AddVips(), SendGarp(5), StateChanged(State.INIT, State.MASTER, 255)]


def test_no_garp_without_vips() -> None:
    vr = VirtualRouter(params(priority=255, vips=()))
    assert quiet(vr.handle(Startup(), 0.0)) == [
        SendAdvert(255),
        AddVips(),
        StateChanged(State.INIT, State.MASTER, 255),
    ]


# ----------------------------------------------------------------------------------------------- backup rx


def test_backup_resets_down_timer_on_higher_or_equal_priority() -> None:
    vr = backup(0.0)
    vr.handle(advert(150, HIGHER_IP), 2.0)
    assert vr.next_deadline() == pytest.approx(5.609375)
    assert vr.master_ip == HIGHER_IP
    vr.handle(advert(100, LOWER_IP), 3.0)  # equal priority: RFC 3768 section 6.4.2 resets (no tie-break here)
    assert vr.next_deadline() == pytest.approx(6.609375)
    assert vr.counters.adverts_received == 2


def test_backup_priority_zero_sets_skew_time() -> None:
    vr = backup(0.0)
    vr.handle(advert(150), 1.0)
    out = vr.handle(advert(0), 2.0)
    assert not [a for a in out if isinstance(a, StateChanged)]
    assert vr.next_deadline() == pytest.approx(2.609375)
    assert vr.counters.priority_zero_received == 1
    out = quiet(vr.handle(TimerDue(), 2.609375))
    assert out[0] == SendAdvert(100)


def test_backup_preempts_lower_priority_master() -> None:
    vr = backup(0.0, priority=150)
    for t in (0.5, 1.5, 2.5, 3.5):
        out = vr.handle(advert(100), t)  # ignored: lower priority, preempt on
        assert not [a for a in out if isinstance(a, Discard)]  # ignoring is not a discard counter
    # the down timer (startup + 3.414) was overdue when the 3.5 advert arrived: it fires after the advert
    assert vr.state is State.MASTER


def test_backup_preempt_timing_is_master_down_interval_from_start() -> None:
    vr = backup(0.0, priority=150)
    for t in (0.5, 1.5, 2.5):
        vr.handle(advert(100), t)
    assert vr.state is State.BACKUP
    assert vr.next_deadline() == pytest.approx(3.4140625)  # keepalived: 3.41 s at priority 150


def test_nopreempt_backup_never_takes_over_from_lower_priority_master() -> None:
    vr = backup(0.0, priority=200, preempt=False)
    for i in range(30):
        vr.handle(advert(100), 0.5 + i)
        vr.handle(TimerDue(), 0.6 + i)
    assert vr.state is State.BACKUP
    assert vr.master_ip == LOWER_IP


def test_preempt_delay_keepalived_man_example() -> None:
    """keepalived.conf(5): advert 1 s, priority 128 -> 3.5 s; with preempt_delay 2 -> about 5.5 s."""

    def takeover(delay: float) -> float:
        vr = backup(0.0, priority=128, preempt_delay=delay)
        t = 0.25
        while vr.state is State.BACKUP:
            nd = vr.next_deadline()
            assert nd is not None
            if nd < t:
                vr.handle(TimerDue(), nd)
                return nd
            vr.handle(advert(100), t)
            t += 1
        raise AssertionError("took over while handling an advert")

    assert takeover(0) == pytest.approx(3.5)
    # lower adverts at 0.25 (starts the delay, until 2.25) and 1.25 are accepted; 2.25 is not -> 1.25 + 3.5
    assert takeover(2) == pytest.approx(4.75)
    assert takeover(2.5) == pytest.approx(5.75)  # 2.25 accepted too


def test_preempt_delay_cleared_by_higher_priority_advert() -> None:
    vr = backup(0.0, priority=128, preempt_delay=2)
    vr.handle(advert(100), 0.5)
    assert vr.preempt_until == pytest.approx(2.5)
    vr.handle(advert(200, HIGHER_IP), 1.0)
    assert vr.preempt_until is None


# ----------------------------------------------------------------------------------------------- master rx


def test_master_yields_to_higher_priority() -> None:
    vr = master(0.0, higher_prio_send_advert=False)
    out = quiet(vr.handle(advert(150, LOWER_IP), 5.0))
    assert out == [RemoveVips(), StateChanged(State.MASTER, State.BACKUP, 100)]
    assert vr.master_ip == LOWER_IP
    assert vr.next_deadline() == pytest.approx(5 + 3.609375)
    assert vr.deadlines()["adver"] is None and vr.deadlines()["garp_delayed"] is None
    assert vr.counters.released_master == 1


def test_master_yielding_sends_one_last_advert_by_default() -> None:
    # higher_prio_send_advert: the winner then hears a lower-priority master and re-sends GARP, which heals
    # ARP caches after a partition even when the loser heard the winner first.
    vr = master(0.0)
    out = quiet(vr.handle(advert(150, LOWER_IP), 5.0))
    assert out == [SendAdvert(100), RemoveVips(), StateChanged(State.MASTER, State.BACKUP, 100)]
    winner = master(0.0, priority=150, src_ip=LOWER_IP)
    answer = quiet(winner.handle(advert(100, ME), 5.0))
    assert SendAdvert(150) in answer and any(isinstance(a, SendGarp) for a in answer)


def test_master_yields_even_with_nopreempt() -> None:
    vr = master(0.0, preempt=False)
    vr.handle(advert(150), 5.0)
    assert vr.state is State.BACKUP


def test_tie_break_higher_ip_wins() -> None:
    vr = master(0.0)
    out = quiet(vr.handle(advert(100, HIGHER_IP), 5.0))
    assert out[:3] == [SendAdvert(100), RemoveVips(), StateChanged(State.MASTER, State.BACKUP, 100)]


def test_tie_break_is_unsigned() -> None:
    vr = master(0.0, src_ip=IPv4Address("127.255.255.255"))
    vr.handle(advert(100, IPv4Address("128.0.0.1")), 5.0)  # would be negative as a signed int
    assert vr.state is State.BACKUP


def test_master_answers_lower_priority_with_advert_and_garp() -> None:
    vr = master(0.0, garp_lower_prio_repeat=5)
    out = quiet(vr.handle(advert(50), 4.0))
    assert out == [SendAdvert(100), SendGarp(5)]
    out = quiet(vr.handle(advert(100, LOWER_IP), 4.2))  # equal priority, lower IP: also "lower"
    assert out == [SendAdvert(100), SendGarp(5)]
    assert vr.state is State.MASTER


def test_backlog_of_lower_adverts_answered_once_per_instant() -> None:
    vr = master(0.0)
    assert quiet(vr.handle(advert(50), 4.0)) == [SendAdvert(100), SendGarp(5)]
    assert quiet(vr.handle(advert(50), 4.0)) == []
    assert quiet(vr.handle(advert(50), 4.1)) == [SendAdvert(100), SendGarp(5)]


def test_lower_prio_no_advert_and_no_garp() -> None:
    vr = master(0.0, lower_prio_no_advert=True, garp_lower_prio_repeat=0)
    assert quiet(vr.handle(advert(50), 4.0)) == []
    vr = master(0.0, lower_prio_no_advert=True)
    assert quiet(vr.handle(advert(50), 4.0)) == [SendGarp(5)]


def test_master_hearing_priority_zero_sends_advert_at_once() -> None:
    vr = master(0.0)
    out = quiet(vr.handle(advert(0), 4.0))
    assert out == [SendAdvert(100)]
    assert vr.deadlines()["adver"] == pytest.approx(5.0)


def test_two_owners_converge_on_higher_ip() -> None:
    low = VirtualRouter(params(priority=255, src_ip=LOWER_IP))
    high = VirtualRouter(params(priority=255, src_ip=HIGHER_IP))
    low.handle(Startup(), 0)
    high.handle(Startup(), 0)
    out = low.handle(advert(255, HIGHER_IP), 0.001)
    assert low.state is State.BACKUP
    assert any(isinstance(a, Log) and "CONFIGURATION ERROR" in a.message for a in out)
    high.handle(advert(255, LOWER_IP), 0.001)
    assert high.state is State.MASTER


def test_owner_ignore_adverts_is_strict_rfc() -> None:
    vr = VirtualRouter(params(priority=255, owner_ignore_adverts=True))
    vr.handle(Startup(), 0)
    out = vr.handle(advert(255, HIGHER_IP), 1)
    assert vr.state is State.MASTER
    assert next(a for a in out if isinstance(a, Discard)).reason is Reason.OWNER
    assert vr.counters.discards[Reason.OWNER] == 1


# ------------------------------------------------------------------------------------------------ discards


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (advert(200, ttl=254), Reason.TTL),
        (advert(200, vrid=52), Reason.VRID),
        (advert(200, auth_type=0, auth_data=b"\0" * 8), Reason.AUTH_TYPE),
        (advert(200, auth_data=b"Secret\0\0"), Reason.AUTH_PASS),
        (advert(200, advert_int=3), Reason.INTERVAL),
    ],
)
@pytest.mark.parametrize("start", ["backup", "master"])
def test_discards_are_counted_and_change_nothing(event: AdvertReceived, reason: Reason, start: str) -> None:
    vr = backup(0.0) if start == "backup" else master(0.0)
    before = (vr.state, vr.deadlines(), vr.master_ip)
    out = vr.handle(event, 1.0)
    assert len(out) == 1 and isinstance(out[0], Discard) and out[0].reason is reason and out[0].detail
    assert (vr.state, vr.deadlines(), vr.master_ip) == before
    assert vr.counters.discards[reason] == 1
    assert vr.counters.adverts_received == 0


def test_unicast_peer_check_and_no_ttl_check() -> None:
    vr = backup(0.0, unicast_peers=(HIGHER_IP,))
    out = vr.handle(advert(200, LOWER_IP, ttl=64), 1.0)
    assert [a.reason for a in out if isinstance(a, Discard)] == [Reason.PEER]
    vr.handle(advert(200, HIGHER_IP, ttl=64), 1.0)
    assert vr.master_ip == HIGHER_IP and vr.next_deadline() == pytest.approx(4.609375)


def test_address_list_mismatch_counted_but_advert_used() -> None:
    vr = backup(0.0)
    out = vr.handle(advert(200, HIGHER_IP, addresses=(IPv4Address("192.0.2.99"),)), 1.0)
    assert [a.reason for a in out if isinstance(a, Discard)] == [Reason.ADDR_LIST]
    assert vr.counters.discards[Reason.ADDR_LIST] == 1
    assert vr.master_ip == HIGHER_IP and vr.next_deadline() == pytest.approx(4.609375)


def test_malformed_is_counted() -> None:
    vr = backup(0.0)
    out = vr.handle(Malformed(Reason.CHECKSUM, "bad"), 1.0)
    assert out == [Discard(Reason.CHECKSUM, "bad")]
    assert vr.counters.discards[Reason.CHECKSUM] == 1


# ---------------------------------------------------------------------------------------- shutdown, fault


def test_shutdown_master_sends_priority_zero_then_removes_vips() -> None:
    vr = master(0.0)
    out = quiet(vr.handle(Shutdown(), 5.0))
    assert out == [SendAdvert(0), RemoveVips(), StateChanged(State.MASTER, State.INIT, 100)]
    assert vr.counters.priority_zero_sent == 1
    assert vr.next_deadline() is None


def test_shutdown_backup_is_silent() -> None:
    vr = backup(0.0)
    assert quiet(vr.handle(Shutdown(), 1.0)) == [StateChanged(State.BACKUP, State.INIT, 100)]
    assert vr.next_deadline() is None
    assert vr.handle(Shutdown(), 2.0) == []


def test_restart_after_shutdown() -> None:
    vr = master(0.0)
    vr.handle(Shutdown(), 5.0)
    vr.handle(Startup(), 6.0)
    assert vr.state is State.BACKUP and vr.next_deadline() == pytest.approx(9.609375)


def test_master_entering_fault_sends_priority_zero() -> None:
    vr = master(0.0)
    out = quiet(vr.handle(FaultRaised("link eth0 down"), 5.0))
    assert out == [SendAdvert(0), RemoveVips(), StateChanged(State.MASTER, State.FAULT, 100)]
    assert vr.next_deadline() is None


def test_fault_reasons_are_a_set() -> None:
    vr = backup(0.0)
    vr.handle(FaultRaised("link"), 1.0)
    vr.handle(FaultRaised("track:chk"), 1.5)
    assert vr.state is State.FAULT
    vr.handle(advert(200, HIGHER_IP), 1.6)  # ignored in FAULT, but counted and remembered
    assert vr.state is State.FAULT and vr.master_ip == HIGHER_IP
    assert quiet(vr.handle(FaultCleared("link"), 2.0)) == []
    assert vr.state is State.FAULT
    assert quiet(vr.handle(FaultCleared("unknown"), 2.5)) == []
    out = quiet(vr.handle(FaultCleared("track:chk"), 3.0))
    assert out == [StateChanged(State.FAULT, State.BACKUP, 100)]
    assert vr.next_deadline() == pytest.approx(6.609375)


def test_fault_before_startup() -> None:
    vr = VirtualRouter(params())
    vr.handle(FaultRaised("no unicast peer"), 0.0)
    assert quiet(vr.handle(Startup(), 0.0)) == [StateChanged(State.INIT, State.FAULT, 100)]


def test_owner_leaves_fault_as_master() -> None:
    vr = VirtualRouter(params(priority=255))
    vr.handle(FaultRaised("link"), 0.0)
    vr.handle(Startup(), 0.0)
    out = quiet(vr.handle(FaultCleared("link"), 1.0))
    assert out[0] == SendAdvert(255) and out[-1] == StateChanged(State.FAULT, State.MASTER, 255)


# --------------------------------------------------------------------------------------- priority, reload


def test_priority_change_rescales_running_down_timer() -> None:
    vr = backup(0.0)
    vr.handle(advert(250, HIGHER_IP), 1.0)
    assert vr.next_deadline() == pytest.approx(1 + 3.609375)
    vr.handle(PriorityChanged(200), 2.0)
    assert vr.next_deadline() == pytest.approx(1 + 3 + 56 / 256)
    vr.handle(advert(0, HIGHER_IP), 3.0)
    assert vr.next_deadline() == pytest.approx(3 + 56 / 256)
    vr.handle(PriorityChanged(100), 3.1)
    assert vr.next_deadline() == pytest.approx(3 + 156 / 256)


def test_priority_change_never_leaves_overdue_deadline() -> None:
    vr = backup(0.0, priority=1)  # MDI 3.996
    vr.handle(PriorityChanged(254), 3.5)  # new deadline 3.0078 < now: fires at once
    assert vr.state is State.MASTER


def test_priority_change_used_in_adverts_and_rejects_garbage() -> None:
    vr = master(0.0)
    vr.handle(PriorityChanged(40), 4.0)
    out = vr.handle(TimerDue(), 4.609375)
    assert SendAdvert(40) in out
    with pytest.raises(ValueError):
        vr.handle(PriorityChanged(0), 5.0)


def test_reload_keeps_state_and_updates_vips() -> None:
    vr = master(0.0)
    new_vip = IPv4Address("192.0.2.101")
    out = quiet(vr.handle(ParamsChanged(params(vips=(VIP, new_vip))), 4.0))
    assert out == [UpdateVips(add=(new_vip,), remove=()), SendGarp(5)]
    assert vr.state is State.MASTER
    assert quiet(vr.handle(ParamsChanged(params(vips=(VIP, new_vip))), 4.5)) == []
    with pytest.raises(ValueError):
        vr.handle(ParamsChanged(params(vrid=52)), 6.0)


def test_reload_priority_keeps_track_offset() -> None:
    vr = backup(0.0)
    vr.handle(PriorityChanged(70), 0.5)  # a -30 script is failing
    vr.handle(ParamsChanged(params(priority=150)), 1.0)
    assert vr.effective_priority == 120
    assert vr.state is State.BACKUP


def test_reload_with_known_effective_priority_has_no_transient() -> None:
    # a runtime override of 1 (vrrpd ctl): the configured priority changes 100 -> 200 on reload, the daemon
    # passes the effective priority along, and the down timer does not move through a transient 101.
    vr = backup(0.0)
    vr.handle(PriorityChanged(1), 0.5)
    vr.handle(advert(50, HIGHER_IP), 1.0)
    due = vr.next_deadline()
    vr.handle(ParamsChanged(params(priority=200), effective=1), 2.0)
    assert vr.effective_priority == 1 and vr.next_deadline() == due and vr.params.priority == 200
    out = vr.handle(ParamsChanged(params(priority=200), effective=120), 2.5)  # same params, new effective
    assert vr.effective_priority == 120 and due is not None
    assert vr.next_deadline() == pytest.approx(due - (255 - 136) / 256)
    assert any(isinstance(a, Log) for a in out)
    with pytest.raises(ValueError):
        vr.handle(ParamsChanged(params(priority=200), effective=0), 3.0)


# ------------------------------------------------------------------------------- maintenance (vrrpd ctl)


def test_maintenance_master_hands_over_like_shutdown_and_stays_backup() -> None:
    vr = master(0.0, priority=150)
    vr.handle(PriorityChanged(1), 10.0)  # the daemon lowers the priority first
    out = quiet(vr.handle(Maintenance(True), 10.0))
    assert out == [SendAdvert(0), RemoveVips(), StateChanged(State.MASTER, State.BACKUP, 1)]
    assert vr.state is State.BACKUP and vr.maint and vr.master_ip is None
    assert vr.next_deadline() == pytest.approx(10 + fsm.master_down_interval(1, 1))
    assert vr.counters.priority_zero_sent == 1 and vr.counters.released_master == 1
    assert vr.snapshot()["maintenance"] is True
    # the new master's adverts keep it Backup; a repeated maint changes nothing
    vr.handle(advert(100, HIGHER_IP), 10.7)
    assert quiet(vr.handle(Maintenance(True), 10.8)) == []
    assert vr.state is State.BACKUP and vr.master_ip == HIGHER_IP


def test_maintenance_backup_does_not_preempt_until_restored() -> None:
    vr = backup(0.0, priority=150)
    vr.handle(PriorityChanged(60), 0.1)
    vr.handle(Maintenance(True), 0.1)
    t = 0.5
    for _ in range(10):  # a lower-priority master (40) is accepted, as with nopreempt
        out = vr.handle(advert(40), t)
        assert vr.state is State.BACKUP and not [a for a in out if isinstance(a, SendAdvert)]
        t += 1
    due = vr.next_deadline()
    assert due is not None and due == pytest.approx(t - 1 + fsm.master_down_interval(1, 60))
    # restore: preemption is back, the lower adverts are discarded and the timer runs out
    vr.handle(Maintenance(False), t)
    vr.handle(PriorityChanged(150), t)
    assert not vr.maint
    vr.handle(advert(40), t + 0.5)
    vr.handle(advert(40), t + 1.5)
    vr.handle(TimerDue(), t - 1 + fsm.master_down_interval(1, 150))
    assert vr.state is State.MASTER


def test_maintenance_backup_still_takes_over_as_last_resort() -> None:
    vr = backup(0.0)
    vr.handle(PriorityChanged(1), 0.0)
    vr.handle(Maintenance(True), 0.0)
    out = vr.handle(TimerDue(), fsm.master_down_interval(1, 1))
    assert vr.state is State.MASTER and SendAdvert(1) in out
    assert any(isinstance(a, Log) and "last resort" in a.message for a in out)


def test_maintenance_in_fault_and_init_is_recorded() -> None:
    vr = VirtualRouter(params())
    assert quiet(vr.handle(Maintenance(True), 0.0)) == []
    vr.handle(FaultRaised("link"), 0.0)
    vr.handle(Startup(), 0.0)
    assert vr.state is State.FAULT and vr.maint
    vr.handle(FaultCleared("link"), 1.0)
    assert vr.state is State.BACKUP and vr.maint


def test_maintenance_ignored_for_owner_and_ended_by_becoming_owner() -> None:
    owner = VirtualRouter(params(priority=255))
    owner.handle(Startup(), 0.0)
    out = owner.handle(Maintenance(True), 1.0)
    assert owner.state is State.MASTER
    assert not owner.maint and [a for a in out if isinstance(a, Log) and a.level == logging.WARNING]
    vr = backup(0.0)
    vr.handle(Maintenance(True), 0.5)
    vr.handle(ParamsChanged(params(priority=255), effective=255), 1.0)
    assert not vr.maint and vr.effective_priority == 255


def test_snapshot_is_json_able() -> None:
    import json

    vr = master(0.0)
    vr.handle(advert(50), 4.0)
    snap = json.loads(json.dumps(vr.snapshot()))
    assert snap["state"] == "MASTER" and snap["counters"]["adverts_received"] == 1
    assert snap["counters"]["discards"]["ttl"] == 0


def test_params_validation() -> None:
    for bad in ({"vrid": 0}, {"priority": 0}, {"advert_int": 0}, {"preempt_delay": -1}, {"auth_data": b"x"}):
        with pytest.raises(ValueError):
            params(**bad)


# -------------------------------------------------------------------------- closure over (state, event)

SAMPLE_EVENTS: list[fsm.Event] = [
    Startup(),
    TimerDue(),
    Shutdown(),
    advert(0),
    advert(50),
    advert(100, LOWER_IP),
    advert(100, HIGHER_IP),
    advert(100, ME),
    advert(200, HIGHER_IP),
    advert(255, HIGHER_IP),
    advert(200, ttl=1),
    advert(200, advert_int=2),
    advert(200, addresses=()),
    Malformed(Reason.LENGTH),
    PriorityChanged(1),
    PriorityChanged(150),
    PriorityChanged(254),
    FaultRaised("link"),
    FaultRaised("track"),
    FaultCleared("link"),
    FaultCleared("track"),
    ParamsChanged(params()),
    ParamsChanged(params(priority=200, preempt=False, vips=(VIP, IPv4Address("192.0.2.101")))),
    ParamsChanged(params(advert_int=3, preempt_delay=2, garp_master_refresh=1)),
    ParamsChanged(params(priority=200), effective=1),
    ParamsChanged(params(priority=255), effective=255),
    Maintenance(True),
    Maintenance(False),
]


def reach(state: State, now: float, **kw: Any) -> VirtualRouter:
    if kw.get("priority") == 255:  # an owner goes MASTER at startup
        vr = VirtualRouter(params(**kw))
        if state is not State.INIT:
            vr.handle(Startup(), now - 4)
        if state is State.FAULT:
            vr.handle(FaultRaised("link"), now - 0.5)
        return vr
    if state is State.INIT:
        return VirtualRouter(params(**kw))
    if state is State.BACKUP:
        return backup(now - 1, **kw)
    if state is State.MASTER:
        return master(now - 4, **kw)
    vr = backup(now - 1, **kw)
    vr.handle(FaultRaised("link"), now - 0.5)
    return vr


def check_invariants(vr: VirtualRouter, now: float, vips_up: bool) -> None:
    assert isinstance(vr.state, State)
    for name, d in vr.deadlines().items():
        assert d is None or d > now, (name, d, now)
    if vr.state is State.MASTER:
        assert vr.deadlines()["adver"] is not None and vr.deadlines()["master_down"] is None
    elif vr.state is State.BACKUP:
        assert vr.deadlines()["master_down"] is not None and vr.deadlines()["adver"] is None
    else:
        assert vr.next_deadline() is None
    assert vips_up == (vr.state is State.MASTER)
    assert 1 <= vr.effective_priority <= 255
    assert not (vr.maint and vr.params.owner)


def apply(vr: VirtualRouter, event: fsm.Event, now: float, vips_up: bool) -> bool:
    for a in vr.handle(event, now):
        if isinstance(a, AddVips):
            assert not vips_up
            vips_up = True
        elif isinstance(a, RemoveVips):
            assert vips_up
            vips_up = False
        elif isinstance(a, SendAdvert):
            assert 0 <= a.priority <= 255
    return vips_up


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(State)),
    st.sampled_from(SAMPLE_EVENTS),
    st.floats(10, 1e6, allow_nan=False),
    st.floats(0, 10, allow_nan=False),
)
def test_every_state_event_pair_lands_in_a_valid_state(
    state: State, event: fsm.Event, now: float, later: float
) -> None:
    vr = reach(state, now)
    vips_up = vr.state is State.MASTER
    before = vr.state
    vips_up = apply(vr, event, now + later, vips_up)
    check_invariants(vr, now + later, vips_up)
    if event == Maintenance(True):
        # a planned switchover never leaves a Master (unless the down timer was already due) and always
        # says so with priority 0 first
        assert vr.maint
        if before is State.MASTER:
            assert vr.state is State.BACKUP and vr.counters.priority_zero_sent == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(State)),
    st.lists(
        st.tuples(st.sampled_from([*SAMPLE_EVENTS, TimerDue(), TimerDue()]), st.floats(0, 4)), max_size=40
    ),
    st.booleans(),
)
def test_random_event_sequences_keep_invariants(
    state: State, steps: list[tuple[fsm.Event, float]], owner: bool
) -> None:
    now = 100.0
    vr = reach(state, now, **({"priority": 255} if owner else {}))
    vips_up = vr.state is State.MASTER
    for event, dt in steps:
        now += dt
        vips_up = apply(vr, event, now, vips_up)
        check_invariants(vr, now, vips_up)
    # the counters only ever count up and add up
    c = vr.counters
    assert c.became_master >= c.released_master >= 0
    assert all(n >= 0 for n in c.discards.values())


def test_event_and_action_types_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SendAdvert(1).priority = 2  # type: ignore[misc]


# --------------------------------------------------------------- replaying adverts captured from keepalived


def test_replay_keepalived_capture_into_a_backup() -> None:
    """The captured keepalived frames (golden.CAPTURED, run "pass") drive a vrrpd backup configured like the
    capture: the prio-150 adverts are accepted without any discard, the prio-0 advert hands over after
    Skew_Time, and vrrpd's own first advert is byte-identical to keepalived's prio-100 advert."""
    from golden import CAPTURED

    pw = wire.password("vc51-pw")
    vr = VirtualRouter(
        Params(
            vrid=51,
            priority=100,
            advert_int=1,
            src_ip=IPv4Address("192.0.2.22"),
            vips=(VIP,),
            auth_type=pw[0],
            auth_data=pw[1],
        )
    )
    vr.handle(Startup(), 0.0)
    master150, zero = (wire.decode_ip(v.raw[14:]) for v in CAPTURED[:2])
    for t in (0.5, 1.5, 2.5):
        assert not [a for a in vr.handle(AdvertReceived(master150), t) if isinstance(a, Discard)]
    assert vr.master_ip == IPv4Address("192.0.2.21") and vr.state is State.BACKUP
    vr.handle(AdvertReceived(zero), 3.0)
    assert vr.next_deadline() == pytest.approx(3.609375)  # keepalived's own backup: 0.6095 s in the capture
    out = quiet(vr.handle(TimerDue(), 3.609375))
    assert out[0] == SendAdvert(100)
    ours = wire.Advert(51, 100, 1, (VIP,), pw[0], pw[1])
    theirs = CAPTURED[2]
    assert wire.encode_ip(IPv4Address("192.0.2.22"), wire.VRRP_GROUP, ours, theirs.ip_id) == theirs.raw[14:]
    assert vr.counters.adverts_received == 4 and sum(vr.counters.discards.values()) == 0
