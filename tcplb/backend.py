"""Servers at run time: :class:`ServerState` (counters, queue, health) and its session-rate sampler."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from . import config as cfgmod
from . import slowstart as ss
from .checks import Checker, CheckResult
from .config import Server
from .health import Health
from .session import Cmds

if TYPE_CHECKING:
    from .frontend import Frontend

_SCRATCH = [0]  # ServerState.sh of a server without a shared row: written, never read


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


class Waiter(Protocol):
    """A connection waiting in a server's queue (a :class:`tcplb.frontend.Session`)."""

    def slot_granted(self, srv: ServerState) -> None:
        """A slot of ``srv`` is ours now (already counted in ``srv.cur``)."""

    def queue_dropped(self) -> None:
        """``srv`` left rotation and dropped us from its queue: choose again."""


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
        # rabbitmq check with management: the node's own state (tcplb.mgmt). node_drain: the broker is in
        # maintenance (or not running): no new connections, existing ones are left to the broker.
        self.node_drain = False
        self.node_health: str | None = None  # ready / draining / down / unknown (None: not polled)
        self.node_info = ""
        self.alarms: frozenset[str] = frozenset()  # memory / disk / ...: shown and logged, never acted on
        # slowstart (HAProxy's): loop time at which the ramp began (None: not ramping)
        self.ss_since: float | None = None
        self.cur = 0  # connections connecting or established
        self.queue: deque[Waiter] = deque()
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
        now = fe.lb.loop.time()  # one clock for run-time state: the loop's
        self.lastchg = now
        self.down_since: float | None = None if self.health.up else now
        self.downtime = 0.0
        self.last_check: CheckResult | None = None
        self.health_off = False  # admin: active checks disabled at run time (HAProxy's `disable health`)
        self.rate = RateCounter()  # session rate and lastsess, sampled by the stats timer
        # our connection count goes to sh[sh_cur] at every change and the other processes' counts are at
        # sh[sh_peer_cur]: with global.workers > 1 this server's row in the shared table (tcplb/workers.py),
        # alone a scratch slot nobody reads (no branch per connection)
        self.sh_row = -1
        self.sh: memoryview | list[int] = _SCRATCH
        self.sh_cur = 0
        self.sh_peer_cur: tuple[int, ...] = ()
        self.sh_pfail = 0  # connect failures seen by this relay worker (the main process owns health)
        self.cmds: Cmds[ServerState] = Cmds(self)  # the session machine's commands about it, built once

    # balance.Candidate
    @property
    def backup(self) -> bool:
        return self.cfg.backup

    @property
    def weight(self) -> int:
        """The balancer's weight, in HAProxy's 1/16 units (``tcplb.slowstart``): ``admin_weight * 16``, or
        the ramped weight during a slow start (never 0 while UP with a non-zero weight); 0 when draining.
        Every server of a listener is in the same units, so leastconn and roundrobin ratios are unchanged;
        :attr:`shown_weight` is the user-facing value."""
        if self.drain or self.node_drain:
            return 0
        since = self.ss_since
        if since is not None:
            f = ss.weight_factor(since, self.fe.lb.loop.time(), self.cfg.slowstart or 1.0)
            if f < ss.WEIGHT_SCALE and self.cfg.slowstart:
                return self.admin_weight * f
            self.ss_since = None  # the ramp is over
        return self.admin_weight * ss.WEIGHT_SCALE

    @property
    def shown_weight(self) -> int:
        """The effective weight in configuration units (rounded up, as HAProxy's stats show it)."""
        return -(-self.weight // ss.WEIGHT_SCALE)

    @property
    def throttle(self) -> int | None:
        """Percent of the full weight during a slow start (stats ``throttle``), None otherwise."""
        w = self.weight
        if self.ss_since is None:
            return None
        return ss.throttle(w, self.admin_weight)

    def start_slowstart(self) -> None:
        """The server came back (DOWN → UP, out of maintenance, RabbitMQ maintenance over): ramp its weight
        and connection limit over ``slowstart`` seconds. Never at start-up."""
        if self.cfg.slowstart > 0:
            self.ss_since = self.fe.lb.loop.time()

    @property
    def active_conns(self) -> int:
        peers = self.sh_peer_cur
        if not peers:
            return self.cur + len(self.queue)
        sh = self.sh
        return self.cur + len(self.queue) + sum(sh[i] for i in peers)

    @property
    def usable(self) -> bool:
        return self.health.up and not self.maint and not self.removed

    @property
    def full(self) -> bool:
        m = self.cfg.maxconn  # divided among the processes with global.workers
        if m is None:
            return False
        limit = cfgmod.per_process(m, self.fe.lb.nprocs)
        if self.ss_since is not None and self.cfg.slowstart:  # ramped too (HAProxy's srv_dynamic_maxconn)
            limit = ss.maxconn_limit(limit, self.ss_since, self.fe.lb.loop.time(), self.cfg.slowstart)
        return self.cur >= limit

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
        if self.drain or self.node_drain or self.admin_weight == 0:
            return f"DRAIN {h.fall - h.failures}/{h.fall}" if checked and h.failures else "DRAIN"
        return h.status_text() if checked else "no check"

    def take(self) -> None:
        self.cur += 1
        self.stot += 1
        self.lbtot += 1
        if self.cur > self.smax:
            self.smax = self.cur
        self.sh[self.sh_cur] = self.cur

    def release(self) -> None:
        """A connection slot is free again: hand it to the first waiter of the queue (synchronously: the
        waiter owns the slot before anything else can run, so no timeout can race the hand-over)."""
        self.cur -= 1
        self.sh[self.sh_cur] = self.cur
        q = self.queue
        while q and not self.full:
            w = q.popleft()
            self.take()
            w.slot_granted(self)

    def flush_queue(self) -> int:
        """The server left rotation (down, drain, weight 0, maintenance, removed): every waiter chooses
        again (HAProxy redistributes pending connections). Returns how many."""
        waiters = list(self.queue)
        self.queue.clear()
        for w in waiters:
            w.queue_dropped()
        return len(waiters)

    def enqueue(self, w: Waiter) -> None:
        self.queue.append(w)
        if len(self.queue) > self.qmax:
            self.qmax = len(self.queue)


def _limited(servers: Iterable[ServerState]) -> bool:
    """Whether any server has a connection or queue limit (else no server can ever be full)."""
    return any(s.cfg.maxconn is not None or s.cfg.maxqueue is not None for s in servers)
