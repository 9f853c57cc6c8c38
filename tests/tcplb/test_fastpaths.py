"""The per-connection shortcuts of the I/O side give the same results as the straightforward code.

* ``server.tcplog_line`` / ``accept_date_cached`` == ``tcplog.format_tcplog`` / ``accept_date``;
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

from tcplb import relay, server
from tcplb.daemon import new_loop
from tcplb.tcplog import TcpLogRecord, accept_date, format_tcplog

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=["UTC", "Europe/Paris", "America/St_Johns", "Australia/Lord_Howe"])
def tz(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run under several local time zones (DST, half-hour offsets, 30-minute DST shifts)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    server._date_cache[:] = [None, ""]
    try:
        yield request.param
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()
        server._date_cache[:] = [None, ""]


EDGES = [0.0, 0.0004999, 0.0005, 0.4995, 0.9994999, 0.9995, 0.9999994, 0.9999995, 0.99999995]
# DST changes in 2026 (Europe: 29 Mar / 25 Oct 01:00 UTC; St John's: 8 Mar / 1 Nov; Lord Howe: 5 Apr / 4 Oct)
DST = [1774746000, 1792890000, 1772951400, 1793503800, 1775313000, 1791036000]


def test_accept_date_cached_edges(tz: str) -> None:
    for base in [0, 1, 1_700_000_000, 1_763_769_618, *DST]:
        for delta in (-3601, -3600, -1, 0, 1, 1799, 1800, 3599, 3600, 3601):
            for frac in EDGES:
                ts = base + delta + frac
                assert server.accept_date_cached(ts) == accept_date(ts), (tz, ts)


@settings(max_examples=300, deadline=None)
@given(ts=st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False, allow_infinity=False))
def test_accept_date_cached_random(ts: float) -> None:
    # the cache keeps the last second: alternate with a far-away time so both paths (hit, miss) are used
    assert server.accept_date_cached(ts) == accept_date(ts)
    assert server.accept_date_cached(ts) == accept_date(ts)
    assert server.accept_date_cached(ts + 1e6) == accept_date(ts + 1e6)


@settings(max_examples=300, deadline=None)
@given(
    ip=st.sampled_from(["192.0.2.50", "::1", "2001:db8::7"]),
    port=st.integers(0, 65535),
    ts=st.floats(min_value=1e9, max_value=3e9, allow_nan=False),
    name=st.sampled_from(["rabbitmq", "x", "web-1"]),
    server_name=st.one_of(st.none(), st.sampled_from(["rmq1", "s"])),
    times=st.tuples(st.integers(-1, 10**6), st.integers(-1, 10**6), st.integers(0, 10**9)),
    nbytes=st.integers(0, 10**12),
    term=st.sampled_from(["--", "CD", "sC", "SC", "KD", "cD"]),
    counts=st.tuples(*[st.integers(0, 10**5)] * 4),
    retries=st.integers(0, 9),
    redispatched=st.booleans(),
    asap=st.booleans(),
)
def test_tcplog_line_matches_format_tcplog(
    ip: str,
    port: int,
    ts: float,
    name: str,
    server_name: str | None,
    times: tuple[int, int, int],
    nbytes: int,
    term: str,
    counts: tuple[int, int, int, int],
    retries: int,
    redispatched: bool,
    asap: bool,
) -> None:
    tw, tc, tt = times
    actconn, feconn, srv_conn, q = counts
    rec = TcpLogRecord(
        client=(ip, port),
        accept_time=ts,
        frontend=name,
        backend=name,
        server=server_name,
        tw=tw,
        tc=tc,
        tt=tt,
        bytes_read=nbytes,
        bytes_uploaded=7,
        termination=term,
        actconn=actconn,
        feconn=feconn,
        beconn=feconn,
        srv_conn=srv_conn,
        retries=retries,
        redispatched=redispatched,
        srv_queue=q,
        backend_queue=q + 1,
        logasap=asap,
    )
    line = server.tcplog_line(
        (ip, port),
        ts,
        name,
        server_name,
        tw,
        tc,
        tt,
        nbytes,
        term,
        actconn,
        feconn,
        srv_conn,
        retries,
        redispatched,
        q,
        q + 1,
        asap,
    )
    assert line == format_tcplog(rec)


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
    """Several pipes with the same timeout share one wheel; each is closed within [t, 9/8 t] of idleness."""

    async def main() -> None:
        t = 0.4
        lp = asyncio.get_running_loop()
        made = [await _pair(t) for _ in range(3)]
        start = lp.time()
        wheels = {id(p._wheel) for p, _w, _b in made}
        assert len(wheels) == 1 and None not in {p._wheel for p, _w, _b in made}
        closed_at: dict[int, float] = {}
        while len(closed_at) < 3 and lp.time() - start < 3:
            for i, (p, _w, _b) in enumerate(made):
                if p.closed and i not in closed_at:
                    closed_at[i] = lp.time() - start
            await asyncio.sleep(0.005)
        for i, (p, w, b) in enumerate(made):
            assert p.termination == "cD"
            assert t - 0.02 <= closed_at[i] <= t * 9 / 8 + 0.05, closed_at
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
    from tcplb.daemon import _Formatter

    fmt = "%(asctime)s tcplb[%(process)d]: [%(levelname)s] %(message)s"
    ours, std = _Formatter(fmt), logging.Formatter(fmt)
    for base in [1_700_000_000, 1_763_769_618, *DST]:
        for delta in (-3601, -1, 0, 1, 3600):
            for frac in EDGES:
                rec = logging.LogRecord("tcplb", logging.INFO, __file__, 1, "m", None, None)
                rec.created = base + delta + frac
                rec.msecs = int((rec.created - int(rec.created)) * 1000) + 0.0
                assert ours.format(rec) == std.format(rec)
