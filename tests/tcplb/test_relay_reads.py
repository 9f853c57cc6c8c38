"""The relay's read path (tcplb.relay.Side: the shared read buffer, get_buffer/buffer_updated), on both loops.

What makes a read cheap must not make it unsafe: every chunk handed to the peer's transport is its own
immutable ``bytes`` (never a view of the buffer the next read overwrites), reads stay bounded by
``bufsize`` (the stalled-upload bound), and bytes arrive intact with both directions and a slow reader."""

from __future__ import annotations

import asyncio
import hashlib
import os
import types
from typing import Any

import pytest
from tcplb_helpers import run, wait_for, wait_stalled

from tcplb import relay

LOOPS = ["asyncio", "uvloop"]


class Collect:
    """A peer transport's ``write``: keeps what it is given."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def __call__(self, data: Any) -> None:
        self.got.append(data)


def test_each_read_is_handed_on_as_its_own_bytes() -> None:
    """Two reads back to back through the one shared buffer: each write got a ``bytes`` copy, which the next
    read (overwriting the buffer) does not change. Early data (no peer yet) is copied the same way."""
    loop = asyncio.new_event_loop()
    try:
        p = relay.Pipe(loop, bufsize=4096)
        side = p.client
        sink = Collect()
        side.peer_write = sink
        for chunk in (b"first read", b"2nd"):
            buf = side.get_buffer(-1)
            assert len(buf) == 4096  # a read is bounded by bufsize
            buf[: len(chunk)] = chunk
            side.buffer_updated(len(chunk))
        assert sink.got == [b"first read", b"2nd"]
        assert all(type(d) is bytes for d in sink.got)
        assert side.nbytes == len(b"first read") + 3
        # a second pipe of the same size shares the buffer (one per process), another size gets its own
        assert relay.Pipe(loop, bufsize=4096).client.get_buffer(65536) is buf
        assert len(relay.Pipe(loop, bufsize=8192).client.get_buffer(65536)) == 8192
        # before the server side is attached: kept as early data, copied too
        q = relay.Pipe(loop, bufsize=4096)
        b2 = q.client.get_buffer(65536)
        b2[:5] = b"hello"
        q.client.buffer_updated(5)
        b2[:5] = b"XXXXX"
        assert q.early == [b"hello"] and type(q.early[0]) is bytes
    finally:
        loop.close()


def test_a_forked_process_reads_into_its_own_buffer() -> None:
    """The shared read buffer is shared within a process only: after a fork (the buffer already made), a
    read in the child does not land in the parent's buffer (an anonymous mmap is MAP_SHARED by default)."""
    loop = asyncio.new_event_loop()
    try:
        buf = relay.Pipe(loop, bufsize=4096).client.get_buffer(-1)
        buf[:6] = b"parent"
        pid = os.fork()
        if pid == 0:  # the child: as a read would
            try:
                buf[:6] = b"child!"
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert buf[:6] == b"parent"
    finally:
        loop.close()


def test_get_buffer_is_not_a_python_method() -> None:
    """The loop calls get_buffer before every read: it is a C callable, no Python frame per read (the cost
    this path was made cheaper by; a Python method would still work, only slower)."""
    loop = asyncio.new_event_loop()
    try:
        side = relay.Pipe(loop).client
        assert not isinstance(side.get_buffer, (types.MethodType, types.FunctionType))
        assert isinstance(side, asyncio.BufferedProtocol)
    finally:
        loop.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_integrity_both_ways_with_a_slow_reader(loop: str) -> None:
    """Both directions at once through the one shared buffer (server -> client paused and resumed again and
    again by a client that reads in small bursts): every byte arrives, in order, both ways. (With the default
    bufsize few writes stay queued in uvloop, so this does not catch a view of the shared buffer being
    written: tests/tcplb/test_review_relay.py's queued-writes test with a 4 MiB bufsize does.)"""
    up = os.urandom(6 * 1024 * 1024 + 7)
    down = os.urandom(6 * 1024 * 1024 + 11)
    got_up = hashlib.sha256()
    n_up = [0]

    async def server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async def reader() -> None:
            while data := await r.read(65536):
                got_up.update(data)
                n_up[0] += len(data)

        t = asyncio.create_task(reader())
        for i in range(0, len(down), 100_000):
            w.write(down[i : i + 100_000])
            await w.drain()
        w.write_eof()
        await t
        w.close()

    async def main() -> None:
        srv = await asyncio.start_server(server, "127.0.0.1", 0)
        lb = _MiniLB(srv.sockets[0].getsockname()[:2])
        await lb.start()
        r, w = await asyncio.open_connection("127.0.0.1", lb.port, limit=4096)

        async def send() -> None:
            for i in range(0, len(up), 50_000):
                w.write(up[i : i + 50_000])
                await w.drain()
            w.write_eof()

        t = asyncio.create_task(send())
        got = hashlib.sha256()
        total = 0
        bursts = 0
        while data := await r.read(4096):  # a slow reader: small reads, a pause now and then
            got.update(data)
            total += len(data)
            bursts += 1
            if bursts % 64 == 0:
                await asyncio.sleep(0.001)
        await t
        assert total == len(down) and got.digest() == hashlib.sha256(down).digest()
        await wait_for(lambda: n_up[0] == len(up))
        assert got_up.digest() == hashlib.sha256(up).digest()
        await wait_for(lambda: len(lb.closed) == 1)
        p = lb.closed[0]
        assert (p.bytes_in, p.bytes_out, p.termination) == (len(up), len(down), "--")
        w.close()
        lb.close()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("bufsize", [4096, relay.BUFSIZE])
def test_stalled_upload_holds_at_most_two_bufsizes(loop: str, bufsize: int) -> None:
    """A server that does not read: what the relay holds in user space toward it stays within 2 x bufsize
    (the queue at the high-water mark plus the one read that crossed it), and the client is then no longer
    read (its sends stall). Then the server reads again and everything arrives intact."""
    payload = os.urandom(16 * 1024 * 1024)
    srv_reader: list[asyncio.StreamReader] = []
    sent = [0]

    async def server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        r._transport.pause_reading()  # type: ignore[attr-defined]
        srv_reader.append(r)

    async def main() -> None:
        srv = await asyncio.start_server(server, "127.0.0.1", 0, limit=1024)
        lb = _MiniLB(srv.sockets[0].getsockname()[:2], bufsize=bufsize)
        await lb.start()
        _r, w = await asyncio.open_connection("127.0.0.1", lb.port)

        async def send() -> None:
            for i in range(0, len(payload), 65536):
                w.write(payload[i : i + 65536])
                await w.drain()
                sent[0] += 65536

        t = asyncio.create_task(send())
        await wait_for(lambda: bool(srv_reader) and bool(lb.pipes) and lb.pipes[0].server is not None)
        stalled = await wait_stalled(lambda: sent[0])
        p = lb.pipes[0]
        assert p.server is not None and p.server.transport is not None
        queued = p.server.transport.get_write_buffer_size()
        assert queued <= 2 * bufsize, queued
        assert p.reads_paused
        assert stalled < len(payload)
        # the server reads again: the rest flows, intact
        sr = srv_reader[0]
        sr._transport.resume_reading()  # type: ignore[attr-defined]
        got = hashlib.sha256()
        n = 0
        while n < len(payload):
            data = await sr.read(1 << 20)
            assert data
            got.update(data)
            n += len(data)
        await t
        assert got.digest() == hashlib.sha256(payload).digest()
        w.close()
        lb.close()
        srv.close()

    run(loop, main)


class _MiniLB:
    """A one-backend forwarder built from relay.Pipe only (as in test_relay.py, with a bufsize)."""

    def __init__(self, backend: tuple[str, int], bufsize: int = relay.BUFSIZE) -> None:
        self.backend = backend
        self.bufsize = bufsize
        self.closed: list[relay.Pipe] = []
        self.pipes: list[relay.Pipe] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.BaseProtocol:
            p = relay.Pipe(loop, on_close=self.closed.append, bufsize=self.bufsize)
            self.pipes.append(p)
            self.tasks.add(loop.create_task(self._connect(p)))
            return p.client

        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connect(self, p: relay.Pipe) -> None:
        loop = asyncio.get_running_loop()
        await p.wait_client()
        side = p.new_server_side()
        await loop.create_connection(side.factory, *self.backend)
        p.attach_server(side)

    def close(self) -> None:
        assert self.server is not None
        self.server.close()
