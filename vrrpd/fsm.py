"""VRRPv2 state machine (RFC 3768 section 6) and VRRPv3 (RFC 5798 section 6, IPv4 and IPv6), sans-IO.

Theory of operation
-------------------
A :class:`VirtualRouter` is one VRRP instance. It owns no socket, no clock and no task: the daemon feeds it
events (:class:`Startup`, :class:`AdvertReceived`, :class:`TimerDue`, ...) together with the current monotonic
time ``now``, and gets back a list of actions (:class:`SendAdvert`, :class:`AddVips`, :class:`SendGarp`, ...)
that it must carry out *in list order*. After every call the daemon re-arms one wake-up at
:meth:`VirtualRouter.next_deadline` and sends :class:`TimerDue` when it fires.

Timers are absolute deadlines kept in the instance, never timer objects:

* ``adver`` (Master): the next periodic advertisement, Advertisement_Interval after the previous one.
* ``master_down`` (Backup): Master_Down_Interval = 3 * Advertisement_Interval + Skew_Time after the last
  accepted advertisement, or Skew_Time after a priority-0 advertisement. Skew_Time = (256 - priority) / 256 s
  from the *effective* priority; in VRRPv2 it is not scaled by the interval (RFC 3768 section 6.1).
* ``garp_delayed`` (Master): the second gratuitous-ARP burst, ``garp_master_delay`` after becoming master.
* ``garp_refresh`` (Master, optional): periodic gratuitous ARP every ``garp_master_refresh`` seconds.
* ``preempt_until`` (Backup) is not a wake-up but a horizon: with ``preempt_delay`` keepalived keeps accepting
  lower-priority adverts until it passes (it starts at the first lower-priority advert heard).

On :class:`TimerDue` every deadline that is ``<= now`` fires; an early or stale wake-up finds nothing due and
does nothing. Every call, whatever the event, ends by firing what is overdue, so after ``handle`` returns all
deadlines are ``None`` or ``> now``. The event itself is processed first: a Backup whose process was frozen
and that finds a higher-priority advert waiting in its socket stays Backup instead of flapping through Master.

The semantic receive checks of RFC 3768 section 7.1 are done by :func:`vrrpd.wire.check`; every discarded
packet becomes a :class:`Discard` action and a counter. Logging is an action (:class:`Log`) so that tests can
assert on it and the daemon decides where it goes (and rate-limits discards).

VRRPv3 (``Params.version == 3``) is the same machine with the timers of RFC 5798 section 6.1, in centiseconds:
the instance sends every ``advert_cs`` cs; a Backup keeps ``Master_Adver_Interval`` (``master_adver_cs``),
learnt from every advert it accepts (priority >= its own, or not preempting, or inside ``preempt_delay``), as
does a Master that yields; Skew_Time = ((256 - priority) * Master_Adver_Interval) / 256 and
Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time are computed from it exactly (as keepalived
does, in microseconds). An
advert with an interval other than ours is therefore *used* in v3 (v2 discards it). Becoming Master, starting,
and leaving FAULT return to our own interval (keepalived). A v3 instance is IPv4 or IPv6 (``src_ip6`` set):
its adverts are checked by :func:`vrrpd.wire.check_v3`; a v2 advert reaching a v3 instance, or the reverse,
is discarded as ``VERSION`` (keepalived and FRR never mix them). For an IPv6 instance :class:`SendGarp`
means unsolicited Neighbor Advertisements (``wire.na_frame``) and a reload that changes the VIPs gives
:class:`UpdateVips6`.

Beyond the RFC, the behaviour follows keepalived 2.x (the implementation this replaces): a Master that hears
a lower-priority advert answers with its own advert and a GARP burst (heals split brain); a Master entering
FAULT sends priority 0; ``nopreempt`` is a Backup-side rule only; an owner (priority 255) still processes
adverts unless ``owner_ignore_adverts``. Not in either: :class:`Maintenance` (``vrrpd ctl maint``) hands over
like a Shutdown (priority 0) but keeps the instance running as a Backup that does not preempt.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, TypeAlias

from vrrpd import wire

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "Action",
    "AddVips",
    "AdvertReceived",
    "Counters",
    "Discard",
    "Event",
    "FaultCleared",
    "FaultRaised",
    "Log",
    "Maintenance",
    "Malformed",
    "Params",
    "ParamsChanged",
    "PriorityChanged",
    "RemoveVips",
    "SendAdvert",
    "SendGarp",
    "Shutdown",
    "Startup",
    "State",
    "StateChanged",
    "TimerDue",
    "UpdateVips",
    "UpdateVips6",
    "VirtualRouter",
    "master_down_interval",
    "master_down_interval_v3",
    "skew_time",
    "skew_time_v3",
]

OWNER_PRIORITY = 255
PRIORITY_STOP = 0


class State(enum.Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


def skew_time(priority: int) -> float:
    """Skew_Time = (256 - Priority) / 256 seconds (RFC 3768 section 6.1; VRRPv2, not scaled by interval)."""
    return (256 - priority) / 256


def master_down_interval(advert_int: float, priority: int) -> float:
    """Master_Down_Interval = 3 * Advertisement_Interval + Skew_Time (RFC 3768 section 6.1)."""
    return 3 * advert_int + skew_time(priority)


def skew_time_v3(priority: int, master_adver_cs: int) -> float:
    """VRRPv3 Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256, in seconds, for an interval in
    centiseconds (RFC 5798 section 6.1); exact, as keepalived computes it (FRR truncates to whole cs)."""
    return (256 - priority) * master_adver_cs / 25600


def master_down_interval_v3(master_adver_cs: int, priority: int) -> float:
    """VRRPv3 Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time, in seconds, for an interval in
    centiseconds (RFC 5798 section 6.1): 0.3609375 s at 10 cs and priority 100."""
    return 3 * master_adver_cs / 100 + skew_time_v3(priority, master_adver_cs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    """Configuration of one instance. Keyword-only. ``priority`` is the configured one (255 = owner).

    VRRPv3 (``version=3``): the interval is ``advert_cs`` centiseconds (1..4095; default ``100 *
    advert_int``), there is no authentication, and ``checksum_as_v2`` selects the message-only IPv4 checksum
    for *sending* (keepalived 2.2.8's ``v3_checksum_as_v2``; both forms are accepted on receive). An IPv6
    instance sets ``src_ip6`` (the interface's link-local address), ``vips6`` and ``unicast_peers6``, leaves
    the IPv4 ``vips``/``unicast_peers`` empty, and its ``src_ip`` is not used. Use :attr:`source`,
    :attr:`addresses`, :attr:`peers` and :attr:`interval` to read either family / version.
    """

    vrid: int
    priority: int
    advert_int: int
    src_ip: IPv4Address
    vips: tuple[IPv4Address, ...] = ()
    preempt: bool = True
    preempt_delay: float = 0
    auth_type: int = wire.AUTH_NONE
    auth_data: bytes = b"\0" * 8
    unicast_peers: tuple[IPv4Address, ...] = ()
    garp_master_repeat: int = 5
    garp_master_delay: float = 5
    garp_master_refresh: float = 0
    garp_master_refresh_repeat: int = 1
    garp_lower_prio_repeat: int = 5
    lower_prio_no_advert: bool = False
    higher_prio_send_advert: bool = True
    owner_ignore_adverts: bool = False
    version: int = 2
    advert_cs: int | None = None
    checksum_as_v2: bool = False
    src_ip6: IPv6Address | None = None
    vips6: tuple[IPv6Address, ...] = ()
    unicast_peers6: tuple[IPv6Address, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid {self.vrid} not in 1..255")
        if not 1 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} not in 1..255")
        if not 1 <= self.advert_int <= 255:
            raise ValueError(f"advert_int {self.advert_int} not in 1..255 (whole seconds in VRRPv2)")
        if len(self.vips) > wire.MAX_ADDRS:
            raise ValueError(f"{len(self.vips)} vips, at most {wire.MAX_ADDRS}")
        if len(self.auth_data) != 8:
            raise ValueError("auth_data must be 8 bytes")
        for name in ("preempt_delay", "garp_master_delay", "garp_master_refresh"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("garp_master_repeat", "garp_master_refresh_repeat", "garp_lower_prio_repeat"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.version not in (2, 3):
            raise ValueError(f"version {self.version} is neither 2 nor 3")
        if self.version == 2:
            if self.advert_cs is not None:
                raise ValueError("advert_cs (centiseconds) is VRRPv3 only; VRRPv2 uses advert_int seconds")
            if self.src_ip6 is not None or self.vips6 or self.unicast_peers6:
                raise ValueError("IPv6 needs VRRPv3 (version=3)")
            return
        cs = self.advert_cs if self.advert_cs is not None else 100 * self.advert_int
        if not 1 <= cs <= wire.MAX_ADVER_INT_CS:
            raise ValueError(f"VRRPv3 interval {cs} cs not in 1..{wire.MAX_ADVER_INT_CS} (0.01..40.95 s)")
        if self.auth_type != wire.AUTH_NONE:
            raise ValueError("VRRPv3 has no authentication (auth_type must be 0)")
        if self.src_ip6 is None and (self.vips6 or self.unicast_peers6):
            raise ValueError("IPv6 vips6/unicast_peers6 need src_ip6 (one address family per instance)")
        if self.src_ip6 is not None and (self.vips or self.unicast_peers):
            raise ValueError("an IPv6 instance (src_ip6) cannot have IPv4 vips/unicast_peers")
        if len(self.vips6) > wire.MAX_ADDRS:
            raise ValueError(f"{len(self.vips6)} vips6, at most {wire.MAX_ADDRS}")

    @property
    def owner(self) -> bool:
        return self.priority == OWNER_PRIORITY

    @property
    def unicast(self) -> bool:
        return bool(self.peers)

    @property
    def family(self) -> int:
        """4, or 6 for a VRRPv3 IPv6 instance."""
        return 6 if self.src_ip6 is not None else 4

    @property
    def source(self) -> wire.IPAddress:
        """The address adverts are sent from and ties are broken on."""
        return self.src_ip6 if self.src_ip6 is not None else self.src_ip

    @property
    def addresses(self) -> tuple[IPv4Address, ...] | tuple[IPv6Address, ...]:
        """The VIPs of the instance's family (what its adverts carry)."""
        return self.vips6 if self.src_ip6 is not None else self.vips

    @property
    def peers(self) -> tuple[IPv4Address, ...] | tuple[IPv6Address, ...]:
        return self.unicast_peers6 if self.src_ip6 is not None else self.unicast_peers

    @property
    def interval_cs(self) -> int:
        """Our Advertisement_Interval in centiseconds (v2: 100 * advert_int)."""
        if self.version == 3 and self.advert_cs is not None:
            return self.advert_cs
        return 100 * self.advert_int

    @property
    def interval(self) -> float:
        """Our Advertisement_Interval in seconds: ``advert_int`` itself in v2, ``advert_cs / 100`` in v3."""
        if self.version == 3:
            return self.interval_cs / 100
        return self.advert_int


# ---------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Startup:
    """Start (or restart after Shutdown) the instance: Initialize state (RFC 3768 section 6.4.1)."""


@dataclass(frozen=True, slots=True)
class AdvertReceived:
    """A structurally valid advert arrived: ``wire.decode_ip`` (v2) or ``wire.decode_ip_v3`` /
    ``wire.decode_ipv6`` / ``wire.decode_ip_any`` (v3) succeeded."""

    packet: wire.Packet | wire.PacketV3


@dataclass(frozen=True, slots=True)
class Malformed:
    """A packet for this instance failed ``wire.decode_ip``: counted and discarded."""

    reason: wire.Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TimerDue:
    """The wake-up at ``next_deadline()`` fired (early or stale wake-ups are harmless)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Stop the instance (SIGTERM, or removed on reload)."""


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """The effective priority (from ``track.effective_priority``) changed."""

    effective: int


@dataclass(frozen=True, slots=True)
class FaultRaised:
    """A fault appeared (interface down, weight-0 track script failing, no unicast peer, ...)."""

    reason: str


@dataclass(frozen=True, slots=True)
class FaultCleared:
    reason: str


@dataclass(frozen=True, slots=True)
class ParamsChanged:
    """Reload with new parameters (same VRID), keeping the current state. ``effective``: the effective
    priority under the new parameters when the caller knows it (track weights, a runtime override); without
    it a track-script offset is carried over to the new configured priority."""

    params: Params
    effective: int | None = None


@dataclass(frozen=True, slots=True)
class Maintenance:
    """``vrrpd ctl maint`` (on) / ``restore`` (off). On: a Master hands over at once as on Shutdown
    (priority-0 advert, VIPs removed) and stays Backup; while on, a Backup never preempts (it still takes over
    when no master is heard for Master_Down_Interval: a last resort). The priority is lowered by
    PriorityChanged."""

    on: bool


Event: TypeAlias = (
    Startup
    | AdvertReceived
    | Malformed
    | TimerDue
    | Shutdown
    | PriorityChanged
    | FaultRaised
    | FaultCleared
    | ParamsChanged
    | Maintenance
)

# --------------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send one advert (to the group, or once per unicast peer) with this priority."""

    priority: int


@dataclass(frozen=True, slots=True)
class AddVips:
    """Configure all VIPs of ``params.vips``."""


@dataclass(frozen=True, slots=True)
class RemoveVips:
    """Remove all VIPs of ``params.vips``."""


@dataclass(frozen=True, slots=True)
class UpdateVips:
    """Reload while Master changed the VIP list: remove ``remove``, add ``add``."""

    add: tuple[IPv4Address, ...]
    remove: tuple[IPv4Address, ...]


@dataclass(frozen=True, slots=True)
class UpdateVips6:
    """As :class:`UpdateVips`, for an IPv6 instance."""

    add: tuple[IPv6Address, ...]
    remove: tuple[IPv6Address, ...]


@dataclass(frozen=True, slots=True)
class SendGarp:
    """Send ``count`` gratuitous ARPs for every VIP (``count`` rounds over the VIP list); for an IPv6
    instance, ``count`` unsolicited Neighbor Advertisements (``wire.na_frame``, Override set) per VIP."""

    count: int


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The state changed; the daemon runs notify scripts from this. ``new == INIT`` means stopped
    (``notify_stop``)."""

    old: State
    new: State
    priority: int


@dataclass(frozen=True, slots=True)
class Discard:
    """A received packet was discarded (or, for ``ADDR_LIST``, only flagged: the advert was still used)."""

    reason: wire.Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Log:
    level: int
    message: str


Action: TypeAlias = (
    SendAdvert | AddVips | RemoveVips | UpdateVips | UpdateVips6 | SendGarp | StateChanged | Discard | Log
)


@dataclass(slots=True)
class Counters:
    adverts_sent: int = 0
    adverts_received: int = 0
    became_master: int = 0
    released_master: int = 0
    priority_zero_sent: int = 0
    priority_zero_received: int = 0
    checksum_as_v2_received: int = 0  # VRRPv3 IPv4 adverts that came with the message-only checksum
    discards: dict[wire.Reason, int] = field(default_factory=lambda: {r: 0 for r in wire.Reason})

    def as_dict(self) -> dict[str, object]:
        return {
            "adverts_sent": self.adverts_sent,
            "adverts_received": self.adverts_received,
            "became_master": self.became_master,
            "released_master": self.released_master,
            "priority_zero_sent": self.priority_zero_sent,
            "priority_zero_received": self.priority_zero_received,
            "discards": {r.value: n for r, n in self.discards.items()},
        }


# ------------------------------------------------------------------------------------------- virtual router


class VirtualRouter:
    """One VRRP instance (v2, or v3 per ``params.version``). ``handle(event, now)`` returns the actions to
    perform, in order."""

    def __init__(self, params: Params, name: str = "") -> None:
        self.params = params
        self.name = name
        self.state = State.INIT
        self.effective_priority = params.priority
        self.master_ip: wire.IPAddress | None = None
        self.master_adver_cs = params.interval_cs  # v3 Master_Adver_Interval (learnt); v2: unused
        self.counters = Counters()
        self.faults: set[str] = set()
        self.maint = False
        self._adver_at: float | None = None
        self._down_at: float | None = None
        self._garp_delayed_at: float | None = None
        self._refresh_at: float | None = None
        self._preempt_until: float | None = None
        self._lower_answered_at: float | None = None
        self._out: list[Action] = []

    # -- public API ------------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        return self.handle_batch((event,), now)

    def handle_batch(self, events: Iterable[Event], now: float) -> list[Action]:
        """Process ``events`` in order, then fire what is overdue once (a receive batch: a frozen Backup
        must see every queued advert before its overdue Master_Down_Timer may decide)."""
        self._out = []
        for event in events:
            self._dispatch(event, now)
        self._fire_due(now)
        out, self._out = self._out, []
        return out

    def _dispatch(self, event: Event, now: float) -> None:
        if isinstance(event, Startup):
            self._on_startup(now)
        elif isinstance(event, AdvertReceived):
            self._on_advert(event.packet, now)
        elif isinstance(event, Malformed):
            self._discard(event.reason, event.detail or "malformed packet")
        elif isinstance(event, TimerDue):
            pass  # due timers fire below, as after every event
        elif isinstance(event, Shutdown):
            self._on_shutdown(now)
        elif isinstance(event, PriorityChanged):
            self._on_priority(event.effective, now)
        elif isinstance(event, FaultRaised):
            self._on_fault_raised(event.reason, now)
        elif isinstance(event, FaultCleared):
            self._on_fault_cleared(event.reason, now)
        elif isinstance(event, ParamsChanged):
            self._on_params(event.params, event.effective, now)
        elif isinstance(event, Maintenance):
            self._on_maintenance(event.on, now)
        else:  # pragma: no cover - exhaustive over Event
            raise TypeError(f"not an event: {event!r}")

    def next_deadline(self) -> float | None:
        pending = [d for d in self.deadlines().values() if d is not None]
        return min(pending) if pending else None

    def deadlines(self) -> dict[str, float | None]:
        """All wake-up deadlines by name (``None`` = not armed)."""
        return {
            "adver": self._adver_at,
            "master_down": self._down_at,
            "garp_delayed": self._garp_delayed_at,
            "garp_refresh": self._refresh_at,
        }

    @property
    def preempt_until(self) -> float | None:
        return self._preempt_until

    def snapshot(self) -> dict[str, object]:
        p = self.params
        snap: dict[str, object] = {
            "name": self.name,
            "vrid": p.vrid,
            "state": self.state.value,
            "priority": p.priority,
            "effective_priority": self.effective_priority,
            "master_ip": str(self.master_ip) if self.master_ip is not None else None,
            "src_ip": str(p.src_ip),
            "advert_int": p.advert_int,
            "preempt": p.preempt,
            "preempt_delay": p.preempt_delay,
            "mode": "unicast" if p.unicast else "multicast",
            "vips": [str(v) for v in p.vips],
            "faults": sorted(self.faults),
            "maintenance": self.maint,
            "deadlines": dict(self.deadlines()),
            "counters": self.counters.as_dict(),
        }
        if p.version == 3:
            counters = self.counters.as_dict()
            counters["checksum_as_v2_received"] = self.counters.checksum_as_v2_received
            snap.update(
                {
                    "version": 3,
                    "family": p.family,
                    "src_ip": str(p.source),
                    "advert_int": p.interval,
                    "master_adver_int": self.master_adver_cs / 100,
                    "checksum_as_v2": p.checksum_as_v2,
                    "vips": [str(v) for v in p.addresses],
                    "counters": counters,
                }
            )
        return snap

    # -- helpers ---------------------------------------------------------------------------------------

    def _log(self, level: int, message: str) -> None:
        self._out.append(Log(level, message))

    def _discard(self, reason: wire.Reason, detail: str) -> None:
        self.counters.discards[reason] += 1
        self._out.append(Discard(reason, detail))

    def _send_advert(self, priority: int) -> None:
        self.counters.adverts_sent += 1
        if priority == PRIORITY_STOP:
            self.counters.priority_zero_sent += 1
        self._out.append(SendAdvert(priority))

    def _send_garp(self, count: int) -> None:
        if count > 0 and self.params.addresses:
            self._out.append(SendGarp(count))

    def _mdi(self) -> float:
        if self.params.version == 3:
            return master_down_interval_v3(self.master_adver_cs, self.effective_priority)
        return master_down_interval(self.params.advert_int, self.effective_priority)

    def _skew(self) -> float:
        if self.params.version == 3:
            return skew_time_v3(self.effective_priority, self.master_adver_cs)
        return skew_time(self.effective_priority)

    def _clear_master_timers(self) -> None:
        self._adver_at = None
        self._garp_delayed_at = None
        self._refresh_at = None

    def _set_state(self, new: State) -> None:
        old, self.state = self.state, new
        self._out.append(StateChanged(old, new, self.effective_priority))

    # -- transitions -----------------------------------------------------------------------------------

    def _become_master(self, now: float) -> None:
        # RFC 3768 section 6.4.1 / 6.4.2: send an ADVERTISEMENT, broadcast gratuitous ARP for each VIP, start
        # the Adver_Timer, go Master. keepalived's order: the advert first (the old master must drop the VIPs
        # before our GARPs), then add the VIPs, then the GARP burst, all at once; notify scripts run last.
        p = self.params
        if self.maint:
            self._log(logging.WARNING, "no master heard: taking over although in maintenance (last resort)")
        self._log(logging.INFO, "Entering MASTER STATE")
        self._down_at = None
        self._preempt_until = None
        self._send_advert(self.effective_priority)
        self._out.append(AddVips())
        self._send_garp(p.garp_master_repeat)
        self.counters.became_master += 1
        self.master_ip = p.source
        self.master_adver_cs = p.interval_cs  # v3: back to our own interval (keepalived)
        self._adver_at = now + p.interval
        self._garp_delayed_at = (
            now + p.garp_master_delay if p.garp_master_delay > 0 and p.garp_master_repeat > 0 else None
        )
        self._refresh_at = now + p.garp_master_refresh if p.garp_master_refresh > 0 else None
        self._set_state(State.MASTER)

    def _become_backup(self, now: float, down_at: float | None = None) -> None:
        self._clear_master_timers()
        self._preempt_until = None
        self._down_at = now + self._mdi() if down_at is None else down_at
        self._log(logging.INFO, "Entering BACKUP STATE")
        self._set_state(State.BACKUP)

    def _leave_master(self, send_zero: bool) -> None:
        # Leaving Master (RFC 3768 section 6.4.3): optionally tell the others with priority 0, then remove the
        # VIPs; the StateChanged (notify scripts) comes after the removal, as in keepalived.
        self._clear_master_timers()
        if send_zero:
            self._send_advert(PRIORITY_STOP)
        self._out.append(RemoveVips())
        self.counters.released_master += 1

    def _on_startup(self, now: float) -> None:
        if self.state is not State.INIT:
            self._log(logging.DEBUG, f"Startup ignored in state {self.state.value}")
            return
        self.master_adver_cs = self.params.interval_cs
        if self.faults:
            self._log(logging.INFO, f"Entering FAULT STATE ({', '.join(sorted(self.faults))})")
            self._set_state(State.FAULT)
        elif self.effective_priority == OWNER_PRIORITY:
            # RFC 3768 section 6.4.1: the owner (priority 255) goes Master at once.
            self._become_master(now)
        else:
            # RFC 3768 section 6.4.1: Master_Down_Timer = Master_Down_Interval, go Backup.
            self._become_backup(now)

    def _on_shutdown(self, now: float) -> None:
        # RFC 3768 section 6.4.3 "If a Shutdown event is received": cancel the Adver_Timer, send an
        # ADVERTISEMENT with priority 0, go Initialize. keepalived then removes the VIPs and runs notify_stop.
        if self.state is State.INIT:
            return
        if self.state is State.MASTER:
            self._log(logging.INFO, "sending priority 0 advert (shutdown)")
            self._leave_master(send_zero=True)
        self._down_at = None
        self._preempt_until = None
        self._clear_master_timers()
        self._set_state(State.INIT)

    def _on_priority(self, effective: int, now: float) -> None:
        if not 1 <= effective <= OWNER_PRIORITY:
            raise ValueError(f"effective priority {effective} not in 1..255")
        old = self.effective_priority
        if effective == old:
            return
        old_skew = self._skew()
        self.effective_priority = effective
        self._log(logging.INFO, f"effective priority changed from {old} to {effective}")
        if self.state is State.BACKUP and self._down_at is not None:
            # keepalived vrrp_set_effective_priority: a running down timer moves by the change of Skew_Time
            # (Master_Down_Interval changes by exactly that much).
            self._down_at = max(now, self._down_at + self._skew() - old_skew)

    def _on_fault_raised(self, reason: str, now: float) -> None:
        new = reason not in self.faults
        self.faults.add(reason)
        if self.state is State.FAULT or self.state is State.INIT:
            if new:
                self._log(logging.INFO, f"fault recorded: {reason}")
            return
        self._log(logging.INFO, f"Entering FAULT STATE ({reason})")
        if self.state is State.MASTER:
            # keepalived vrrp_state_leave_master(FAULT): priority 0 so the Backup takes over after Skew_Time.
            self._leave_master(send_zero=True)
        self._down_at = None
        self._preempt_until = None
        self._set_state(State.FAULT)

    def _on_fault_cleared(self, reason: str, now: float) -> None:
        if reason not in self.faults:
            return
        self.faults.discard(reason)
        if self.faults:
            self._log(logging.INFO, f"fault {reason} cleared, still faulty: {', '.join(sorted(self.faults))}")
            return
        if self.state is not State.FAULT:
            return
        self._log(logging.INFO, f"fault {reason} cleared")
        self.master_adver_cs = self.params.interval_cs  # keepalived: leaving FAULT forgets the learnt one
        if self.effective_priority == OWNER_PRIORITY:
            self._become_master(now)
        else:
            self._become_backup(now)

    def _on_maintenance(self, on: bool, now: float) -> None:
        if on == self.maint:
            return
        if on and self.params.owner:
            self._log(logging.WARNING, "maintenance ignored: the address owner (255) always preempts")
            return
        self.maint = on
        self._preempt_until = None
        if not on:
            self._log(logging.INFO, "leaving maintenance: preemption as configured")
            return
        self._log(logging.INFO, f"entering maintenance (priority {self.effective_priority}, no preemption)")
        if self.state is State.MASTER:
            # As a graceful shutdown: priority 0 so the Backup takes over after Skew_Time; VIPs removed first.
            self._log(logging.INFO, "sending priority 0 advert (maintenance)")
            self._leave_master(send_zero=True)
            self.master_ip = None
            self._become_backup(now)

    def _on_params(self, params: Params, effective: int | None, now: float) -> None:
        old = self.params
        if params.vrid != old.vrid:
            raise ValueError(f"ParamsChanged cannot change the VRID ({old.vrid} -> {params.vrid})")
        if (params.version, params.family) != (old.version, old.family):
            raise ValueError(
                f"ParamsChanged cannot change the VRRP version or address family "
                f"(v{old.version}/IPv{old.family} -> v{params.version}/IPv{params.family}): "
                "recreate the instance"
            )
        if effective is not None and not 1 <= effective <= OWNER_PRIORITY:
            raise ValueError(f"effective priority {effective} not in 1..255")
        if params == old and effective in (None, self.effective_priority):
            return
        old_mdi = self._mdi()
        if params.owner and self.maint:
            self.maint = False
            self._log(logging.INFO, "now the address owner: maintenance ended")
        if effective is not None:
            self.effective_priority = effective
        elif params.priority != old.priority:
            # Carry a track-script offset over a change of the configured priority; the daemon normally
            # follows with PriorityChanged computed from the scripts anyway.
            offset = self.effective_priority - old.priority
            if params.priority == OWNER_PRIORITY or old.priority == OWNER_PRIORITY or offset == 0:
                self.effective_priority = params.priority
            else:
                self.effective_priority = min(254, max(1, params.priority + offset))
        self.params = params
        self._log(logging.INFO, "parameters reloaded")
        if params.preempt_delay != old.preempt_delay or not params.preempt:
            self._preempt_until = None
        if self.state is State.BACKUP and self._down_at is not None:
            self._down_at = max(now, self._down_at + self._mdi() - old_mdi)
        elif self.state is State.MASTER:
            self.master_adver_cs = params.interval_cs
            if params.interval != old.interval and self._adver_at is not None:
                self._adver_at = min(self._adver_at, now + params.interval)
            if params.garp_master_refresh != old.garp_master_refresh:
                refresh = params.garp_master_refresh
                self._refresh_at = now + refresh if refresh > 0 else None
            if params.vips != old.vips:
                add = tuple(v for v in params.vips if v not in old.vips)
                remove = tuple(v for v in old.vips if v not in params.vips)
                if add or remove:
                    self._out.append(UpdateVips(add=add, remove=remove))
                    self._send_garp(params.garp_master_repeat)
            if params.vips6 != old.vips6:
                add6 = tuple(v for v in params.vips6 if v not in old.vips6)
                remove6 = tuple(v for v in old.vips6 if v not in params.vips6)
                if add6 or remove6:
                    self._out.append(UpdateVips6(add=add6, remove=remove6))
                    self._send_garp(params.garp_master_repeat)

    def _on_advert(self, packet: wire.Packet | wire.PacketV3, now: float) -> None:
        p = self.params
        if isinstance(packet, wire.PacketV3):
            if p.version != 3:
                detail = f"VRRPv3 advert from {packet.src}, this instance is VRRPv2"
                self._discard(wire.Reason.VERSION, detail)
                return
            if packet.advert.family != p.family:
                self._discard(
                    wire.Reason.IP_HEADER, f"IPv{packet.advert.family} advert for an IPv{p.family} instance"
                )
                return
            verdict = wire.check_v3(
                packet,
                vrid=p.vrid,
                vips=p.addresses,
                unicast_peers=p.peers,
                owner=p.owner,
                owner_ignore_adverts=p.owner_ignore_adverts,
            )
        elif p.version != 2:
            self._discard(wire.Reason.VERSION, f"VRRPv2 advert from {packet.src}, this instance is VRRPv3")
            return
        else:
            verdict = wire.check(
                packet,
                vrid=p.vrid,
                advert_int=p.advert_int,
                auth_type=p.auth_type,
                auth_data=p.auth_data,
                vips=p.vips,
                unicast_peers=p.unicast_peers,
                owner=p.owner,
                owner_ignore_adverts=p.owner_ignore_adverts,
            )
        if verdict.discard is not None:
            self._discard(verdict.discard, verdict.detail)
            return
        for reason, detail in verdict.warnings:
            # RFC 3768 section 7.1: MAY verify the address list; if it mismatches, MUST log. As keepalived,
            # the advert is still used.
            self._discard(reason, detail + " (advert still used)")
        self.counters.adverts_received += 1
        if isinstance(packet, wire.PacketV3) and packet.checksum_as_v2:
            self.counters.checksum_as_v2_received += 1
        prio = packet.advert.priority
        if prio == PRIORITY_STOP:
            self.counters.priority_zero_received += 1
        if self.state is State.BACKUP:
            self._backup_rx(packet, now)
        elif self.state is State.MASTER:
            self._master_rx(packet, now)
        elif self.state is State.FAULT and prio != PRIORITY_STOP:
            self.master_ip = packet.src  # no transition from Fault on adverts; remember who is master
        # INIT: not participating; the advert is only counted.

    def _learn_interval(self, packet: wire.Packet | wire.PacketV3) -> None:
        """VRRPv3: Master_Adver_Interval := the advert's Max Adver Int (RFC 5798 sections 6.4.2, 6.4.3)."""
        if not isinstance(packet, wire.PacketV3):
            return
        cs = packet.advert.max_advert_int
        if cs != self.master_adver_cs:
            self._log(
                logging.INFO,
                f"advertisement interval updated from {self.master_adver_cs * 10}ms to {cs * 10}ms by master",
            )
            self.master_adver_cs = cs

    def _backup_rx(self, packet: wire.Packet | wire.PacketV3, now: float) -> None:
        p = self.params
        prio = packet.advert.priority
        eff = self.effective_priority
        if prio == PRIORITY_STOP:
            # RFC 3768 section 6.4.2: priority 0 -> Master_Down_Timer = Skew_Time.
            self._log(logging.INFO, f"Backup received priority 0 advert from {packet.src}")
            self._down_at = now + self._skew()
            self.master_ip = None
            return
        preempt = p.preempt and not self.maint
        until = self._preempt_until
        delaying = preempt and p.preempt_delay > 0 and (until is None or now < until)
        if not preempt or prio >= eff or delaying:
            # RFC 3768 section 6.4.2: priority >= local, or Preempt_Mode False -> reset the Master_Down_Timer.
            # keepalived's preempt_delay: lower-priority adverts are also accepted until preempt_until, which
            # starts at the first lower-priority advert and is cleared by one of higher or equal priority.
            # VRRPv3: learn Master_Adver_Interval first; Master_Down_Interval is recomputed from it.
            self._learn_interval(packet)
            self._down_at = now + self._mdi()
            self.master_ip = packet.src
            if preempt and p.preempt_delay > 0:
                if prio >= eff:
                    self._preempt_until = None
                elif self._preempt_until is None:
                    self._preempt_until = now + p.preempt_delay
                    self._log(logging.INFO, f"start preempt delay ({p.preempt_delay:g}s)")
            return
        # RFC 3768 section 6.4.2: lower priority and preempting -> discard the advert, let the timer run out.
        self.master_ip = packet.src
        self._log(logging.INFO, f"received lower priority ({prio}) advert from {packet.src} - discarding")

    def _master_rx(self, packet: wire.Packet | wire.PacketV3, now: float) -> None:
        p = self.params
        prio = packet.advert.priority
        eff = self.effective_priority
        if prio == PRIORITY_STOP:
            # RFC 3768 section 6.4.3: priority 0 -> send an ADVERTISEMENT and reset the Adver_Timer.
            self._log(logging.INFO, f"Master received priority 0 advert from {packet.src}")
            self._send_advert(eff)
            self._adver_at = now + p.interval
            return
        if prio == eff and packet.src == p.source:
            self._log(logging.WARNING, "equal priority advert from a remote host with our IP address")
            return
        if prio == OWNER_PRIORITY and eff == OWNER_PRIORITY:
            self._log(
                logging.ERROR,
                f"CONFIGURATION ERROR: {packet.src} is also configured as address owner (priority 255)",
            )
        # Unsigned 32-bit compare of the primary (or configured source) addresses (keepalived vrrp_saddr_cmp).
        # VRRPv3 over IPv6: the same, unsigned 128-bit, on the link-local source (RFC 5798 section 6.4.3).
        higher = prio > eff or (prio == eff and int(packet.src) > int(p.source))
        if higher:
            # RFC 3768 section 6.4.3: higher priority, or equal and higher address -> cancel the Adver_Timer,
            # Master_Down_Timer = Master_Down_Interval, go Backup. A Master always yields (nopreempt is
            # Backup-side only).
            self._log(logging.INFO, f"Master received advert from {packet.src}, priority {prio}, ours {eff}")
            if p.higher_prio_send_advert:
                # keepalived's higher_prio_send_advert (on by default here): one last advert at our priority
                # makes the winner hear a lower-priority master, so it re-sends GARP. Without it, when both
                # sides were master (a healed partition) and we hear the winner first, nobody re-sends GARP
                # and clients keep our MAC until their ARP entry expires.
                self._send_advert(eff)
            self._leave_master(send_zero=False)
            self.master_ip = packet.src
            self._learn_interval(packet)  # RFC 5798 section 6.4.3: before Master_Down_Interval is computed
            self._become_backup(now)
            return
        # Lower priority (or equal and lower address): the RFC discards it; keepalived (default) answers with
        # its own advert and a GARP burst so that a split brain heals and stale ARP caches are fixed.
        tail = "" if p.lower_prio_no_advert else ", forcing new election"
        self._log(logging.INFO, f"lower-priority advert from {packet.src}, priority {prio}, ours {eff}{tail}")
        if self._lower_answered_at == now:
            return  # a backlog read at one instant (e.g. after SIGCONT) is answered once, not once per packet
        self._lower_answered_at = now
        if not p.lower_prio_no_advert:
            self._send_advert(eff)
        self._send_garp(p.garp_lower_prio_repeat)

    def _fire_due(self, now: float) -> None:
        p = self.params
        if self.state is State.BACKUP and self._down_at is not None and self._down_at <= now:
            # RFC 3768 section 6.4.2: Master_Down_Timer fires -> become Master.
            self._become_master(now)
        if self.state is not State.MASTER:
            return
        if self._adver_at is not None and self._adver_at <= now:
            # RFC 3768 section 6.4.3: Adver_Timer fires -> send an ADVERTISEMENT, restart the timer.
            self._send_advert(self.effective_priority)
            self._adver_at = now + p.interval
        if self._garp_delayed_at is not None and self._garp_delayed_at <= now:
            self._garp_delayed_at = None
            self._send_garp(p.garp_master_repeat)
        if self._refresh_at is not None and self._refresh_at <= now:
            self._refresh_at = now + p.garp_master_refresh
            self._send_garp(p.garp_master_refresh_repeat)
