"""Hypothesis over sequences of host events for :class:`vrrpd.host.Host` on the fake platform: packet batches
(a peer of any priority, other VRIDs, garbage), address events (VIPs deleted by someone else, addresses added
by hand), link down/up and re-creation, reloads moving VIPs between instances, track results, ``vrrpd ctl``,
stop and crash-restart. After every step (and the kernel's answers, one reconciliation step):

* a VIP is present on the host if and only if an instance that has it is MASTER (addresses an operator added
  by hand excepted: those may stay);
* nothing vrrpd did not add is ever removed;
* notify scripts ran in the order of the state changes (no repeat, the last one is the current state);
* after a stop, nothing vrrpd added remains.
"""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address
from typing import Any

from host_rig import OUR_IP, advert, config, inst
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vrrpd import fsm
from vrrpd.config import Config
from vrrpd.fakeplatform import FakePlatform
from vrrpd.host import Host
from vrrpd.netlink import VRRPD_PROTO

VIPS = ["192.0.2.100", "192.0.2.101", "192.0.2.102", "192.0.2.104"]
SCRIPT = {"chk": {"script": ["/bin/true"], "weight": -60}}


def variant(n: int, prio1: int, prio2: int) -> Config:
    """Configurations a reload moves between: .101 changes instance, .104 comes and goes, VI_2 may go."""
    one = inst("VI_1", 51, prio=prio1, vips=["192.0.2.100/24", "192.0.2.101/24"], track_script=["chk"])
    two = inst("VI_2", 52, prio=prio2, vips=["192.0.2.102/24"])
    if n == 1:
        one["virtual_ipaddress"] = ["192.0.2.100/24"]
        two["virtual_ipaddress"] = ["192.0.2.101/24", "192.0.2.102/24", "192.0.2.104/24"]
    if n == 2:
        return config(one, vrrp_script=SCRIPT)
    return config(one, two, vrrp_script=SCRIPT)


class HostMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fake = FakePlatform()
        self.fake.add_link("eth0", 2)
        self.fake.operator_add("eth0", f"{OUR_IP}/24")
        self.fake.take()
        self.cfg = variant(0, 150, 100)
        self.now = 1000.0
        self.host: Host | None = None
        self.next_index = 3
        self._boot()

    def _boot(self) -> None:
        self.host = Host(self.cfg, self.fake)
        self.host.begin(self.now)
        self.pump()
        self.host.start(self.now)
        self.pump()
        self.host.track("chk", True, self.now)
        self.pump()
        self.notified: dict[str, list[str]] = {}
        self.seen_calls = len(self.fake.calls)

    def pump(self) -> None:
        assert self.host is not None
        for _ in range(20):
            msgs = self.fake.take()
            if not msgs:
                return
            self.host.netlink(msgs, False, self.now)
        raise AssertionError("never settles")

    # -- rules ---------------------------------------------------------------------------------------

    @precondition(lambda self: self.host is not None)
    @rule(dt=st.floats(0.05, 6.0))
    def time_passes(self, dt: float) -> None:
        assert self.host is not None
        end = self.now + dt
        while (d := self.host.next_deadline()) is not None and d <= end:
            self.now = max(self.now, d)
            self.host.timer(self.now)
            self.pump()
        self.now = end

    @precondition(lambda self: self.host is not None)
    @rule(
        packets=st.lists(
            st.one_of(
                st.tuples(st.sampled_from([51, 52, 53]), st.sampled_from([0, 1, 99, 100, 150, 200, 254])),
                st.just((0, 0)),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def batch_arrives(self, packets: list[tuple[int, int]]) -> None:
        assert self.host is not None
        data = [advert(vrid=v, prio=p) if v else b"\x45garbage" for v, p in packets]
        self.host.receive("eth0", data, self.now)
        self.pump()

    @precondition(lambda self: self.host is not None)
    @rule(ip=st.sampled_from(VIPS))
    def someone_deletes(self, ip: str) -> None:
        assert self.host is not None
        self.fake.operator_del("eth0", ip)
        self.pump()

    @precondition(lambda self: self.host is not None)
    @rule(ip=st.sampled_from(VIPS))
    def operator_adds(self, ip: str) -> None:
        self.fake.operator_add("eth0", f"{ip}/24")
        self.pump()

    @precondition(lambda self: self.host is not None)
    @rule(up=st.booleans())
    def link(self, up: bool) -> None:
        self.fake.set_link("eth0", up)
        self.pump()

    @precondition(lambda self: self.host is not None)
    @rule()
    def link_recreated(self) -> None:
        self.fake.delete_link("eth0")
        self.pump()
        self.fake.add_link("eth0", self.next_index)
        self.next_index += 1
        self.fake.operator_add("eth0", f"{OUR_IP}/24")
        self.pump()

    @precondition(lambda self: self.host is not None)
    @rule(n=st.integers(0, 2), p1=st.sampled_from([100, 150, 255]), p2=st.sampled_from([50, 100, 255]))
    def reload(self, n: int, p1: int, p2: int) -> None:
        assert self.host is not None
        self.cfg = variant(n, p1, p2)
        self.host.reload(self.cfg, self.now)
        self.pump()

    @precondition(lambda self: self.host is not None)
    @rule(ok=st.booleans())
    def track_result(self, ok: bool) -> None:
        assert self.host is not None
        self.host.track("chk", ok, self.now)
        self.pump()

    @precondition(lambda self: self.host is not None)
    @rule(verb=st.sampled_from(["maint", "restore", "priority"]))
    def ctl(self, verb: str) -> None:
        from vrrpd.admin import command

        assert self.host is not None
        words = [verb, "all"] + (["120"] if verb == "priority" else [])
        command(self.host, words, self.now)
        self.pump()

    @precondition(lambda self: self.host is not None)
    @rule()
    def sigterm(self) -> None:
        assert self.host is not None
        self.host.stop(self.now)
        self.pump()
        self._check_notify()
        mine = [k for k, a in self.fake.addrs.items() if a.proto == VRRPD_PROTO]
        assert mine == [], mine
        self.host = None

    @precondition(lambda self: self.host is not None)
    @rule()
    def crash(self) -> None:
        self.host = None  # SIGKILL: what vrrpd added stays on the host

    @precondition(lambda self: self.host is None)
    @rule()
    def restart(self) -> None:
        self._boot()

    # -- invariants ----------------------------------------------------------------------------------

    def _check_notify(self) -> None:
        for c in self.fake.calls[self.seen_calls :]:
            if c.kind == "notify" and len(c.args) >= 4 and c.args[-4] == "INSTANCE":
                self.notified.setdefault(str(c.args[-3]), []).append(str(c.args[-2]))
        self.seen_calls = len(self.fake.calls)
        assert self.host is not None
        for name, states in self.notified.items():
            assert all(a != b for a, b in itertools.pairwise(states)), (name, states)
            inst = self.host.instance(name)
            if inst is not None and inst.vr.state is not fsm.State.INIT:
                assert states[-1] == inst.vr.state.value, (name, states, inst.vr.state)

    @invariant()
    def vip_present_iff_master(self) -> None:
        assert self.fake.violations == []
        if self.host is None:
            return
        self._check_notify()
        link = next((lk for lk in self.fake.links.values() if lk.name == "eth0"), None)
        wanted: set[IPv4Address] = set()
        for i in self.host.instances.values():
            if i.vr.state is fsm.State.MASTER:
                wanted |= {a for v in i.cfg.virtual_ipaddress if isinstance(a := v.ip, IPv4Address)}
        for ip in VIPS:
            key = (link.index, IPv4Address(ip)) if link is not None else None
            present = key is not None and key in self.fake.addrs
            if IPv4Address(ip) in wanted:
                assert present, (ip, "wanted by a MASTER but absent")
            elif present and key is not None and key not in self.fake.by_operator:
                raise AssertionError((ip, "added by vrrpd, present, and no MASTER has it"))
        # the status tells the truth
        status: dict[str, Any] = {s["name"]: s for s in self.host.status()}
        for i in self.host.instances.values():
            shown = set(status[i.name]["vips_installed"])
            actual = {
                str(v.address)
                for v in i.cfg.virtual_ipaddress
                if link is not None and (link.index, v.ip) in self.fake.addrs
            }
            assert shown == actual, (i.name, shown, actual)


HostMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_host_sequences = HostMachine.TestCase
