"""Process lifecycle: event loop choice, logging, signals (SIGHUP reload, SIGTERM graceful stop)."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as cfgmod
from .config import Config, ConfigError
from .server import LoadBalancer

if TYPE_CHECKING:
    from rmqfd.sdnotify import Notifier

    from .workers import WorkerPool

log = logging.getLogger("tcplb")


def new_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """A new event loop: ``uvloop`` (default) or stock ``asyncio``."""
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    if kind == "asyncio":
        return asyncio.new_event_loop()
    raise ValueError(f"unknown loop {kind!r} (uvloop or asyncio)")


class _Formatter(logging.Formatter):
    """``logging.Formatter`` whose default ``asctime`` (``2026-11-22 00:00:18,269``) is formatted once per
    second: with one traffic line per connection, strftime() per line was a visible part of the cost."""

    _sec = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        sec = int(record.created)  # localtime() of the float floors it the same way
        if sec != self._sec:
            self._text = time.strftime(self.default_time_format, self.converter(sec))
            self._sec = sec
        msec = self.default_msec_format
        return msec % (self._text, record.msecs) if msec else self._text


def setup_logging(cfg: Config, level: int = logging.INFO) -> None:
    """Send tcplb's log (events and traffic lines) where ``global.log`` says."""
    # our formats use the PID only: no thread/process names and no caller lookup (sys._getframe walk) for
    # every record (the logging HOWTO's "Optimization" switches); with a traffic line per connection the
    # logging module is a large part of the per-connection cost
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    root = logging.getLogger("tcplb")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    root.propagate = False
    g = cfg.global_
    handler: logging.Handler
    if g.log == "none":
        handler = logging.NullHandler()
    elif g.log == "syslog":
        addr: str | tuple[str, int] = g.syslog_address
        if not g.syslog_address.startswith("/"):
            host, _, port = g.syslog_address.rpartition(":")
            addr = (host, int(port))
        handler = logging.handlers.SysLogHandler(
            address=addr, facility=logging.handlers.SysLogHandler.LOG_LOCAL0
        )
        handler.setFormatter(_Formatter(f"{g.log_tag}[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stdout if g.log == "stdout" else sys.stderr)
        handler.setFormatter(_Formatter(f"%(asctime)s {g.log_tag}[%(process)d]: [%(levelname)s] %(message)s"))
    root.addHandler(handler)


class Daemon:
    """Runs a LoadBalancer (and its stats server) until SIGTERM/SIGINT; SIGHUP reloads ``path``."""

    def __init__(self, cfg: Config, path: str | Path | None = None, loop_kind: str = "uvloop") -> None:
        self.cfg = cfg
        self.path = Path(path) if path is not None else None
        self.loop_kind = loop_kind
        self.lb: LoadBalancer | None = None
        self.stats: object | None = None
        self._stop: asyncio.Event | None = None
        self.pool: WorkerPool | None = None  # global.workers > 1: the relay workers
        # systemd Type=notify (imported only under systemd); NOTIFY_SOCKET leaves the environment
        self.sd: Notifier | None = None
        if os.environ.get("NOTIFY_SOCKET"):
            from rmqfd.sdnotify import from_environment

            self.sd = from_environment()

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def _start_stats(self) -> None:
        if self.cfg.stats is None or self.lb is None:
            return
        from .stats import StatsServer

        st = StatsServer(self.lb, self.cfg.stats)
        await st.start()
        self.stats = st

    async def _stop_stats(self) -> None:
        from .stats import StatsServer

        st = self.stats
        self.stats = None
        if isinstance(st, StatsServer):
            await st.close()

    async def reload(self) -> bool:
        """Re-read the configuration file and apply it in place. False (and logged) when it is invalid."""
        if self.path is None or self.lb is None:
            return False
        try:
            cfg = cfgmod.load(self.path)
        except ConfigError as e:
            for line in e.lines():
                log.error("reload refused: %s: %s", self.path, line)
            return False
        except OSError as e:
            log.error("reload refused: %s: %s", self.path, e.strerror or e)
            return False
        pool = self.pool
        if pool is not None:
            if cfg.global_.workers != pool.nprocs:
                log.warning(
                    "reload: global.workers changed from %d to %d: takes effect at the next restart",
                    pool.nprocs,
                    cfg.global_.workers,
                )
            try:
                pool.assign_rows(cfg)
            except RuntimeError as e:
                log.error("reload refused: %s", e)
                return False
        try:
            self.lb.reload(cfg)
        except OSError as e:
            log.error("reload: cannot bind: %s (other changes applied)", e.strerror or e)
        if pool is not None:
            pool.reload(cfgmod.to_toml(cfg, secrets=True), str(self.path))
        old_stats = self.cfg.stats
        self.cfg = cfg
        for w in cfgmod.warnings(cfg):
            log.warning("%s", w)
        if cfg.stats != old_stats:
            await self._stop_stats()
            try:
                await self._start_stats()
            except OSError as e:
                log.error("stats: cannot bind %s:%d: %s", *cfg.stats.bind, e.strerror)  # type: ignore[union-attr]
        log.info("reloaded %s (%d listeners)", self.path, len(cfg.listeners))
        return True

    def sd_status(self) -> str:
        """systemd STATUS= text: "12 connections, 3/3 servers up" (while stopping: "stopping, ...")."""
        lb = self.lb
        if lb is None:
            return "starting"
        servers = [s for fe in lb.frontends.values() for s in fe.servers if not s.removed]
        up = sum(1 for s in servers if s.usable)
        text = f"{lb.total_actconn()} connections, {up}/{len(servers)} servers up"
        return f"stopping, {text}" if lb.stopping else text

    def _sd_tick(self) -> None:
        if self.sd is not None:
            self.sd.status(self.sd_status())

    async def _sd_reload(self) -> bool:
        """SIGHUP: :meth:`reload` framed by RELOADING=1 / READY=1 for systemd (READY also when it failed)."""
        sd = self.sd if self._stop is None or not self._stop.is_set() else None
        if sd is not None:
            sd.reloading()
        try:
            return await self.reload()
        finally:
            if sd is not None and not (self._stop is not None and self._stop.is_set()):
                sd.ready(self.sd_status())

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        pool = None
        if self.cfg.global_.workers > 1:
            from .workers import WorkerPool

            pool = self.pool = WorkerPool(
                self.cfg.global_.workers, self.loop_kind, logging.getLogger("tcplb").getEffectiveLevel()
            )
            pool.assign_rows(self.cfg)
        lb = self.lb = LoadBalancer(self.cfg, loop, share=pool.share if pool is not None else None)
        try:
            lb.start()
        except OSError as e:
            log.error("cannot bind a listener: %s", e.strerror or e)
            return 1
        if pool is not None:
            pool.start(lb, cfgmod.to_toml(self.cfg, secrets=True), str(self.path or "lb.toml"))
        try:
            await self._start_stats()
        except OSError as e:
            log.error("stats: cannot bind: %s", e.strerror or e)
            lb.stop_accepting()
            return 1
        pending: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            t = loop.create_task(self._sd_reload())
            pending.add(t)
            t.add_done_callback(pending.discard)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        log.info(
            "tcplb started: pid %d, %s loop, %d listeners, maxconn %d%s",
            os.getpid(),
            self.loop_kind,
            len(self.cfg.listeners),
            lb.maxconn * lb.nprocs,
            f", {lb.nprocs} processes (maxconn {lb.maxconn} each)" if lb.nprocs > 1 else "",
        )
        sd_cancel: Callable[[], None] | None = None
        if self.sd is not None:
            self.sd.ready(self.sd_status())
            sd_cancel = self.sd.periodic(loop, self._sd_tick)
        try:
            await self._stop.wait()
            await self._graceful_stop()
        finally:
            if sd_cancel is not None:
                sd_cancel()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    async def _graceful_stop(self) -> None:
        lb = self.lb
        assert lb is not None
        hard = self.cfg.global_.hard_stop_after
        if self.sd is not None:
            self.sd.stopping(f"stopping, {self.sd_status()}")
        workers = None
        if self.pool is not None:  # the workers drain their own connections at the same time
            workers = asyncio.get_running_loop().create_task(self.pool.stop(hard))
        lb.stop_accepting()
        await self._stop_stats()
        log.info(
            "stopping: listeners closed, %d connections to finish%s",
            lb.actconn,
            f" (hard stop after {hard:g}s)" if hard is not None else "",
        )
        if lb.actconn:
            try:
                async with asyncio.timeout(hard):
                    await lb.wait_idle()
            except TimeoutError:
                n = lb.kill_all()
                log.warning("hard_stop_after reached: %d connections closed", n)
                try:
                    async with asyncio.timeout(2.0):
                        await lb.wait_idle()
                except TimeoutError:
                    pass
        if workers is not None:
            await workers
        lb.stop_checks()
        await asyncio.sleep(0)
        log.info("stopped")


def run(cfg: Config, path: str | Path | None = None, loop_kind: str = "uvloop") -> int:
    d = Daemon(cfg, path, loop_kind)
    with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind)) as r:
        return r.run(d.serve())
