"""The session machine's protocol-aware connect (tcplb/session.py: tcp_up, greeting_sent, GREETING and
GREETING_TIMEOUT), in virtual time: a server that accepts TCP but does not greet is a failed attempt and
the retry goes to another server even without ``redispatch``; the client's own silence is not the server's
fault."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_session import Ctx, World, fire, machine, state

from tcplb.session import (
    GREETING,
    Abort,
    CancelConnect,
    Connect,
    Log,
    Passive,
    Release,
    Retry,
    State,
    Take,
)


def test_greeted_connection_is_established_only_at_start() -> None:
    m, ctx = machine(Ctx(redispatch=0))
    a = ctx.servers[0]
    assert m.start(10.0) == [Take(a), Connect(a)]
    assert m.tcp_up(10.1, 30.0) == [] and m.state is State.CONNECTING
    assert m.next_deadline() == 40.1  # waiting for the client's bytes: the client's timeout
    assert m.greeting_sent(10.2, 2.0) == [] and m.next_deadline() == 12.2
    assert m.connected(10.3) == [Passive(a, True)] and state(m) is State.DATA
    assert m.next_deadline() is None


def test_silent_server_fails_and_the_retry_goes_elsewhere_without_redispatch() -> None:
    m, ctx = machine(Ctx(redispatch=0))  # redispatch off: a plain connect failure retries the same server
    a, b = ctx.servers[0], ctx.servers[1]
    m.start(10.0)
    m.tcp_up(10.1, None)
    m.greeting_sent(10.1, 2.0)
    out = m.timer(12.1)
    assert out == [
        CancelConnect(),
        Release(a),
        Passive(a, False, True, "no greeting (Connection.Start) in time"),
    ]
    assert fire(m) == [Retry(a, True), Take(b), Connect(b)]
    assert m.next_deadline() == 12.1 + 1.0  # a fresh connect timeout for b


def test_garbage_or_close_is_a_refusal_for_passive_health() -> None:
    m, ctx = machine(Ctx(redispatch=0))
    a, b = ctx.servers[0], ctx.servers[1]
    m.start(10.0)
    m.tcp_up(10.1, None)
    m.greeting_sent(10.1, 2.0)
    out = m.failed(10.2, GREETING, "no AMQP greeting: closed")
    assert out == [Release(a), Passive(a, False, False, "no AMQP greeting: closed")]
    assert fire(m) == [Retry(a, True), Take(b), Connect(b)]


def test_client_that_never_sends_is_its_own_timeout() -> None:
    m, ctx = machine()
    a = ctx.servers[0]
    m.start(10.0)
    m.tcp_up(10.1, 5.0)
    assert m.timer(15.1) == [CancelConnect(), Release(a), Abort("c", "C")]
    assert m.closed(15.2) == [Log(False)]


def test_plain_failures_still_follow_redispatch() -> None:
    """After a greeting failure a later plain connect failure does not inherit the forced redispatch."""
    m, ctx = machine(Ctx(redispatch=0))
    b = ctx.servers[1]
    m.start(10.0)
    m.tcp_up(10.1, None)
    m.greeting_sent(10.1, 2.0)
    m.timer(12.1)
    fire(m)  # -> b
    out = m.failed(12.5, "refused", "Connection refused")
    assert out[-1] == Passive(b, False, False, "Connection refused")
    assert fire(m)[0] == Retry(b, False)  # pinned to b: redispatch is off


def test_all_servers_silent_ends_with_a_server_timeout() -> None:
    m, _ = machine(Ctx(n=2, retries=1, redispatch=0))
    m.start(10.0)
    for t in (10.0, 13.0):
        m.tcp_up(t, None)
        m.greeting_sent(t, 2.0)
        out = m.timer(t + 2.0)
        if m.state is State.RETRY:
            fire(m)
    assert out[-1] == Abort("s", "C") and m.state is State.CLOSING


GREET_EVENTS = st.sampled_from(
    [
        *("tick", "grant", "stray_grant", "connected", "refused", "timeout", "local", "client_gone", "kill"),
        *("server_left", "toggle_usable", "toggle_full", "relay_end", "wait"),
        *("tcp_up", "greet_sent", "greet_bad", "tcp_up", "greet_sent"),
    ]
)


class GreetWorld(World):
    def step(self, ev: str, i: int) -> None:
        m = self.m
        if ev == "tcp_up" and self.inflight:
            self.apply(m.tcp_up(self.now, 5.0))
        elif ev == "greet_sent" and self.inflight:
            self.apply(m.greeting_sent(self.now, 2.0))
        elif ev == "greet_bad" and self.inflight and m.greeting:
            self.inflight = False
            self.apply(m.failed(self.now, GREETING, "garbage"))
        else:
            super().step(ev, i)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(GREET_EVENTS, st.integers(0, 7)), max_size=40),
    st.integers(0, 3),
    st.sampled_from([0, -1, 1, 2]),
    st.integers(1, 3),
)
def test_invariants_with_greetings(
    events: list[tuple[str, int]], retries: int, redispatch: int, nsrv: int
) -> None:
    """test_session's invariants hold with the greeting events mixed in: one log line, every slot released,
    never past a deadline, never a waiting state without one."""
    ctx = Ctx(n=nsrv, retries=retries, redispatch=redispatch)
    w = GreetWorld(ctx)
    w.apply(w.m.start(w.now))
    for ev, i in events:
        if w.m.state is State.CLOSED:
            break
        w.step(ev, i)
    w.finish()
    assert w.m.state is State.CLOSED
    assert w.logs == 1
    assert w.held == 0
    assert w.queued is None and not w.inflight
