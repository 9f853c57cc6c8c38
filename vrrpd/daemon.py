"""The asyncio driver: sockets and timers in, :class:`vrrpd.fsm.VirtualRouter` events; actions out.

The driver is deliberately thin (aioquic's shape): every input (a datagram, a timer, a link change, a track
script flip, a signal) becomes one event for one instance, ``VirtualRouter.handle(event, now)`` returns the
actions, they are carried out in order, and one ``loop.call_at(next_deadline)`` per instance is re-armed.
``now`` is ``loop.time()``; a timer callback uses ``max(deadline, loop.time())`` so an early wake-up cannot
run the machine backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from vrrpd import fsm, track, wire
from vrrpd.config import Config, ConfigError, InstanceConfig, Vip, load
from vrrpd.netlink import Link, LinkEvent, Netlink, NetlinkError, open_monitor, read_events
from vrrpd.scripts import NotifyQueue, RunAs, TrackScript, insecure, resolve_argv, resolve_user
from vrrpd.sockets import GarpSocket, VrrpSocket

if TYPE_CHECKING:
    from rmqfd.sdnotify import Notifier

__all__ = ["Daemon", "check_runtime", "make_params", "run", "setup_logging"]

log = logging.getLogger("vrrpd")

DISCARD_LOG_INTERVAL = 10.0  # seconds between two log lines for the same (instance, discard reason)
SHUTDOWN_BUDGET = 0.8  # seconds the notify queue may use at SIGTERM (the whole exit stays under one second)


class DeferringHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that can hold records while an action batch runs, so that writing log lines never
    delays the packets of that batch (advert, VIPs, GARP go out in the same millisecond). Records keep the
    time they were created at."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._depth = 0
        self._held: list[logging.LogRecord] = []

    def hold(self) -> None:
        self._depth += 1

    def release(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self._held:
            held, self._held = self._held, []
            for rec in held:
                super().emit(rec)

    def emit(self, record: logging.LogRecord) -> None:
        if self._depth:
            self._held.append(record)
        else:
            super().emit(record)


_HANDLER: DeferringHandler | None = None


def setup_logging(level: str = "info") -> None:
    """One line per event on stderr; no timestamps under systemd (JOURNAL_STREAM set: journald adds them)."""
    global _HANDLER
    handler = _HANDLER = DeferringHandler()
    if os.environ.get("JOURNAL_STREAM"):
        fmt = logging.Formatter("%(levelname)s %(message)s")
    else:
        fmt = logging.Formatter(
            "%(asctime)s.%(msecs)03d vrrpd[%(process)d] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"
        )
    handler.setFormatter(fmt)
    root = logging.getLogger("vrrpd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def make_params(c: InstanceConfig, src_ip: IPv4Address) -> fsm.Params:
    auth_type, auth_data = wire.password(c.auth_pass)
    return fsm.Params(
        vrid=c.virtual_router_id,
        priority=c.priority,
        advert_int=c.advert_int,
        src_ip=src_ip,
        vips=tuple(v.ip for v in c.virtual_ipaddress),
        preempt=not c.nopreempt,
        preempt_delay=c.preempt_delay,
        auth_type=auth_type,
        auth_data=auth_data,
        unicast_peers=c.unicast_peer or (),
        garp_master_repeat=c.garp_master_repeat,
        garp_master_delay=c.garp_master_delay,
        garp_master_refresh=c.garp_master_refresh,
        garp_master_refresh_repeat=c.garp_master_refresh_repeat,
        garp_lower_prio_repeat=c.garp_lower_prio_repeat,
        lower_prio_no_advert=c.lower_prio_no_advert,
        higher_prio_send_advert=c.higher_prio_send_advert,
    )


def check_runtime(cfg: Config) -> list[str]:
    """Host-dependent checks for ``--check``: warnings only (the file may be meant for another host)."""
    out: list[str] = []
    try:
        names = {name for _i, name in socket.if_nameindex()}
    except OSError:
        names = set()
    for i, inst in enumerate(cfg.instances):
        devs = {inst.interface, *(v.dev for v in inst.virtual_ipaddress if v.dev)}
        devs |= {t.name for t in inst.track_interface}
        for d in sorted(devs):
            if names and d not in names:
                out.append(f"vrrp_instance[{i}]: interface {d} does not exist on this host")
    try:
        run_as = resolve_user(cfg.global_.script_user)
    except KeyError:
        out.append(f"global.script_user: user {cfg.global_.script_user} does not exist on this host")
        return out
    if run_as.uid == 0 and (cfg.scripts or any(_notify_argvs(i) for i in cfg.instances)):
        out.append("scripts run as root: set global.script_user (keepalived: SECURITY VIOLATION)")
    argvs = [(f"vrrp_script.{s.name}.script", s.script) for s in cfg.scripts]
    for i, inst in enumerate(cfg.instances):
        argvs += [(f"vrrp_instance[{i}].{k}", a) for k, a in _notify_argvs(inst)]
    for path, argv in argvs:
        full = resolve_argv(argv)
        if not os.path.isabs(full[0]) or not os.path.exists(full[0]):
            out.append(f"{path}: {argv[0]} not found")
        elif cfg.global_.enable_script_security:
            why = insecure(full[0], run_as)
            if why:
                out.append(f"{path}: would be refused by enable_script_security: {why}")
    return out


def _notify_argvs(c: InstanceConfig) -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for k in ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify"):
        v = getattr(c, k)
        if v:
            out.append((k, v))
    return out


class Iface:
    """One interface that instances run on: its link state and the sockets shared by its instances."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.link: Link | None = None
        self.vrrp: VrrpSocket | None = None
        self.instances: dict[int, Instance] = {}

    @property
    def up(self) -> bool:
        return self.link is not None and self.link.up

    @property
    def fault(self) -> str:
        return f"interface {self.name} down"


class Instance:
    def __init__(self, cfg: InstanceConfig, vr: fsm.VirtualRouter, iface: Iface) -> None:
        self.cfg = cfg
        self.vr = vr
        self.iface = iface
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.installed: dict[IPv4Address, Vip] = {}
        self.discard_log: dict[wire.Reason, tuple[float, int]] = {}
        self.send_errors = 0
        self.override: int | None = None  # vrrpd ctl priority/maint (vrrpd.admin); survives reloads

    @property
    def name(self) -> str:
        return self.cfg.name


class Daemon:
    def __init__(self, cfg: Config, config_path: str | None = None, loop_kind: str = "asyncio") -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.loop_kind = loop_kind
        self.loop = asyncio.get_running_loop()
        self.nl = Netlink()
        self.ifaces: dict[str, Iface] = {}
        self.links: dict[int, Link] = {}
        self.instances: dict[tuple[str, int], Instance] = {}
        self.scripts: dict[str, TrackScript] = {}
        self.garp: dict[str, GarpSocket] = {}
        self.run_as = self._run_as(cfg)
        self.notify = NotifyQueue(
            self.run_as, cfg.global_.notify_timeout, security=cfg.global_.enable_script_security
        )
        self.monitor: socket.socket | None = None
        self.control: asyncio.AbstractServer | None = None
        self.control_path: str | None = None
        self.stopping: asyncio.Event = asyncio.Event()
        self.started = time.time()
        self.reloads = 0
        self.ready = False
        # systemd Type=notify: imported only under systemd (idle RSS); NOTIFY_SOCKET is taken out of the
        # environment so that notify/track scripts do not inherit it
        self.sd: Notifier | None = None
        if os.environ.get("NOTIFY_SOCKET"):
            from rmqfd.sdnotify import from_environment

            self.sd = from_environment()

    # ------------------------------------------------------------------------------------------- lifecycle

    @staticmethod
    def _run_as(cfg: Config) -> RunAs:
        try:
            ra = resolve_user(cfg.global_.script_user)
        except KeyError:
            log.error(
                "global.script_user %s does not exist; scripts run as the daemon user",
                cfg.global_.script_user,
            )
            ra = resolve_user(None)
        if ra.uid == 0 and (cfg.scripts or any(_notify_argvs(i) for i in cfg.instances)):
            log.warning("scripts will run as root: set global.script_user")
        return ra

    async def start(self) -> None:
        # Signals first: a SIGTERM during start-up must still end in an orderly shutdown.
        self.loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        self.loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self.monitor = open_monitor()
        self.loop.add_reader(self.monitor.fileno(), self._on_netlink)
        self.links = self.nl.links()
        self.notify.start()
        self._start_scripts(self.cfg)
        for c in self.cfg.instances:
            self._start_instance(c)
        await self._start_control()
        self.ready = True
        log.info(
            "vrrpd started (%s loop), %d instance(s), control socket %s",
            self.loop_kind,
            len(self.instances),
            self.control_path,
        )
        if self.sd is not None:
            self.sd.ready(self.sd_status())
            if self.sd.watchdog_usec:
                self.sd.periodic(self.loop)

    async def serve(self) -> int:
        await self.start()
        await self.stopping.wait()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        t0 = self.loop.time()
        log.info("shutting down")
        if self.sd is not None:
            self.sd.stopping("stopping")
        for inst in list(self.instances.values()):
            self._stop_instance(inst)
        for s in self.scripts.values():
            s.stop()
        await self.notify.drain(max(0.05, SHUTDOWN_BUDGET - (self.loop.time() - t0)))
        self.notify.stop()
        await self._stop_control()
        if self.monitor is not None:
            self.loop.remove_reader(self.monitor.fileno())
            self.monitor.close()
        for g in self.garp.values():
            g.close()
        self.nl.close()
        log.info("stopped")
        if self.sd is not None:
            self.sd.close()

    # ------------------------------------------------------------------------------------------ instances

    def _iface(self, name: str) -> Iface:
        ifc = self.ifaces.get(name)
        if ifc is None:
            ifc = self.ifaces[name] = Iface(name)
            self._attach(ifc)
        return ifc

    def _link_by_name(self, name: str) -> Link | None:
        for link in self.links.values():
            if link.name == name:
                return link
        return None

    def _attach(self, ifc: Iface) -> None:
        """(Re)bind an interface to its current link and open its socket when possible."""
        link = self._link_by_name(ifc.name)
        if link is None:
            if ifc.vrrp is not None:
                self._close_socket(ifc)
            ifc.link = None
            return
        if ifc.link is not None and ifc.link.index != link.index and ifc.vrrp is not None:
            self._close_socket(ifc)  # the interface was re-created
        ifc.link = link
        if ifc.vrrp is None:
            multicast = any(not i.cfg.unicast for i in ifc.instances.values()) or not ifc.instances
            try:
                ifc.vrrp = VrrpSocket(ifc.name, link.index, multicast=multicast)
            except OSError as e:
                if e.errno in (errno.EPERM, errno.EACCES):
                    raise OSError(
                        e.errno,
                        f"cannot open a raw socket on {ifc.name} (needs root or CAP_NET_RAW + CAP_NET_ADMIN)",
                    ) from e
                log.error("%s: cannot open the VRRP socket: %s", ifc.name, e)
                return
            self.loop.add_reader(ifc.vrrp.fileno(), self._on_readable, ifc)
        if ifc.vrrp.multicast and not ifc.vrrp.joined:
            try:
                ifc.vrrp.join()
            except OSError as e:
                log.warning("%s: cannot join %s yet: %s", ifc.name, wire.VRRP_GROUP, e)

    def _close_socket(self, ifc: Iface) -> None:
        if ifc.vrrp is not None:
            self.loop.remove_reader(ifc.vrrp.fileno())
            ifc.vrrp.close()
            ifc.vrrp = None

    def _vip_ips(self) -> set[IPv4Address]:
        return {v.ip for i in self.instances.values() for v in i.cfg.virtual_ipaddress} | {
            v.ip for c in self.cfg.instances for v in c.virtual_ipaddress
        }

    def _source(self, c: InstanceConfig, ifc: Iface) -> IPv4Address | None:
        if c.src_ip is not None:
            return c.src_ip
        if ifc.link is None:
            return None
        vips = self._vip_ips()
        try:
            addrs = self.nl.addresses(ifc.link.index)
        except OSError as e:
            log.error("%s: cannot read addresses: %s", ifc.name, e)
            return None
        for a in addrs:
            if not a.secondary and a.address.ip not in vips:
                return a.address.ip
        for a in addrs:
            if a.address.ip not in vips:
                return a.address.ip
        return None

    def _static_faults(self, c: InstanceConfig, ifc: Iface, src: IPv4Address | None) -> set[str]:
        faults: set[str] = set()
        if not ifc.up:
            faults.add(ifc.fault)
        if ifc.vrrp is None and ifc.link is not None:
            faults.add(f"no VRRP socket on {ifc.name}")
        if src is None:
            faults.add(f"no IPv4 address on {ifc.name}")
        if c.unicast and not c.unicast_peer:
            faults.add("no unicast peer")  # keepalived unicast_fault_no_peer: never fall back to multicast
        for t in c.track_interface:
            if t.weight == 0:
                link = self._link_by_name(t.name)
                if link is None or not link.up:
                    faults.add(f"track_interface {t.name} down")
        for ref in c.track_script:
            s = self.scripts.get(ref.name)
            w = ref.weight if ref.weight is not None else (s.cfg.weight if s else 0)
            if w == 0 and s is not None and not s.ok:
                faults.add(f"track_script {ref.name} failed")
        return faults

    def _effective(self, c: InstanceConfig) -> int:
        inst = self.instances.get(c.key)
        base = c.priority if inst is None or inst.override is None else inst.override
        if inst is not None and inst.vr.maint and inst.override is not None:
            return base  # maintenance pins the priority: no weight lifts it back (vrrpd.admin)
        weights: list[tuple[int, bool]] = []
        for ref in c.track_script:
            s = self.scripts.get(ref.name)
            if s is None:
                continue
            w = ref.weight if ref.weight is not None else s.cfg.weight
            if w:
                weights.append((w, s.ok))
        for t in c.track_interface:
            if t.weight:
                link = self._link_by_name(t.name)
                weights.append((t.weight, link is not None and link.up))
        eff = track.effective_priority(base, weights)
        return base if eff is None else eff

    def _start_instance(self, c: InstanceConfig) -> None:
        ifc = self._iface(c.interface)
        src = self._source(c, ifc)
        params = make_params(c, src or IPv4Address("0.0.0.0"))
        inst = Instance(c, fsm.VirtualRouter(params, c.name), ifc)
        ifc.instances[c.virtual_router_id] = inst
        self.instances[c.key] = inst
        if ifc.vrrp is not None and c.unicast is False and not ifc.vrrp.multicast:
            ifc.vrrp.multicast = True
            with contextlib.suppress(OSError):
                ifc.vrrp.join()
        # A crashed predecessor (SIGKILL) leaves its VIPs configured; a Backup must not hold them.
        for v in c.virtual_ipaddress:
            idx = self._dev_index(inst, v)
            try:
                if idx is not None and self.nl.del_address(idx, v.address):
                    log.warning("%s: removed stale VIP %s from %s", c.name, v.address, v.dev or c.interface)
            except OSError as e:
                log.error("%s: cannot remove stale VIP %s: %s", c.name, v.address, e)
        now = self.loop.time()
        for f in sorted(self._static_faults(c, ifc, src)):
            self._feed(inst, fsm.FaultRaised(f), now)
        eff = self._effective(c)
        if eff != inst.vr.effective_priority:
            self._feed(inst, fsm.PriorityChanged(eff), now)
        log.info(
            "%s: starting on %s, VRID %d, priority %d (effective %d), src %s, %s",
            c.name,
            c.interface,
            c.virtual_router_id,
            c.priority,
            eff,
            src,
            "unicast" if c.unicast else "multicast",
        )
        self._feed(inst, fsm.Startup(), now)

    def _stop_instance(self, inst: Instance) -> None:
        self._feed(inst, fsm.Shutdown(), self.loop.time())
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        # A Backup/Fault instance holds no VIP, but a crash-restart may have left some: clean up ours.
        if inst.installed:
            self._remove_vips(inst, list(inst.installed))
        ifc = inst.iface
        ifc.instances.pop(inst.cfg.virtual_router_id, None)
        self.instances.pop(inst.cfg.key, None)
        if not ifc.instances:
            self._close_socket(ifc)
            self.ifaces.pop(ifc.name, None)

    def _refresh_faults(self, inst: Instance) -> None:
        """Reconcile the FSM's fault set and effective priority with the current host state."""
        c = inst.cfg
        now = self.loop.time()
        want = self._static_faults(c, inst.iface, self._source(c, inst.iface))
        for f in sorted(inst.vr.faults - want):
            self._feed(inst, fsm.FaultCleared(f), now)
        eff = self._effective(c)
        if eff != inst.vr.effective_priority:
            self._feed(inst, fsm.PriorityChanged(eff), now)
        for f in sorted(want - inst.vr.faults):
            self._feed(inst, fsm.FaultRaised(f), now)

    # --------------------------------------------------------------------------------------- event feeding

    def _feed(self, inst: Instance, event: fsm.Event, now: float) -> None:
        handler = _HANDLER
        if handler is not None:
            handler.hold()  # log lines are written after the batch's packets are out
        try:
            try:
                actions = inst.vr.handle(event, now)
            except ValueError as e:  # local misuse: log, never crash the daemon
                log.error("%s: %s rejected: %s", inst.name, type(event).__name__, e)
                return
            for a in actions:
                try:
                    self._apply(inst, a, now)
                except Exception:
                    log.exception("%s: failed to apply %s", inst.name, a)
            self._rearm(inst)
        finally:
            if handler is not None:
                handler.release()

    def _rearm(self, inst: Instance) -> None:
        d = inst.vr.next_deadline()
        if d == inst.timer_at and (inst.timer is not None or d is None):
            return
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        inst.timer_at = d
        if d is not None:
            inst.timer = self.loop.call_at(d, self._on_timer, inst)

    def _on_timer(self, inst: Instance) -> None:
        at = inst.timer_at
        inst.timer = None
        inst.timer_at = None
        if self.instances.get(inst.cfg.key) is not inst:
            return
        now = self.loop.time()
        if at is not None and at > now:
            now = at
        self._feed(inst, fsm.TimerDue(), now)

    def _on_readable(self, ifc: Iface) -> None:
        if ifc.vrrp is None:
            return
        now = self.loop.time()
        try:
            batch = ifc.vrrp.recv_all()
        except OSError as e:
            log.warning("%s: receive error: %s", ifc.name, e)
            return
        for data in batch:
            try:
                pkt = wire.decode_ip(data)
            except wire.DecodeError as e:
                inst = ifc.instances.get(e.vrid) if e.vrid is not None else None
                targets = [inst] if inst is not None else list(ifc.instances.values())
                for t in targets:
                    self._feed(t, fsm.Malformed(e.reason, e.detail or str(e)), now)
                continue
            inst = ifc.instances.get(pkt.advert.vrid)
            if inst is not None:
                self._feed(inst, fsm.AdvertReceived(pkt), now)
            else:
                # Unknown VRID on this link (keepalived log_unknown_vrids): counted by every instance here.
                for t in list(ifc.instances.values()):
                    self._feed(t, fsm.AdvertReceived(pkt), now)

    # -------------------------------------------------------------------------------------------- actions

    def _apply(self, inst: Instance, a: fsm.Action, now: float) -> None:
        if isinstance(a, fsm.SendAdvert):
            self._send_advert(inst, a.priority)
        elif isinstance(a, fsm.AddVips):
            self._add_vips(inst, list(inst.cfg.virtual_ipaddress))
        elif isinstance(a, fsm.RemoveVips):
            self._remove_vips(inst, list(inst.installed))
        elif isinstance(a, fsm.UpdateVips):
            self._remove_vips(inst, [ip for ip in a.remove if ip in inst.installed])
            self._add_vips(inst, [v for v in inst.cfg.virtual_ipaddress if v.ip in a.add])
        elif isinstance(a, fsm.SendGarp):
            self._send_garp(inst, a.count)
        elif isinstance(a, fsm.StateChanged):
            self._state_changed(inst, a)
        elif isinstance(a, fsm.Discard):
            self._log_discard(inst, a, now)
        elif isinstance(a, fsm.Log):
            log.log(a.level, "%s: %s", inst.name, a.message)

    def _send_advert(self, inst: Instance, priority: int) -> None:
        c, p = inst.cfg, inst.vr.params
        sock = inst.iface.vrrp
        if sock is None:
            return
        adv = wire.Advert(
            vrid=p.vrid,
            priority=priority,
            advert_int=p.advert_int,
            addresses=p.vips,
            auth_type=p.auth_type,
            auth_data=p.auth_data,
        )
        dsts: Iterable[IPv4Address] = c.unicast_peer if c.unicast_peer is not None else (wire.VRRP_GROUP,)
        for dst in dsts:
            try:
                sock.send(p.src_ip, dst, adv)
            except OSError as e:
                inst.send_errors += 1
                if inst.send_errors == 1 or inst.send_errors % 100 == 0:
                    log.warning(
                        "%s: cannot send advert to %s: %s (%d errors)", inst.name, dst, e, inst.send_errors
                    )

    def _dev_index(self, inst: Instance, v: Vip) -> int | None:
        link = self._link_by_name(v.dev or inst.cfg.interface)
        return link.index if link is not None else None

    def _add_vips(self, inst: Instance, vips: list[Vip]) -> None:
        for v in vips:
            idx = self._dev_index(inst, v)
            if idx is None:
                log.error(
                    "%s: cannot add %s: interface %s not found",
                    inst.name,
                    v.address,
                    v.dev or inst.cfg.interface,
                )
                continue
            try:
                self.nl.add_address(idx, v.address, v.label)
            except OSError as e:
                log.error("%s: cannot add %s: %s", inst.name, v.address, e)
                continue
            inst.installed[v.ip] = v
        if vips:
            log.info("%s: VIPs added: %s", inst.name, " ".join(str(v.address) for v in vips))

    def _remove_vips(self, inst: Instance, ips: list[IPv4Address]) -> None:
        done = []
        for ip in ips:
            v = inst.installed.pop(ip, None)
            if v is None:
                continue
            idx = self._dev_index(inst, v)
            if idx is None:
                continue
            try:
                self.nl.del_address(idx, v.address)
            except (OSError, NetlinkError) as e:
                log.error("%s: cannot remove %s: %s", inst.name, v.address, e)
                continue
            done.append(str(v.address))
        if done:
            log.info("%s: VIPs removed: %s", inst.name, " ".join(done))

    def _send_garp(self, inst: Instance, count: int) -> None:
        by_dev: dict[str, list[IPv4Address]] = {}
        for v in inst.cfg.virtual_ipaddress:
            by_dev.setdefault(v.dev or inst.cfg.interface, []).append(v.ip)
        for dev, ips in by_dev.items():
            link = self._link_by_name(dev)
            if link is None or len(link.mac) != 6:
                continue
            g = self.garp.get(dev)
            try:
                if g is None:
                    g = self.garp[dev] = GarpSocket(dev)
                g.send(link.mac, ips, count)
            except OSError as e:
                log.warning("%s: cannot send gratuitous ARP on %s: %s", inst.name, dev, e)
                if g is not None:
                    g.close()
                self.garp.pop(dev, None)

    _STATE_NOTIFY = {
        fsm.State.MASTER: ("notify_master", "MASTER"),
        fsm.State.BACKUP: ("notify_backup", "BACKUP"),
        fsm.State.FAULT: ("notify_fault", "FAULT"),
        fsm.State.INIT: ("notify_stop", "STOP"),
    }

    def _state_changed(self, inst: Instance, a: fsm.StateChanged) -> None:
        log.info("%s: %s -> %s (priority %d)", inst.name, a.old.value, a.new.value, a.priority)
        if self.sd is not None and not self.stopping.is_set():
            self.sd.status(self.sd_status())
        key, word = self._STATE_NOTIFY[a.new]
        specific = getattr(inst.cfg, key)
        if specific:
            self.notify.put(specific, f"{inst.name} {key}")
        if inst.cfg.notify:
            self.notify.put(
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

    # ------------------------------------------------------------------------------------ link monitoring

    def _on_netlink(self) -> None:
        if self.monitor is None:
            return
        try:
            events, overflow = read_events(self.monitor)
        except OSError as e:
            log.error("netlink monitor: %s", e)
            return
        if overflow:
            log.warning("netlink monitor overflowed, re-reading all links")
            self.links = self.nl.links()
            self._resync(None)
            return
        changed = False
        addr_change = False
        for ev in events:
            if ev.link is None:
                addr_change = True
                continue
            changed = True
            if ev.deleted:
                self.links.pop(ev.index, None)
            else:
                self.links[ev.index] = ev.link
        if changed or addr_change:
            try:
                self._resync(events)
            except OSError as e:
                log.error("netlink resync failed: %s", e)

    def _resync(self, events: list[LinkEvent] | None) -> None:
        for ifc in list(self.ifaces.values()):
            before_up = ifc.up
            self._attach(ifc)
            if ifc.up != before_up:
                log.info("%s: link %s", ifc.name, "up" if ifc.up else "down")
        for inst in list(self.instances.values()):
            src = self._source(inst.cfg, inst.iface)
            if src is not None and src != inst.vr.params.src_ip:
                log.info("%s: source address now %s", inst.name, src)
                self._feed(inst, fsm.ParamsChanged(make_params(inst.cfg, src)), self.loop.time())
            self._refresh_faults(inst)

    # ------------------------------------------------------------------------------------- track scripts

    def _start_scripts(self, cfg: Config) -> None:
        tracked = {r.name for i in cfg.instances for r in i.track_script}
        for s in cfg.scripts:
            if s.name not in tracked:
                continue  # keepalived: scripts only run when an instance tracks them
            runner = TrackScript(
                s,
                self._script_user(s.user),
                self._script_changed,
                security=cfg.global_.enable_script_security,
            )
            self.scripts[s.name] = runner
            runner.start()

    def _script_user(self, spec: str | None) -> RunAs:
        if spec is None:
            return self.run_as
        try:
            return resolve_user(spec)
        except KeyError:
            log.error("user %s does not exist; script runs as %s", spec, self.run_as.name)
            return self.run_as

    def _script_changed(self, name: str, ok: bool) -> None:
        for inst in list(self.instances.values()):
            if any(r.name == name for r in inst.cfg.track_script):
                self._refresh_faults(inst)

    # ------------------------------------------------------------------------------------------- reload

    def sd_status(self) -> str:
        """systemd STATUS= text: "VI_1 MASTER, VI_2 BACKUP"."""
        return ", ".join(f"{i.name} {i.vr.state.value}" for i in self.instances.values()) or "no instances"

    def _on_sighup(self) -> None:
        """SIGHUP: the reload framed by RELOADING=1 / READY=1 for systemd (READY also when it failed)."""
        sd = self.sd if self.ready and not self.stopping.is_set() else None
        if sd is not None:
            sd.reloading()
        try:
            self.reload()
        finally:
            if sd is not None:
                sd.ready(self.sd_status())

    def reload(self) -> None:
        if not self.ready or self.stopping.is_set():
            log.warning("SIGHUP ignored: %s", "stopping" if self.stopping.is_set() else "still starting")
            return
        path = self.config_path
        if path is None:
            log.warning("SIGHUP: no configuration file to reload")
            return
        try:
            new = load(path)
        except ConfigError as e:
            for line in e.lines():
                log.error("reload failed, keeping the running configuration: %s", line)
            return
        finally:
            from vrrpd.config import release_parser

            release_parser()  # the TOML parser is not kept between reloads (idle RSS)
        self.reloads += 1
        log.info("reloading %s", path)
        old = self.cfg
        self.cfg = new
        self.run_as = self._run_as(new)
        self.notify.run_as = self.run_as
        self.notify.timeout = new.global_.notify_timeout
        self.notify.security = new.global_.enable_script_security
        if new.control_socket() != old.control_socket():
            log.warning("global.control_socket changed: takes effect at restart")
        if new.global_.metrics_listen != old.global_.metrics_listen:
            log.warning("global.metrics_listen changed: takes effect at restart")
        # Track scripts: keep runners whose definition is unchanged (their rise/fall state survives).
        tracked = {r.name for i in new.instances for r in i.track_script}
        wanted = {s.name: s for s in new.scripts if s.name in tracked}
        for name, runner in list(self.scripts.items()):
            if wanted.get(name) != runner.cfg or runner.run_as != self._script_user(
                wanted[name].user if name in wanted else None
            ):
                runner.stop()
                del self.scripts[name]
        for name, s in wanted.items():
            if name not in self.scripts:
                r = TrackScript(
                    s,
                    self._script_user(s.user),
                    self._script_changed,
                    security=new.global_.enable_script_security,
                )
                self.scripts[name] = r
                r.start()
        new_by_key = {c.key: c for c in new.instances}
        for key, inst in list(self.instances.items()):
            if key not in new_by_key:
                log.info("%s: removed from the configuration, stopping", inst.name)
                self._stop_instance(inst)
        # Kept instances first (a VIP moving to a new instance is released by its old owner first), then new.
        fresh = [c for key, c in new_by_key.items() if key not in self.instances]
        for key, c in new_by_key.items():
            found = self.instances.get(key)
            if found is None:
                continue
            inst = found
            old_c = inst.cfg
            inst.cfg = c
            if c.unicast != old_c.unicast and inst.iface.vrrp is not None and not c.unicast:
                inst.iface.vrrp.multicast = True
                with contextlib.suppress(OSError):
                    inst.iface.vrrp.join()
            src = self._source(c, inst.iface)
            params = make_params(c, src or inst.vr.params.src_ip)
            if c != old_c:
                log.info("%s: configuration changed, applying without a state change", c.name)
            if old_c.virtual_ipaddress != c.virtual_ipaddress and inst.vr.state is fsm.State.MASTER:
                # dev/label changes of an address that stays: re-install it.
                changed = [
                    v.ip for v in c.virtual_ipaddress if v.ip in inst.installed and inst.installed[v.ip] != v
                ]
                if changed:
                    self._remove_vips(inst, changed)
                    self._add_vips(inst, [v for v in c.virtual_ipaddress if v.ip in changed])
            if inst.override is not None and c.priority == fsm.OWNER_PRIORITY:
                log.warning("%s: now the address owner (priority 255): vrrpd ctl override cleared", c.name)
                inst.override = None
            # with the effective priority known (override, weights): no transient priority in between
            self._feed(inst, fsm.ParamsChanged(params, self._effective(c)), self.loop.time())
            self._refresh_faults(inst)
        for c in fresh:
            self._start_instance(c)

    # ------------------------------------------------------------------------------------ control socket

    metrics_server: asyncio.AbstractServer | None = None  # global.metrics_listen (vrrpd.metrics)

    async def _start_control(self) -> None:
        from vrrpd.control import serve_control

        path = self.cfg.control_socket()
        try:
            self.control = await serve_control(path, self.status, self.ctl)
            self.control_path = path
        except OSError as e:
            log.error("cannot open control socket %s: %s (status unavailable)", path, e)
        listen = self.cfg.global_.metrics_listen
        if listen:
            from vrrpd.config import listen_address
            from vrrpd.metrics import serve_metrics

            try:
                self.metrics_server = await serve_metrics(*listen_address(listen), self.status)
                log.info("Prometheus metrics on http://%s/metrics", listen)
            except OSError as e:
                log.error("cannot listen on %s for metrics: %s (metrics unavailable)", listen, e)

    def ctl(self, words: list[str]) -> dict[str, Any]:
        """A ``vrrpd ctl`` command from the control socket (vrrpd.admin, imported on first use)."""
        from vrrpd.admin import command

        return command(self, words)

    async def _stop_control(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        if self.control is not None:
            self.control.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.control.wait_closed(), 0.1)
            self.control = None
        if self.control_path:
            with contextlib.suppress(OSError):
                os.unlink(self.control_path)

    def status(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for inst in self.instances.values():
            snap = inst.vr.snapshot()
            c = inst.cfg
            snap["interface"] = c.interface
            snap["unicast_peers"] = [str(p) for p in (c.unicast_peer or ())]
            snap["vips_installed"] = sorted(str(v.address) for v in inst.installed.values())
            tracks = []
            for ref in c.track_script:
                s = self.scripts.get(ref.name)
                st: dict[str, object] = (
                    s.status() if s is not None else {"name": ref.name, "state": "UNKNOWN"}
                )
                if ref.weight is not None:
                    st["weight"] = ref.weight
                tracks.append(st)
            snap["track_scripts"] = tracks
            snap["track_interfaces"] = [
                {
                    "name": t.name,
                    "weight": t.weight,
                    "state": "UP" if (lk := self._link_by_name(t.name)) is not None and lk.up else "DOWN",
                }
                for t in c.track_interface
            ]
            snap["send_errors"] = inst.send_errors
            snap["override_priority"] = inst.override
            out.append(snap)
        return {
            "router_id": self.cfg.global_.router_id,
            "pid": os.getpid(),
            "config": self.config_path,
            "loop": self.loop_kind,
            "uptime": round(time.time() - self.started, 3),
            "start_time": self.started,
            "reloads": self.reloads,
            "notify_executed": self.notify.executed,
            "instances": out,
        }


async def _main(cfg: Config, config_path: str | None, loop_kind: str) -> int:
    try:
        d = Daemon(cfg, config_path, loop_kind)
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1
    try:
        return await d.serve()
    except OSError as e:
        log.error("fatal: %s", e)
        return 1


def run(
    cfg: Config, config_path: str | None = None, loop_kind: str = "uvloop", log_level: str = "info"
) -> int:
    setup_logging(log_level)
    factory: Any = None
    if loop_kind == "uvloop":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            log.warning("uvloop not installed, using asyncio")
            loop_kind = "asyncio"
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_main(cfg, config_path, loop_kind))
