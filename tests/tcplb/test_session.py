"""The session machine (tcplb/session.py) in virtual time, no sockets: transcripts of every termination
state, every timeout in every phase, retries and redispatch, queue-timeout races, servers leaving rotation
with queued connections, admin kills; and hypothesis over event sequences for its invariants."""

from __future__ import annotations

import errno
from collections.abc import Collection
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb.session import (
    FREE,
    LOCAL,
    QUEUE,
    REFUSED,
    TIMEOUT,
    Abort,
    CancelConnect,
    Cmds,
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


class Srv:
    def __init__(self, name: str) -> None:
        self.name = name
        self.usable = True
        self.full = False  # pick() answers QUEUE
        self.queue_full = False
        self.cmds = Cmds(self)  # as tcplb's servers keep theirs

    def __repr__(self) -> str:
        return self.name


class Ctx:
    """A listener: first usable, non-excluded server in order (pinned first when usable)."""

    def __init__(self, n: int = 3, **kw: Any) -> None:
        self.servers = [Srv(c) for c in "abcdefgh"[:n]]
        self.retries = 3
        self.redispatch = -1  # redispatch = true: the last retry
        self.t_connect: float | None = 1.0
        self.t_queue: float | None = 5.0
        self.asap = False
        self.picks = 0
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def logasap(self) -> bool:
        return self.asap

    def pick(
        self, client: tuple[str, int], exclude: Collection[str], pinned: Srv | None
    ) -> tuple[Srv | None, str]:
        self.picks += 1
        if pinned is not None and pinned.usable:
            return pinned, QUEUE if pinned.full else FREE
        cands = [s for s in self.servers if s.usable and s.name not in exclude]
        if not cands:
            return None, "SC"
        room = [s for s in cands if not s.queue_full]
        if not room:
            return None, "sQ"
        free = [s for s in room if not s.full]
        s = free[0] if free else room[0]
        return s, QUEUE if s.full else FREE

    def any_eligible(self, exclude: Collection[str]) -> bool:
        return any(s.usable and s.name not in exclude for s in self.servers)


def machine(ctx: Ctx | None = None) -> tuple[SessionMachine[Srv], Ctx]:
    ctx = ctx or Ctx()
    return SessionMachine(ctx, ("192.0.2.7", 40000)), ctx


def state(m: SessionMachine[Srv]) -> State:
    return m.state


def fire(m: SessionMachine[Srv]) -> list[Any]:
    """What the driver does after the commands: a RETRY decision is due at once."""
    assert m.state is State.RETRY
    return m.timer(m.next_deadline() or 0.0)


# -------------------------------------------------------------------------------------- transcripts


def test_happy_path() -> None:
    m, ctx = machine()
    a = ctx.servers[0]
    assert m.start(10.0) == [Take(a), Connect(a)]
    assert m.state is State.CONNECTING and m.next_deadline() == 11.0
    assert m.connected(10.2) == [Passive(a, True)]
    assert state(m) is State.DATA and m.next_deadline() is None
    assert m.t_queue == 0.0 and m.t_connect == pytest.approx(0.2)
    assert m.closed(50.0) == [Log(False), Release(a)]
    assert state(m) is State.CLOSED
    assert m.closed(51.0) == []  # once


def test_logasap_line_at_connect() -> None:
    m, ctx = machine(Ctx(asap=True))
    m.start(0.0)
    assert m.connected(0.1) == [Passive(ctx.servers[0], True), Log(True)]


def test_no_server_is_SC() -> None:
    m, ctx = machine()
    for s in ctx.servers:
        s.usable = False
    assert m.start(0.0) == [Abort("S", "C")]
    assert m.state is State.CLOSING and m.next_deadline() is None
    assert m.closed(0.0) == [Log(False)]


def test_every_queue_full_is_sQ() -> None:
    m, ctx = machine()
    for s in ctx.servers:
        s.full = s.queue_full = True
    assert m.start(0.0) == [Abort("s", "Q")]


def test_queue_then_slot_granted() -> None:
    m, ctx = machine()
    a = ctx.servers[0]
    for s in ctx.servers:
        s.full = True
    assert m.start(0.0) == [Enqueue(a)]
    assert m.state is State.QUEUED and m.next_deadline() == 5.0
    assert m.timer(4.9) == []  # early wakeup: nothing
    assert m.granted(a, 2.0) == [Connect(a)]
    assert m.t_queue == 2.0 and m.next_deadline() == 3.0
    assert m.timer(5.0) == [CancelConnect(), Release(a), Passive(a, False, True, "connect timeout")]


def test_queue_timeout_is_sQ_and_leaves_the_queue() -> None:
    m, ctx = machine()
    a = ctx.servers[0]
    a.full = True
    ctx.servers[1].usable = ctx.servers[2].usable = False
    m.start(0.0)
    assert m.timer(5.0) == [Dequeue(a), Abort("s", "Q")]
    assert m.t_queue == 5.0 and not m.slot
    assert m.closed(5.0) == [Log(False)]  # nothing to release


def test_grant_and_queue_timeout_in_the_same_iteration_leak_nothing() -> None:
    """Defect 3: whichever runs first, the slot is used or given back."""
    # the grant first: the queue deadline is gone, the timer that fires at the same time is stale
    m, ctx = machine()
    a = ctx.servers[0]
    for s in ctx.servers:
        s.full = True
    m.start(0.0)
    assert m.granted(a, 5.0) == [Connect(a)]
    assert m.timer(5.0) == []  # the connect deadline is 6.0
    # the timeout first: a slot handed over afterwards goes straight back
    m2, ctx2 = machine()
    b = ctx2.servers[0]
    for s in ctx2.servers:
        s.full = True
    m2.start(0.0)
    assert m2.timer(5.0) == [Dequeue(b), Abort("s", "Q")]
    assert m2.granted(b, 5.0) == [Release(b)]


def test_server_leaving_rotation_redistributes_its_queue() -> None:
    """Defect 4: drain / weight 0 / DOWN with queued connections: they choose again, the queue deadline
    unchanged (re-queueing never extends it)."""
    m, ctx = machine()
    a, b = ctx.servers[0], ctx.servers[1]
    for s in ctx.servers:
        s.full = True
    assert m.start(0.0) == [Enqueue(a)]
    a.usable = False  # drained
    assert m.server_left(3.0) == [Enqueue(b)]
    assert m.next_deadline() == 5.0
    b.full = False
    a.usable = True
    m2, ctx2 = machine()
    for s in ctx2.servers:
        s.full = True
    m2.start(0.0)
    ctx2.servers[0].usable = False
    ctx2.servers[1].full = False
    assert m2.server_left(1.0) == [Take(ctx2.servers[1]), Connect(ctx2.servers[1])]
    m3, _ = machine()
    m3.start(0.0)
    assert m3.server_left(0.5) == []


def test_connect_timeout_retries_same_server_after_turnaround_then_redispatches_last() -> None:
    m, ctx = machine()
    a, b = ctx.servers[0], ctx.servers[1]
    m.start(0.0)
    now = 1.0
    for _i in (1, 2):
        assert m.timer(now) == [CancelConnect(), Release(a), Passive(a, False, True, "connect timeout")]
        assert fire(m) == [Retry(a, False)]
        assert m.state is State.TURNAROUND and m.next_deadline() == now + 1.0
        now += 1.0
        assert m.timer(now) == [Take(a), Connect(a)]
        now += 1.0
    # the third retry is the last one: redispatched (redispatch = true), at once
    assert m.timer(now) == [CancelConnect(), Release(a), Passive(a, False, True, "connect timeout")]
    assert fire(m) == [Retry(a, True), Take(b), Connect(b)]
    assert m.redispatched and m.retries == 3
    # and that one times out too: no retry left, sC
    assert m.timer(now + 1.0) == [
        CancelConnect(),
        Release(b),
        Passive(b, False, True, "connect timeout"),
        Abort("s", "C"),
    ]
    assert m.t_connect == pytest.approx(1.0)


@pytest.mark.parametrize(("kind", "term"), [(REFUSED, "S"), (TIMEOUT, "s"), (LOCAL, "R")])
def test_retries_exhausted(kind: str, term: str) -> None:
    m, ctx = machine(Ctx(retries=0))
    a = ctx.servers[0]
    m.start(0.0)
    out = m.failed(0.5, kind, "x")
    assert out[-1] == Abort(term, "C")
    assert Release(a) in out
    assert (Passive(a, False, kind == TIMEOUT, "x") in out) == (
        kind != LOCAL
    )  # local errors: not the server's
    assert m.closed(0.5) == [Log(False)]


def test_retry_after_server_went_down_redispatches_at_once_without_redispatch() -> None:
    """Defect 7: redispatch = false, the failure marked the server DOWN (the Passive command ran before the
    retry is decided): the retry goes to another server at once and counts as a redispatch."""
    m, ctx = machine(Ctx(redispatch=0))
    a, b = ctx.servers[0], ctx.servers[1]
    m.start(0.0)
    assert m.failed(0.1, REFUSED, "Connection refused") == [
        Release(a),
        Passive(a, False, False, "Connection refused"),
    ]
    a.usable = False  # what the driver's Passive did
    assert fire(m) == [Retry(a, True), Take(b), Connect(b)]
    assert m.redispatched


def test_retry_same_server_without_redispatch() -> None:
    m, ctx = machine(Ctx(redispatch=0))
    a = ctx.servers[0]
    m.start(0.0)
    m.failed(0.1, REFUSED)
    assert fire(m) == [Retry(a, False)]
    assert m.next_deadline() == pytest.approx(1.1)
    assert m.timer(1.1) == [Take(a), Connect(a)]
    assert not m.redispatched


def test_redispatch_chooses_once() -> None:
    """Defect 7: no throwaway pick on a redispatch (a pick moves roundrobin on)."""
    m, ctx = machine(Ctx(retries=1))
    m.start(0.0)
    assert ctx.picks == 1
    m.failed(0.1, REFUSED)
    fire(m)
    assert ctx.picks == 2


def test_redispatch_when_every_server_failed_waits_the_turnaround_and_starts_over() -> None:
    m, ctx = machine(Ctx(n=1, retries=2, redispatch=1))
    a = ctx.servers[0]
    m.start(0.0)
    m.failed(0.1, REFUSED)
    assert fire(m) == [Retry(a, True)]
    assert m.state is State.TURNAROUND
    assert m.timer(1.1) == [Take(a), Connect(a)]  # the exclusion was cleared


def test_local_errors_never_reach_passive_health() -> None:
    m, _ctx = machine()
    m.start(0.0)
    out = m.failed(0.1, LOCAL, "Cannot assign requested address")
    assert not any(isinstance(c, Passive) for c in out)
    assert failure_kind(errno.EADDRNOTAVAIL) == LOCAL
    assert failure_kind(errno.EMFILE) == LOCAL
    assert failure_kind(errno.ECONNREFUSED) == REFUSED
    assert failure_kind(None) == REFUSED


@pytest.mark.parametrize(
    ("setup", "cause", "expected"),
    [
        ("queued", "C", "CQ"),
        ("connecting", "C", "CC"),
        ("turnaround", "C", "CC"),
        ("queued", "K", "KQ"),
        ("connecting", "K", "KC"),
        ("turnaround", "K", "KC"),
    ],
)
def test_client_gone_and_kill_in_every_setup_phase(setup: str, cause: str, expected: str) -> None:
    m, ctx = machine(Ctx(redispatch=0))
    a = ctx.servers[0]
    if setup == "queued":
        for s in ctx.servers:
            s.full = True
    m.start(0.0)
    if setup == "turnaround":
        m.failed(0.1, REFUSED)
        fire(m)
        assert m.state is State.TURNAROUND
    out = m.client_gone(0.5) if cause == "C" else m.kill(0.5)
    assert out[-1] == Abort(expected[0], expected[1])
    if setup == "queued":
        assert out[0] == Dequeue(a)
    if setup == "connecting":
        assert out[:2] == [CancelConnect(), Release(a)]
    assert m.next_deadline() is None and not m.slot
    assert m.closed(0.6) == [Log(False)]


def test_kill_in_the_data_phase_leaves_the_phase_to_the_relay() -> None:
    m, ctx = machine()
    m.start(0.0)
    m.connected(0.1)
    assert m.client_gone(1.0) == []  # the relay's business in the data phase
    assert m.kill(1.0) == [Abort("K", None)]
    assert m.kill(1.0) == []
    assert m.closed(1.1) == [Log(False), Release(ctx.servers[0])]


def test_never_started_session_is_not_logged() -> None:
    m, _ = machine()
    assert m.client_gone(0.0) == [] and m.kill(0.0) == []
    assert m.closed(0.0) == []
    assert m.start(1.0) == []


def test_pipe_gone_without_notice_in_setup_still_ends_cleanly() -> None:
    m, ctx = machine()
    m.start(0.0)
    assert m.closed(0.2) == [CancelConnect(), Release(ctx.servers[0]), Abort("C", "C"), Log(False)]


def test_no_timeouts_configured_means_no_deadline() -> None:
    m, ctx = machine(Ctx(t_connect=None, t_queue=None))
    for s in ctx.servers:
        s.full = True
    m.start(0.0)
    assert m.state is State.QUEUED and m.next_deadline() is None


# ---------------------------------------------------------------------------------------- hypothesis

EVENTS = st.sampled_from(
    [
        "tick",
        "grant",
        "stray_grant",
        "connected",
        "refused",
        "timeout",
        "local",
        "client_gone",
        "kill",
        "server_left",
        "toggle_usable",
        "toggle_full",
        "relay_end",
        "wait",
    ]
)


class World:
    """The driver and the servers around one machine, keeping the books the invariants are about."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.m: SessionMachine[Srv] = SessionMachine(ctx, ("192.0.2.1", 1))
        self.now = 0.0
        self.held = 0  # slots the session holds (taken + granted - released)
        self.queued: Srv | None = None
        self.inflight = False
        self.aborted = False
        self.logs = 0
        self.asap = 0
        self.started = False

    def apply(self, cmds: list[Any]) -> None:
        for c in cmds:
            if isinstance(c, Take):
                self.held += 1
            elif isinstance(c, Release):
                self.held -= 1
                assert self.held >= 0, "released a slot it did not hold"
            elif isinstance(c, Enqueue):
                assert self.queued is None
                self.queued = c.srv
            elif isinstance(c, Dequeue):
                assert self.queued is c.srv
                self.queued = None
            elif isinstance(c, Connect):
                assert not self.inflight
                self.inflight = True
            elif isinstance(c, CancelConnect):
                assert self.inflight
                self.inflight = False
            elif isinstance(c, Abort):
                assert not self.aborted
                self.aborted = True
            elif isinstance(c, Log):
                if c.asap:
                    self.asap += 1
                else:
                    self.logs += 1
            elif isinstance(c, Passive) and not c.ok and not c.timeout:
                c.srv.usable = False  # a refused connect marks the server down (mark-down)
        if self.m.state is State.RETRY:
            self.apply(self.m.timer(self.now))
        self.check()

    def check(self) -> None:
        m = self.m
        assert self.held == (1 if m.slot else 0)
        if m.state in (State.QUEUED, State.CONNECTING, State.TURNAROUND):
            dl = m.next_deadline()
            assert dl is not None and dl >= self.now, (m.state, dl, self.now)
        if m.state is State.QUEUED:
            assert self.queued is m.srv
        else:
            assert self.queued is None
        assert self.inflight == (m.state is State.CONNECTING)

    def step(self, ev: str, i: int) -> None:
        m = self.m
        srv = self.ctx.servers[i % len(self.ctx.servers)]
        if ev == "tick":
            dl = m.next_deadline()
            if dl is not None:
                self.now = max(self.now, dl)
                self.apply(m.timer(self.now))
        elif ev == "wait":
            self.now += 0.25
            dl = m.next_deadline()
            if dl is not None and dl <= self.now:  # the driver's timer fires
                self.apply(m.timer(self.now))
        elif ev == "grant" and self.queued is not None:
            q = self.queued
            self.queued = None  # the server pops us and counts the slot as ours
            self.held += 1
            self.apply(m.granted(q, self.now))
        elif ev == "stray_grant":
            if self.queued is srv:
                self.queued = None
            self.held += 1
            self.apply(m.granted(srv, self.now))
        elif ev == "connected" and self.inflight:
            self.inflight = False
            self.apply(m.connected(self.now))
        elif ev in ("refused", "timeout", "local") and self.inflight:
            self.inflight = False
            kind = {"refused": REFUSED, "timeout": TIMEOUT, "local": LOCAL}[ev]
            self.apply(m.failed(self.now, kind))
        elif ev == "client_gone":
            self.apply(m.client_gone(self.now))
        elif ev == "kill":
            self.apply(m.kill(self.now))
        elif ev == "server_left" and self.queued is not None:
            self.queued.usable = False
            self.queued = None
            self.apply(m.server_left(self.now))
        elif ev == "toggle_usable":
            srv.usable = not srv.usable
        elif ev == "toggle_full":
            srv.full = not srv.full
        elif ev == "relay_end" and (m.state is State.DATA or self.aborted):
            self.apply(m.closed(self.now))

    def finish(self) -> None:
        """Let time run with every connect hanging: the session must end on its own deadlines."""
        m = self.m
        steps = 0
        while m.state in (State.QUEUED, State.CONNECTING, State.TURNAROUND):
            dl = m.next_deadline()
            assert dl is not None, "a waiting session without a deadline"
            self.now = dl
            self.apply(m.timer(self.now))
            steps += 1
            assert steps <= 4 * (self.ctx.retries + 2) + 2 * len(self.ctx.servers) + 4, (
                "outlives its deadlines"
            )
        if m.state is State.DATA:
            self.apply(m.kill(self.now))
        if m.state is State.CLOSING or m.state is State.DATA:
            self.apply(m.closed(self.now))
        self.apply(m.closed(self.now))  # a second close does nothing


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(EVENTS, st.integers(0, 7)), max_size=40),
    st.integers(0, 3),
    st.sampled_from([0, -1, 1, 2]),
    st.booleans(),
    st.integers(1, 3),
)
def test_invariants_over_event_sequences(
    events: list[tuple[str, int]], retries: int, redispatch: int, asap: bool, nsrv: int
) -> None:
    ctx = Ctx(n=nsrv, retries=retries, redispatch=redispatch, asap=asap)
    w = World(ctx)
    w.apply(w.m.start(w.now))
    for ev, i in events:
        if w.m.state is State.CLOSED:
            break
        w.step(ev, i)
    w.finish()
    assert w.m.state is State.CLOSED
    assert w.logs == 1, "every started session writes exactly one log line"
    assert w.asap <= 1
    assert w.held == 0, "releases exactly the slots it took"
    assert w.queued is None and not w.inflight
