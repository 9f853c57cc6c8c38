"""The asyncio driver (aioquic's ``asyncio/protocol.py`` shape): it reads sockets, feeds the core
(:class:`vrrpd.host.Host`, which acts through :class:`vrrpd.platform.Linux`) and re-arms one timer.

Every input (a batch of datagrams, the netlink socket, the timer, a track script flip, a signal, a ``vrrpd
ctl`` command) is one call into the core with ``now = loop.time()``; then the readers follow the sockets the
core opened or closed and one ``loop.call_at(host.next_deadline())`` is re-armed. The timer callback uses
``max(deadline, loop.time())`` (an early wake-up cannot run the machines backwards) and drains every VRRP
socket before the core fires timers: after SIGSTOP/SIGCONT both uvloop and asyncio run an overdue timer
before they poll the sockets, and a frozen Backup must see its master's queued adverts first.

The clock is ``time.monotonic()`` (CLOCK_MONOTONIC, the epoch of both loops' ``loop.time()``), not
``loop.time()``: uvloop's is libuv's cached loop time in whole milliseconds. A wait longer than
:data:`SPLIT_WAIT` is armed in two stages, an early wake-up first (:func:`early_wake`), then the exact
deadline: the kernel lets ``epoll_wait`` (both loops sleep in it) overshoot its timeout by 0.1 % of it (0.5 %
for a niced process; ``select_estimate_accuracy``), 3.6 ms on a 3.6 s Master_Down_Interval, which was most
of issue 11's crash takeover error. The last, short stage is an ``ITIMER_REAL`` interval timer (an hrtimer
without slack; its SIGALRM wakes the loop through the signal wake-up fd), not a loop timer: libuv's timers
have a resolution of 1 ms, and uvloop rounds ``call_later`` delays to whole milliseconds from a cached,
floored loop time, which put the first advert anywhere from 1 ms early to 1.5 ms late.

Track hook (vrrpd.track / vrrpd.scripts side): :meth:`Daemon.track_result` feeds a result (``None``: none
yet); an instance stays in INIT until every name in ``Host.tracked_names`` has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vrrpd.config import Config, ConfigError, InstanceConfig, ProcessConfig, load
from vrrpd.host import PROCESS, Host, make_params
from vrrpd.platform import Linux
from vrrpd.procwatch import ProcessTracker
from vrrpd.scripts import NotifyQueue, RunAs, TrackScript, insecure, resolve_argv, resolve_user
from vrrpd.sockets import VrrpSocket

if TYPE_CHECKING:
    from vrrpd.sockets6 import Rx6, Vrrp6Socket

if TYPE_CHECKING:
    from rmqfd.sdnotify import Notifier

__all__ = ["Daemon", "check_runtime", "make_params", "run", "setup_logging"]

log = logging.getLogger("vrrpd")

READ_LIMIT = 4096  # datagrams read from one VRRP socket in one go (a 256 KiB buffer holds about 340)
STARTUP_DUMP_TIMEOUT = 3.0  # seconds to wait for the first view of links and addresses
SHUTDOWN_BUDGET = 0.8  # seconds the notify queue may use at SIGTERM (the whole exit stays under one second)
SPLIT_WAIT = 0.02  # seconds: a longer wait for the one timer is armed in two stages (see early_wake)
EARLY_MIN = 0.004  # seconds: the early stage wakes at least this long before the deadline
EARLY_FRACTION = 0.01  # ... and at least this fraction of the wait (epoll_wait's slack: 0.1 %, niced 0.5 %)
ALARM_MIN = 50e-6  # seconds: a shorter rest of a wait is run at once (by the loop), not by ITIMER_REAL
ALARM_BACKSTOP = 0.01  # seconds after the deadline: the loop's own timer, should a SIGALRM be lost


def early_wake(now: float, at: float) -> float | None:
    """When to wake before a deadline ``at`` to re-arm for it exactly, or None: arm ``at`` directly.

    ``epoll_wait(timeout)`` may return up to 0.1 % of ``timeout`` late (0.5 % when niced; timer slack, at
    least 50 us), so a long wait wakes early by more than that and the short last wait is precise."""
    wait = at - now
    if wait <= SPLIT_WAIT:
        return None
    return at - max(EARLY_MIN, wait * EARLY_FRACTION)


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


class Daemon:
    def __init__(self, cfg: Config, config_path: str | None = None, loop_kind: str = "asyncio") -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.loop_kind = loop_kind
        self.loop = asyncio.get_running_loop()
        self.run_as = self._run_as(cfg)
        self.notify = NotifyQueue(
            self.run_as, cfg.global_.notify_timeout, security=cfg.global_.enable_script_security
        )
        self.platform = Linux(self.notify)
        self.host = Host(cfg, self.platform)
        self.scripts: dict[str, TrackScript] = {}
        self.procs = ProcessTracker(self._tracked_processes(cfg), self._process_changed)
        self.control: asyncio.AbstractServer | None = None
        self.control_path: str | None = None
        self.stopping: asyncio.Event = asyncio.Event()
        self.started = time.time()
        self.reloads = 0
        self.ready = False
        self._readers: dict[tuple[str, int], VrrpSocket | Vrrp6Socket] = {}  # (ifname, family)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._alarm = False  # SIGALRM handled by the loop: the last stage of a wait may use ITIMER_REAL
        self._alarm_armed = False
        self._transitions = 0
        self._synced: asyncio.Future[None] | None = None
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
        self.loop.add_signal_handler(signal.SIGALRM, self._on_alarm)
        self._alarm = True
        self.loop.add_reader(self.platform.nl.fileno(), self._on_netlink)
        self.notify.start()
        # The first view of links and addresses, read on the loop like every later netlink answer.
        self._synced = self.loop.create_future()
        self.step(self.host.begin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._synced), STARTUP_DUMP_TIMEOUT)
        if not self.host.synced:
            log.error(
                "no answer from netlink within %gs: starting without links (retrying)", STARTUP_DUMP_TIMEOUT
            )
        for w in self.cfg.warning_lines():
            log.warning("%s: %s", self.cfg.source, w)
        self._start_scripts(self.cfg)
        self.procs.start()
        self.step(self.host.start)
        await self._start_control()
        self.ready = True
        log.info(
            "vrrpd started (%s loop), %d instance(s), control socket %s",
            self.loop_kind,
            len(self.host.instances),
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
        self.notify.begin_close()  # what the stop queues (notify_stop, notify STOP) always runs
        self.step(self.host.stop)
        self._cancel_timer()
        self._alarm = False
        self.loop.remove_signal_handler(signal.SIGALRM)
        for s in self.scripts.values():
            s.stop()
        self.procs.stop()
        await self.notify.close(max(0.05, SHUTDOWN_BUDGET - (self.loop.time() - t0)))
        await self._stop_control()
        self.loop.remove_reader(self.platform.nl.fileno())
        for sock in self._readers.values():
            self.loop.remove_reader(sock.fileno())
        self._readers.clear()
        self.platform.close()
        log.info("stopped")
        if self.sd is not None:
            self.sd.close()

    # ----------------------------------------------------------------------------------------- the driver

    def step(self, fn: Callable[[float], object]) -> None:
        """One input into the core at ``now``, then readers and the one timer follow the core's state. Log
        lines are written after the step (the packets of a transition go out in the same millisecond)."""
        handler = _HANDLER
        if handler is not None:
            handler.hold()
        try:
            fn(time.monotonic())
            self._follow()
        finally:
            if handler is not None:
                handler.release()

    def _follow(self) -> None:
        socks: dict[tuple[str, int], VrrpSocket | Vrrp6Socket] = {
            (n, 4): s for n, s in self.platform.vrrp.items()
        }
        socks.update(((n, 6), s6) for n, s6 in self.platform.vrrp6.items())
        for key, sock in list(self._readers.items()):
            if socks.get(key) is not sock:
                with contextlib.suppress(ValueError, OSError):
                    self.loop.remove_reader(sock.fileno())
                del self._readers[key]
        for key, sock in socks.items():
            if key not in self._readers:
                self._readers[key] = sock
                if key[1] == 6:
                    self.loop.add_reader(sock.fileno(), self._on_readable6, key[0])
                else:
                    self.loop.add_reader(sock.fileno(), self._on_readable, key[0])
        if self.host.transitions != self._transitions:
            self._transitions = self.host.transitions
            if self.sd is not None and not self.stopping.is_set():
                self.sd.status(self.sd_status())
        if self._synced is not None and self.host.synced and not self._synced.done():
            self._synced.set_result(None)
        # re-arm the timer
        at = self.host.next_deadline()
        if self._timer_at != at:
            self._cancel_timer()
        self._timer_at = at
        if self._timer is None and not self._alarm_armed and at is not None:
            self._arm(at)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._alarm_armed:
            self._alarm_armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _arm(self, at: float) -> None:
        """The one timer for the deadline ``at`` (monotonic): an early stage on the loop for a long wait,
        then the rest on ITIMER_REAL (a loop timer where SIGALRM is not ours to use)."""
        now = time.monotonic()
        early = early_wake(now, at)
        if early is not None:
            self._timer = self.loop.call_later(early - now, self._on_early)
        elif self._alarm and at - now > ALARM_MIN:
            self._alarm_armed = True
            signal.setitimer(signal.ITIMER_REAL, at - now)
            # should the signal ever be lost, the loop fires the deadline a little late rather than never
            self._timer = self.loop.call_later(at - now + ALARM_BACKSTOP, self._on_backstop)
        else:
            self._timer = self.loop.call_later(max(0.0, at - now), self._on_timer)

    def _on_early(self) -> None:
        """The early stage of a long wait: arm the rest (short, so the kernel's slack on it is tiny)."""
        self._timer = None
        if self._timer_at is not None:
            self._arm(self._timer_at)

    def _on_alarm(self) -> None:
        """SIGALRM: the last stage of the wait is over, unless it is a stale one (the interval timer was
        re-armed for a later deadline after this signal had been raised: that one is still pending)."""
        at = self._timer_at
        if not self._alarm_armed or at is None or time.monotonic() < at - ALARM_MIN:
            return
        self._alarm_armed = False
        if self._timer is not None:
            self._timer.cancel()  # the backstop
        self._on_timer()

    def _on_backstop(self) -> None:
        self._timer = None
        if self._alarm_armed:
            self._alarm_armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        self._on_timer()

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = None
        self._timer_at = None

        def fire(now: float) -> None:
            if at is not None and at > now:
                now = at
            # drain first: the loop may run an overdue timer before it polls the sockets (SIGSTOP/SIGCONT)
            for name in list(self.platform.vrrp):
                batch = self._read(name)
                if batch:
                    self.host.receive(name, batch, now)
            for name in list(self.platform.vrrp6):
                batch6 = self._read6(name)
                if batch6:
                    self.host.receive6(name, batch6, now)
            self.host.timer(now)

        self.step(fire)

    def _read(self, ifname: str) -> list[bytes]:
        sock = self.platform.vrrp.get(ifname)
        if sock is None:
            return []
        out: list[bytes] = []
        try:
            while len(out) < READ_LIMIT:  # everything queued, not just a first slice of it
                got = sock.recv_all()
                out += got
                if len(got) < 256:
                    break
        except OSError as e:
            log.warning("%s: receive error: %s", ifname, e)
        return out

    def _read6(self, ifname: str) -> list[Rx6]:
        sock = self.platform.vrrp6.get(ifname)
        if sock is None:
            return []
        out: list[Rx6] = []
        try:
            while len(out) < READ_LIMIT:
                got = sock.recv_all()
                out += got
                if len(got) < 4096:
                    break
        except OSError as e:
            log.warning("%s: IPv6 receive error: %s", ifname, e)
        return out

    def _on_readable6(self, ifname: str) -> None:
        batch = self._read6(ifname)
        if batch:
            self.step(lambda now: self.host.receive6(ifname, batch, now))

    def _on_readable(self, ifname: str) -> None:
        batch = self._read(ifname)
        if batch:
            self.step(lambda now: self.host.receive(ifname, batch, now))

    def _on_netlink(self) -> None:
        try:
            msgs, overflow = self.platform.read_netlink()
        except OSError as e:
            log.error("netlink: %s", e)
            return
        if msgs or overflow:
            self.step(lambda now: self.host.netlink(msgs, overflow, now))

    def track_result(self, name: str, ok: bool | None) -> None:
        """The track-result feed: ``name`` is OK (True), failing (False) or has no result yet (None)."""
        self.step(lambda now: self.host.track(name, ok, now))

    # ------------------------------------------------------------------------------------- track scripts

    def _start_scripts(self, cfg: Config) -> None:
        tracked = {r.name for i in cfg.instances for r in i.track_script}
        for s in cfg.scripts:
            if s.name not in tracked:
                continue  # keepalived: scripts only run when an instance tracks them
            self._new_runner(s.name, cfg)

    def _new_runner(self, name: str, cfg: Config) -> None:
        s = cfg.script(name)
        runner = TrackScript(
            s,
            self._script_user(s.user),
            self._script_changed,
            security=cfg.global_.enable_script_security,
        )
        self.scripts[name] = runner
        self.track_result(name, runner.ok)
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
        self.track_result(name, ok)

    @staticmethod
    def _tracked_processes(cfg: Config) -> list[ProcessConfig]:
        tracked = {r.name for i in cfg.instances for r in i.track_process}
        return [p for p in cfg.processes if p.name in tracked]

    def _process_changed(self, name: str, up: bool) -> None:
        self.track_result(PROCESS + name, up)

    # ------------------------------------------------------------------------------------------- reload

    def sd_status(self) -> str:
        """systemd STATUS= text: "VI_1 MASTER, VI_2 BACKUP"."""
        insts = self.host.instances.values()
        return ", ".join(f"{i.name} {i.vr.state.value}" for i in insts) or "no instances"

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
        self.cfg = new
        self.run_as = self._run_as(new)
        self.notify.run_as = self.run_as
        self.notify.timeout = new.global_.notify_timeout
        self.notify.security = new.global_.enable_script_security
        for w in new.warning_lines():
            log.warning("%s: %s", new.source, w)
        # Track scripts keep their state across a reload (a changed command re-evaluates from INIT, holding
        # its verdict until its first result: a FAULT is never cleared by the reload itself).
        tracked = {r.name for i in new.instances for r in i.track_script}
        wanted = {s.name: s for s in new.scripts if s.name in tracked}
        for name, runner in list(self.scripts.items()):
            if name not in wanted:
                runner.stop()
                del self.scripts[name]
        self.step(lambda now: self.host.reload(new, now))
        for name, s in wanted.items():
            kept = self.scripts.get(name)
            if kept is None:
                self._new_runner(name, new)
            else:
                kept.reconfigure(s, self._script_user(s.user), security=new.global_.enable_script_security)
                self.track_result(name, kept.ok)
        self.procs.reconfigure(self._tracked_processes(new))

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

        out: dict[str, Any] = {}
        self.step(lambda now: out.update(command(self.host, words, now)))
        return out

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
        self._on_netlink()  # what the kernel reported up to now: the status shows the host as it is
        scripts = {name: s.status() for name, s in self.scripts.items()}
        procs = {name: self.procs.status(name) for name in self.procs.specs}
        return {
            "router_id": self.cfg.global_.router_id,
            "pid": os.getpid(),
            "config": self.config_path,
            "loop": self.loop_kind,
            "uptime": round(time.time() - self.started, 3),
            "start_time": self.started,
            "reloads": self.reloads,
            "notify_executed": self.notify.executed,
            "instances": self.host.status(scripts, procs),
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
