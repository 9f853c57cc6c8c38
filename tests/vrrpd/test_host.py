"""vrrpd's host side without root: the pure planners, and :class:`vrrpd.host.Host` on the fake platform in
virtual time (batching, VIP ownership and restore, reload plans, fault re-checks, notify order, ctl)."""

from __future__ import annotations

import errno
import logging
from ipaddress import IPv4Address, IPv4Interface

import pytest
from host_rig import OUR_IP, Rig, advert, config, inst

from vrrpd import fsm
from vrrpd.config import Vip
from vrrpd.host import FAULT_RECHECK, VipKey, VipOp, plan_reload, plan_vips, source_address
from vrrpd.netlink import VRRPD_PROTO, Ack, Addr, AddrMsg

VIP = IPv4Address("192.0.2.100")
MDI = 3 + (256 - 100) / 256  # Master_Down_Interval at priority 100


def _addr(ip: str, proto: int = 0, index: int = 2, label: str = "eth0", secondary: bool = False) -> Addr:
    return Addr(index, IPv4Interface(ip), label, secondary, proto)


# ------------------------------------------------------------------------------------------ pure planners


def test_plan_vips_adds_missing_and_removes_only_its_own() -> None:
    v100, v101 = Vip(IPv4Interface("192.0.2.100/24")), Vip(IPv4Interface("192.0.2.101/24"))
    k100, k101, k102 = (2, VIP), (2, IPv4Address("192.0.2.101")), (2, IPv4Address("192.0.2.102"))
    present: dict[VipKey, Addr] = {k101: _addr("192.0.2.101/24"), k102: _addr("192.0.2.102/24", VRRPD_PROTO)}
    # .100 wanted and absent: added; .101 wanted and present (by hand): used as it is
    assert plan_vips({k100: v100, k101: v101}, present, set(), set()) == [VipOp(True, 2, v100)]
    # nothing wanted: .102 is ours and goes, .101 is not ours and stays
    assert plan_vips({}, present, {k102}, set()) == [VipOp(False, 2, Vip(IPv4Interface("192.0.2.102/24")))]
    # a request in flight: nothing more for that address until it is answered
    assert plan_vips({k100: v100}, {}, set(), {k100}) == []
    assert plan_vips({}, present, {k102}, {k102}) == []


def test_plan_vips_reinstalls_its_own_address_with_a_changed_prefix_or_label() -> None:
    new = Vip(IPv4Interface("192.0.2.100/25"), label="eth0:vip")
    key = (2, VIP)
    old = _addr("192.0.2.100/24", VRRPD_PROTO)
    ops = plan_vips({key: new}, {key: old}, {key}, set())
    assert ops == [VipOp(False, 2, Vip(old.address)), VipOp(True, 2, new)]
    # not ours: left as the operator made it
    assert plan_vips({key: new}, {key: old}, set(), set()) == []


def test_source_address_skips_vips_and_prefers_primary() -> None:
    addrs = [_addr("192.0.2.100/24"), _addr("192.0.2.30/24", secondary=True), _addr("192.0.2.21/24")]
    assert source_address(addrs, {VIP}) == IPv4Address("192.0.2.21")
    assert source_address(addrs[:2], {VIP}) == IPv4Address("192.0.2.30")
    assert source_address(addrs[:1], {VIP}) is None


def test_plan_reload_moves_stops_and_starts() -> None:
    old = config(inst("VI_1", 51, vips=["192.0.2.100/24"]), inst("VI_2", 52, vips=["192.0.2.101/24"]))
    new = config(
        inst("VI_1", 51, vips=["192.0.2.100/24", "192.0.2.101/24"]), inst("VI_3", 53, vips=["192.0.2.102/24"])
    )
    plan = plan_reload(old, new, [c.key for c in old.instances])
    assert plan.stop == (("eth0", 52, 4),)
    assert [c.name for c in plan.update] == ["VI_1"] and [c.name for c in plan.start] == ["VI_3"]
    assert plan.moved == ((IPv4Address("192.0.2.101"), "VI_2", "VI_1"),)
    assert plan.warnings == ()


# ---------------------------------------------------------------------------------------- host with fake


def test_startup_backup_then_master_adds_vip_garp_and_notifies_in_order() -> None:
    r = Rig(config(inst()))
    assert r.state() == "BACKUP" and not r.fake.has("eth0", "192.0.2.100")
    assert r.fake.sockets == {"eth0": (2, True)}
    r.advance(MDI + 0.01)
    assert r.state() == "MASTER" and r.fake.has("eth0", "192.0.2.100")
    kinds = [c.kind for c in r.fake.calls if c.kind in ("advert", "add", "garp")]
    assert kinds[:3] == ["advert", "add", "garp"]  # keepalived's order: advert, VIPs, GARP
    assert r.notify_states() == ["BACKUP", "MASTER"]
    assert r.host.status()[0]["vips_installed"] == ["192.0.2.100/24"]
    assert r.host.status()[0]["vips_foreign"] == []


def test_frozen_backup_processes_the_whole_batch_before_its_overdue_timer() -> None:
    """Defect 1: the first queued packet (another VRID, a bad password) must not decide."""
    r = Rig(config(inst(auth_pass="secret")))
    r.receive(advert(prio=150))  # wrong password is discarded; a right one needed:
    pw = config(inst(auth_pass="secret")).instances[0]
    from vrrpd import wire
    from vrrpd.host import make_params

    p = make_params(pw, IPv4Address(OUR_IP))

    def good(prio: int = 150) -> bytes:
        a = wire.Advert(51, prio, 1, (VIP,), p.auth_type, p.auth_data)
        return wire.encode_ip(IPv4Address("192.0.2.22"), wire.VRRP_GROUP, a, 1)

    r.receive(good())
    assert r.state() == "BACKUP"
    # frozen for 5 s (past Master_Down_Interval) while the master kept advertising; another VRID's and a
    # bad-password advert are first in the queue
    r.now += 5.0
    batch = [advert(vrid=52, prio=200), advert(prio=150), good(), good()]
    r.host.receive("eth0", batch, r.now)
    r.pump()
    assert r.state() == "BACKUP"
    r.host.timer(r.now)
    assert r.state() == "BACKUP" and r.notify_states() == ["BACKUP"]
    assert not r.fake.of("add")
    # with only another VRID queued, the master is really gone: the timer decides (as it should)
    r.now += 5.0
    r.receive(advert(vrid=52, prio=200))
    assert r.state() == "MASTER"


def test_deleted_vip_is_restored_at_once_and_announced(caplog: pytest.LogCaptureFixture) -> None:
    """Defect 2: ``ip addr del`` of the VIP on the master."""
    r = Rig(config(inst(prio=255)))
    assert r.state() == "MASTER" and r.fake.has("eth0", "192.0.2.100")
    garps = len(r.fake.of("garp"))
    r.fake.operator_del("eth0", "192.0.2.100")
    with caplog.at_level(logging.WARNING, logger="vrrpd"):
        r.host.netlink(r.fake.take(), False, r.now)
        # the truth at this moment: gone (the re-add is asked for, not yet confirmed)
        assert r.host.status()[0]["vips_installed"] == []
        r.pump()
    assert r.fake.has("eth0", "192.0.2.100") and r.state() == "MASTER"
    assert r.host.status()[0]["vips_installed"] == ["192.0.2.100/24"]
    assert len(r.fake.of("garp")) == garps + 1
    assert "removed from the host by someone else" in caplog.text


def test_vip_moved_between_instances_on_reload_is_never_removed() -> None:
    """Defect 3: .101 moves from VI_2 to VI_1 (earlier in the file)."""
    a = inst("VI_1", 51, prio=255, vips=["192.0.2.100/24"])
    b = inst("VI_2", 52, prio=255, vips=["192.0.2.101/24", "192.0.2.102/24"])
    r = Rig(config(a, b))
    assert r.state("VI_1") == r.state("VI_2") == "MASTER"
    r.fake.calls.clear()
    a2 = inst("VI_1", 51, prio=255, vips=["192.0.2.100/24", "192.0.2.101/24"])
    b2 = inst("VI_2", 52, prio=255, vips=["192.0.2.102/24"])
    plan = r.host.reload(config(a2, b2), r.now)
    r.pump()
    assert plan.moved == ((IPv4Address("192.0.2.101"), "VI_2", "VI_1"),)
    assert not r.fake.of("del") and r.fake.has("eth0", "192.0.2.101")
    # removed from the file altogether: now it goes
    r.host.reload(config(inst("VI_1", 51, prio=255, vips=["192.0.2.100/24"]), b2), r.now)
    r.pump()
    assert not r.fake.has("eth0", "192.0.2.101") and r.fake.has("eth0", "192.0.2.100")


def test_address_added_by_hand_is_used_but_never_removed() -> None:
    """Defect 3: an existing address is not recorded as ours."""
    r = Rig(config(inst(prio=150, vips=["192.0.2.100/24", "192.0.2.104/24"])), start=False)
    r.fake.operator_add("eth0", "192.0.2.104/24")
    r.pump()
    r.host.start(r.now)
    r.pump()
    r.advance(4)
    assert r.state() == "MASTER"
    assert r.host.status()[0]["vips_foreign"] == ["192.0.2.104/24"]
    from vrrpd.control import format_status

    text = format_status({"instances": r.host.status()})
    assert "not added by vrrpd (never removed): 192.0.2.104/24" in text
    r.fake.set_link("eth0", False)
    r.pump()
    assert r.state() == "FAULT"
    assert not r.fake.has("eth0", "192.0.2.100") and r.fake.has("eth0", "192.0.2.104")
    r.host.stop(r.now)
    r.pump()
    assert r.fake.violations == [] and r.fake.has("eth0", "192.0.2.104")


def test_startup_removes_its_leftovers_only() -> None:
    r = Rig(config(inst(vips=["192.0.2.100/24", "192.0.2.101/24"])), start=False)
    idx = 2
    # a crashed vrrpd left .100 (tagged as ours); the operator put .101 there by hand
    r.fake.addrs[(idx, VIP)] = _addr("192.0.2.100/24", VRRPD_PROTO)
    r.fake.operator_add("eth0", "192.0.2.101/24")
    r.host.netlink([AddrMsg(r.fake.addrs[(idx, VIP)]), *r.fake.take()], False, r.now)
    r.host.start(r.now)
    r.pump()
    assert r.state() == "BACKUP"
    assert not r.fake.has("eth0", "192.0.2.100") and r.fake.has("eth0", "192.0.2.101")
    assert r.fake.violations == []


def test_failed_address_read_is_retried_and_never_a_lasting_fault() -> None:
    """Defect 6: a failed read keeps what is known, and is retried."""
    r = Rig(config(inst(prio=255)))
    assert r.state() == "MASTER"
    r.fake.fail_dumps = 1
    r.fake.inbox.append(AddrMsg(_addr("192.0.2.9/24"), deleted=True))  # an event nobody cares about
    r.host.netlink(r.fake.take(), True, r.now)  # overflow: re-read everything; the read fails
    r.pump()
    assert r.state() == "MASTER"
    d = r.host.next_deadline()
    assert d is not None and d <= r.now + 1.0
    r.advance(1.01)
    assert r.host.synced and r.state() == "MASTER"


def test_fault_is_rechecked_on_a_timer() -> None:
    """Defect 6: an instance in FAULT re-reads links and addresses every FAULT_RECHECK seconds, so a missed
    event cannot keep it there."""
    r = Rig(config(inst(prio=255)))
    r.fake.set_link("eth0", False)
    r.pump()
    assert r.state() == "FAULT"
    # the link comes back but its event is lost
    r.fake.set_link("eth0", True)
    r.fake.take()
    r.advance(FAULT_RECHECK + 0.01)
    assert r.state() == "MASTER" and r.fake.has("eth0", "192.0.2.100")


def test_unicast_only_interface_does_not_join_the_group() -> None:
    """Defect 8: a unicast-only interface is not a member of 224.0.0.18."""
    r = Rig(config(inst(unicast_peer=["192.0.2.22"])))
    assert r.fake.sockets == {"eth0": (2, False)}
    r.host.reload(config(inst()), r.now)
    assert r.fake.sockets == {"eth0": (2, True)}


def test_re_created_interface_gets_a_new_socket_and_its_vips_back() -> None:
    r = Rig(config(inst(prio=255)))
    r.fake.delete_link("eth0")
    r.pump()
    assert r.state() == "FAULT" and "eth0" not in r.fake.sockets
    r.fake.add_link("eth0", 7)
    r.fake.operator_add("eth0", f"{OUR_IP}/24")
    r.pump()
    assert r.state() == "MASTER" and r.fake.sockets["eth0"] == (7, True)
    assert r.fake.has("eth0", "192.0.2.100")
    assert r.fake.of("garp")[-1][0] == "eth0"


def test_reload_closes_sockets_of_interfaces_no_longer_used() -> None:
    r = Rig(config(inst()), start=False)
    r.fake.add_link("eth1", 3)
    r.fake.operator_add("eth1", "198.51.100.21/24")
    r.pump()
    r.host.start(r.now)
    r.host.reload(config(inst(), inst("VI_2", 52, interface="eth1", vips=["198.51.100.100/24"])), r.now)
    assert set(r.fake.sockets) == {"eth0", "eth1"}
    r.host.reload(config(inst()), r.now)
    assert set(r.fake.sockets) == {"eth0"}


def test_add_error_is_retried() -> None:
    r = Rig(config(inst(prio=255)), start=False)
    r.host.start(r.now)
    msgs = r.fake.take()
    # the kernel refused the add (ENOMEM): the VIP is asked for again a second later
    for i, m in enumerate(msgs):
        if isinstance(m, Ack):
            msgs[i] = Ack(m.seq, errno.ENOMEM)
    r.fake.addrs.clear()
    r.host.netlink([m for m in msgs if not isinstance(m, AddrMsg)], False, r.now)
    assert not r.fake.has("eth0", "192.0.2.100")
    r.fake.operator_add("eth0", f"{OUR_IP}/24")
    r.pump()
    r.advance(1.01)
    assert r.fake.has("eth0", "192.0.2.100")


def test_track_results_hold_init_and_a_first_failure_faults_at_once() -> None:
    cfg = config(
        inst(track_script=["chk"]),
        vrrp_script={"chk": {"script": ["/bin/true"], "weight": 0}},
    )
    r = Rig(cfg)
    r.host.track("chk", None, r.now)
    assert r.state() == "INIT" and r.notify_states() == []
    r.advance(10)
    assert r.state() == "INIT"
    r.host.track("chk", False, r.now)
    assert r.state() == "FAULT" and r.notify_states() == ["FAULT"]
    r.host.track("chk", True, r.now)
    assert r.state() == "BACKUP"


def test_ctl_maintenance_hands_over_and_restore() -> None:
    from vrrpd.admin import command

    r = Rig(config(inst(prio=150)))
    r.advance(4)
    assert r.state() == "MASTER"
    res = command(r.host, ["maint", "VI_1"], r.now)
    r.pump()
    assert res["ok"] and r.state() == "BACKUP"
    assert r.fake.of("advert")[-1][-1] == 0 and not r.fake.has("eth0", "192.0.2.100")
    assert command(r.host, ["restore", "all"], r.now)["instances"][0]["maintenance"] is False
    assert "error" in command(r.host, ["maint", "nope"], r.now)


def test_stop_sends_priority_zero_removes_vips_and_notifies_stop() -> None:
    r = Rig(config(inst(prio=255)))
    r.host.stop(r.now)
    r.pump()
    assert r.fake.of("advert")[-1][-1] == 0
    assert not r.fake.has("eth0", "192.0.2.100")
    assert r.notify_states() == ["MASTER", "STOP"]
    assert r.host.describe("VI_1")["state"] == fsm.State.INIT.value


def test_netlink_channel_never_waits() -> None:
    """Defect 8: netlink requests used to wait for their answer on the loop (5 s timeout). The channel is
    non-blocking: a request returns its sequence number, the answer is read when the socket is readable."""
    import select

    from vrrpd.netlink import Channel, DumpDone, LinkMsg

    ch = Channel()
    try:
        assert ch.sock.gettimeout() == 0.0
        seq = ch.dump_links()
        got: list[object] = []
        deadline = 50
        while not any(isinstance(m, DumpDone) and m.seq == seq for m in got) and deadline:
            select.select([ch.sock], [], [], 0.1)
            msgs, _overflow = ch.read()
            got += msgs
            deadline -= 1
        names = {m.link.name for m in got if isinstance(m, LinkMsg) and m.dump == seq}
        assert "lo" in names
    finally:
        ch.close()


def test_a_dump_whose_end_was_lost_is_asked_again() -> None:
    from vrrpd.host import DUMP_TIMEOUT

    r = Rig(config(inst(prio=255)))
    r.host.netlink([], True, r.now)  # overflow: a full re-read is asked for ...
    r.fake.take()  # ... and its answer is lost with the rest of the buffer
    r.fake.set_link("eth0", False)
    r.fake.take()  # so is this event
    assert r.state() == "MASTER"
    r.advance(DUMP_TIMEOUT + 0.01)
    assert r.state() == "FAULT"
