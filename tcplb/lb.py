"""tcplb's process core: one :class:`LoadBalancer` per process (listeners, limits, checks, stop).

Each ``[listen.NAME]`` becomes a :class:`~tcplb.frontend.Frontend` (listening sockets, see
:mod:`tcplb.listen`, plus its servers, see :mod:`tcplb.backend`). Reload is in :mod:`tcplb.reload`, admin
operations in :mod:`tcplb.admin`, the stats snapshot in :mod:`tcplb.snapshot`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import admin
from . import config as cfgmod
from .accounting import Accounting, Counts, SingleProcess
from .backend import ServerState
from .balance import count_usable
from .checks import Checker, CheckResult
from .config import Config
from .frontend import Frontend, Session, format_session
from .health import Transition
from .listen import derived_maxconn
from .mgmt import NodeState
from .nodestate import on_node_state
from .rebalancer import Driver as Rebalance
from .reload import reload_lb
from .snapshot import snapshot
from .tcplog import format_health_change, format_no_server

if TYPE_CHECKING:
    from .reload_plan import Plan

log = logging.getLogger("tcplb")
tlog = logging.getLogger("tcplb.traffic")


def _ms(x: float) -> int:
    return int(x * 1000)


class LoadBalancer:
    """Everything that runs in one tcplb process."""

    def __init__(
        self, cfg: Config, loop: asyncio.AbstractEventLoop | None = None, acct: Accounting | None = None
    ) -> None:
        self.cfg = cfg
        self.loop = loop or asyncio.get_running_loop()
        # the other processes, if any (global.workers > 1: tcplb/workers.py), behind one seam
        self.acct: Accounting = acct if acct is not None else SingleProcess()
        self.nprocs = self.acct.nprocs
        self.maxconn = cfgmod.per_process(derived_maxconn(cfg), self.nprocs)
        self.frontends: dict[str, Frontend] = {}
        self.sessions: set[Session] = set()
        self.actconn = 0
        self.paused_full = False
        self.stopping = False
        self.verbose_accept = False
        self.started = time.time()
        self.reloads = 0
        self.on_event: Callable[[str], None] | None = None  # test hook: every log line of ours
        self._idle: asyncio.Event | None = None
        self.bg: set[asyncio.Task[None]] = set()
        self._rate_timer: asyncio.TimerHandle | None = None  # stats: 1 s session-rate sampler
        # uvloop accepts in C and calls our protocol factory synchronously: serve through create_server
        self.native_accept = type(self.loop).__module__.startswith("uvloop")
        # [listen.NAME.rebalance]: graceful rebalancing and max lifetime (tcplb/rebalancer.py)
        self.rebalance = Rebalance(self)

    def total_actconn(self, others: Counts | None = None) -> int:
        """Client connections of every process (``actconn`` is this process's)."""
        if others is None:
            others = self.acct.others()
        return self.actconn + sum(others.of(fe).get("cur", 0) for fe in self.frontends.values())

    async def wait_idle(self) -> None:
        """Until no client connection is left."""
        if self.actconn == 0:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open every listener and start accepting and checking. Raises OSError if a bind fails."""
        opened: list[Frontend] = []
        try:
            for li in self.cfg.listeners:
                fe = Frontend(self, li)
                fe.open_sockets()
                opened.append(fe)
        except BaseException:
            for fe in opened:
                fe.close_sockets()
            raise
        for fe in opened:
            self.frontends[fe.name] = fe
            fe.start_accepting()
            for st in fe.servers:
                self.start_checker(st)
            self._event(f"Proxy {fe.name} started.")
        self.rebalance.start()

    def reload(self, cfg: Config) -> Plan:
        """Apply a new configuration in place (SIGHUP), all or nothing: raises ReloadError (naming the
        listener and address) if a new bind fails, and then nothing changed."""
        plan = reload_lb(self, cfg)
        self.rebalance.reconfigure()
        return plan

    def stop_accepting(self) -> None:
        self.stopping = True
        self.rebalance.stop()
        for fe in self.frontends.values():
            fe.stopped = True
            fe.close_sockets()
            while fe.parked:  # accepted beyond maxconn, never served: close them like a closed listener
                sess = fe.parked.popleft()
                sess.parked = False
                sess.pipe.on_close = None
                sess.pipe.abort("P", "Q", reset=False)

    def stop_checks(self) -> None:
        for fe in self.frontends.values():
            for st in fe.servers:
                self.stop_checker(st)

    def kill_all(self) -> int:
        """Hard stop: abort every connection (logged with K). Returns how many."""
        n = 0
        # those without a slot first (queued): a slot freed by a kill must not start a connect to kill
        for sess in sorted(self.sessions, key=lambda s: s.slot):
            n += 1
            sess.fe.kill(sess)
        return n

    # -- maxconn -----------------------------------------------------------------------------------------
    def pause_full(self) -> None:
        """Global or listener maxconn reached: stop accepting (excess waits in the kernel backlog)."""
        for fe in self.frontends.values():
            if self.actconn >= self.maxconn or fe.cur >= fe.maxconn:
                fe.pause_accepting()
        self.paused_full = True

    def resume_if_room(self, force: bool = False) -> None:
        if self.stopping or (not self.paused_full and not force):
            return
        for fe in self.frontends.values():
            while fe.parked and fe.unpark():
                pass
        if self.actconn >= self.maxconn:
            return
        still = False
        for fe in self.frontends.values():
            if fe.cur < fe.maxconn:
                fe.start_accepting()
            else:
                still = True
        self.paused_full = still

    # -- checks and health ---------------------------------------------------------------------------------
    def start_checker(self, st: ServerState) -> None:
        if st.checker is not None or st.maint or st.removed or self.stopping or st.health_off:
            return
        ck = st.cfg.check
        if not ck.enabled or not self.acct.runs_checks:
            return

        def interval() -> float:
            return st.health.interval(ck.inter, ck.fastinter, ck.downinter)

        def report(res: CheckResult) -> None:
            self.on_check(st, res)

        def node_report(ns: NodeState) -> None:
            on_node_state(self, st, ns)

        st.checker = Checker(
            ck,
            st.cfg.check_host,
            st.cfg.check_port,
            interval=interval,
            report=report,
            spread=self.cfg.global_.spread_checks,
            source=st.cfg.source,
            node_report=node_report,
            send_proxy=st.cfg.send_proxy,
        )
        st.checker.start()

    def stop_checker(self, st: ServerState) -> None:
        if st.checker is not None:
            st.checker.stop()
            st.checker = None

    def on_check(self, st: ServerState, res: CheckResult) -> None:
        st.last_check = res
        if not res.ok:
            st.chkfail += 1
        tr = st.health.observe(ok=res.ok, status=res.status, now=self.loop.time(), info=res.detail)
        if tr is not None:
            self.on_transition(st, tr, res)

    def on_transition(self, st: ServerState, tr: Transition, res: CheckResult | None = None) -> None:
        now = self.loop.time()
        st.lastchg = now
        if tr.up:
            st.start_slowstart()
            if st.down_since is not None:
                st.downtime += now - st.down_since
                st.down_since = None
        else:
            st.chkdown += 1
            st.down_since = now
        fe = st.fe
        act, bck = count_usable(fe.servers)
        requeued = 0 if tr.up else st.flush_queue()
        info = tr.info
        if tr.passive and not tr.up:
            info = f"live connection: {info}" if info else "live connection failed"
        msg = format_health_change(
            fe.name,
            st.name,
            tr.up,
            tr.status,
            info=info,
            duration_ms=_ms(res.duration) if res is not None else None,
            code=res.code if res is not None else None,
            active=act,
            backup=bck,
            is_backup=st.backup,
            sessions=None if tr.up else st.cur,
            requeued=requeued,
            queued=len(st.queue),
        )
        self._event(msg, logging.WARNING if not tr.up else logging.INFO)
        if not tr.up and st.cfg.on_marked_down == "shutdown-sessions":  # HAProxy's on-marked-down
            admin.kill_sessions(self, st, "on_marked_down shutdown-sessions")
        self._availability(fe)

    def _availability(self, fe: Frontend) -> None:
        act, bck = count_usable(fe.servers)
        avail = act + bck > 0
        if fe.was_available and not avail:
            self._event(format_no_server(fe.name), logging.ERROR)
        fe.was_available = avail

    # -- admin (stats API) -------------------------------------------------------------------------------
    def set_weight(self, fe_name: str, srv_name: str, weight: int) -> ServerState:
        return admin.set_weight(self, fe_name, srv_name, weight)

    def set_state(self, fe_name: str, srv_name: str, state: str) -> ServerState:
        """``ready`` | ``drain`` | ``maint`` (HAProxy's ``set server be/srv state``)."""
        return admin.set_state(self, fe_name, srv_name, state)

    def set_health(self, fe_name: str, srv_name: str, enable: bool) -> ServerState:
        """HAProxy's ``enable|disable health`` (see :func:`tcplb.admin.set_health`)."""
        return admin.set_health(self, fe_name, srv_name, enable)

    def shutdown_sessions(self, fe_name: str, srv_name: str) -> tuple[ServerState, int]:
        """HAProxy's ``shutdown sessions server`` (see :func:`tcplb.admin.shutdown_sessions`)."""
        return admin.shutdown_sessions(self, fe_name, srv_name)

    def event(self, msg: str, level: int = logging.INFO) -> None:
        """Log one of our event lines (and hand it to the ``on_event`` test hook)."""
        self._event(msg, level)

    def start_sampling(self, interval: float = 1.0) -> None:
        """Start the timer behind session rates, ``lastsess`` and backend ``qmax`` (the stats server's;
        idempotent). It costs one callback per ``interval``, nothing per connection."""
        if self._rate_timer is None:
            self._sample(interval)

    def stop_sampling(self) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None

    def _sample(self, interval: float) -> None:
        now = self.loop.time()
        others = self.acct.others()
        for fe in self.frontends.values():
            fe.rate.tick(fe.stot + others.of(fe).get("stot", 0), now)
            q = 0
            for st in fe.servers:
                sp = others.of(st)
                st.rate.tick(st.stot + sp.get("stot", 0), now)
                q += len(st.queue) + sp.get("qcur", 0)
            if q > fe.be_qmax:
                fe.be_qmax = q
        self._rate_timer = self.loop.call_later(interval, self._sample, interval)

    def _find(self, fe_name: str, srv_name: str) -> ServerState:
        return admin.find(self, fe_name, srv_name)

    # -- logging -----------------------------------------------------------------------------------------
    def _event(self, msg: str, level: int = logging.INFO) -> None:
        log.log(level, msg)
        if self.on_event is not None:
            self.on_event(msg)

    def log_session(self, sess: Session, asap: bool = False) -> None:
        """Log a session's line. The driver (``Frontend._run``) calls this only when sessions are logged: the
        listener's ``log`` is on and ``global.log`` is not "none" or an event hook is set."""
        fe = sess.fe
        p = sess.pipe
        if fe.cfg.dontlognull and not asap and p.bytes_in == 0 and p.bytes_out == 0:
            return
        line = format_session(sess, asap=asap, actconn=self.actconn)
        tlog.info(line)
        if self.on_event is not None:
            self.on_event(line)

    def snapshot(self) -> dict[str, Any]:
        """Everything the stats page shows (see :func:`tcplb.snapshot.snapshot`)."""
        return snapshot(self)


def iter_servers(lb: LoadBalancer) -> Iterable[tuple[Frontend, ServerState]]:
    for fe in lb.frontends.values():
        for st in fe.servers:
            yield fe, st
