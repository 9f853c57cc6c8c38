"""The data path alone (tcplb.relay.Pipe) against real loopback sockets, on both loops."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tcplb_helpers import run, wait_for, wait_stalled

from tcplb import relay

LOOPS = ["asyncio", "uvloop"]


class MiniLB:
    """A one-backend forwarder built from relay.Pipe only."""

    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend = backend
        self.closed: list[relay.Pipe] = []
        self.pipes: list[relay.Pipe] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            p = relay.Pipe(loop, on_close=self.closed.append)
            self.pipes.append(p)
            self.tasks.add(loop.create_task(self._connect(p)))
            return p.client

        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connect(self, p: relay.Pipe) -> None:
        loop = asyncio.get_running_loop()
        await p.wait_client()
        side = p.new_server_side()
        await loop.create_connection(lambda: side, *self.backend)
        p.attach_server(side)

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def backend(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.AbstractServer, tuple[str, int]]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[:2]


def rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("loop", LOOPS)
def test_bulk_both_ways_and_close(loop: str) -> None:
    payload = os.urandom(8 * 1024 * 1024 + 123)

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    async def main() -> None:
        srv, addr = await backend(echo)
        lb = MiniLB(addr)
        await lb.start()
        r, w = await asyncio.open_connection("127.0.0.1", lb.port)

        async def send() -> None:
            w.write(payload)
            await w.drain()
            w.write_eof()

        t = asyncio.create_task(send())
        got = await r.read(-1)
        await t
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        w.close()
        await wait_for(lambda: len(lb.closed) == 1)
        p = lb.closed[0]
        assert p.bytes_in == len(payload) and p.bytes_out == len(payload)
        assert p.termination == "--"
        lb.close()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_half_close_client_first(loop: str) -> None:
    """Client sends a request and shuts down its write side; the answer still arrives."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await r.read(-1)  # until the client's FIN: the answer goes out after it
        w.write(b"answer:" + req)
        await w.drain()
        w.close()

    async def main() -> None:
        srv, addr = await backend(handler)
        lb = MiniLB(addr)
        await lb.start()
        r, w = await asyncio.open_connection("127.0.0.1", lb.port)
        w.write(b"question")
        w.write_eof()
        assert await r.read(-1) == b"answer:question"
        await wait_for(lambda: len(lb.closed) == 1)
        assert lb.closed[0].termination == "--"
        w.close()
        lb.close()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_half_close_server_first(loop: str) -> None:
    """The server shuts down its write side; the client can still talk to it; pair closes after both."""
    got: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"banner")
        w.write_eof()
        got.append(await r.readexactly(9))  # sent by the client after it saw our EOF
        got.append(await r.read(-1))
        w.close()

    async def main() -> None:
        srv, addr = await backend(handler)
        lb = MiniLB(addr)
        await lb.start()
        r, w = await asyncio.open_connection("127.0.0.1", lb.port)
        assert await r.read(-1) == b"banner"  # EOF forwarded to the client
        w.write(b"late data")
        await w.drain()
        await wait_for(lambda: bool(got), 10, "late data at the server")
        assert got == [b"late data"]  # the other direction stayed open after the server's EOF
        assert not lb.closed  # and the pair with it
        w.write_eof()
        await wait_for(lambda: len(lb.closed) == 1, 10, "pair closed after both EOFs")
        await wait_for(lambda: len(got) == 2, 10, "client EOF at the server")
        assert got == [b"late data", b""]
        w.close()
        lb.close()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("who", ["client", "server"])
def test_reset_propagated(loop: str, who: str) -> None:
    server_w: list[asyncio.StreamWriter] = []
    server_err: list[BaseException | bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        server_w.append(w)
        try:
            server_err.append(await r.read(-1))
        except OSError as e:
            server_err.append(e)

    async def main() -> None:
        srv, addr = await backend(handler)
        lb = MiniLB(addr)
        await lb.start()
        r, w = await asyncio.open_connection("127.0.0.1", lb.port)
        w.write(b"x")
        await wait_for(lambda: bool(server_w))
        if who == "client":
            rst(w)
            await wait_for(lambda: bool(server_err))
            assert isinstance(server_err[0], ConnectionResetError)
            await wait_for(lambda: len(lb.closed) == 1)
            assert lb.closed[0].termination == "CD"
        else:
            rst(server_w[0])
            with pytest.raises(ConnectionResetError):
                await r.read(-1)
            await wait_for(lambda: len(lb.closed) == 1)
            assert lb.closed[0].termination == "SD"
            w.close()
        lb.close()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_slow_reader_backpressure(loop: str) -> None:
    """A client that does not read: the LB stops reading the server, buffers stay bounded."""
    sent = [0]

    async def firehose(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        chunk = b"x" * 65536
        try:
            while sent[0] < 200 * 1024 * 1024:
                w.write(chunk)
                await w.drain()
                sent[0] += len(chunk)
        except OSError:
            pass

    async def main() -> None:
        srv, addr = await backend(firehose)
        lb = MiniLB(addr)
        await lb.start()
        r, w = await asyncio.open_connection("127.0.0.1", lb.port, limit=1024)
        r._transport.pause_reading()  # type: ignore[attr-defined]
        stalled = await wait_stalled(lambda: sent[0])  # the server stops moving: backpressure
        p = lb.pipes[0]
        assert p.client.transport is not None
        buffered = p.client.transport.get_write_buffer_size()
        assert buffered <= relay.HIGH_WATER + 512 * 1024
        assert stalled < 64 * 1024 * 1024  # socket buffers + our bounded buffer, not 200 MB
        # now read everything: flow resumes
        r._transport.resume_reading()  # type: ignore[attr-defined]
        total = 0
        while total < 32 * 1024 * 1024:
            total += len(await r.read(1 << 20))
        assert sent[0] > stalled
        w.close()
        lb.close()
        srv.close()

    run(loop, main)


REPRO = Path(__file__).resolve().parent / "uvloop_repro"


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode", ["plain", "buffered-swap"])
def test_reproducer_safe_variants_are_intact(loop: str, mode: str) -> None:
    """The uvloop finding (README.md): with writes left queued (4 MiB high-water mark), a relay that
    writes memoryviews of a reused buffer corrupts data on uvloop; plain Protocol (what tcplb uses) and the
    fresh-buffer-when-queued variant stay intact on both loops."""
    env = {**os.environ, "RELAY_HIGH_WATER": str(4 * 1024 * 1024)}
    r = subprocess.run(
        [sys.executable, str(REPRO / "integrity.py"), mode, loop],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(REPRO),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "intact" in r.stdout
