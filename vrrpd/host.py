"""The daemon's decisions, sans-IO: one :class:`Host` per daemon, fed inputs with ``now``, acting through a
:class:`vrrpd.platform.Platform`.

Theory of operation
-------------------
``Host`` owns the :class:`vrrpd.fsm.VirtualRouter` of every instance and what vrrpd knows of the host:
the links and IPv4 addresses (from a netlink dump, then kept current by netlink events), the addresses vrrpd
itself added (``owned``) and the address requests still unanswered (``pending``). Its inputs are the
driver's (``vrrpd.daemon``): :meth:`Host.receive` (a batch of datagrams read from one VRRP socket),
:meth:`Host.netlink` (link/address events, request answers, dump parts), :meth:`Host.timer`,
:meth:`Host.track` (a track result), :meth:`Host.reload`, :meth:`Host.stop` and the ``vrrpd ctl`` methods.
After any of them the driver re-arms one wake-up at :meth:`Host.next_deadline`.

Decisions that live here, each a pure function or a method tested with the fake platform:

* **Receive batching.** A batch is fed to each instance's machine as one ``handle_batch``: every queued advert
  first, timers once after. A Backup frozen past its Master_Down_Interval (SIGSTOP, a stalled VM) that finds
  its master's adverts queued stays Backup, whatever else is queued (another VRID, a bad password). The
  driver drains the sockets before :meth:`Host.timer` for the same reason: the loop may run an overdue
  timer before it polls the sockets.
* **VIP reconciliation** (:func:`plan_vips`). The wanted addresses are the VIPs of the instances in MASTER;
  the plan adds what is wanted and absent and removes only what vrrpd added (``owned``) and no MASTER
  instance wants. So a VIP deleted by someone else is re-added (and announced) at once, an address an
  operator added by hand is never removed, and a VIP that moves between instances on reload stays.
* **Reload** (:func:`plan_reload`): old config + new config + running instances -> one plan, applied in one
  step with one reconciliation at the end.
* **Faults** (:meth:`Host._faults`): link, socket, source address, unicast peer, weight-0 tracks, computed
  from the tables; a failed dump is retried, and while an instance is in FAULT the tables are re-read
  every :data:`FAULT_RECHECK` seconds.
* **Notify ordering**: notify scripts are queued in the order of the state changes.

Track hook (``vrrpd.track``/``vrrpd.scripts`` side): :meth:`Host.track` is the result feed (``ok`` None = no
result yet); an instance stays in INIT until every tracked name has a result (:meth:`Host.track_ready`).
"""

from __future__ import annotations

import errno as _errno
import logging
import os
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from vrrpd import fsm, track, wire
from vrrpd.config import Config, InstanceConfig, IPAddress, Vip
from vrrpd.netlink import VRRPD_PROTO, Ack, Addr, AddrMsg, DumpDone, Link, LinkMsg, NlMsg
from vrrpd.platform import Platform

if TYPE_CHECKING:
    from vrrpd.sockets6 import Rx6  # VRRPv3 over IPv6: (message, source, destination, hop limit)

__all__ = [
    "FAULT_RECHECK",
    "Host",
    "ReloadPlan",
    "VipKey",
    "VipOp",
    "make_params",
    "plan_reload",
    "plan_vips",
    "source_address",
]

log = logging.getLogger("vrrpd")

DISCARD_LOG_INTERVAL = 10.0  # seconds between two log lines for the same (instance, discard reason)
PROCESS = "process:"  # the prefix of a vrrp_track_process in Host.tracks (scripts use their bare name)
FAULT_RECHECK = 2.0  # seconds between two re-reads of links and addresses while an instance is in FAULT
DUMP_RETRY = 1.0  # seconds before a failed dump is retried
DUMP_TIMEOUT = 5.0  # seconds after which a dump that never finished (its end was lost) is started again

VipKey = tuple[int, IPAddress]  # (ifindex, address)
InstKey = tuple[str, int, int]  # (interface, VRID, address family): InstanceConfig.key
UNSPEC4 = IPv4Address("0.0.0.0")
UNSPEC6 = IPv6Address("::")


_STATE_NOTIFY = {
    fsm.State.MASTER: ("notify_master", "MASTER"),
    fsm.State.BACKUP: ("notify_backup", "BACKUP"),
    fsm.State.FAULT: ("notify_fault", "FAULT"),
    fsm.State.INIT: ("notify_stop", "STOP"),
}


def make_params(c: InstanceConfig, src: IPAddress) -> fsm.Params:
    """The state machine's parameters for an instance whose advert source is ``src`` (IPv4, or the IPv6
    link-local address of an IPv6 instance; the unspecified address while there is none)."""
    v4 = tuple(ip for v in c.virtual_ipaddress if isinstance(ip := v.ip, IPv4Address))
    v6 = tuple(ip for v in c.virtual_ipaddress if isinstance(ip := v.ip, IPv6Address))
    p4 = tuple(a for a in c.unicast_peer or () if isinstance(a, IPv4Address))
    p6 = tuple(a for a in c.unicast_peer or () if isinstance(a, IPv6Address))
    auth_type, auth_data = wire.password(c.auth_pass if c.version == 2 else None)
    six = c.family == 6
    return fsm.Params(
        vrid=c.virtual_router_id,
        priority=c.priority,
        advert_int=c.advert_int,
        src_ip=src if isinstance(src, IPv4Address) else UNSPEC4,
        vips=v4,
        preempt=not c.nopreempt,
        preempt_delay=c.preempt_delay,
        auth_type=auth_type,
        auth_data=auth_data,
        unicast_peers=p4,
        garp_master_repeat=c.garp_master_repeat,
        garp_master_delay=c.garp_master_delay,
        garp_master_refresh=c.garp_master_refresh,
        garp_master_refresh_repeat=c.garp_master_refresh_repeat,
        garp_lower_prio_repeat=c.garp_lower_prio_repeat,
        lower_prio_no_advert=c.lower_prio_no_advert,
        higher_prio_send_advert=c.higher_prio_send_advert,
        version=c.version,
        advert_cs=c.advert_cs if c.version == 3 else None,
        checksum_as_v2=c.v3_checksum_as_v2 and c.version == 3 and not six,
        src_ip6=(src if isinstance(src, IPv6Address) else UNSPEC6) if six else None,
        vips6=v6 if six else (),
        unicast_peers6=p6 if six else (),
    )


# ------------------------------------------------------------------------------------------- pure planners


@dataclass(frozen=True, slots=True)
class VipOp:
    """One address request: add (``add``) or remove ``vip`` on link ``index``."""

    add: bool
    index: int
    vip: Vip


def _vip_order(key: VipKey) -> tuple[int, int, IPAddress]:
    """A total order over IPv4 and IPv6 keys (addresses of different families do not compare)."""
    return (key[0], key[1].version, key[1])


def plan_vips(
    want: Mapping[VipKey, Vip],
    present: Mapping[VipKey, Addr],
    owned: Set[VipKey],
    busy: Set[VipKey],
) -> list[VipOp]:
    """The requests that bring the host to ``want`` (the VIPs of the MASTER instances, by link and address).

    Adds what is wanted and absent; re-installs an address of ours whose prefix or label is no longer the
    configured one; removes what vrrpd added (``owned``) and nobody wants. An address vrrpd did not add is
    never removed; ``busy`` addresses (a request in flight) are left until it is answered.
    """
    ops: list[VipOp] = []
    for key, vip in sorted(want.items(), key=lambda kv: _vip_order(kv[0])):
        if key in busy:
            continue
        a = present.get(key)
        if a is None:
            ops.append(VipOp(True, key[0], vip))
        elif key in owned and (a.address != vip.address or (vip.label is not None and vip.label != a.label)):
            ops.append(VipOp(False, key[0], Vip(a.address)))
            ops.append(VipOp(True, key[0], vip))
    for key in sorted(owned, key=_vip_order):
        if key not in want and key not in busy and key in present:
            ops.append(VipOp(False, key[0], Vip(present[key].address)))
    return ops


def source_address(addrs: Iterable[Addr], vips: Set[IPAddress]) -> IPv4Address | None:
    """The advert source on a link (keepalived): its first primary IPv4 address that is not a VIP, else any
    non-VIP IPv4 address."""
    cands = [
        (ip, a.secondary) for a in addrs if isinstance(ip := a.address.ip, IPv4Address) and ip not in vips
    ]
    for ip, secondary in cands:
        if not secondary:
            return ip
    return cands[0][0] if cands else None


def source_address6(addrs: Iterable[Addr], vips: Set[IPAddress]) -> IPv6Address | None:
    """The IPv6 advert source on a link (RFC 5798 section 5.1.2.1, keepalived): its link-local address,
    never one of our VIPs (keepalived#1122), not while tentative (DAD pending) or after DAD failed."""
    for a in addrs:
        ip = a.address.ip
        if isinstance(ip, IPv6Address) and ip.is_link_local and ip not in vips and a.usable:
            return ip
    return None


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a SIGHUP changes: instances to stop (by key), to update in place, to start; VIPs that move to
    another instance (address, from, to); warnings for settings that need a restart."""

    stop: tuple[InstKey, ...]
    update: tuple[InstanceConfig, ...]
    start: tuple[InstanceConfig, ...]
    moved: tuple[tuple[IPv4Address | IPv6Address, str, str], ...] = ()
    warnings: tuple[str, ...] = ()


def plan_reload(old: Config, new: Config, running: Iterable[InstKey]) -> ReloadPlan:
    """Old config + new config + the running instances (their keys) -> one :class:`ReloadPlan`. An
    instance whose VRRP version changes is stopped and started again (v2 and v3 are different machines)."""
    run = set(running)
    old_version = {c.key: c.version for c in old.instances}
    new_by_key = {c.key: c for c in new.instances}
    renew = {k for k, c in new_by_key.items() if k in run and old_version.get(k, c.version) != c.version}
    stop = tuple(k for k in sorted(run) if k not in new_by_key or k in renew)
    update = tuple(c for c in new.instances if c.key in run and c.key not in renew)
    start = tuple(c for c in new.instances if c.key not in run or c.key in renew)
    owner_old = {v.ip: c.name for c in old.instances for v in c.virtual_ipaddress}
    owner_new = {v.ip: c.name for c in new.instances for v in c.virtual_ipaddress}
    moved = tuple(
        (ip, owner_old[ip], name)
        for ip, name in sorted(owner_new.items(), key=lambda kv: (kv[0].version, kv[0]))
        if ip in owner_old and owner_old[ip] != name
    )
    warnings: list[str] = []
    if new.control_socket() != old.control_socket():
        warnings.append("global.control_socket changed: takes effect at restart")
    if new.global_.metrics_listen != old.global_.metrics_listen:
        warnings.append("global.metrics_listen changed: takes effect at restart")
    return ReloadPlan(stop, update, start, moved, tuple(warnings))


# ---------------------------------------------------------------------------------------------- the core


@dataclass(slots=True)
class Iface:
    """An interface instances run on: the link its VRRP socket is bound to (None: no socket)."""

    name: str
    bound: int | None = None
    error: str | None = None
    bound6: int | None = None  # the IPv6 VRRP socket (VRRPv3 IPv6 instances)
    error6: str | None = None


@dataclass(slots=True)
class Instance:
    cfg: InstanceConfig
    vr: fsm.VirtualRouter
    override: int | None = None  # vrrpd ctl priority/maint (vrrpd.admin); survives reloads
    started: bool = False  # Startup fed (held back until every track has a first result)
    send_errors: int = 0
    discard_log: dict[wire.Reason, tuple[float, int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.cfg.name


@dataclass(frozen=True, slots=True)
class _Pending:
    add: bool
    key: VipKey
    vip: Vip


class Host:
    """All instances of one daemon and what they know of the host. See the module docstring."""

    def __init__(self, cfg: Config, platform: Platform) -> None:
        self.cfg = cfg
        self.p = platform
        self.links: dict[int, Link] = {}
        self.addrs: dict[VipKey, Addr] = {}
        self.owned: set[VipKey] = set()
        self.pending: dict[int, _Pending] = {}
        self.instances: dict[InstKey, Instance] = {}
        self.ifaces: dict[str, Iface] = {}
        self.tracks: dict[str, bool | None] = {}
        self.transitions = 0  # state changes so far (the driver updates systemd's STATUS= on a change)
        self.synced = False  # a full dump has completed
        self.running = False
        self._dump_links: int | None = None
        self._dump_addrs: int | None = None
        self._dump_again = False
        self._dump_since = 0.0
        self._acc_links: dict[int, Link] = {}
        self._acc_addrs: dict[VipKey, Addr] = {}
        self._recheck_at: float | None = None
        self._start_at: float | None = None  # vrrp_startup_delay: no instance starts before (vrrpd.track)
        self._defer = 0  # >0: reconciliation deferred to the end of a reload/stop
        self._foreign_logged: set[VipKey] = set()
        self._hold: dict[VipKey, float] = {}  # addresses whose last request failed: left alone until then

    # ---------------------------------------------------------------------------------------- inputs

    def begin(self, now: float) -> None:
        """Ask for the first full view of links and addresses (answered through :meth:`netlink`)."""
        self._request_dump(now)

    def start(self, now: float) -> None:
        """Start every configured instance (after the first dump, or without it when it did not come)."""
        self.running = True
        delay = self.cfg.global_.vrrp_startup_delay
        if delay > 0:
            self._start_at = now + delay
            log.info("vrrp_startup_delay: instances start in %gs", delay)
        for c in self.cfg.instances:
            self._add_instance(c, now)
        self._sync(now)
        for inst in list(self.instances.values()):
            self._maybe_start(inst, now)

    def stop(self, now: float) -> None:
        """SIGTERM: every instance shuts down (priority 0 from a Master, notify_stop), then our VIPs go."""
        self._defer += 1
        try:
            for inst in list(self.instances.values()):
                self._feed(inst, [fsm.Shutdown()], now)
        finally:
            self._defer -= 1
        self.running = False
        self._reconcile(now)

    def receive(self, ifname: str, datagrams: Sequence[bytes], now: float) -> None:
        """A batch read from ``ifname``'s IPv4 VRRP socket: each instance gets its part as one batch (timers
        fire after it). VRRPv2 and VRRPv3 share the socket (different VRIDs): the version nibble picks the
        decoder, and a version that is not the instance's is discarded by its machine (``version``)."""
        on_if = {
            i.cfg.virtual_router_id: i
            for i in self.instances.values()
            if i.cfg.interface == ifname and i.cfg.family == 4
        }
        if not on_if:
            return
        events: list[wire.Packet | wire.PacketV3 | wire.DecodeError] = []
        for data in datagrams:
            try:
                events.append(wire.decode_ip_any(data))
            except wire.DecodeError as e:
                events.append(e)
        self._dispatch(on_if, events, now)

    def receive6(self, ifname: str, datagrams: Sequence[Rx6], now: float) -> None:
        """A batch read from ``ifname``'s IPv6 VRRP socket (VRRPv3 over IPv6). A datagram without its hop
        limit or destination (ancillary data missing: FRR drops those too), or sent to another multicast
        group, is discarded as ``ip_header``; the hop limit itself is checked by the machine
        (``wire.check_v3``: 255 in multicast mode, RFC 5798 section 5.1.2.3)."""
        on_if = {
            i.cfg.virtual_router_id: i
            for i in self.instances.values()
            if i.cfg.interface == ifname and i.cfg.family == 6
        }
        if not on_if:
            return
        events: list[wire.Packet | wire.PacketV3 | wire.DecodeError] = []
        for rx in datagrams:
            vrid = rx.msg[1] if len(rx.msg) >= 2 else None
            if rx.src is None or rx.dst is None or rx.hop_limit is None:
                events.append(
                    wire.DecodeError(wire.Reason.IP_HEADER, "no source, destination or hop limit", vrid)
                )
                continue
            if rx.dst.is_multicast and rx.dst != wire.VRRP_GROUP6:
                events.append(
                    wire.DecodeError(wire.Reason.IP_HEADER, f"sent to {rx.dst}, not ff02::12", vrid)
                )
                continue
            try:
                events.append(wire.decode_ipv6(rx.msg, src=rx.src, dst=rx.dst, hop_limit=rx.hop_limit))
            except wire.DecodeError as e:
                events.append(e)
        self._dispatch(on_if, events, now)

    def _dispatch(
        self,
        on_if: Mapping[int, Instance],
        decoded: Sequence[wire.Packet | wire.PacketV3 | wire.DecodeError],
        now: float,
    ) -> None:
        batches: dict[int, list[fsm.Event]] = {}
        for d in decoded:
            if isinstance(d, wire.DecodeError):
                ev: fsm.Event = fsm.Malformed(d.reason, d.detail or str(d))
                vrids = [d.vrid] if d.vrid is not None and d.vrid in on_if else list(on_if)
            else:
                ev = fsm.AdvertReceived(d)
                # an unknown VRID on this link (keepalived log_unknown_vrids): counted by every instance here
                vrids = [d.advert.vrid] if d.advert.vrid in on_if else list(on_if)
            for v in vrids:
                batches.setdefault(v, []).append(ev)
        for vrid, events in batches.items():
            inst = on_if[vrid]
            if inst.started:
                self._feed(inst, events, now)

    def timer(self, now: float) -> None:
        """The wake-up at :meth:`next_deadline` (early or stale wake-ups do nothing)."""
        for inst in list(self.instances.values()):
            d = inst.vr.next_deadline()
            if d is not None and d <= now:
                self._feed(inst, [fsm.TimerDue()], now)
        if self._start_at is not None and self._start_at <= now:
            self._start_at = None
            for inst in list(self.instances.values()):
                self._maybe_start(inst, now)
        if self._recheck_at is not None and self._recheck_at <= now:
            self._recheck_at = None
            self._request_dump(now)
        elif self._dumping() and now >= self._dump_since + DUMP_TIMEOUT:
            self._request_dump(now)  # its end was lost (with the rest of an overflowed socket buffer)

    def netlink(self, msgs: Sequence[NlMsg], overflow: bool, now: float) -> None:
        """Netlink input: events, answers to our requests, dump parts. ``overflow``: some were lost."""
        restore = False
        for m in msgs:
            if isinstance(m, LinkMsg):
                if m.dump is not None:
                    if m.dump == self._dump_links:
                        self._acc_links[m.link.index] = m.link
                    continue
                if m.deleted:
                    self.links.pop(m.link.index, None)
                    for k in [k for k in self.addrs if k[0] == m.link.index]:
                        del self.addrs[k]
                        self.owned.discard(k)
                else:
                    self.links[m.link.index] = m.link
            elif isinstance(m, AddrMsg):
                key = (m.addr.index, m.addr.address.ip)
                if m.dump is not None:
                    if m.dump == self._dump_addrs:
                        self._acc_addrs[key] = m.addr
                    continue
                if m.deleted:
                    if self.addrs.pop(key, None) is not None:
                        restore = True
                    self.owned.discard(key)
                else:
                    self.addrs[key] = m.addr
                    self._note_owner(key, m.addr)
            elif isinstance(m, DumpDone):
                self._dump_done(m.seq, now)
            elif isinstance(m, Ack):
                self._ack(m.seq, m.error, now)
        if overflow:
            log.warning("netlink: events were lost (overflow), re-reading links and addresses")
            self.pending.clear()
            self._request_dump(now)
        self._sync(now, restore=restore)

    def track(self, name: str, ok: bool | None, now: float) -> None:
        """Track-result feed: ``name``'s state (``None``: no result yet). Instances tracking it re-evaluate
        faults and effective priority; an instance held in INIT starts once all its tracks have a result."""
        if name in self.tracks and self.tracks[name] == ok:
            return
        self.tracks[name] = ok
        for inst in list(self.instances.values()):
            if name in self.tracked_names(inst.cfg):
                if inst.started:
                    self._refresh(inst, now)
                else:
                    self._maybe_start(inst, now)

    def reload(self, new: Config, now: float) -> ReloadPlan:
        """Apply a new configuration as one plan; VIPs are reconciled once, at the end."""
        plan = plan_reload(self.cfg, new, self.instances)
        for w in plan.warnings:
            log.warning("%s", w)
        for ip, a, b in plan.moved:
            log.info("VIP %s moves from %s to %s", ip, a, b)
        self.cfg = new
        self._defer += 1
        try:
            for key in plan.stop:
                inst = self.instances[key]
                log.info("%s: removed from the configuration, stopping", inst.name)
                self._feed(inst, [fsm.Shutdown()], now)
                del self.instances[key]
            for c in plan.update:
                self._update_instance(self.instances[c.key], c, now)
            for c in plan.start:
                self._add_instance(c, now)
            for name in [
                n for n in self.tracks if not any(n in self.tracked_names(c) for c in new.instances)
            ]:
                del self.tracks[name]
        finally:
            self._defer -= 1
        self._sync(now)
        for inst in list(self.instances.values()):
            self._maybe_start(inst, now)
        return plan

    # ------------------------------------------------------------------------------------ vrrpd ctl

    def names(self) -> list[str]:
        return [i.name for i in self.instances.values()]

    def instance(self, name: str) -> Instance | None:
        for i in self.instances.values():
            if i.name == name:
                return i
        return None

    def describe(self, name: str) -> dict[str, Any]:
        inst = self.instance(name)
        if inst is None:
            raise KeyError(name)
        vr = inst.vr
        return {
            "name": inst.name,
            "state": vr.state.value,
            "priority": inst.cfg.priority,
            "effective_priority": vr.effective_priority,
            "override_priority": inst.override,
            "maintenance": vr.maint,
        }

    def set_maintenance(self, name: str, priority: int, now: float) -> None:
        """``vrrpd ctl maint``: priority pinned at ``priority``, a Master hands over, no preemption."""
        inst = self._named(name)
        inst.override = priority
        # lowered first: notify scripts see the new priority
        self._feed(inst, [fsm.PriorityChanged(priority), fsm.Maintenance(True)], now)
        self._refresh(inst, now)

    def set_priority(self, name: str, priority: int | None, now: float) -> None:
        """``vrrpd ctl priority`` (``None``: ``restore``): the override, and maintenance ended."""
        inst = self._named(name)
        inst.override = priority
        if inst.vr.maint:
            self._feed(inst, [fsm.Maintenance(False)], now)
        self._refresh(inst, now)

    # ------------------------------------------------------------------------------------------ outputs

    def next_deadline(self) -> float | None:
        ds = [d for i in self.instances.values() if (d := i.vr.next_deadline()) is not None]
        if self._recheck_at is not None:
            ds.append(self._recheck_at)
        if self._dumping():
            ds.append(self._dump_since + DUMP_TIMEOUT)
        if self._start_at is not None:
            ds.append(self._start_at)
        return min(ds) if ds else None

    def vrrp_interfaces(self) -> list[str]:
        """Interfaces that have a VRRP socket now."""
        return [n for n, f in self.ifaces.items() if f.bound is not None]

    def tracked_names(self, c: InstanceConfig) -> list[str]:
        """The track names of an instance: its scripts, and its processes as ``process:NAME``."""
        return [r.name for r in c.track_script] + [PROCESS + r.name for r in c.track_process]

    def gating_names(self, c: InstanceConfig) -> list[str]:
        """The trackers an instance waits for before it starts: the weight-0 ones (keepalived
        ``num_script_init``: a weighted tracker never holds the start, it just adds nothing before its first
        result)."""
        out = [r.name for r in c.track_script if self._script_weight(r.name, r.weight) == 0]
        return out + [
            PROCESS + r.name for r in c.track_process if self._process_weight(r.name, r.weight) == 0
        ]

    def track_ready(self, c: InstanceConfig) -> bool:
        return all(self.tracks.get(n) is not None for n in self.gating_names(c))

    def present_vips(self, c: InstanceConfig) -> list[tuple[Vip, bool]]:
        """The instance's VIPs present on the host now, each with whether vrrpd added it."""
        out = []
        for v in c.virtual_ipaddress:
            key = self._vip_key(c, v)
            if key is not None and key in self.addrs:
                out.append((v, key in self.owned))
        return out

    def link_by_name(self, name: str) -> Link | None:
        for link in self.links.values():
            if link.name == name:
                return link
        return None

    def status(
        self,
        script_status: Mapping[str, dict[str, object]] | None = None,
        process_status: Mapping[str, dict[str, object]] | None = None,
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for inst in self.instances.values():
            snap = inst.vr.snapshot()
            c = inst.cfg
            snap["interface"] = c.interface
            snap.setdefault("version", 2)
            snap.setdefault("family", 4)
            snap.setdefault("master_adver_int", snap["advert_int"])  # v2: no learning, ours
            snap["unicast_peers"] = [str(p) for p in (c.unicast_peer or ())]
            present = self.present_vips(c)
            snap["vips_installed"] = sorted(str(v.address) for v, _ in present)
            snap["vips_foreign"] = sorted(str(v.address) for v, mine in present if not mine)
            tracks = []
            for ref in c.track_script:
                st: dict[str, object] = dict((script_status or {}).get(ref.name) or {"name": ref.name})
                ok = self.tracks.get(ref.name)
                st["state"] = "INIT" if ok is None else "OK" if ok else "FAIL"
                if ref.weight is not None:
                    st["weight"] = ref.weight
                tracks.append(st)
            snap["track_scripts"] = tracks
            procs = []
            for pref in c.track_process:
                pst: dict[str, object] = dict((process_status or {}).get(pref.name) or {"name": pref.name})
                up = self.tracks.get(PROCESS + pref.name)
                pst["state"] = "INIT" if up is None else "UP" if up else "DOWN"
                if pref.weight is not None:
                    pst["weight"] = pref.weight
                procs.append(pst)
            snap["track_processes"] = procs
            snap["track_interfaces"] = [
                {
                    "name": t.name,
                    "weight": t.weight,
                    "state": "UP" if (lk := self.link_by_name(t.name)) is not None and lk.up else "DOWN",
                }
                for t in c.track_interface
            ]
            snap["send_errors"] = inst.send_errors
            snap["override_priority"] = inst.override
            out.append(snap)
        return out

    # ----------------------------------------------------------------------------------------- internals

    def _named(self, name: str) -> Instance:
        inst = self.instance(name)
        if inst is None:
            raise KeyError(name)
        return inst

    def _vip_ips(self) -> set[IPAddress]:
        cfgs = [*self.cfg.instances, *(i.cfg for i in self.instances.values())]
        return {v.ip for c in cfgs for v in c.virtual_ipaddress}

    def _note_owner(self, key: VipKey, a: Addr) -> None:
        # IFA_PROTO says vrrpd added it (this process or a crashed predecessor): ours if it is one of our VIPs
        if a.proto == VRRPD_PROTO and key[1] in self._vip_ips():
            self.owned.add(key)

    def _source(self, c: InstanceConfig) -> IPAddress | None:
        """The advert source: IPv4 (configured, or the link's primary address), or for an IPv6 instance the
        link's usable link-local address."""
        if c.family == 4 and c.src_ip is not None:
            return c.src_ip
        link = self.link_by_name(c.interface)
        if link is None:
            return None
        addrs = [a for k, a in self.addrs.items() if k[0] == link.index]
        if c.family == 6:
            return source_address6(addrs, self._vip_ips())
        return source_address(addrs, self._vip_ips())

    def _dumping(self) -> bool:
        return self._dump_links is not None or self._dump_addrs is not None

    def _request_dump(self, now: float) -> None:
        if self._dumping():
            if now < self._dump_since + DUMP_TIMEOUT:
                self._dump_again = True
                return
            log.warning("netlink: no end of the dump after %gs, asking again", DUMP_TIMEOUT)
            self._dump_links = self._dump_addrs = None
        try:
            self._dump_links = self.p.dump_links()
        except OSError as e:
            log.error("netlink: cannot read links: %s (retrying in %gs)", e, DUMP_RETRY)
            self._recheck_at = now + DUMP_RETRY
            return
        self._acc_links = {}
        self._dump_since = now

    def _dump_done(self, seq: int, now: float) -> None:
        if seq == self._dump_links:
            self._dump_links = None
            try:
                self._dump_addrs = self.p.dump_addresses()
            except OSError as e:
                log.error("netlink: cannot read addresses: %s (retrying in %gs)", e, DUMP_RETRY)
                self._recheck_at = now + DUMP_RETRY
                return
            self._acc_addrs = {}
        elif seq == self._dump_addrs:
            self._dump_addrs = None
            self.links = self._acc_links
            self.addrs = self._acc_addrs
            self._acc_links, self._acc_addrs = {}, {}
            self.owned &= set(self.addrs)
            for k, a in self.addrs.items():
                self._note_owner(k, a)
            self.synced = True
            if self._dump_again:
                self._dump_again = False
                self._request_dump(now)

    def _dump_failed(self, what: str, code: int, now: float) -> None:
        log.error("netlink: cannot read %s: %s (retrying in %gs)", what, os.strerror(code), DUMP_RETRY)
        self._dump_links = self._dump_addrs = None
        self._recheck_at = now + DUMP_RETRY

    def _ack(self, seq: int, code: int, now: float) -> None:
        if seq == self._dump_links and code:
            self._dump_failed("links", code, now)
            return
        if seq == self._dump_addrs and code:
            self._dump_failed("addresses", code, now)
            return
        p = self.pending.pop(seq, None)
        if p is None:
            return
        if p.add:
            if code == 0:
                self.owned.add(p.key)
                a = self.links.get(p.key[0])
                addr = p.vip.address
                if p.key not in self.addrs:
                    # the event may come later (or was lost): the answer is enough
                    label = p.vip.label or (a.name if a is not None and addr.version == 4 else "")
                    self.addrs[p.key] = Addr(p.key[0], addr, label, False, VRRPD_PROTO)
            elif code == _errno.EEXIST:
                # present already, not added by us: used while Master, never removed by vrrpd
                self._foreign(p.key)
            else:
                log.error("cannot add %s: %s (retrying in %gs)", p.vip.address, os.strerror(code), DUMP_RETRY)
                self._hold[p.key] = now + DUMP_RETRY
                self._retry(now)
        else:
            if code in (0, _errno.EADDRNOTAVAIL, _errno.ENODEV, _errno.ENOENT):
                self.owned.discard(p.key)
                self.addrs.pop(p.key, None)
            else:
                log.error(
                    "cannot remove %s: %s (retrying in %gs)", p.vip.address, os.strerror(code), DUMP_RETRY
                )
                self._retry(now)
        self._reconcile(now)

    def _retry(self, now: float) -> None:
        if self._recheck_at is None or self._recheck_at > now + DUMP_RETRY:
            self._recheck_at = now + DUMP_RETRY

    def _foreign(self, key: VipKey) -> None:
        if key not in self._foreign_logged:
            self._foreign_logged.add(key)
            log.warning(
                "VIP %s is already present (not added by vrrpd): used as it is, never removed by vrrpd",
                key[1],
            )

    # -- instances ------------------------------------------------------------------------------------

    def _add_instance(self, c: InstanceConfig, now: float) -> None:
        src = self._source(c)
        unspec = UNSPEC6 if c.family == 6 else UNSPEC4
        inst = Instance(c, fsm.VirtualRouter(make_params(c, src or unspec), c.name))
        self.instances[c.key] = inst
        self.ifaces.setdefault(c.interface, Iface(c.interface))
        for name in self.tracked_names(c):
            self.tracks.setdefault(name, None)

    def _maybe_start(self, inst: Instance, now: float) -> None:
        if inst.started or not self.running or not self.track_ready(inst.cfg):
            return
        if self._start_at is not None and now < self._start_at:
            return  # vrrp_startup_delay
        inst.started = True
        c = inst.cfg
        src = self._source(c)
        events: list[fsm.Event] = []
        if src is not None and src != inst.vr.params.source:
            events.append(fsm.ParamsChanged(make_params(c, src)))
        events += [fsm.FaultRaised(f) for f in sorted(self._faults(c, src))]
        eff = self._effective(inst)
        if eff != inst.vr.effective_priority:
            events.append(fsm.PriorityChanged(eff))
        log.info(
            "%s: starting on %s, VRRPv%d IPv%d, VRID %d, advert_int %gs, priority %d (effective %d), "
            "src %s, %s",
            c.name,
            c.interface,
            c.version,
            c.family,
            c.virtual_router_id,
            c.interval,
            c.priority,
            eff,
            src,
            "unicast" if c.unicast else "multicast",
        )
        self._feed(inst, [*events, fsm.Startup()], now)

    def _update_instance(self, inst: Instance, c: InstanceConfig, now: float) -> None:
        old = inst.cfg
        inst.cfg = c
        if c != old:
            log.info("%s: configuration changed, applying without a state change", c.name)
        if inst.override is not None and c.priority == fsm.OWNER_PRIORITY:
            log.warning("%s: now the address owner (priority 255): vrrpd ctl override cleared", c.name)
            inst.override = None
        for name in self.tracked_names(c):
            self.tracks.setdefault(name, None)
        src = self._source(c) or inst.vr.params.source
        # with the effective priority known (override, weights): no transient priority in between
        self._feed(inst, [fsm.ParamsChanged(make_params(c, src), self._effective(inst))], now)

    def _faults(self, c: InstanceConfig, src: IPAddress | None) -> set[str]:
        faults: set[str] = set()
        link = self.link_by_name(c.interface)
        if link is None or not link.up:
            faults.add(f"interface {c.interface} down")
        ifc = self.ifaces.get(c.interface)
        if link is not None and (ifc is None or (ifc.bound6 if c.family == 6 else ifc.bound) is None):
            faults.add(f"no VRRP socket on {c.interface}")
        if src is None and c.family == 6:
            # keepalived: "no IPv6 address for interface"; a tentative one (DAD pending) is not usable yet
            faults.add(f"no IPv6 link-local address on {c.interface}")
        elif src is None:
            faults.add(f"no IPv4 address on {c.interface}")
        if c.unicast and not c.unicast_peer:
            faults.add("no unicast peer")  # keepalived unicast_fault_no_peer: never fall back to multicast
        for t in c.track_interface:
            if t.weight == 0:
                lk = self.link_by_name(t.name)
                if lk is None or not lk.up:
                    faults.add(f"track_interface {t.name} down")
        for ref in c.track_script:
            if self._script_weight(ref.name, ref.weight) == 0 and self.tracks.get(ref.name) is False:
                faults.add(f"track_script {ref.name} failed")
        for pref in c.track_process:
            if (
                self._process_weight(pref.name, pref.weight) == 0
                and self.tracks.get(PROCESS + pref.name) is False
            ):
                faults.add(f"track_process {pref.name} down")
        return faults

    def _process_weight(self, name: str, override: int | None) -> int:
        if override is not None:
            return override
        try:
            return self.cfg.process(name).weight
        except KeyError:
            return 0

    def _script_weight(self, name: str, override: int | None) -> int:
        if override is not None:
            return override
        try:
            return self.cfg.script(name).weight
        except KeyError:
            return 0

    def _effective(self, inst: Instance) -> int:
        c = inst.cfg
        base = c.priority if inst.override is None else inst.override
        if inst.vr.maint and inst.override is not None:
            return base  # maintenance pins the priority: no weight lifts it back (vrrpd.admin)
        weights: list[tuple[int, bool]] = []
        for ref in c.track_script:
            w = self._script_weight(ref.name, ref.weight)
            ok = self.tracks.get(ref.name)
            if w and ok is not None:  # no weight counts before the first result
                weights.append((w, ok))
        for pref in c.track_process:
            w = self._process_weight(pref.name, pref.weight)
            ok = self.tracks.get(PROCESS + pref.name)
            if w and ok is not None:
                weights.append((w, ok))
        for t in c.track_interface:
            if t.weight:
                lk = self.link_by_name(t.name)
                weights.append((t.weight, lk is not None and lk.up))
        eff = track.effective_priority(base, weights)
        return base if eff is None else eff

    def _refresh(self, inst: Instance, now: float) -> None:
        """Reconcile the machine's faults, source and effective priority with what the host is now."""
        if not inst.started:
            return
        c = inst.cfg
        src = self._source(c)
        want = self._faults(c, src)
        events: list[fsm.Event] = []
        if src is not None and src != inst.vr.params.source:
            log.info("%s: source address now %s", inst.name, src)
            events.append(fsm.ParamsChanged(make_params(c, src)))
        events += [fsm.FaultCleared(f) for f in sorted(inst.vr.faults - want)]
        eff = self._effective(inst)
        if eff != inst.vr.effective_priority:
            events.append(fsm.PriorityChanged(eff))
        events += [fsm.FaultRaised(f) for f in sorted(want - inst.vr.faults)]
        if events:
            self._feed(inst, events, now)

    def _sync(self, now: float, *, restore: bool = False) -> None:
        """After any change of the host's state: sockets, faults, VIPs, the FAULT re-check timer."""
        self._sync_ifaces()
        for inst in list(self.instances.values()):
            self._refresh(inst, now)
        self._reconcile(now, restore=restore)
        faulty = any(i.vr.state is fsm.State.FAULT for i in self.instances.values())
        if faulty and self._recheck_at is None:
            self._recheck_at = now + FAULT_RECHECK

    def _sync_ifaces(self) -> None:
        used: dict[str, dict[int, bool]] = {}  # interface -> {family: multicast}
        for i in self.instances.values():
            fams = used.setdefault(i.cfg.interface, {})
            fams[i.cfg.family] = fams.get(i.cfg.family, False) or not i.cfg.unicast
        for name in [n for n in self.ifaces if n not in used]:
            self.p.close_vrrp(name)  # no instance left on it (reload)
            self.p.close_vrrp(name, family=6)
            del self.ifaces[name]
        if not self.running:
            return
        for name, fams in used.items():
            ifc = self.ifaces.setdefault(name, Iface(name))
            if 4 not in fams and ifc.bound is not None:
                self.p.close_vrrp(name)
                ifc.bound = None
            if 6 not in fams and ifc.bound6 is not None:
                self.p.close_vrrp(name, family=6)
                ifc.bound6 = None
            link = self.link_by_name(name)
            for family, multicast in sorted(fams.items()):
                self._sync_socket(ifc, link, family, multicast)

    def _sync_socket(self, ifc: Iface, link: Link | None, family: int, multicast: bool) -> None:
        name = ifc.name
        was = ifc.bound6 if family == 6 else ifc.bound
        bound: int | None = None
        error: str | None = None
        if link is None:
            if was is not None:
                self.p.close_vrrp(name, family=family)
        else:
            try:
                self.p.ensure_vrrp(name, link.index, multicast=multicast, family=family)
            except OSError as e:
                if e.errno in (_errno.EPERM, _errno.EACCES):
                    raise
                if (ifc.error6 if family == 6 else ifc.error) != str(e):
                    log.error("%s: cannot open the IPv%d VRRP socket: %s", name, family, e)
                error = str(e)
            else:
                bound = link.index
                if was is not None and was != link.index:
                    log.info(
                        "%s: interface re-created (index %d -> %d), socket re-opened", name, was, link.index
                    )
        if family == 6:
            ifc.bound6, ifc.error6 = bound, error
        else:
            ifc.bound, ifc.error = bound, error

    def _vip_key(self, c: InstanceConfig, v: Vip) -> VipKey | None:
        link = self.link_by_name(v.dev or c.interface)
        return (link.index, v.ip) if link is not None else None

    def _want(self) -> tuple[dict[VipKey, Vip], dict[VipKey, Instance]]:
        want: dict[VipKey, Vip] = {}
        by: dict[VipKey, Instance] = {}
        for inst in self.instances.values():
            if inst.vr.state is not fsm.State.MASTER:
                continue
            for v in inst.cfg.virtual_ipaddress:
                key = self._vip_key(inst.cfg, v)
                if key is not None and key not in want:
                    want[key] = v
                    by[key] = inst
        return want, by

    def _reconcile(self, now: float, *, restore: bool = False) -> None:
        """Bring the host's addresses to the VIPs of the MASTER instances (one step: the requests go out now,
        the answers come back through :meth:`netlink`). ``restore``: an address disappeared under us, so
        what is added again is logged and announced."""
        if self._defer:
            return
        want, by = self._want()
        self._hold = {k: t for k, t in self._hold.items() if t > now}
        busy = {p.key for p in self.pending.values()} | set(self._hold)
        ops = plan_vips(want, self.addrs, self.owned, busy)
        added: dict[str, list[Vip]] = {}
        removed: dict[str, list[Vip]] = {}
        for op in ops:
            address = op.vip.address
            key = (op.index, address.ip)
            try:
                if op.add:
                    seq = self.p.add_address(op.index, address, op.vip.label)
                else:
                    seq = self.p.del_address(op.index, address)
            except OSError as e:
                log.error("cannot %s %s: %s", "add" if op.add else "remove", op.vip.address, e)
                self._hold[key] = now + DUMP_RETRY
                self._retry(now)
                continue
            self.pending[seq] = _Pending(op.add, key, op.vip)
            inst = by.get(key)
            name = inst.name if inst is not None else "vrrpd"
            (added if op.add else removed).setdefault(name, []).append(op.vip)
        for name, vs in removed.items():
            log.info("%s: VIPs removed: %s", name, " ".join(str(v.address) for v in vs))
        for name, vs in added.items():
            if restore:
                log.warning(
                    "%s: VIP %s was removed from the host by someone else while MASTER: restored",
                    name,
                    " ".join(str(v.address) for v in vs),
                )
                inst = self.instance(name)
                if inst is not None:
                    self._garp(inst, max(1, inst.cfg.garp_master_repeat), vs)
            else:
                log.info("%s: VIPs added: %s", name, " ".join(str(v.address) for v in vs))
        for key in want:
            if key in self.addrs and key not in self.owned and key not in busy:
                self._foreign(key)

    def _feed(self, inst: Instance, events: list[fsm.Event], now: float) -> None:
        try:
            actions = inst.vr.handle_batch(events, now)
        except ValueError as e:  # local misuse: log, never crash the daemon
            log.error("%s: %s rejected: %s", inst.name, ", ".join(type(e).__name__ for e in events), e)
            return
        for a in actions:
            try:
                self._apply(inst, a, now)
            except OSError as e:
                log.error("%s: failed to apply %s: %s", inst.name, a, e)

    def _apply(self, inst: Instance, a: fsm.Action, now: float) -> None:
        if isinstance(a, fsm.SendAdvert):
            self._send_advert(inst, a.priority)
        elif isinstance(a, fsm.AddVips | fsm.RemoveVips | fsm.UpdateVips | fsm.UpdateVips6):
            self._reconcile(now)
        elif isinstance(a, fsm.SendGarp):
            self._garp(inst, a.count, inst.cfg.virtual_ipaddress)
        elif isinstance(a, fsm.StateChanged):
            self._state_changed(inst, a)
        elif isinstance(a, fsm.Discard):
            self._log_discard(inst, a, now)
        elif isinstance(a, fsm.Log):
            log.log(a.level, "%s: %s", inst.name, a.message)

    def _send_advert(self, inst: Instance, priority: int) -> None:
        c, p = inst.cfg, inst.vr.params
        ifc = self.ifaces.get(c.interface)
        if ifc is None or (ifc.bound6 if p.family == 6 else ifc.bound) is None:
            return
        adv: wire.Advert | wire.AdvertV3
        if p.version == 3:
            adv = wire.AdvertV3(
                vrid=p.vrid,
                priority=priority,
                max_advert_int=p.interval_cs,
                addresses=p.addresses,
                family=p.family,
            )
        else:
            adv = wire.Advert(
                vrid=p.vrid,
                priority=priority,
                advert_int=p.advert_int,
                addresses=p.vips,
                auth_type=p.auth_type,
                auth_data=p.auth_data,
            )
        group = wire.VRRP_GROUP6 if p.family == 6 else wire.VRRP_GROUP
        dsts: Iterable[IPAddress] = p.peers if c.unicast_peer is not None else (group,)
        for dst in dsts:
            try:
                self.p.send_advert(c.interface, p.source, dst, adv, checksum_as_v2=p.checksum_as_v2)
            except OSError as e:
                inst.send_errors += 1
                if inst.send_errors == 1 or inst.send_errors % 100 == 0:
                    log.warning(
                        "%s: cannot send advert to %s: %s (%d errors)", inst.name, dst, e, inst.send_errors
                    )

    def _garp(self, inst: Instance, count: int, vips: Iterable[Vip]) -> None:
        """Gratuitous ARP for IPv4 VIPs; unsolicited Neighbor Advertisements (Override set) for IPv6 ones."""
        by_dev: dict[tuple[str, int], list[IPAddress]] = {}
        for v in vips:
            by_dev.setdefault((v.dev or inst.cfg.interface, v.family), []).append(v.ip)
        for (dev, family), ips in by_dev.items():
            link = self.link_by_name(dev)
            if link is None or len(link.mac) != 6:
                continue
            try:
                if family == 6:
                    self.p.send_na(dev, link.mac, [ip for ip in ips if isinstance(ip, IPv6Address)], count)
                else:
                    self.p.send_garp(dev, link.mac, [ip for ip in ips if isinstance(ip, IPv4Address)], count)
            except OSError as e:
                what = "Neighbor Advertisements" if family == 6 else "gratuitous ARP"
                log.warning("%s: cannot send %s on %s: %s", inst.name, what, dev, e)

    def _state_changed(self, inst: Instance, a: fsm.StateChanged) -> None:
        self.transitions += 1
        log.info("%s: %s -> %s (priority %d)", inst.name, a.old.value, a.new.value, a.priority)
        key, word = _STATE_NOTIFY[a.new]
        specific = getattr(inst.cfg, key)
        if specific:
            self.p.run_notify(specific, f"{inst.name} {key}")
        if inst.cfg.notify:
            self.p.run_notify(
                [*inst.cfg.notify, "INSTANCE", inst.name, word, str(a.priority)], f"{inst.name} notify"
            )

    def _log_discard(self, inst: Instance, a: fsm.Discard, now: float) -> None:
        last, suppressed = inst.discard_log.get(a.reason, (-1e9, 0))
        if now - last >= DISCARD_LOG_INTERVAL:
            more = f" ({suppressed} more since last report)" if suppressed else ""
            log.warning("%s: discarded advert: %s: %s%s", inst.name, a.reason.value, a.detail, more)
            inst.discard_log[a.reason] = (now, 0)
        else:
            inst.discard_log[a.reason] = (last, suppressed + 1)
