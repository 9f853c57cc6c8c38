"""The session machine's protocol-aware connect (tcplb/session.py: tcp_up, greeting_sent, GREETING and
GREETING_TIMEOUT), in virtual time: a server that accepts TCP but does not greet is a failed attempt and
the retry goes to another server even without ``redispatch``; the client's own silence is not the server's
fault."""

from __future__ import annotations

from test_session import Ctx, fire, machine, state

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
