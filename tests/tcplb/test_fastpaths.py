"""The per-connection shortcuts of the I/O side give the same results as the straightforward code.

* ``tcplog.accept_date_cached`` (the date formatted once per second) == ``tcplog.accept_date``;
* the shared idle sweeper (``relay._IdleWheel``) closes an idle pair between ``timeout`` and ``9/8 timeout``;
* a closed pair is freed by reference counting (no cyclic garbage left per connection).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb import relay, tcplog
from tcplb.procstart import new_loop
from tcplb.tcplog import accept_date

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=["UTC", "Europe/Paris", "America/St_Johns", "Australia/Lord_Howe"])
def tz(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run under several local time zones (DST, half-hour offsets, 30-minute DST shifts)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    tcplog._date_cache[:] = [None, ""]
    try:
        yield request.param
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()
        tcplog._date_cache[:] = [None, ""]


EDGES = [0.0, 0.0004999, 0.0005, 0.4995, 0.9994999, 0.9995, 0.9999994, 0.9999995, 0.99999995]
# DST changes in 2026 (Europe: 29 Mar / 25 Oct 01:00 UTC; St John's: 8 Mar / 1 Nov; Lord Howe: 5 Apr / 4 Oct)
DST = [1774746000, 1792890000, 1772951400, 1793503800, 1775313000, 1791036000]


def test_accept_date_cached_edges(tz: str) -> None:
    for base in [0, 1, 1_700_000_000, 1_763_769_618, *DST]:
        for delta in (-3601, -3600, -1, 0, 1, 1799, 1800, 3599, 3600, 3601):
            for frac in EDGES:
                ts = base + delta + frac
                assert tcplog.accept_date_cached(ts) == accept_date(ts), (tz, ts)


@settings(max_examples=300, deadline=None)
@given(ts=st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False, allow_infinity=False))
def test_accept_date_cached_random(ts: float) -> None:
    # the cache keeps the last second: alternate with a far-away time so both paths (hit, miss) are used
    assert tcplog.accept_date_cached(ts) == accept_date(ts)
    assert tcplog.accept_date_cached(ts) == accept_date(ts)
    assert tcplog.accept_date_cached(ts + 1e6) == accept_date(ts + 1e6)


# ----------------------------------------------------------------------------------------- relay side


def run(kind: str, coro_fn: object, timeout: float = 20) -> object:
    async def main() -> object:
        return await asyncio.wait_for(coro_fn(), timeout)  # type: ignore[operator]

    with asyncio.Runner(loop_factory=lambda: new_loop(kind)) as r:
        return r.run(main())


async def _pair(timeout: float | None) -> tuple[relay.Pipe, asyncio.StreamWriter, asyncio.AbstractServer]:
    """A client connected through a Pipe to a backend that accepts and stays silent."""
    loop = asyncio.get_running_loop()
    held: list[asyncio.StreamWriter] = []

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)
        await r.read()

    backend = await asyncio.start_server(silent, "127.0.0.1", 0)
    baddr = backend.sockets[0].getsockname()[:2]
    pipes: list[relay.Pipe] = []
    tasks: list[asyncio.Task[None]] = []
    done = loop.create_future()

    def factory() -> asyncio.Protocol:
        p = relay.Pipe(loop)
        p.timeout = timeout
        p.fin_timeout = timeout
        pipes.append(p)

        async def connect() -> None:
            await p.wait_client()
            side = p.new_server_side()
            await loop.create_connection(lambda: side, *baddr)
            p.attach_server(side)
            done.set_result(None)

        tasks.append(loop.create_task(connect()))
        return p.client

    front = await loop.create_server(factory, "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    await done
    front.close()
    return pipes.pop(), w, backend


@pytest.mark.parametrize("loop", LOOPS)
def test_idle_wheel_timeout_window_and_sharing(loop: str) -> None:
    """Several pipes with the same timeout share one wheel; each is closed after t of idleness (never early;
    the design's 9/8 t bound is not asserted here: on a busy machine only the scheduler decides how late)."""

    async def main() -> None:
        t = 0.4
        lp = asyncio.get_running_loop()
        made = [await _pair(t) for _ in range(3)]
        start = lp.time()
        wheels = {id(p._wheel) for p, _w, _b in made}
        assert len(wheels) == 1 and None not in {p._wheel for p, _w, _b in made}
        closed_at: dict[int, float] = {}
        while len(closed_at) < 3 and lp.time() - start < 15:
            for i, (p, _w, _b) in enumerate(made):
                if p.closed and i not in closed_at:
                    closed_at[i] = lp.time() - start
            await asyncio.sleep(0.005)
        for i, (p, w, b) in enumerate(made):
            assert p.termination == "cD"
            assert t - 0.02 <= closed_at[i], closed_at
            w.close()
            b.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_closed_pipe_freed_without_gc(loop: str) -> None:
    """After both sockets are gone the pipe, its sides and transports are freed by reference counting."""

    async def main() -> None:
        p, w, b = await _pair(None)
        gc.collect()
        gc.disable()  # whatever is freed from here on is freed by reference counting
        try:
            p.close()
            w.close()
            for _ in range(100):
                if p.closed:
                    break
                await asyncio.sleep(0.01)
            assert p.closed and p.termination == "--"
            await asyncio.sleep(0.05)
            del p
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = {type(o) for o in gc.garbage}
            assert relay.Pipe not in left and relay.Side not in left
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        b.close()

    run(loop, main)


def test_log_formatter_asctime_matches_stdlib(tz: str) -> None:
    from tcplb.procstart import _Formatter

    fmt = "%(asctime)s tcplb[%(process)d]: [%(levelname)s] %(message)s"
    ours, std = _Formatter(fmt), logging.Formatter(fmt)
    for base in [1_700_000_000, 1_763_769_618, *DST]:
        for delta in (-3601, -1, 0, 1, 3600):
            for frac in EDGES:
                rec = logging.LogRecord("tcplb", logging.INFO, __file__, 1, "m", None, None)
                rec.created = base + delta + frac
                rec.msecs = int((rec.created - int(rec.created)) * 1000) + 0.0
                assert ours.format(rec) == std.format(rec)
