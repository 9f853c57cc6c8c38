"""tcplb's I/O core: listeners, dispatch to servers, queueing, retries/redispatch, limits, reload, stop.

One :class:`LoadBalancer` per process. Each ``[listen.NAME]`` becomes a :class:`Frontend` (listening sockets
+ its servers); each server a :class:`ServerState` (runtime counters, queue, health). A client connection is
a :class:`Session`: one small task sets it up (queue, connect, retries), then the relay
(:mod:`tcplb.relay`) pumps bytes with no task at all, and the pipe's ``on_close`` logs it and frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import config as cfgmod
from .balance import Balancer, count_usable, make_balancer, select
from .checks import Checker, CheckResult
from .config import Config, Listener, Server
from .health import CheckStatus, Health, Transition
from .relay import Pipe, set_keepalive
from .splice import start_splice
from .tcplog import (
    TcpLogRecord,
    format_health_change,
    format_maintenance,
    format_no_server,
    format_record,
    tcplog_line,
)

if TYPE_CHECKING:
    from .workers import Share

log = logging.getLogger("tcplb")
tlog = logging.getLogger("tcplb.traffic")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


# ---------------------------------------------------------------------------------------------- servers


class RateCounter:
    """Sessions per second from a running total (``stot``), sampled by a 1 s timer while the stats server
    runs: no per-connection work. ``read`` is HAProxy's freq_ctr estimate (this second's count plus the
    previous second's, pro rata)."""

    __slots__ = ("at", "base", "last", "max", "prev")

    def __init__(self) -> None:
        self.at = -1.0  # loop time of the last sample (-1: never sampled)
        self.base = 0  # the total at that sample
        self.prev = 0  # sessions during the second before it
        self.max = 0  # highest per-second count seen
        self.last: float | None = None  # loop time at which the total last moved (1 s resolution)

    def tick(self, total: int, now: float) -> None:
        if self.at >= 0:
            n = total - self.base
            dt = now - self.at
            self.prev = n if dt <= 1.5 else int(n / dt + 0.5)
            if self.prev > self.max:
                self.max = self.prev
            if n:
                self.last = now
        self.at, self.base = now, total

    def read(self, total: int, now: float) -> tuple[int, int, float | None]:
        """(rate, rate_max, seconds since the last session or None)."""
        if self.at < 0:
            return 0, self.max, None
        cur = total - self.base
        el = now - self.at
        rate = int(cur + self.prev * (1.0 - el) + 0.5) if el < 1.0 else int(cur / el + 0.5)
        if cur > self.max:
            self.max = cur
        since = 0.0 if cur else (now - self.last if self.last is not None else None)
        return rate, self.max, since


class ServerState:
    """Runtime state of one server of a frontend; a ``balance.Candidate``."""

    def __init__(self, cfg: Server, fe: Frontend) -> None:
        self.fe = fe
        self.cfg = cfg
        self.name = cfg.name
        self.cfg_weight = cfg.weight
        self.admin_weight = cfg.weight  # runtime weight (admin API), reset by a reload that changes it
        self.maint = cfg.disabled  # administrative maintenance (no checks, no traffic)
        self.drain = False  # administrative drain (no new connections, checks go on)
        self.cur = 0  # connections connecting or established
        self.queue: deque[asyncio.Future[bool]] = deque()
        ck = cfg.check
        self.health = Health(ck.rise, ck.fall, cfg.init_state, ck.on_error, ck.error_limit)
        self.checker: Checker | None = None
        self.removed = False
        # counters (HAProxy stats names)
        self.stot = 0  # sessions total
        self.smax = 0
        self.qmax = 0
        self.lbtot = 0  # times selected
        self.bin = 0
        self.bout = 0
        self.econ = 0  # connect errors
        self.eresp = 0
        self.wretr = 0  # retries
        self.wredis = 0  # redispatches away from this server
        self.chkfail = 0
        self.chkdown = 0
        self.lastchg = time.monotonic()
        self.down_since: float | None = None if self.health.up else time.monotonic()
        self.downtime = 0.0
        self.last_check: CheckResult | None = None
        self.health_off = False  # admin: active checks disabled at run time (HAProxy's `disable health`)
        self.rate = RateCounter()  # session rate and lastsess, sampled by the stats timer
        # global.workers > 1 (tcplb/workers.py): this server's row in the shared table; our connection count
        # goes to sh[sh_cur] at every change and the other processes' counts are at sh[sh_peer_cur]
        self.sh_row = -1
        self.sh: memoryview | None = None
        self.sh_cur = 0
        self.sh_peer_cur: tuple[int, ...] = ()
        self.sh_pfail = 0  # connect failures seen by this relay worker (the main process owns health)

    # balance.Candidate
    @property
    def backup(self) -> bool:
        return self.cfg.backup

    @property
    def weight(self) -> int:
        return 0 if self.drain else self.admin_weight

    @property
    def active_conns(self) -> int:
        sh = self.sh
        if sh is None:
            return self.cur + len(self.queue)
        return self.cur + len(self.queue) + sum(sh[i] for i in self.sh_peer_cur)

    @property
    def usable(self) -> bool:
        return self.health.up and not self.maint and not self.removed

    @property
    def full(self) -> bool:
        m = self.cfg.maxconn  # divided among the processes with global.workers
        return m is not None and self.cur >= cfgmod.per_process(m, self.fe.lb.nprocs)

    @property
    def queue_full(self) -> bool:
        m = self.cfg.maxqueue
        return m is not None and len(self.queue) >= cfgmod.per_process(m, self.fe.lb.nprocs)

    @property
    def checks_enabled(self) -> bool:
        """Active checks configured and not disabled at run time (``disable health``)."""
        return self.cfg.check.enabled and not self.health_off

    def status(self) -> str:
        """HAProxy's stats status: UP, DOWN, MAINT, DRAIN, "no check", "UP 1/3", "DOWN 1/2", "DRAIN 2/3"."""
        if self.maint:
            return "MAINT"
        h = self.health
        checked = self.checks_enabled
        if not h.up:
            return h.status_text() if checked else "DOWN"
        if self.drain or self.admin_weight == 0:
            return f"DRAIN {h.fall - h.failures}/{h.fall}" if checked and h.failures else "DRAIN"
        return h.status_text() if checked else "no check"

    def take(self) -> None:
        self.cur += 1
        self.stot += 1
        self.lbtot += 1
        if self.cur > self.smax:
            self.smax = self.cur
        if self.sh is not None:
            self.sh[self.sh_cur] = self.cur

    def release(self) -> None:
        """A connection slot is free again: hand it to the first waiter of the queue."""
        self.cur -= 1
        if self.sh is not None:
            self.sh[self.sh_cur] = self.cur
        q = self.queue
        while q and not self.full:
            fut = q.popleft()
            if fut.done():
                continue
            self.take()
            fut.set_result(True)

    def flush_queue(self) -> int:
        """Wake every waiter with False (server gone): they choose again. Returns how many."""
        n = 0
        while self.queue:
            fut = self.queue.popleft()
            if not fut.done():
                fut.set_result(False)
                n += 1
        return n

    def enqueue(self, fut: asyncio.Future[bool]) -> None:
        self.queue.append(fut)
        if len(self.queue) > self.qmax:
            self.qmax = len(self.queue)


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


class Frontend:
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

    # -- listening sockets -------------------------------------------------------------------------------
    def open_sockets(self, old: dict[tuple[str, int], socket.socket] | None = None) -> None:
        """Open (or take over from ``old``) one listening socket per bind address."""
        old = old or {}
        backlog = self.cfg.backlog or self.maxconn
        for addr in self.cfg.bind:
            if addr in old:
                self.sockets[addr] = old.pop(addr)
                continue
            self.sockets[addr] = make_listen_socket(addr, backlog, reuseport=self.lb.nprocs > 1)

    def start_accepting(self) -> None:
        """Serve every listening socket (through a dup of it: pausing closes the dup, never the socket)."""
        self.want_accept = True
        if self.stopped:
            return
        if not self.lb.native_accept:
            # stock asyncio: our own accept loop (closing an asyncio Server while it has accepted connections
            # in flight drops them with a reset, so asyncio's servers cannot be paused safely)
            loop = self.lb.loop
            for sock in self.sockets.values():
                fd = sock.fileno()
                if fd not in self.reading:
                    loop.add_reader(fd, self._accept, sock)
                    self.reading.add(fd)
            return
        for addr in self.sockets:
            if addr not in self.aservers and addr not in self.starting:
                self.starting.add(addr)
                t = self.lb.loop.create_task(self._serve(addr))
                self.lb.bg.add(t)
                t.add_done_callback(self.lb.bg.discard)

    async def _serve(self, addr: tuple[str, int]) -> None:
        try:
            sock = self.sockets.get(addr)
            if sock is None or not self.want_accept or self.stopped:
                return
            dup = sock.dup()
            try:
                srv = await self.lb.loop.create_server(
                    self._factory, sock=dup, backlog=self.cfg.backlog or self.maxconn
                )
            except BaseException:
                dup.close()
                raise
            if not self.want_accept or self.stopped or self.sockets.get(addr) is not sock:
                srv.close()
                return
            self.aservers[addr] = srv
        finally:
            self.starting.discard(addr)

    def pause_accepting(self) -> None:
        """Stop accepting: new connections wait in the kernel's backlog (closes only our dup's)."""
        self.want_accept = False
        for srv in self.aservers.values():
            srv.close()
        self.aservers.clear()
        loop = self.lb.loop
        for fd in self.reading:
            loop.remove_reader(fd)
        self.reading.clear()

    @property
    def accepting(self) -> bool:
        return bool(self.aservers or self.reading)

    def _accept(self, lsock: socket.socket) -> None:
        """Accept loop for stock asyncio (uvloop accepts in C through create_server)."""
        lb = self.lb
        for _ in range(64):
            if lb.actconn >= lb.maxconn or self.cur >= self.maxconn:
                lb.pause_full()
                return
            try:
                csock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning(
                        "listen %s: accept failed (%s); pausing accepts for 100 ms", self.name, e.strerror
                    )
                    self.pause_accepting()
                    lb.loop.call_later(0.1, self.start_accepting)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPERM, errno.EPROTO):
                    continue
                raise
            csock.setblocking(False)
            proto = self._factory()
            t = lb.loop.create_task(self._wrap(csock, proto))
            lb.bg.add(t)
            t.add_done_callback(lb.bg.discard)

    async def _wrap(self, csock: socket.socket, proto: asyncio.Protocol) -> None:
        try:
            await self.lb.loop.connect_accepted_socket(lambda: proto, csock)
        except (OSError, RuntimeError):
            csock.close()

    def close_sockets(self) -> None:
        self.pause_accepting()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()

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

    # -- reload ------------------------------------------------------------------------------------------
    def update(self, cfg: Listener) -> None:
        """Apply a reloaded section: binds, servers, weights, checks, timeouts. Connections untouched."""
        old_socks = self.sockets
        self.sockets = {}
        self.pause_accepting()
        self.cfg = cfg
        try:
            self.open_sockets(old_socks)
        finally:
            for sock in old_socks.values():  # binds that went away
                sock.close()
        if cfg.balance != self.balancer.kind:
            self.balancer = make_balancer(cfg.balance)
        self._apply_timeouts()
        by_name = {s.name: s for s in self.servers}
        new: list[ServerState] = []
        for scfg in cfg.servers:
            st = by_name.pop(scfg.name, None)
            if st is None:
                st = ServerState(scfg, self)
                new.append(st)
                continue
            old = st.cfg
            st.cfg = scfg
            if scfg.weight != old.weight:
                st.admin_weight = scfg.weight
            st.cfg_weight = scfg.weight
            if scfg.disabled != old.disabled:
                st.maint = scfg.disabled
            if scfg.check != old.check or (scfg.host, scfg.port) != (old.host, old.port):
                ck = scfg.check
                h = st.health
                h.rise, h.fall, h.on_error, h.error_limit = ck.rise, ck.fall, ck.on_error, ck.error_limit
                self.lb.stop_checker(st)
            new.append(st)
        for gone in by_name.values():
            gone.removed = True
            self.lb.stop_checker(gone)
            gone.flush_queue()
            self.balancer.forget(gone.name)
        self.servers = new
        self.limited = _limited(new)
        for st in self.servers:
            self.lb.start_checker(st)


def _limited(servers: Iterable[ServerState]) -> bool:
    """Whether any server has a connection or queue limit (else no server can ever be full)."""
    return any(s.cfg.maxconn is not None or s.cfg.maxqueue is not None for s in servers)


def _derived_maxconn(cfg: Config) -> int:
    """global.maxconn, or what RLIMIT_NOFILE allows: 2 descriptors per connection, 6 with splice (two
    kernel pipes more)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    per_conn = 6 if any(li.splice for li in cfg.listeners) else 2
    return cfgmod.effective_maxconn(cfg.global_.maxconn, nofile, fds_per_conn=per_conn)


def _peer(pc: dict[int, dict[str, int]], row: int, name: str) -> int:
    """A counter summed over the relay workers (0 without workers)."""
    return pc[row].get(name, 0) if row in pc else 0


def _min_flag(client: float | None, server: float | None) -> tuple[float | None, str]:
    if client is None and server is None:
        return None, "c"
    if server is None or (client is not None and client <= server):
        return client, "c"
    return server, "s"


def make_listen_socket(addr: tuple[str, int], backlog: int, reuseport: bool = False) -> socket.socket:
    host, port = addr
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:  # global.workers > 1: every process has its own socket, the kernel spreads connections
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):
            # bind to an address that is not (yet) local, e.g. a VRRP VIP on the backup node
            sock.setsockopt(
                socket.IPPROTO_IP if fam == socket.AF_INET else socket.IPPROTO_IPV6, IP_FREEBIND, 1
            )
        sock.bind((host, port))
        sock.listen(max(1, backlog))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------------------- the balancer


class LoadBalancer:
    """Everything that runs in one tcplb process."""

    def __init__(
        self, cfg: Config, loop: asyncio.AbstractEventLoop | None = None, share: Share | None = None
    ) -> None:
        self.cfg = cfg
        self.loop = loop or asyncio.get_running_loop()
        # global.workers > 1: the shared table (tcplb/workers.py); process 0 is the main one, which alone
        # runs checks, the stats page and the admin API
        self.share = share
        self.nprocs = share.nprocs if share is not None else 1
        self.worker = share is not None and share.proc != 0
        self.on_peer_command: Callable[[dict[str, Any]], None] | None = None  # main process: to the workers
        # main process with workers: row -> counter -> the workers' sums (tcplb/workers.py)
        self.peer_counts: Callable[[], dict[int, dict[str, int]]] | None = None
        self.maxconn = cfgmod.per_process(_derived_maxconn(cfg), self.nprocs)
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

    def total_actconn(self, pc: dict[int, dict[str, int]] | None = None) -> int:
        """Client connections of every process (``actconn`` is this process's)."""
        if self.peer_counts is None:
            return self.actconn
        if pc is None:
            pc = self.peer_counts()
        return self.actconn + sum(_peer(pc, fe.sh_row, "cur") for fe in self.frontends.values())

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

    def reload(self, cfg: Config) -> None:
        """Apply a new configuration in place (SIGHUP). Raises OSError if a new bind fails (nothing changed
        for the listeners opened before; the caller logs it)."""
        self.cfg = cfg
        self.maxconn = cfgmod.per_process(_derived_maxconn(cfg), self.nprocs)
        names = {li.name for li in cfg.listeners}
        for name in list(self.frontends):
            if name not in names:
                fe = self.frontends.pop(name)
                fe.close_sockets()
                fe.stopped = True
                for st in fe.servers:
                    self.stop_checker(st)
                self._event(f"Proxy {name} stopped (removed by reload).")
        # binds may move between listeners: hand sockets over by address
        pool: dict[tuple[str, int], socket.socket] = {}
        for fe in self.frontends.values():
            for addr in [a for a in fe.sockets if a not in set(cfg.listener(fe.name).bind)]:
                pool[addr] = fe.sockets.pop(addr)
        for li in cfg.listeners:
            fe2 = self.frontends.get(li.name)
            if fe2 is None:
                fe2 = Frontend(self, li)
                own = {a: pool.pop(a) for a in li.bind if a in pool}
                fe2.open_sockets(own)
                self.frontends[li.name] = fe2
                for st in fe2.servers:
                    self.start_checker(st)
                self._event(f"Proxy {li.name} started.")
            else:
                own = {a: pool.pop(a) for a in li.bind if a in pool}
                own.update(fe2.sockets)
                fe2.sockets = own
                fe2.update(li)
        for sock in pool.values():
            sock.close()
        self.reloads += 1
        if not self.stopping:
            self.resume_if_room(force=True)

    def stop_accepting(self) -> None:
        self.stopping = True
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
        for sess in list(self.sessions):
            n += 1
            if sess.task is not None and not sess.task.done():
                sess.task.cancel()
            sess.pipe.abort("K", sess.pipe.phase, reset=False)
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
        if st.checker is not None or st.maint or st.removed or self.stopping or st.health_off or self.worker:
            return
        ck = st.cfg.check
        if not ck.enabled:
            return

        def interval() -> float:
            return st.health.interval(ck.inter, ck.fastinter, ck.downinter)

        def report(res: CheckResult) -> None:
            self.on_check(st, res)

        st.checker = Checker(
            ck,
            st.cfg.check_host,
            st.cfg.check_port,
            interval=interval,
            report=report,
            spread=self.cfg.global_.spread_checks,
            source=st.cfg.source,
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
        now = time.monotonic()
        st.lastchg = now
        if tr.up:
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
        self._availability(fe)

    def _availability(self, fe: Frontend) -> None:
        act, bck = count_usable(fe.servers)
        avail = act + bck > 0
        if fe.was_available and not avail:
            self._event(format_no_server(fe.name), logging.ERROR)
        fe.was_available = avail

    # -- admin (stats API) -------------------------------------------------------------------------------
    def set_weight(self, fe_name: str, srv_name: str, weight: int) -> ServerState:
        st = self._find(fe_name, srv_name)
        if not 0 <= weight <= cfgmod.MAX_WEIGHT:
            raise ValueError(f"weight must be 0..{cfgmod.MAX_WEIGHT}")
        st.admin_weight = weight
        self._event(f"{fe_name}/{srv_name} weight set to {weight} (admin)")
        return st

    def set_state(self, fe_name: str, srv_name: str, state: str) -> ServerState:
        """``ready`` | ``drain`` | ``maint`` (HAProxy's ``set server be/srv state``)."""
        st = self._find(fe_name, srv_name)
        if state == "maint":
            if not st.maint:
                st.maint = True
                self.stop_checker(st)
                n = st.flush_queue()
                act, bck = count_usable(st.fe.servers)
                self._event(
                    format_maintenance(
                        fe_name,
                        srv_name,
                        True,
                        active=act,
                        backup=bck,
                        is_backup=st.backup,
                        sessions=st.cur,
                        requeued=n,
                        queued=0,
                        by="admin API",
                    ),
                    logging.WARNING,
                )
                self._availability(st.fe)
        elif state == "drain":
            st.drain = True
            if st.maint:
                st.maint = False
                self.start_checker(st)
            self._event(f"Server {fe_name}/{srv_name} is DRAIN (admin): no new connections.")
        elif state == "ready":
            was = st.maint
            st.maint = False
            st.drain = False
            self.start_checker(st)
            if was:
                act, bck = count_usable(st.fe.servers)
                self._event(
                    format_maintenance(
                        fe_name, srv_name, False, active=act, backup=bck, is_backup=st.backup, by="admin API"
                    )
                )
                st.fe.was_available = act + bck > 0
            else:
                self._event(f"Server {fe_name}/{srv_name} is READY (admin API).")
        else:
            raise ValueError("state must be ready, drain or maint")
        return st

    def set_health(self, fe_name: str, srv_name: str, enable: bool) -> ServerState:
        """HAProxy's ``enable|disable health``: start/stop the active checks. While they are disabled the
        last result is ignored and the server counts as UP ("no check"), as in HAProxy; enabling them
        again starts from that state and the checks decide."""
        st = self._find(fe_name, srv_name)
        if not st.cfg.check.enabled:
            raise ValueError(f"server {fe_name}/{srv_name} has no health check (check = false)")
        if enable and st.health_off:
            st.health_off = False
            self.start_checker(st)
            self._event(f"Health checks of server {fe_name}/{srv_name} enabled (admin API).")
        elif not enable and not st.health_off:
            st.health_off = True
            self.stop_checker(st)
            self._event(
                f"Health checks of server {fe_name}/{srv_name} disabled (admin API): it counts as UP.",
                logging.WARNING,
            )
            tr = st.health.force_up(CheckStatus.UNK, self.loop.time(), "health checks disabled")
            if tr is not None:
                self.on_transition(st, tr)
        return st

    def shutdown_sessions(self, fe_name: str, srv_name: str) -> tuple[ServerState, int]:
        """HAProxy's ``shutdown sessions server``: close every connection on that server (logged with K).
        With ``workers``, every worker does the same with its own (the count is this process's)."""
        st = self._find(fe_name, srv_name)
        if self.share is not None and not self.worker and self.on_peer_command is not None:
            self.on_peer_command({"op": "shutdown-sessions", "listener": fe_name, "server": srv_name})
        n = 0
        for sess in list(self.sessions):
            if sess.srv is st and sess.slot and not sess.pipe.closing:
                n += 1
                if sess.task is not None and not sess.task.done():
                    sess.task.cancel()
                sess.pipe.abort("K", sess.pipe.phase, reset=False)
        self._event(
            f"Server {fe_name}/{srv_name}: {n} sessions killed (admin API).",
            logging.WARNING if n else logging.INFO,
        )
        return st, n

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
        pc = self.peer_counts() if self.peer_counts is not None else {}
        for fe in self.frontends.values():
            fe.rate.tick(fe.stot + _peer(pc, fe.sh_row, "stot"), now)
            q = 0
            for st in fe.servers:
                st.rate.tick(st.stot + _peer(pc, st.sh_row, "stot"), now)
                q += len(st.queue) + _peer(pc, st.sh_row, "qcur")
            if q > fe.be_qmax:
                fe.be_qmax = q
        self._rate_timer = self.loop.call_later(interval, self._sample, interval)

    def _find(self, fe_name: str, srv_name: str) -> ServerState:
        fe = self.frontends.get(fe_name)
        st = fe.server(srv_name) if fe is not None else None
        if st is None:
            raise KeyError(f"no server {fe_name}/{srv_name}")
        return st

    # -- logging -----------------------------------------------------------------------------------------
    def _event(self, msg: str, level: int = logging.INFO) -> None:
        log.log(level, msg)
        if self.on_event is not None:
            self.on_event(msg)

    def log_session(self, sess: Session, asap: bool = False) -> None:
        fe = sess.fe
        if not fe.cfg.log or (self.cfg.global_.log == "none" and self.on_event is None):
            return
        p = sess.pipe
        if fe.cfg.dontlognull and not asap and p.bytes_in == 0 and p.bytes_out == 0:
            return
        line = format_session(sess, asap=asap, actconn=self.actconn)
        tlog.info(line)
        if self.on_event is not None:
            self.on_event(line)

    def snapshot(self) -> dict[str, Any]:
        """Everything the stats page shows, JSON-able. Keys shared with HAProxy's CSV use its field names.

        Bytes include the connections still open (their counts so far on top of the closed ones' totals);
        rates come from the stats timer (:meth:`start_sampling`). Nothing here costs per-connection work
        outside this call.
        """
        now = time.monotonic()
        lnow = self.loop.time()
        pc = self.peer_counts() if self.peer_counts is not None else {}  # the workers' counters, if any
        live: dict[object, list[int]] = {}  # Frontend / ServerState -> [bin, bout] of open sessions
        for sess in self.sessions:
            p = sess.pipe
            bi, bo = p.bytes_in, p.bytes_out
            if not (bi or bo):
                continue
            for key in (sess.fe, sess.srv):
                if key is not None:
                    acc = live.get(key)
                    if acc is None:
                        live[key] = [bi, bo]
                    else:
                        acc[0] += bi
                        acc[1] += bo
        out: dict[str, Any] = {
            "pid": os.getpid(),
            "started": self.started,
            "uptime": time.time() - self.started,
            "actconn": self.total_actconn(pc),
            "maxconn": self.maxconn * self.nprocs,
            "processes": self.nprocs,
            "reloads": self.reloads,
            "listeners": [],
        }
        for fe in self.frontends.values():
            act, bck = count_usable(fe.servers)
            servers: list[dict[str, Any]] = []
            for st in fe.servers:
                lc = st.last_check
                checked = st.checks_enabled
                sb = live.get(st, (0, 0))
                sp = pc.get(st.sh_row, {})
                stot = st.stot + sp.get("stot", 0)
                rate, rate_max, since = st.rate.read(stot, lnow)
                health = "disabled" if st.health_off else "enabled" if st.cfg.check.enabled else "none"
                servers.append(
                    {
                        "name": st.name,
                        "address": st.cfg.address,
                        "addr": st.cfg.address,
                        "status": st.status(),
                        "weight": st.weight,
                        "cfg_weight": st.cfg_weight,
                        "backup": st.backup,
                        "act": 0 if st.backup else 1,
                        "bck": 1 if st.backup else 0,
                        "scur": st.cur + sp.get("cur", 0),
                        "smax": st.smax + sp.get("smax", 0),
                        "slim": st.cfg.maxconn,
                        "stot": stot,
                        "lbtot": st.lbtot + sp.get("lbtot", 0),
                        "rate": rate,
                        "rate_max": rate_max,
                        "lastsess": int(since) if since is not None else None,
                        "qcur": len(st.queue) + sp.get("qcur", 0),
                        "qmax": st.qmax + sp.get("qmax", 0),
                        "qlimit": st.cfg.maxqueue,
                        "bin": st.bin + sb[0] + sp.get("bin", 0),
                        "bout": st.bout + sb[1] + sp.get("bout", 0),
                        "econ": st.econ + sp.get("econ", 0),
                        "eresp": st.eresp + sp.get("eresp", 0),
                        "wretr": st.wretr + sp.get("wretr", 0),
                        "wredis": st.wredis + sp.get("wredis", 0),
                        "chkfail": st.chkfail,
                        "chkdown": st.chkdown,
                        "lastchg": int(now - st.lastchg),
                        "downtime": int(st.downtime + (now - st.down_since if st.down_since else 0)),
                        "check": st.cfg.check.type if st.cfg.check.enabled else None,
                        "health": health,
                        "check_status": str(st.health.status) if checked else None,
                        "check_code": lc.code if lc and checked else None,
                        "check_duration": _ms(lc.duration) if lc and checked else None,
                        "check_duration_ms": _ms(lc.duration) if lc else None,
                        "check_info": lc.detail if lc else "",
                        "last_chk": lc.detail if lc and checked else None,
                        "check_rise": st.health.rise,
                        "check_fall": st.health.fall,
                        "check_health": st.health.health,
                        "maint": st.maint,
                        "drain": st.drain,
                    }
                )
            fb = live.get(fe, (0, 0))
            fp = pc.get(fe.sh_row, {})
            fb = (fb[0] + fp.get("bin", 0), fb[1] + fp.get("bout", 0))
            fcur, fsmax = fe.cur + fp.get("cur", 0), fe.smax + fp.get("smax", 0)
            fstot, fecon = fe.stot + fp.get("stot", 0), fe.econ + fp.get("econ", 0)
            fslim = fe.maxconn * self.nprocs
            rate, rate_max, _ = fe.rate.read(fstot, lnow)
            qcur = sum(s["qcur"] for s in servers)
            if qcur > fe.be_qmax:
                fe.be_qmax = qcur
            last = [s["lastsess"] for s in servers if s["lastsess"] is not None]
            out["listeners"].append(
                {
                    "name": fe.name,
                    "bind": [f"{h}:{p}" for h, p in fe.cfg.bind],
                    "balance": fe.cfg.balance,
                    "scur": fcur,
                    "smax": fsmax,
                    "slim": fslim,
                    "stot": fstot,
                    "rate": rate,
                    "rate_max": rate_max,
                    "bin": fe.bin + fb[0],
                    "bout": fe.bout + fb[1],
                    "active_servers": act,
                    "backup_servers": bck,
                    "status": "OPEN" if fe.accepting else ("FULL" if not fe.stopped else "STOP"),
                    "servers": servers,
                    "backend": {
                        "status": "UP" if act + bck else "DOWN",
                        "act": act,
                        "bck": bck,
                        "weight": sum(s.weight for s in fe.servers if not s.backup and s.usable),
                        "qcur": qcur,
                        "qmax": fe.be_qmax,
                        "scur": fcur,
                        "smax": fsmax,
                        "slim": fslim,
                        "stot": fstot,
                        "lbtot": sum(s["lbtot"] for s in servers),
                        "rate": rate,
                        "rate_max": rate_max,
                        "lastsess": min(last) if last else None,
                        "bin": fe.bin + fb[0],
                        "bout": fe.bout + fb[1],
                        "econ": fecon,
                        "eresp": sum(s["eresp"] for s in servers),
                        "wretr": sum(s["wretr"] for s in servers),
                        "wredis": sum(s["wredis"] for s in servers),
                    },
                }
            )
        return out


# ---------------------------------------------------------------------------------------------- tcplog


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


def iter_servers(lb: LoadBalancer) -> Iterable[tuple[Frontend, ServerState]]:
    for fe in lb.frontends.values():
        for st in fe.servers:
            yield fe, st
