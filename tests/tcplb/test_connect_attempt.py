"""The connect attempt without a Task (tcplb/frontend.py ``_Attempt``): it steps the loop's
``create_connection`` coroutine by hand, and must keep a Task's semantics on both loops: the outcome is
reported once and never from inside ``start`` (an immediate failure comes on a later loop iteration), a
cancel reaches the coroutine where it waits (its own clean-up runs), and a cancelled attempt reports
nothing. Plus the property it exists for: a relayed connection creates no asyncio Task."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from tcplb_helpers import run, wait_for
from test_server import echo_ok, make_cfg, start_lb, stop_lb

from tcplb.frontend import _Attempt
from tcplb.relay import Pipe

LOOPS = ["asyncio", "uvloop"]


class _Lb:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop


class _Fe:
    """What an attempt uses of its Frontend: the loop, and where the outcome goes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lb = _Lb(loop)
        self.done: list[tuple[str, str]] = []
        self.in_start = False

    def _attempt_done(self, att: _Attempt, kind: str, info: str) -> None:
        assert not self.in_start, "reported from inside start()"
        self.done.append((kind, info))


def _attempt(fe: _Fe, coro: Any) -> _Attempt:
    pipe = Pipe(fe.lb.loop)
    return _Attempt(fe, None, None, pipe.new_server_side(), coro)  # type: ignore[arg-type]


def _start(fe: _Fe, att: _Attempt) -> None:
    fe.in_start = True
    try:
        att.start()
    finally:
        fe.in_start = False


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("loop", LOOPS)
def test_outcomes_are_reported_once_and_never_from_start(loop: str) -> None:
    async def main() -> None:
        lp = asyncio.get_running_loop()
        fe = _Fe(lp)

        async def fails_at_once() -> None:
            raise ConnectionRefusedError(111, "refused")

        async def succeeds_after_yields() -> None:
            await asyncio.sleep(0)  # a bare yield
            f = lp.create_future()
            lp.call_soon(f.set_result, None)
            await f  # a future

        async def times_out() -> None:
            f = lp.create_future()
            lp.call_soon(f.set_exception, TimeoutError())
            await f

        _start(fe, _attempt(fe, fails_at_once()))
        assert fe.done == []  # not reported synchronously
        await _turns()
        assert fe.done == [("refused", "Connection refused")]
        fe.done.clear()
        _start(fe, _attempt(fe, succeeds_after_yields()))
        await _turns()
        assert fe.done == [("", "")]
        fe.done.clear()
        _start(fe, _attempt(fe, times_out()))
        await _turns()
        assert fe.done == [("timeout", "connect timeout")]

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_cancel_reaches_the_waiting_coroutine_and_reports_nothing(loop: str) -> None:
    async def main() -> None:
        lp = asyncio.get_running_loop()
        fe = _Fe(lp)
        seen: list[str] = []
        waiting = lp.create_future()

        async def waits() -> None:
            try:
                await waiting
            except asyncio.CancelledError:
                seen.append("cancelled")  # the coroutine's own clean-up (uvloop closes its transport here)
                raise

        att = _attempt(fe, waits())
        _start(fe, att)
        att.cancel()
        assert waiting.cancelled()
        await _turns()
        assert seen == ["cancelled"]
        assert fe.done == []
        att.cancel()  # idempotent once finished

        # cancelled after its future completed, before the step ran: the step throws, nothing reported
        done_fut = lp.create_future()

        async def waits2() -> None:
            try:
                await done_fut
            except asyncio.CancelledError:
                seen.append("cancelled2")
                raise

        att2 = _attempt(fe, waits2())
        _start(fe, att2)
        done_fut.set_result(None)  # the step is now scheduled
        att2.cancel()
        await _turns()
        assert seen == ["cancelled", "cancelled2"]
        assert fe.done == []

    run(loop, main)


async def _echo_raw(port: int) -> bool:
    """A round trip through the LB with the loop's socket methods (asyncio streams with a timeout, as
    ``echo_ok``, make tasks of their own)."""
    lp = asyncio.get_running_loop()
    c = socket.socket()
    c.setblocking(False)
    try:
        await lp.sock_connect(c, ("127.0.0.1", port))
        await lp.sock_sendall(c, b"ping")
        got = b""
        while len(got) < 4:
            chunk = await lp.sock_recv(c, 4 - len(got))
            if not chunk:
                break
            got += chunk
        return got == b"ping"
    finally:
        c.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_relayed_connection_creates_no_task(loop: str) -> None:
    """The per-connection path connects without an asyncio Task (tasks: created, registered in a weak set,
    stepped once more, removed again: several microseconds per connection under churn)."""

    async def main() -> None:
        class Echo(asyncio.Protocol):  # a protocol, not asyncio streams (their server makes a task each)
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.tr: Any = transport

            def data_received(self, data: bytes) -> None:
                self.tr.write(data)

        lp = asyncio.get_running_loop()
        srv = await lp.create_server(Echo, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        cfg, port = make_cfg(f'{{ name = "s1", address = "127.0.0.1:{sport}", check = false }},')
        lb, _ = await start_lb(cfg)
        try:
            assert await echo_ok(port)  # warm
            created: list[object] = []
            orig = lp.create_task

            def counting(coro: Any, **kw: Any) -> Any:
                created.append(coro)
                return orig(coro, **kw)

            lp.create_task = counting  # type: ignore[method-assign]
            try:
                for _ in range(5):
                    assert await _echo_raw(port)
                await wait_for(lambda: lb.actconn == 0, what="sessions closed")
            finally:
                lp.create_task = orig  # type: ignore[method-assign]
            # the test's client makes none. On stock asyncio, accepting is a task: the loop's own in the
            # backend's server, and tcplb's hand-over of an accepted socket (tcplb/listen.py)
            accepts = {"Listening._wrap", "BaseSelectorEventLoop._accept_connection2"}
            assert [c for c in created if getattr(c, "__qualname__", "") not in accepts] == []
        finally:
            await stop_lb(lb)
            srv.close()

    run(loop, main)
