"""One listener at run time and the driver of its client connections' session machines.

Each ``[listen.NAME]`` becomes a :class:`Frontend` (listening sockets, see :mod:`tcplb.listen`, plus its
servers, see :mod:`tcplb.backend`). A client connection is a :class:`Session`: a
:class:`~tcplb.session.SessionMachine` (the policy: queue, connect, retry, redispatch, give up, log, release)
plus its I/O (the relay's :class:`~tcplb.relay.Pipe`, one timer at the machine's deadline, the connect attempt
in flight). :meth:`Frontend._run` carries out the machine's commands. Once connected, the relay pumps bytes
with no task and no timer of its own, and the pipe's ``on_close`` ends the machine (log line, slot released).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Collection, Coroutine
from typing import TYPE_CHECKING, Any

from . import config as cfgmod
from .amqpwire import NEED_MORE, NotAmqp, StartReader
from .backend import RateCounter, ServerState, _limited
from .balance import Balancer, eligible, make_balancer, select
from .config import Listener
from .health import CheckStatus
from .listen import Listening
from .proxysend import send_live
from .relay import Pipe, Side, set_keepalive
from .session import (
    FREE,
    GREETING,
    QUEUE,
    REFUSED,
    TIMEOUT,
    Abort,
    CancelConnect,
    Command,
    Connect,
    Dequeue,
    Enqueue,
    Log,
    Passive,
    Release,
    Retry,
    SessionMachine,
    State,
    Take,
    failure_kind,
)
from .splice import start_splice
from .tcplog import TcpLogRecord, format_record, tcplog_line

if TYPE_CHECKING:
    from .lb import LoadBalancer


# -------------------------------------------------------------------------------------------- sessions


class Session(SessionMachine[ServerState]):
    """One client connection: its machine plus its I/O and what its log line needs."""

    __slots__ = (
        "accept_wall",
        "be_queue",
        "fe",
        "greeter",
        "handle",
        "parked",
        "pipe",
        "side",
        "srv_queue",
        "task",
        "timer_at",
    )

    def __init__(self, fe: Frontend, pipe: Pipe, client: tuple[str, int], accept_wall: float) -> None:
        SessionMachine.__init__(self, fe, client)
        self.fe = fe
        self.pipe = pipe
        self.accept_wall = accept_wall
        # the timer at the machine's deadline: a loop timer, or an entry [deadline, self] of the listener's
        # deadline queue (see Frontend._arm), or None
        self.handle: asyncio.TimerHandle | list[Any] | None = None
        self.timer_at: float | None = None
        self.task: _Attempt | None = None  # the connect attempt in flight
        self.side: Side | None = None  # that attempt's protocol
        self.greeter: _Greeting | None = None  # protocol = "amqp": the attempt waiting for Connection.Start
        self.srv_queue = 0  # queue lengths when we entered a queue (log)
        self.be_queue = 0
        self.parked = False

    # the pipe's callbacks
    def pipe_closed(self, _pipe: Pipe) -> None:
        self.fe._closed(self)

    def client_made(self) -> None:
        self.fe._client_made(self)

    def client_lost(self) -> None:
        self.fe._client_lost(self)

    # backend.Waiter
    def slot_granted(self, srv: ServerState) -> None:
        self.fe._run(self, self.granted(srv, self.fe.lb.loop.time()))

    def queue_dropped(self) -> None:
        self.fe._run(self, self.server_left(self.fe.lb.loop.time()))


class _Greeting:
    """One attempt of a protocol-aware connect: the server side, its greeting so far, how many of the
    client's early chunks were sent to it (copies: the originals stay for a retry elsewhere)."""

    __slots__ = ("reader", "sent", "side")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.reader = StartReader()
        self.sent = -1  # -1: nothing sent yet


class _Attempt:
    """One connection attempt: the loop's ``create_connection`` coroutine, stepped by hand as a Task would
    step it, without a Task (a Task per connection costs its creation, its registration in asyncio's weak
    set of every task and the removal from it, and a first step on the next loop iteration: microseconds per
    connection under churn). The outcome goes to :meth:`Frontend._attempt_done`, never from inside
    :meth:`start` (a connect that fails at once is reported on the next loop iteration, as with a Task)."""

    __slots__ = ("cancelling", "coro", "fe", "finished", "sess", "side", "srv", "starting", "waiting")

    def __init__(
        self,
        fe: Frontend,
        sess: Session,
        srv: ServerState,
        side: Side,
        coro: Coroutine[Any, Any, tuple[asyncio.Transport, Side]],
    ) -> None:
        self.fe = fe
        self.sess = sess
        self.srv = srv
        self.side = side
        self.coro = coro
        self.waiting: asyncio.Future[Any] | None = None  # the future the coroutine waits for
        self.cancelling = False
        self.finished = False
        self.starting = False

    def start(self) -> None:
        self.starting = True
        self._step()  # (raises only what a Task would not catch either: KeyboardInterrupt, SystemExit)
        self.starting = False

    def cancel(self) -> None:
        """Like ``Task.cancel``: the coroutine gets CancelledError where it waits (its own clean-up closes
        the socket), and the side's transport, if it was made, is aborted. Nothing is reported."""
        if self.finished or self.cancelling:
            return
        self.cancelling = True
        w = self.waiting
        if w is not None:
            w.cancel()  # its done callback steps the coroutine, which then gets CancelledError
        # else a step is already scheduled (the future was done): it throws CancelledError

    def _step(self, _fut: object = None) -> None:
        self.waiting = None
        coro = self.coro
        try:
            r = coro.throw(asyncio.CancelledError()) if self.cancelling else coro.send(None)
        except StopIteration:
            self._end("", "")
            return
        except asyncio.CancelledError:
            self.finished = True
            tr = self.side.transport
            if tr is not None:
                tr.abort()
            return
        except TimeoutError:  # the kernel's own connect timeout (ETIMEDOUT)
            self._end(TIMEOUT, "connect timeout")
            return
        except OSError as e:
            self._end(failure_kind(e.errno), os.strerror(e.errno) if e.errno else str(e))
            return
        except BaseException:
            self.finished = True
            raise
        if r is None:  # a bare yield (asyncio.sleep(0)): step again on the next iteration
            self.fe.lb.loop.call_soon(self._step)
            return
        r._asyncio_future_blocking = False
        r.add_done_callback(self._step)
        self.waiting = r

    def _end(self, kind: str, info: str) -> None:
        self.finished = True
        if self.cancelling:  # cancelled after the outcome was known: nobody wants it
            tr = self.side.transport
            if tr is not None:
                tr.abort()
            return
        if self.starting:
            self.fe.lb.loop.call_soon(self.fe._attempt_done, self, kind, info)
        else:
            self.fe._attempt_done(self, kind, info)


# ------------------------------------------------------------------------------------------- frontends

_RETRY = State.RETRY


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
        self.sh_row = -1  # row in the shared table (global.workers > 1: tcplb/workers.py)
        self.was_available = any(s.usable for s in self.servers)
        self.limited = _limited(self.servers)
        # whether no server is a backup, for the list it was computed for (see pick)
        self._nb_for: list[ServerState] | None = None
        self._nobackup = False
        self.rate = RateCounter()  # session rate (stats)
        self.be_qmax = 0  # highest total queue of the servers seen by the stats timer or a snapshot
        # the sessions' deadlines in the order they come (most are "now + timeout_connect": in order), with
        # one loop timer for the first; see _arm
        self.deadlines: deque[list[Any]] = deque()  # [deadline, Session or None once cancelled]
        self._dl_timer: asyncio.TimerHandle | None = None
        self._dl_at = 0.0
        self._apply_timeouts()

    def _apply_timeouts(self) -> None:
        """Read what every connection needs of the configuration once, at start and after a reload
        (``tcplb.reload`` calls this once ``lb.cfg``, ``lb.maxconn`` and ``self.cfg`` are the new ones):
        the connection path reads plain attributes, no configuration lookups."""
        cfg = self.cfg
        lb = self.lb
        to = cfg.timeouts
        self.t_connect = to.connect
        self.t_queue = to.queue_wait
        self.retries = cfg.retries  # (with the two above and logasap: the session machine's Context)
        self.redispatch = cfg.redispatch
        self.logasap = lb.verbose_accept or cfg.logasap
        self.bufsize = lb.cfg.global_.bufsize
        self.idle, self.idle_flag = _min_flag(to.client_idle, to.server_idle)
        self.fin_idle, self.fin_flag = _min_flag(to.client_fin_idle, to.server_fin_idle)
        g = lb.maxconn
        self._maxconn = g if cfg.maxconn is None else min(cfgmod.per_process(cfg.maxconn, lb.nprocs), g)
        self.set_nodelay = not (lb.native_accept and cfg.nodelay)  # uvloop sets TCP_NODELAY itself
        ka = cfg.tcpka
        self.ka_client = ka.client if ka is not None else None
        self.ka_server = ka.server if ka is not None else None
        self.amqp = cfg.protocol == "amqp"
        self.splice = cfg.splice
        # sessions are logged when this is True or, with a listener's log on, an event hook is set
        self.log_lines = cfg.log and lb.cfg.global_.log != "none"

    @property
    def maxconn(self) -> int:
        """This process's limit of the listener's connections: its ``maxconn`` (divided among the
        processes) within the process's own."""
        return self._maxconn

    def server(self, name: str) -> ServerState | None:
        for s in self.servers:
            if s.name == name:
                return s
        return None

    # -- session machine context (tcplb.session.Context) -----------------------------------------------
    def pick(
        self, client: tuple[str, int], exclude: Collection[str], pinned: ServerState | None
    ) -> tuple[ServerState | None, str]:
        """The server for a connection: (server, FREE) with a free slot, (server, QUEUE) to wait in its
        queue, or (None, termination state)."""
        srv: ServerState | None
        if pinned is not None and pinned.usable:
            srv = pinned
        elif not self.limited:
            # no server has maxconn/maxqueue: nothing is ever full, no queue (the common case)
            servers = self.servers
            if servers is not self._nb_for:  # (a reload replaces the list whenever a server changes)
                self._nb_for = servers
                self._nobackup = not any(s.backup for s in servers)
            if self._nobackup:  # what select() does without backup servers, without the call
                srv = self.balancer.pick(servers, client, exclude)
            else:
                srv = select(self.balancer, servers, client, exclude, self.cfg.allbackups)
            if srv is None:
                return None, "SC"  # <NOSRV> (nothing eligible; without limits no queue can be full)
            return srv, FREE
        else:
            ex = set(exclude)
            full = {s.name for s in self.servers if s.full or s.queue_full}
            srv = select(self.balancer, self.servers, client, ex | full, self.cfg.allbackups)
            if srv is None:
                # all full? then queue on the one with the shortest queue that still has room
                qfull = {s.name for s in self.servers if s.queue_full}
                srv = select(self.balancer, self.servers, client, ex | qfull, self.cfg.allbackups)
                if srv is None:
                    if any(eligible(s, ex) for s in self.servers):
                        return None, "sQ"  # every queue is full
                    return None, "SC"  # <NOSRV>
        return (srv, QUEUE) if srv.full else (srv, FREE)

    def any_eligible(self, exclude: Collection[str]) -> bool:
        return any(eligible(s, exclude) for s in self.servers)

    # -- sessions ----------------------------------------------------------------------------------------
    def _factory(self, peer: tuple[str, int] | None = None) -> asyncio.BaseProtocol:
        loop = self.lb.loop
        pipe = Pipe(loop, bufsize=self.bufsize)
        sess = Session(self, pipe, peer or ("", 0), time.time())
        pipe.on_close = sess.pipe_closed  # bound methods: cheaper to make than closures
        pipe.on_client_made = sess.client_made
        pipe.on_client_lost = sess.client_lost
        pipe.timeout, pipe.timeout_flag = self.idle, self.idle_flag
        pipe.fin_timeout, pipe.fin_flag = self.fin_idle, self.fin_flag
        return pipe.client

    def _client_made(self, sess: Session) -> None:
        lb = self.lb
        tr = sess.pipe.client.transport
        assert tr is not None
        if not sess.client[0]:
            # uvloop accepts in C and does not keep the address: ask the socket (getpeername fails for a
            # client that reset while in the backlog: SO_PEERNAME still has it; without either it is logged
            # "-:-", as HAProxy logs an unknown address)
            peer = tr.get_extra_info("peername") or peer_after_reset(tr.get_extra_info("socket"))
            if peer:
                sess.client = (peer[0], peer[1])
        if self.set_nodelay:  # (uvloop sets TCP_NODELAY on every TCP transport)
            sock = tr.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if self.cfg.nodelay else 0)
        ka = self.ka_client
        if ka is not None:
            set_keepalive(tr, ka.idle, ka.interval, ka.count)
        if lb.actconn >= lb.maxconn or self.cur >= self._maxconn or self.stopped:
            # accepted by the loop beyond maxconn (it accepts in batches): park it, as if it were still in
            # the kernel's backlog, until a slot frees
            sess.parked = True
            self.parked.append(sess)
            lb.pause_full()
            return
        self._activate(sess)

    def _activate(self, sess: Session) -> None:
        lb = self.lb
        lb.actconn += 1
        cur = self.cur = self.cur + 1
        self.stot += 1
        if cur > self.smax:
            self.smax = cur
        lb.sessions.add(sess)
        if lb.actconn >= lb.maxconn or cur >= self._maxconn:
            lb.pause_full()
        self._run(sess, sess.start(lb.loop.time()))

    def unpark(self) -> bool:
        """Start the oldest parked connection if there is room; True if one was started."""
        lb = self.lb
        while self.parked and lb.actconn < lb.maxconn and self.cur < self.maxconn:
            sess = self.parked.popleft()
            if sess.pipe.closed or sess.pipe.client.lost:
                continue
            sess.parked = False
            self._activate(sess)
            return True
        return False

    def _client_lost(self, sess: Session) -> None:
        """The client socket is gone: if the session is still being set up, the machine gives up. (The pipe
        calls this only until the server side is attached: then the relay owns the client's end.)"""
        if sess.in_setup:
            self._run(sess, sess.client_gone(self.lb.loop.time()))

    def kill(self, sess: Session) -> None:
        """Admin or hard stop: end the session at once (logged with K)."""
        self._run(sess, sess.kill(self.lb.loop.time()))

    # -- the machine's commands --------------------------------------------------------------------------
    def _run(self, sess: Session, cmds: list[Command[ServerState]]) -> None:
        """Carry out the machine's commands in order, then re-arm its one timer."""
        for c in cmds:
            t = type(c)
            if t is Connect:
                self._connect(sess, c.srv)  # type: ignore[union-attr]
            elif t is Take:
                c.srv.take()  # type: ignore[union-attr]
            elif t is Release:
                c.srv.release()  # type: ignore[union-attr]
            elif t is Passive:
                if c.ok:  # type: ignore[union-attr]
                    h = c.srv.health  # type: ignore[union-attr]
                    if h.errors:  # (passive_success() only restarts that count: no call when it is 0)
                        h.passive_success()
                else:
                    self._passive(c)  # type: ignore[arg-type]
            elif t is Log:
                # whether sessions are logged at all (no call per connection with log = "none")
                if self.log_lines or (self.lb.on_event is not None and self.cfg.log):
                    self.lb.log_session(sess, asap=c.asap)  # type: ignore[union-attr]
            elif t is Abort:
                sess.pipe.abort(c.cause, c.phase, reset=False)  # type: ignore[union-attr]
            elif t is Enqueue:
                srv: ServerState = c.srv  # type: ignore[union-attr]
                srv.enqueue(sess)
                sess.srv_queue = len(srv.queue)
                sess.be_queue = sum(len(s.queue) for s in self.servers)
            elif t is Dequeue:
                with contextlib.suppress(ValueError):
                    c.srv.queue.remove(sess)  # type: ignore[union-attr]
            elif t is CancelConnect:
                self._cancel_connect(sess)
            elif t is Retry:
                s2: ServerState = c.srv  # type: ignore[union-attr]
                s2.wretr += 1
                if c.redispatch:  # type: ignore[union-attr]
                    s2.wredis += 1
        if sess.state is _RETRY:  # due now that the failure's commands ran: decide the retry
            self._run(sess, sess.timer(sess.deadline or 0.0))
            return
        # re-arm the one timer at the machine's deadline
        dl = sess.deadline
        h = sess.handle
        if h is not None:
            if sess.timer_at == dl:
                return
            if type(h) is list:
                h[1] = None  # cancelled: the entry no longer holds the session, and is dropped when first
            else:
                h.cancel()  # type: ignore[union-attr]
            sess.handle = None
        if dl is not None:
            self._arm(sess, dl)

    def _arm(self, sess: Session, dl: float) -> None:
        """Arm the session's timer at ``dl``. Most deadlines are "now + timeout_connect" and so come in
        order: they go into the listener's deadline queue, served by one loop timer for the first entry,
        instead of a loop timer per connection (created and cancelled: several microseconds of the
        per-connection cost). A deadline earlier than the queue's last one gets a loop timer of its own.
        A cancelled entry lets go of its session at once and stays in the queue, empty, until it comes first:
        empty entries are dropped here and when the timer runs."""
        sess.timer_at = dl
        q = self.deadlines
        if q and dl < q[-1][0]:
            sess.handle = self.lb.loop.call_at(dl, self._timer, sess)
            return
        while q and q[0][1] is None:  # drop cancelled entries in front (connects that ended in order)
            q.popleft()
        e = [dl, sess]
        q.append(e)
        sess.handle = e
        if self._dl_timer is None:
            at = q[0][0]
            self._dl_at = at
            self._dl_timer = self.lb.loop.call_at(at, self._deadlines_due)

    def _deadlines_due(self) -> None:
        """The first deadline of the queue is due: run the timers of every session whose deadline passed."""
        self._dl_timer = None
        now = self.lb.loop.time()
        if now < self._dl_at:
            now = self._dl_at  # the loop may run a timer up to its clock resolution early
        q = self.deadlines
        while q and q[0][0] <= now:
            e = q.popleft()
            sess: Session | None = e[1]
            if sess is not None:
                e[1] = None
                sess.handle = None
                self._run(sess, sess.timer(now))
        while q and q[0][1] is None:
            q.popleft()
        if q and self._dl_timer is None:
            self._dl_at = at = q[0][0]
            self._dl_timer = self.lb.loop.call_at(at, self._deadlines_due)

    def _timer(self, sess: Session) -> None:
        sess.handle = None
        at = sess.timer_at
        now = self.lb.loop.time()
        if at is not None and now < at:
            now = at  # the loop may run a timer up to its clock resolution early
        self._run(sess, sess.timer(now))

    def _passive(self, c: Passive[ServerState]) -> None:
        srv = c.srv
        if c.ok:
            srv.health.passive_success()
            return
        # a failed connect counts against the server at once (local resource errors never come here)
        srv.econ += 1
        self.econ += 1
        if not srv.checks_enabled:
            return
        if self.lb.acct.connect_failed(srv, c.timeout):
            return  # another process owns this server's health (global.workers: tcplb/workers.py)
        status = CheckStatus.L4TOUT if c.timeout else CheckStatus.L4CON
        tr = srv.health.passive_failure(
            status=CheckStatus.HANA, now=self.lb.loop.time(), info=f"{status}: {c.info}", timeout=c.timeout
        )
        if tr is not None:
            self.lb.on_transition(srv, tr)
        h = srv.health
        if h.hurry and srv.checker is not None:  # the next check at fastinter from now (health_adjust)
            ck = srv.cfg.check
            srv.checker.rearm(h.interval(ck.inter, ck.fastinter, ck.downinter))

    def _connect(self, sess: Session, srv: ServerState) -> None:
        side = sess.pipe.new_server_side()
        sess.side = side
        scfg = srv.cfg
        loop = self.lb.loop
        if scfg.source:
            coro = loop.create_connection(side.factory, scfg.host, scfg.port, local_addr=(scfg.source, 0))
        else:
            coro = loop.create_connection(side.factory, scfg.host, scfg.port)
        att = sess.task = _Attempt(self, sess, srv, side, coro)
        att.start()

    def _cancel_connect(self, sess: Session) -> None:
        t = sess.task
        side = sess.side
        sess.task = None
        sess.side = None
        if t is not None:
            t.cancel()
        if sess.greeter is not None:  # connected, waiting for the greeting: drop that connection
            sess.greeter = None
            sess.pipe.greet = None
            sess.pipe.server_early = []
            if side is not None and side.transport is not None:
                side.transport.abort()

    # -- protocol-aware connect (protocol = "amqp") ----------------------------------------------------------
    def _greet(self, sess: Session, side: Side) -> None:
        """TCP is up: send a copy of the client's first bytes (now, or when they come) and wait for
        Connection.Start before the connection counts as established (tcplb/session.py)."""
        pipe = sess.pipe
        g = _Greeting(side)
        sess.side = side
        sess.greeter = g
        pipe.greet = lambda s, data: self._greet_event(sess, g, s, data)
        self._run(sess, sess.tcp_up(self.lb.loop.time(), self.idle))
        if pipe.early and sess.greeter is g:
            self._greet_send(sess, g)

    def _greet_send(self, sess: Session, g: _Greeting) -> None:
        tr = g.side.transport
        assert tr is not None
        early = sess.pipe.early
        g.sent = len(early)
        tr.writelines(list(early))  # the chunks are never written again: sending them is copying them
        self._run(sess, sess.greeting_sent(self.lb.loop.time(), self.cfg.timeouts.greeting_wait))

    def _greet_event(self, sess: Session, g: _Greeting, side: Side, data: bytes | bytearray | None) -> None:
        if sess.greeter is not g:
            return  # an attempt that already ended
        pipe = sess.pipe
        if side is pipe.client:
            if data is not None and g.sent < 0:
                self._greet_send(sess, g)
            return
        if side is not g.side:
            return
        r = g.reader.feed(bytes(data)) if data is not None else g.reader.feed_eof()
        if r is NEED_MORE:
            return
        now = self.lb.loop.time()
        sess.greeter = None
        sess.side = None
        pipe.greet = None
        if isinstance(r, NotAmqp):
            pipe.server_early = []
            if side.transport is not None:
                side.transport.abort()
            self._run(sess, sess.failed(now, GREETING, f"no AMQP greeting: {r.reason}"))
            return
        # Connection.Start: established. The chunks this server already has are not sent again.
        if g.sent > 0:
            del pipe.early[: g.sent]
            pipe.early_size = sum(len(c) for c in pipe.early)
        cmds = sess.connected(now)
        pipe.on_client_lost = None  # the client's end is the relay's from now on (see _client_lost)
        pipe.attach_server(side)  # the greeting goes to the client, later client bytes to the server
        if not pipe.closed:
            self._run(sess, cmds)
            if self.splice:
                self.lb.loop.call_soon(start_splice, pipe)

    def _attempt_done(self, att: _Attempt, kind: str, info: str) -> None:
        """A connection attempt ended (``kind`` "": connected); its outcome goes to the machine."""
        sess = att.sess
        side = att.side
        if sess.side is not side:  # abandoned (cannot happen without a cancel; kept defensive)
            if side.transport is not None:
                side.transport.abort()
            return
        sess.task = None
        sess.side = None
        loop = self.lb.loop
        if not kind:
            st = side.transport
            assert st is not None
            if side.lost:
                kind, info = REFUSED, "connection reset"
            else:
                pipe = sess.pipe
                ka = self.ka_server
                if ka is not None:
                    set_keepalive(st, ka.idle, ka.interval, ka.count)
                sp = att.srv.cfg.send_proxy
                if sp != "none":  # PROXY header first, in one write (tcplb/proxysend.py)
                    send_live(st, sp, pipe.client.transport)
                if self.amqp:  # established only when the server greets
                    self._greet(sess, side)
                    return
                cmds = sess.connected(loop.time())
                pipe.on_client_lost = None  # the client's end is the relay's from now on (see _client_lost)
                pipe.attach_server(side)
                if not pipe.closed:
                    self._run(sess, cmds)
                    if self.splice:
                        # once this iteration's writes (early data) went out; stays in user space if not
                        loop.call_soon(start_splice, pipe)
                return
        self._run(sess, sess.failed(loop.time(), kind, info))

    def _closed(self, sess: Session) -> None:
        lb = self.lb
        p = sess.pipe
        if sess.parked:
            # accepted beyond maxconn and gone before it got a slot: nothing to count, nothing to log
            with contextlib.suppress(ValueError):
                self.parked.remove(sess)
            sess.closed(lb.loop.time())
            return
        cmds = sess.closed(lb.loop.time())  # the log line (counts as HAProxy logs them: this one included)
        srv = sess.srv
        bin_ = p.client.nbytes  # (Pipe.bytes_in, bytes_out)
        ss = p.server
        bout = ss.nbytes if ss is not None else 0
        if srv is not None:
            srv.bin += bin_
            srv.bout += bout
            term = p.term
            if term[0] == "S" and term[1] in "DL":
                srv.eresp += 1  # the server aborted an established connection (HAProxy's eresp in TCP mode)
        self._run(sess, cmds)
        lb.actconn -= 1
        self.cur -= 1
        lb.sessions.discard(sess)
        self.bin += bin_
        self.bout += bout
        if lb.paused_full:
            lb.resume_if_room()
        if lb.actconn == 0 and lb._idle is not None:
            lb._idle.set()


_SO_PEERNAME = getattr(socket, "SO_PEERNAME", 28)
_SOCKADDR_LEN = {socket.AF_INET: 16, socket.AF_INET6: 28}  # sockaddr_in, sockaddr_in6


def peer_after_reset(sock: socket.socket | None) -> tuple[str, int] | None:
    """The peer address of an accepted TCP socket whose connection is already reset, where getpeername()
    fails (ENOTCONN): Linux's ``SO_PEERNAME`` skips that state check (the address is kept until the socket
    is closed). The length must be exactly the family's sockaddr (a longer buffer is EINVAL)."""
    if sock is None:
        return None
    n = _SOCKADDR_LEN.get(sock.family)
    if n is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERNAME, n)
    except OSError:
        return None
    if len(raw) < n:
        return None
    port = int.from_bytes(raw[2:4], "big")
    ip = raw[4:8] if n == 16 else raw[8:24]
    if not port:
        return None
    return socket.inet_ntop(sock.family, ip), port


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
