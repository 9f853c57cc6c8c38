"""One listener at run time and the life of its client connections.

Each ``[listen.NAME]`` becomes a :class:`Frontend` (listening sockets, see :mod:`tcplb.listen`, plus its
servers, see :mod:`tcplb.backend`). A client connection is a :class:`Session`: one small task sets it up
(queue, connect, retries), then the relay (:mod:`tcplb.relay`) pumps bytes with no task at all, and the pipe's
``on_close`` logs it and frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import config as cfgmod
from .backend import RateCounter, ServerState, _limited
from .balance import Balancer, make_balancer, select
from .config import Listener
from .health import CheckStatus
from .listen import Listening
from .relay import Pipe, set_keepalive
from .splice import start_splice
from .tcplog import TcpLogRecord, format_record, tcplog_line

if TYPE_CHECKING:
    from .lb import LoadBalancer


# -------------------------------------------------------------------------------------------- sessions


@dataclass(slots=True, eq=False)
class Session:
    """One client connection, with what its log line needs."""

    fe: Frontend
    pipe: Pipe
    client: tuple[str, int]
    accept_wall: float
    t0: float  # loop time at accept
    srv: ServerState | None = None
    slot: bool = False  # holds a connection slot on srv
    t_queue: float = -1.0  # Tw
    t_connect: float = -1.0  # Tc
    retries: int = 0
    redispatched: bool = False
    task: asyncio.Task[None] | None = None
    srv_queue: int = 0
    be_queue: int = 0
    parked: bool = False
    connect_expired: bool = False  # the connect timer of the current attempt fired (and cancelled the task)

    def cancel_setup(self) -> None:
        """The client left (or a hard stop): stop queueing/connecting at once."""
        t = self.task
        if t is not None and not t.done():
            t.cancel()

    def connect_timeout(self) -> None:
        """``timeout_connect`` of the current attempt expired: cancel it (turned into L4TOUT by _connect)."""
        t = self.task
        if t is not None and not t.done():
            self.connect_expired = True
            t.cancel()


# ------------------------------------------------------------------------------------------- frontends


def _ms(x: float) -> int:
    return int(x * 1000)


class Frontend(Listening):
    """A ``[listen.NAME]`` section at run time."""

    def __init__(self, lb: LoadBalancer, cfg: Listener) -> None:
        self.lb = lb
        self.cfg = cfg
        self.name = cfg.name
        self.balancer: Balancer = make_balancer(cfg.balance)
        self.servers: list[ServerState] = [ServerState(s, self) for s in cfg.servers]
        self.sockets: dict[tuple[str, int], socket.socket] = {}
        self.aservers: dict[tuple[str, int], asyncio.Server] = {}  # serving a dup of each listening socket
        self.starting: set[tuple[str, int]] = set()
        self.want_accept = False
        self.reading: set[int] = set()  # stock asyncio: fds with our accept reader installed
        self.parked: deque[Session] = deque()  # accepted beyond maxconn, waiting for a slot
        self.cur = 0
        self.smax = 0
        self.stot = 0
        self.bin = 0
        self.bout = 0
        self.econ = 0
        self.denied = 0
        self.stopped = False
        self.sh_row = -1  # row in the shared table (global.workers > 1)
        self.was_available = any(s.usable for s in self.servers)
        self.limited = _limited(self.servers)
        self.rate = RateCounter()  # session rate (stats)
        self.be_qmax = 0  # highest total queue of the servers seen by the stats timer or a snapshot
        self._apply_timeouts()

    def _apply_timeouts(self) -> None:
        to = self.cfg.timeouts
        self.t_connect = to.connect
        self.t_queue = to.queue_wait
        self.idle, self.idle_flag = _min_flag(to.client_idle, to.server_idle)
        self.fin_idle, self.fin_flag = _min_flag(to.client_fin_idle, to.server_fin_idle)

    @property
    def maxconn(self) -> int:
        g = self.lb.maxconn
        m = self.cfg.maxconn
        if m is None:
            return g
        return min(cfgmod.per_process(m, self.lb.nprocs), g)

    def server(self, name: str) -> ServerState | None:
        for s in self.servers:
            if s.name == name:
                return s
        return None

    # -- sessions ----------------------------------------------------------------------------------------
    def _factory(self) -> asyncio.Protocol:
        loop = self.lb.loop
        pipe = Pipe(loop)
        sess = Session(self, pipe, ("", 0), time.time(), loop.time())
        pipe.on_close = lambda _p: self._closed(sess)
        pipe.on_client_made = lambda: self._client_made(sess)
        pipe.timeout, pipe.timeout_flag = self.idle, self.idle_flag
        pipe.fin_timeout, pipe.fin_flag = self.fin_idle, self.fin_flag
        return pipe.client

    def _client_made(self, sess: Session) -> None:
        lb = self.lb
        tr = sess.pipe.client.transport
        assert tr is not None
        peer = tr.get_extra_info("peername")
        if peer:
            sess.client = (peer[0], peer[1])
        if not (lb.native_accept and self.cfg.nodelay):  # uvloop sets TCP_NODELAY on every TCP transport
            sock = tr.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if self.cfg.nodelay else 0)
        ka = self.cfg.tcpka
        if ka is not None and ka.client is not None:
            set_keepalive(tr, ka.client.idle, ka.client.interval, ka.client.count)
        if lb.actconn >= lb.maxconn or self.cur >= self.maxconn or self.stopped:
            # accepted by the loop beyond maxconn (it accepts in batches): park it, as if it were still in
            # the kernel's backlog, until a slot frees
            sess.parked = True
            self.parked.append(sess)
            lb.pause_full()
            return
        self._activate(sess)

    def _activate(self, sess: Session) -> None:
        lb = self.lb
        sess.parked = False
        lb.actconn += 1
        self.cur += 1
        self.stot += 1
        if self.cur > self.smax:
            self.smax = self.cur
        lb.sessions.add(sess)
        sess.t0 = lb.loop.time()
        sess.task = lb.loop.create_task(self._setup(sess))
        if lb.actconn >= lb.maxconn or self.cur >= self.maxconn:
            lb.pause_full()

    def unpark(self) -> bool:
        """Start the oldest parked connection if there is room; True if one was started."""
        lb = self.lb
        while self.parked and lb.actconn < lb.maxconn and self.cur < self.maxconn:
            sess = self.parked.popleft()
            if sess.pipe.closed or sess.pipe.client.lost:
                continue
            self._activate(sess)
            return True
        return False

    async def _setup(self, sess: Session) -> None:
        pipe = sess.pipe
        if pipe.closed or pipe.client.lost:
            return
        # if the client goes away while we queue or connect, stop at once
        gone_cb = pipe.on_client_lost = sess.cancel_setup
        try:
            await self._establish(sess)
        except asyncio.CancelledError:
            # the client left (or a hard stop): give the slot back
            self._drop_slot(sess)
            if not pipe.closed:
                pipe.abort("C" if pipe.client.lost else "K", pipe.phase, reset=False)
            if not pipe.client.lost and not self.lb.stopping:
                raise
        finally:
            if pipe.on_client_lost == gone_cb:
                pipe.on_client_lost = None

    def _drop_slot(self, sess: Session) -> None:
        if sess.slot and sess.srv is not None:
            sess.slot = False
            sess.srv.release()

    async def _establish(self, sess: Session) -> None:
        """Queue, connect, retry and redispatch until a server answers or we give up."""
        loop = self.lb.loop
        pipe = sess.pipe
        cfg = self.cfg
        exclude: set[str] = set()
        pinned: ServerState | None = None
        attempt = 0
        while True:
            pipe.phase = "Q"
            tq = loop.time()
            srv, why = await self._acquire(sess, exclude, pinned)
            if sess.t_queue < 0:
                sess.t_queue = loop.time() - tq
            if srv is None:
                # nothing to connect to: <NOSRV> (or the queue timed out)
                pipe.abort(why[0], why[1], reset=False)
                return
            pipe.phase = "C"
            tc = loop.time()
            err = await self._connect(sess, srv)
            if err is None:
                sess.t_connect = loop.time() - tc
                srv.health.passive_success()
                if self.lb.verbose_accept or cfg.logasap:
                    self.lb.log_session(sess, asap=True)
                return
            # the connect failed: count it against the server at once, then retry
            srv.econ += 1
            self.econ += 1
            self._drop_slot(sess)
            status, info = err
            if srv.checks_enabled and self.lb.worker:
                # a relay worker: the main process owns health; it reads this at its next tick
                srv.sh_pfail += 1
            elif srv.checks_enabled:
                tr = srv.health.passive_failure(
                    status=CheckStatus.HANA, now=loop.time(), info=f"{status}: {info}"
                )
                if tr is not None:
                    self.lb.on_transition(srv, tr)
            attempt += 1
            if attempt > cfg.retries:
                sess.t_connect = loop.time() - tc
                pipe.abort("s" if status == CheckStatus.L4TOUT else "S", "C", reset=False)
                return
            sess.retries = attempt
            srv.wretr += 1
            redispatch = cfgmod.redispatch_on_retry(attempt, cfg.retries, cfg.redispatch) or (
                cfg.redispatch != 0 and not srv.usable
            )
            if redispatch:
                sess.redispatched = True
                srv.wredis += 1
                exclude.add(srv.name)
                pinned = None
                left = select(self.balancer, self._eligible(exclude), sess.client, exclude, cfg.allbackups)
                if left is None:
                    # every other server failed too: start over after the turn-around delay
                    exclude.clear()
                    await asyncio.sleep(min(self.t_connect or 1.0, 1.0))
            else:
                pinned = srv
                await asyncio.sleep(min(self.t_connect or 1.0, 1.0))

    def _eligible(self, exclude: set[str]) -> list[ServerState]:
        return [s for s in self.servers if s.name not in exclude]

    async def _acquire(
        self, sess: Session, exclude: set[str], pinned: ServerState | None
    ) -> tuple[ServerState | None, str]:
        """A server with a free slot (slot taken), waiting in its queue if needed; or (None, term)."""
        loop = self.lb.loop
        while True:
            srv: ServerState | None
            if pinned is not None and pinned.usable:
                srv = pinned
            elif not self.limited:
                # no server has maxconn/maxqueue: nothing is ever full, no queue (the common case)
                srv = select(self.balancer, self.servers, sess.client, exclude, self.cfg.allbackups)
                if srv is None:
                    return None, "SC"  # <NOSRV> (nothing eligible; without limits no queue can be full)
            else:
                full = {s.name for s in self.servers if s.full or s.queue_full}
                srv = select(self.balancer, self.servers, sess.client, exclude | full, self.cfg.allbackups)
                if srv is None:
                    # all full? then queue on the one with the shortest queue that still has room
                    qfull = {s.name for s in self.servers if s.queue_full}
                    srv = select(
                        self.balancer, self.servers, sess.client, exclude | qfull, self.cfg.allbackups
                    )
                    if srv is None:
                        if any(s.usable and s.weight > 0 and s.name not in exclude for s in self.servers):
                            return None, "sQ"  # every queue is full
                        return None, "SC"  # <NOSRV>
            if not srv.full:
                srv.take()
                sess.srv, sess.slot = srv, True
                return srv, ""
            fut: asyncio.Future[bool] = loop.create_future()
            srv.enqueue(fut)
            sess.srv_queue = len(srv.queue)
            sess.be_queue = sum(len(s.queue) for s in self.servers)
            try:
                if self.t_queue is not None:
                    async with asyncio.timeout(self.t_queue):
                        got = await fut
                else:
                    got = await fut
            except TimeoutError:
                with contextlib.suppress(ValueError):
                    srv.queue.remove(fut)
                sess.srv = srv
                return None, "sQ"
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.result():
                    srv.release()  # we had been given the slot
                with contextlib.suppress(ValueError):
                    srv.queue.remove(fut)
                raise
            if got:
                sess.srv, sess.slot = srv, True
                return srv, ""
            pinned = None  # the server went away: choose again

    async def _connect(self, sess: Session, srv: ServerState) -> tuple[str, str] | None:
        """One connection attempt; None on success (relay attached), else (check status, info)."""
        loop = self.lb.loop
        pipe = sess.pipe
        side = pipe.new_server_side()
        scfg = srv.cfg
        # timeout_connect: a plain timer that cancels the setup task (cheaper than asyncio.timeout(), which
        # costs a context manager, current_task() and a reschedule per attempt); same semantics: a
        # cancellation requested by anyone else (client gone, hard stop) is not turned into a timeout
        timer = loop.call_later(self.t_connect, sess.connect_timeout) if self.t_connect is not None else None
        sess.connect_expired = False
        try:
            if scfg.source:
                await loop.create_connection(lambda: side, scfg.host, scfg.port, local_addr=(scfg.source, 0))
            else:
                await loop.create_connection(lambda: side, scfg.host, scfg.port)
        except TimeoutError:  # the kernel's own connect timeout (ETIMEDOUT), as asyncio.timeout's was
            return CheckStatus.L4TOUT, "connect timeout"
        except OSError as e:
            return CheckStatus.L4CON, os.strerror(e.errno) if e.errno else str(e)
        except asyncio.CancelledError:
            if side.transport is not None:
                side.transport.abort()
            if sess.connect_expired:
                sess.connect_expired = False
                task = sess.task
                if task is not None and task.uncancel() == 0:
                    return CheckStatus.L4TOUT, "connect timeout"
            raise
        finally:
            if timer is not None:
                timer.cancel()
        tr = side.transport
        assert tr is not None
        if side.lost:
            return CheckStatus.L4CON, "connection reset"
        ka = self.cfg.tcpka
        if ka is not None and ka.server is not None:
            set_keepalive(tr, ka.server.idle, ka.server.interval, ka.server.count)
        pipe.attach_server(side)
        if self.cfg.splice:
            # once this iteration's writes (early data) went out; stays in user space if they did not
            loop.call_soon(start_splice, pipe)
        return None

    def _closed(self, sess: Session) -> None:
        lb = self.lb
        p = sess.pipe
        if sess.parked:
            # accepted beyond maxconn and gone before it got a slot: nothing to count, nothing to log
            with contextlib.suppress(ValueError):
                self.parked.remove(sess)
            return
        if sess.task is not None and not sess.task.done() and p.phase != "D":
            sess.task.cancel()
        lb.log_session(sess)  # counts as HAProxy logs them: this connection included
        lb.actconn -= 1
        self.cur -= 1
        lb.sessions.discard(sess)
        self.bin += p.bytes_in
        self.bout += p.bytes_out
        srv = sess.srv
        if srv is not None:
            srv.bin += p.bytes_in
            srv.bout += p.bytes_out
            if p.term[0] == "S" and p.term[1] == "D":
                srv.eresp += 1  # the server aborted an established connection (HAProxy's eresp in TCP mode)
        self._drop_slot(sess)
        if lb.paused_full:
            lb.resume_if_room()
        if lb.actconn == 0 and lb._idle is not None:
            lb._idle.set()


def _min_flag(client: float | None, server: float | None) -> tuple[float | None, str]:
    if client is None and server is None:
        return None, "c"
    if server is None or (client is not None and client <= server):
        return client, "c"
    return server, "s"


def format_session(sess: Session, *, asap: bool = False, actconn: int = 0) -> str:
    """HAProxy's tcplog line (or the JSON variant) for a session."""
    fe = sess.fe
    p = sess.pipe
    srv = sess.srv
    reached = srv is not None and p.server is not None
    tt = _ms(fe.lb.loop.time() - sess.t0)
    tw = _ms(sess.t_queue) if sess.t_queue >= 0 else -1
    tc = _ms(sess.t_connect) if sess.t_connect >= 0 and reached else -1
    srv_conn = srv.cur if srv is not None else 0
    if fe.cfg.log_format == "tcplog":
        # tcplog.format_tcplog without building the record object (the per-connection hot path)
        return tcplog_line(
            sess.client,
            sess.accept_wall,
            fe.name,
            srv.name if srv is not None else None,
            tw,
            tc,
            tt,
            p.bytes_out,
            "--" if asap else p.termination,
            actconn,
            fe.cur,
            srv_conn,
            sess.retries,
            sess.redispatched,
            sess.srv_queue,
            sess.be_queue,
            asap,
        )
    rec = TcpLogRecord(
        client=sess.client,
        accept_time=sess.accept_wall,
        frontend=fe.name,
        backend=fe.name,
        server=srv.name if srv is not None else None,
        tw=tw,
        tc=tc,
        tt=tt,
        bytes_read=p.bytes_out,
        bytes_uploaded=p.bytes_in,
        termination="--" if asap else p.termination,
        actconn=actconn,
        feconn=fe.cur,
        beconn=fe.cur,
        srv_conn=srv_conn,
        retries=sess.retries,
        redispatched=sess.redispatched,
        srv_queue=sess.srv_queue,
        backend_queue=sess.be_queue,
        logasap=asap,
    )
    return format_record(rec, fe.cfg.log_format)
