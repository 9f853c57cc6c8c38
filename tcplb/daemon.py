"""Process lifecycle: event loop choice, logging, file descriptor limit, signals (SIGHUP reload, SIGTERM
graceful stop, a second SIGTERM/SIGINT hard stop), the stats server's lifetime (until exit)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as cfgmod
from .config import Config, ConfigError
from .lb import LoadBalancer
from .procstart import new_loop, raise_nofile
from .reload_plan import ReloadError
from .workers import WorkerPool

if TYPE_CHECKING:
    from rmqfd.sdnotify import Notifier

__all__ = ["Daemon", "run"]

log = logging.getLogger("tcplb")


class Daemon:
    """Runs a LoadBalancer (and its stats server) until SIGTERM/SIGINT; SIGHUP reloads ``path``."""

    def __init__(self, cfg: Config, path: str | Path | None = None, loop_kind: str = "uvloop") -> None:
        self.cfg = cfg
        self.path = Path(path) if path is not None else None
        self.loop_kind = loop_kind
        self.lb: LoadBalancer | None = None
        self.stats: object | None = None
        self._stop: asyncio.Event | None = None
        self._hard: asyncio.Event | None = None  # a second SIGTERM/SIGINT: close every connection now
        self.reload_error: str | None = None  # why the last reload was refused (cleared by a good one)
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
        from .stats import StatsServer  # only with a stats listener (idle RSS); no cycle: test_imports.py

        st = StatsServer(self.lb, self.cfg.stats, reload=self._api_reload if self.path is not None else None)
        await st.start()
        self.stats = st

    async def _stop_stats(self) -> None:
        from .stats import StatsServer

        st = self.stats
        self.stats = None
        if isinstance(st, StatsServer):
            await st.close()

    async def reload(self) -> bool:
        """Re-read the configuration file and apply it in place, all or nothing. False (and logged, and in
        the sd_notify STATUS) when it is refused: then the running configuration is unchanged."""
        ok, _ = await self.reload_result()
        return ok

    def _refused(self, why: str) -> tuple[bool, str]:
        log.error("reload refused, running configuration unchanged: %s", why)
        self.reload_error = why
        return False, why

    async def reload_result(self) -> tuple[bool, str]:
        """:meth:`reload` with its message: (True, summary) or (False, the reason)."""
        if self.path is None or self.lb is None:
            return False, "no configuration file to reload"
        if self.lb.stopping:
            return self._refused("the process is stopping")
        try:
            cfg = cfgmod.load(self.path)
        except ConfigError as e:
            lines = e.lines()
            for line in lines:
                log.error("reload refused: %s: %s", self.path, line)
            self.reload_error = f"{self.path}: {lines[0] if lines else e}"
            if len(lines) > 1:
                self.reload_error += f" (and {len(lines) - 1} more errors)"
            return False, self.reload_error
        except OSError as e:
            return self._refused(f"{self.path}: {e.strerror or e}")
        pool = self.pool
        if pool is not None:
            try:
                pool.assign_rows(cfg)
            except RuntimeError as e:
                return self._refused(str(e))
        try:
            plan = self.lb.reload(cfg)
        except ReloadError as e:
            return self._refused(str(e))
        if pool is not None:
            if cfg.global_.workers != pool.nprocs:
                log.warning(
                    "reload: global.workers changed from %d to %d: takes effect at the next restart",
                    pool.nprocs,
                    cfg.global_.workers,
                )
            pool.reload(cfgmod.to_toml(cfg, secrets=True), str(self.path))
        old_stats = self.cfg.stats
        self.cfg = cfg
        self.reload_error = None
        for w in cfgmod.warnings(cfg):
            log.warning("%s", w)
        if cfg.stats != old_stats:
            await self._stop_stats()
            try:
                await self._start_stats()
            except OSError as e:
                log.error("stats: cannot bind %s:%d: %s", *cfg.stats.bind, e.strerror)  # type: ignore[union-attr]
        msg = f"reloaded {self.path} ({len(cfg.listeners)} listeners: {plan.summary()})"
        log.info("%s", msg)
        return True, msg

    async def _api_reload(self) -> tuple[bool, str]:
        """The admin API's reload (``tcplb ctl reload``): the same as SIGHUP."""
        return await self._sd_reload_result()

    def sd_status(self) -> str:
        """systemd STATUS= text: "12 connections, 3/3 servers up" (while stopping: "stopping, ...")."""
        lb = self.lb
        if lb is None:
            return "starting"
        servers = [s for fe in lb.frontends.values() for s in fe.servers if not s.removed]
        up = sum(1 for s in servers if s.usable)
        text = f"{lb.total_actconn()} connections, {up}/{len(servers)} servers up"
        if self.reload_error is not None:
            text += f"; last reload refused: {self.reload_error}"
        return f"stopping, {text}" if lb.stopping else text

    def _sd_tick(self) -> None:
        if self.sd is not None:
            self.sd.status(self.sd_status())

    async def _sd_reload(self) -> bool:
        return (await self._sd_reload_result())[0]

    async def _sd_reload_result(self) -> tuple[bool, str]:
        """SIGHUP: :meth:`reload` framed by RELOADING=1 / READY=1 for systemd (READY also when it failed,
        with the reason in STATUS)."""
        sd = self.sd if self._stop is None or not self._stop.is_set() else None
        if sd is not None:
            sd.reloading()
        try:
            return await self.reload_result()
        finally:
            if sd is not None and not (self._stop is not None and self._stop.is_set()):
                sd.ready(self.sd_status())

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._hard = asyncio.Event()
        nofile_warning = raise_nofile(self.cfg, self.cfg.global_.workers)
        if nofile_warning is not None:
            log.warning("%s", nofile_warning)
        pool = None
        if self.cfg.global_.workers > 1:
            pool = self.pool = WorkerPool(
                self.cfg.global_.workers, self.loop_kind, logging.getLogger("tcplb").getEffectiveLevel()
            )
            pool.assign_rows(self.cfg)
        lb = self.lb = LoadBalancer(self.cfg, loop, acct=pool.accounting if pool is not None else None)
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
            loop.add_signal_handler(sig, self._on_stop_signal)
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

    def _on_stop_signal(self) -> None:
        """SIGTERM/SIGINT: a graceful stop; the second one during it: a hard stop (every connection
        closed now), as HAProxy's SIGTERM after SIGUSR1 and uvicorn's second ^C."""
        assert self._stop is not None and self._hard is not None
        if not self._stop.is_set():
            self._stop.set()
        elif not self._hard.is_set():
            log.warning("second stop signal: hard stop, closing every connection now")
            self._hard.set()

    async def _wait_idle_or_hard(self, timeout: float | None) -> bool:
        """Until no connection is left (True), ``timeout`` or a hard stop request (False)."""
        lb = self.lb
        assert lb is not None and self._hard is not None
        idle = asyncio.ensure_future(lb.wait_idle())
        hard = asyncio.ensure_future(self._hard.wait())
        try:
            await asyncio.wait({idle, hard}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (idle, hard):
                t.cancel()
        return lb.actconn == 0 and not self._hard.is_set()

    async def _graceful_stop(self) -> None:
        """Close the listeners, let the connections finish (at most ``hard_stop_after``, or until a second
        stop signal), then close the rest. The stats page and the admin API stay up until the end, so that
        operators can watch the drain and kill sessions."""
        lb = self.lb
        assert lb is not None and self._hard is not None
        hard = self.cfg.global_.hard_stop_after
        if self.sd is not None:
            self.sd.stopping(f"stopping, {self.sd_status()}")
        workers = None
        if self.pool is not None:  # the workers drain their own connections at the same time
            workers = asyncio.get_running_loop().create_task(self.pool.stop(hard))
        lb.stop_accepting()
        log.info(
            "stopping: listeners closed, %d connections to finish%s",
            lb.actconn,
            f" (hard stop after {hard:g}s)" if hard is not None else "",
        )
        if lb.actconn and not await self._wait_idle_or_hard(hard):
            n = lb.kill_all()
            if self._hard.is_set():
                log.warning("hard stop: %d connections closed", n)
            else:
                log.warning("hard_stop_after reached: %d connections closed", n)
            try:
                async with asyncio.timeout(2.0):
                    await lb.wait_idle()
            except TimeoutError:
                pass
        if workers is not None:
            if self._hard.is_set() and self.pool is not None:
                self.pool.kill()
            await workers
        lb.stop_checks()
        await self._stop_stats()
        await asyncio.sleep(0)
        log.info("stopped")


def run(cfg: Config, path: str | Path | None = None, loop_kind: str = "uvloop") -> int:
    d = Daemon(cfg, path, loop_kind)
    with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind)) as r:
        return r.run(d.serve())
