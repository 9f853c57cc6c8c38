"""Graceful rebalancing and the maximum connection lifetime, wired: a pure policy and a thin I/O driver.

:class:`Policy` (pure, time passed in) decides, per listener, which established connections to close and when
to look again:

* **rebalancing** (``[listen.NAME.rebalance] enabled = true``): when a server comes back (DOWN → UP, out of
  maintenance, RabbitMQ maintenance over) the policy waits ``delay_after_up`` (default: the server's
  ``slowstart``, so the ramp is over; 0 without one), then runs the planner of :mod:`tcplb.rebalance` until
  the spread is within ``tolerance`` both ways (surplus connections off the most loaded servers, then, for a
  server below its floor, off the servers above their share; oldest first, at most ``rate`` closes per
  second, never more than the surplus or below a donor's share). On demand (``tcplb ctl rebalance LISTENER``,
  ``POST /api/rebalance/<listener>``) the same run starts at once, whether ``enabled`` is set or not.
* **maximum lifetime** (``max_lifetime``, Envoy's ``max_connection_duration``, with ``lifetime_jitter``):
  a connection is closed once it is older than ``max_lifetime * (1 + U[0, jitter))`` (the jitter fixed per
  connection, :func:`tcplb.rebalance.lifetime`). Not rate-bounded (Envoy's model): the jitter spreads the
  reconnects of connections opened together.

Both close **gracefully**: :class:`Driver` asks the server's RabbitMQ management API (its
``check.management``) to ``DELETE /api/connections/{name}`` with ``X-Reason``; the broker sends the client
``connection.close`` 320 ``CONNECTION_FORCED - <reason>``, the client answers and closes, and tcplb relays
that like any other end of a connection. tcplb itself never resets or cuts such a connection. A close that
fails (API unreachable, 404, no administrator tag) is logged and counted; the connection stays and may be
chosen again (rebalancing) or is retried after :data:`RETRY_AFTER` (lifetime).

With ``global.workers`` > 1 every process runs its own driver over its own connections with ``rate / workers``
(the kernel spreads new connections evenly over the processes, so balancing each process's share balances the
whole); the admin API's on-demand request goes to the main process and, through its control channel, to the
workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from . import mgmt
from .config import Rebalance
from .rebalance import Close, Conn, Rebalancer, ServerLoad, expired, lifetime
from .session import State

if TYPE_CHECKING:
    from .backend import ServerState
    from .frontend import Frontend, Session
    from .lb import LoadBalancer

__all__ = ["RETRY_AFTER", "Driver", "MissingManagement", "Order", "Policy", "Step"]

RETRY_AFTER = 5.0  # a failed lifetime close is tried again after this many seconds
MIN_STEP = 0.02  # timers closer together than this are coalesced
WATCH = 1.0  # with enabled: how often the servers are looked at for a return (seconds)

Kind = Literal["rebalance", "max-lifetime"]


@dataclass(frozen=True, slots=True)
class Order:
    """Close this connection (through the management API) for this reason."""

    server: str
    conn: Conn
    kind: Kind
    reason: str


@dataclass(frozen=True, slots=True)
class Step:
    orders: tuple[Order, ...]
    next_at: float | None  # when to call step() again (None: only on an event)
    rebalancing: bool  # a rebalancing run is in progress (or waiting for a server's delay)
    surplus: int  # connections above the limits after this step (rebalancing), 0 otherwise
    limits: dict[str, int] = field(default_factory=dict)
    finished: bool = False  # a rebalancing run ended with this step (every server within its limit)


class Policy:
    """One listener's rebalancing and lifetime decisions. Pure: ``now`` comes in, nothing is closed here."""

    def __init__(self, cfg: Rebalance, *, seed: bytes | str | int = 0, nprocs: int = 1) -> None:
        self.cfg = cfg
        self.seed = seed
        self.planner = Rebalancer(
            cfg.tolerance,
            cfg.rate / max(1, nprocs),
            burst=cfg.burst,
            settle=cfg.settle,
            min_age=cfg.min_age,
        )
        self.pending: dict[str, float] = {}  # server -> when its return starts a run
        self.running = False  # a rebalancing run is in progress
        self.closing: set[Hashable] = set()  # lifetime closes ordered (until the connection is gone)
        self.retry_at: dict[Hashable, float] = {}  # lifetime closes that failed: try again then

    def server_back(self, name: str, now: float, slowstart: float = 0.0) -> None:
        """``name`` came back: with ``enabled``, a run starts after ``delay_after_up`` (default its
        slowstart)."""
        if not self.cfg.enabled:
            return
        delay = self.cfg.delay_after_up if self.cfg.delay_after_up is not None else slowstart
        self.pending[name] = now + max(0.0, delay)

    def request(self) -> None:
        """On demand: a run starts at the next step, whatever ``enabled`` says."""
        self.running = True

    def failed(self, order: Order, now: float) -> None:
        """The close of ``order`` failed: the connection stays."""
        if order.kind == "rebalance":
            self.planner.forget(order.conn.id)
        else:
            self.closing.discard(order.conn.id)
            self.retry_at[order.conn.id] = now + RETRY_AFTER

    def lifetime_of(self, conn: Conn) -> float | None:
        lt = self.cfg.max_lifetime
        return None if lt is None else lifetime(lt, self.cfg.lifetime_jitter, self.seed, conn.id)

    def step(self, servers: Sequence[ServerLoad], now: float) -> Step:
        present = {c.id for s in servers for c in s.conns}
        self.closing &= present
        self.retry_at = {k: t for k, t in self.retry_at.items() if k in present}
        orders: list[Order] = []
        due: list[float] = []

        # maximum lifetime first: those connections go anyway, rebalancing must not count them
        lt = self.cfg.max_lifetime
        if lt is not None:
            for s in servers:
                cands = [
                    c for c in s.conns if c.id not in self.closing and self.retry_at.get(c.id, now) <= now
                ]
                old, nxt = expired(cands, now, lt, self.cfg.lifetime_jitter, self.seed)
                if nxt is not None:
                    due.append(nxt)
                for c in old:
                    self.closing.add(c.id)
                    self.retry_at.pop(c.id, None)
                    age = now - c.opened_at
                    orders.append(
                        Order(
                            s.name,
                            c,
                            "max-lifetime",
                            f"max-lifetime: connection open {age:.0f}s, longer than its lifetime of "
                            f"{self.lifetime_of(c) or lt:.0f}s",
                        )
                    )
            due.extend(t for t in self.retry_at.values() if t > now)

        # rebalancing: started by a server's return (after its delay) or on demand
        for name, at in list(self.pending.items()):
            if at <= now:
                del self.pending[name]
                self.running = True
            else:
                due.append(at)
        surplus = 0
        limits: dict[str, int] = {}
        finished = False
        if self.running:
            view = [
                ServerLoad(s.name, s.weight, [c for c in s.conns if c.id not in self.closing], s.eligible)
                for s in servers
            ]
            plan = self.planner.plan(view, now)
            orders.extend(Order(c.server, c.conn, "rebalance", _reason(c)) for c in plan.close)
            surplus, limits = plan.surplus, dict(plan.limits)
            if plan.next_at is None:
                self.running = False  # balanced, and every moved client is assumed back
                finished = True
            else:
                due.append(plan.next_at)
        return Step(
            tuple(orders),
            min(due, default=None),
            self.running or bool(self.pending),
            surplus,
            limits,
            finished,
        )


def _reason(c: Close) -> str:
    return c.reason  # "rebalance: rmq1 above its limit of 22 connections"


# -------------------------------------------------------------------------------------------------- I/O


class MissingManagement(ValueError):
    """Rebalancing was asked for, but a server has no management API to close connections through."""


@dataclass
class Counters:
    rebalance: int = 0  # connections closed (the broker said 204) to rebalance
    lifetime: int = 0  # ... because they reached their maximum lifetime
    failed: int = 0  # closes the management API did not do


def connection_name(sess: Session) -> str | None:
    """The name RabbitMQ gives ``sess``'s server connection (``tcplb.mgmt.connection_name``): tcplb's
    upstream socket as the broker sees it, or, with ``send_proxy``, the addresses in the PROXY header (the
    client and the address it dialled). None when the sockets' addresses are unknown."""
    srv = sess.srv
    side = sess.pipe.server
    if srv is None or side is None or side.transport is None:
        return None
    try:
        if srv.cfg.send_proxy != "none":
            ct = sess.pipe.client.transport
            if ct is None:
                return None
            peer, local = ct.get_extra_info("peername"), ct.get_extra_info("sockname")
        else:
            t = side.transport
            peer, local = t.get_extra_info("sockname"), t.get_extra_info("peername")
        if not peer or not local:
            return None
        return mgmt.connection_name(peer, local)
    except (TypeError, ValueError):
        return None


def eligible(st: ServerState) -> bool:
    """Takes part in the balance: usable (UP, not in maintenance), in rotation (weight > 0: not drained by
    the admin or by RabbitMQ's maintenance mode), not a backup."""
    return st.usable and st.weight > 0 and not st.backup


def management_problem(fe: Frontend) -> str | None:
    """Why connections of ``fe`` cannot be closed gracefully (the first server without management), or
    None."""
    for i, st in enumerate(fe.servers):
        if st.cfg.check.management is None:
            return (
                f"server {fe.name}/{st.name} has no management API to close connections through: set "
                f'listen.{fe.name}.server[{i}].check.management (check type "rabbitmq"; the user needs the '
                "administrator tag); tcplb never resets connections to rebalance"
            )
    return None


class Driver:
    """The I/O around :class:`Policy` for one :class:`~tcplb.lb.LoadBalancer`: which sessions exist, one
    timer, the management API calls, logs and counters."""

    def __init__(self, lb: LoadBalancer) -> None:
        self.lb = lb
        self.policies: dict[str, Policy] = {}
        self.counters: dict[tuple[str, str], Counters] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.started = False
        self.last: dict[str, Step] = {}
        self.seen: dict[tuple[str, str], tuple[bool, float | None]] = {}  # (eligible, ramp start) per server
        # test hook: replaces mgmt.close_connection (host, port, name, reason, user, password, timeout)
        self.close_fn = mgmt.close_connection

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.started = True
        self.reconfigure()

    def stop(self) -> None:
        self.started = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_at = None

    def reconfigure(self) -> None:
        """After a start or a reload: a policy per listener that needs one (kept when its settings did not
        change), none for the others."""
        for name in list(self.policies):
            fe = self.lb.frontends.get(name)
            if fe is None or fe.cfg.rebalance != self.policies[name].cfg:
                del self.policies[name]
        for name, fe in self.lb.frontends.items():
            if fe.cfg.rebalance.active and name not in self.policies:
                self.policies[name] = self._policy(fe)
        self._watch()  # the current states are the baseline: a start is not a return
        self._arm(self.lb.loop.time())

    def _policy(self, fe: Frontend) -> Policy:
        return Policy(fe.cfg.rebalance, seed=f"{os.getpid()}:{fe.name}", nprocs=self.lb.nprocs)

    def count(self, fe_name: str, srv_name: str) -> Counters:
        c = self.counters.get((fe_name, srv_name))
        if c is None:
            c = self.counters[(fe_name, srv_name)] = Counters()
        return c

    # -- events --------------------------------------------------------------------------------------
    def server_back(self, st: ServerState) -> None:
        """``st`` came back (the one place every return goes through: ``ServerState.start_slowstart``)."""
        pol = self.policies.get(st.fe.name)
        if pol is None or not self.started or not pol.cfg.enabled:
            return
        now = self.lb.loop.time()
        pol.server_back(st.name, now, st.cfg.slowstart)
        self.lb.event(
            f"Server {st.fe.name}/{st.name} is back: rebalancing {st.fe.name} in "
            f"{max(0.0, pol.pending[st.name] - now):.1f}s."
        )
        self._arm(now)

    def request(self, fe_name: str, forward: bool = True) -> dict[str, Any]:
        """On demand (``tcplb ctl rebalance``): start a run now. Raises KeyError for an unknown listener,
        :class:`MissingManagement` when a server has no management API."""
        fe = self.lb.frontends.get(fe_name)
        if fe is None:
            raise KeyError(f"no listener {fe_name}")
        problem = management_problem(fe)
        if problem is not None:
            raise MissingManagement(problem)
        if forward:  # the other processes (global.workers), through the accounting seam when it has one
            tell = getattr(getattr(self.lb, "acct", None), "tell_others", None)
            if callable(tell):  # no-op alone and in a worker; the main process broadcasts
                tell({"op": "rebalance", "listener": fe_name})
        pol = self.policies.get(fe_name)
        if pol is None:
            pol = self.policies[fe_name] = self._policy(fe)
        pol.request()
        now = self.lb.loop.time()
        step = self._step(fe, pol, now)
        self._arm(now)
        per = self.loads(fe)
        return {
            "listener": fe_name,
            "closing_now": len(step.orders),
            "surplus": step.surplus,
            "limits": step.limits,
            "connections": {s.name: len(s.conns) for s in per},
            "rate": pol.planner.rate,
            "processes": self.lb.nprocs,
        }

    # -- the loop ------------------------------------------------------------------------------------
    def loads(self, fe: Frontend) -> list[ServerLoad]:
        """The established connections of ``fe`` per server, as the planner sees them."""
        conns: dict[str, list[Conn]] = {st.name: [] for st in fe.servers}
        for sess in self.lb.sessions:
            srv = sess.srv
            if (
                sess.fe is fe
                and srv is not None
                and sess.state is State.DATA
                and not sess.pipe.closing
                and srv.name in conns
            ):
                conns[srv.name].append(Conn(sess, sess.t0))
        return [ServerLoad(st.name, st.admin_weight, conns[st.name], eligible(st)) for st in fe.servers]

    def _watch(self) -> None:
        """Servers that came back since the last look: usable again (DOWN -> UP, out of maintenance, out of
        a drain) or a new slowstart ramp (every return starts one when slowstart is set)."""
        for name, pol in self.policies.items():
            fe = self.lb.frontends.get(name)
            if fe is None or not pol.cfg.enabled:
                continue
            for st in fe.servers:
                key = (name, st.name)
                now_ok, ramp = eligible(st), st.ss_since
                was = self.seen.get(key)
                self.seen[key] = (now_ok, ramp)
                if was is not None and now_ok and (not was[0] or (ramp is not None and ramp != was[1])):
                    self.server_back(st)

    def _run(self) -> None:
        self.timer = None
        self.timer_at = None
        if not self.started:
            return
        self._watch()
        now = self.lb.loop.time()
        for name, pol in list(self.policies.items()):
            fe = self.lb.frontends.get(name)
            if fe is not None:
                self._step(fe, pol, now)
        self._arm(now)

    def _step(self, fe: Frontend, pol: Policy, now: float) -> Step:
        step = pol.step(self.loads(fe), now)
        self.last[fe.name] = step
        for order in step.orders:
            self._close(fe, pol, order)
        if step.finished:
            self.lb.event(
                f"Rebalancing {fe.name}: done, every server within its limit "
                f"({', '.join(f'{k} {v}' for k, v in sorted(step.limits.items()))})."
            )
        return step

    def _arm(self, now: float) -> None:
        """One timer for every policy: at the earliest time one of them asked for."""
        if not self.started:
            return
        due: list[float] = []
        for name, pol in self.policies.items():
            last = self.last.get(name)
            if last is None:
                due.append(now)  # never looked at yet
            elif last.next_at is not None:
                due.append(last.next_at)
            due.extend(pol.pending.values())
            if pol.cfg.enabled:
                due.append(now + WATCH)  # look for servers that came back
        if not due:
            if self.timer is not None:
                self.timer.cancel()
                self.timer, self.timer_at = None, None
            return
        at = max(min(due), now + MIN_STEP)
        if self.timer is not None and self.timer_at is not None:
            if self.timer_at <= at:
                return
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.lb.loop.call_at(at, self._run)

    # -- closing -------------------------------------------------------------------------------------
    def _close(self, fe: Frontend, pol: Policy, order: Order) -> None:
        sess: Session = order.conn.id  # type: ignore[assignment]
        st = fe.server(order.server)
        name = connection_name(sess)
        m = st.cfg.check.management if st is not None else None
        c = self.count(fe.name, order.server)
        if st is None or m is None or name is None:
            c.failed += 1
            why = "no management API configured" if m is None else "its addresses are unknown"
            self.lb.event(
                f"{order.kind}: cannot close a connection of {fe.name}/{order.server}: {why}.",
                logging.WARNING,
            )
            pol.failed(order, self.lb.loop.time())
            return
        host = m.host if m.host is not None else st.cfg.check_host
        client = sess.client
        reason = f"tcplb {order.reason}"
        task = self.lb.loop.create_task(self._do_close(fe, st, pol, order, name, client, host, m, reason))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _do_close(
        self,
        fe: Frontend,
        st: ServerState,
        pol: Policy,
        order: Order,
        name: str,
        client: tuple[str, int],
        host: str,
        m: Any,
        reason: str,
    ) -> None:
        res = await self.close_fn(
            host, m.port, name, reason, user=m.user, password=m.password, timeout=m.timeout
        )
        c = self.count(fe.name, st.name)
        who = f"{client[0]}:{client[1]}" if client and client[0] else "?"
        if res.closed:
            if order.kind == "rebalance":
                c.rebalance += 1
            else:
                c.lifetime += 1
            self.lb.event(
                f"Server {fe.name}/{st.name}: connection from {who} ('{name}') closed by the broker "
                f"({order.kind}): {order.reason}."
            )
        else:
            c.failed += 1
            pol.failed(order, self.lb.loop.time())
            self.lb.event(
                f"Server {fe.name}/{st.name}: could not close connection from {who} ('{name}') for "
                f"{order.kind} through the management API at {host}:{m.port}: {res.reason}.",
                logging.WARNING,
            )
            with contextlib.suppress(RuntimeError):
                self._arm(self.lb.loop.time())

    def snapshot(self, fe_name: str, srv_name: str) -> dict[str, int]:
        c = self.counters.get((fe_name, srv_name)) or Counters()
        return {"rebalance_closes": c.rebalance, "lifetime_closes": c.lifetime, "close_failures": c.failed}
