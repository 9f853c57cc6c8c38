"""Review of 751783f/04d3143 (the shared read buffer is an anonymous private mmap, ``get_buffer`` is
``partial(next, repeat(buf))``): what the speed-up must keep.

* ``get_buffer`` answers the one buffer, non-empty and writable, whatever the size hint (stock asyncio
  passes -1; uvloop libuv's suggestion; 0 and huge values are legal hints).
* Writes that stay queued inside the loop keep their bytes: with a large ``bufsize`` (the write high-water
  mark is ``bufsize``) a slow reader leaves many chunks queued in uvloop's own write buffer while the other
  direction and further reads go through the same shared buffer. A relay that handed the loop a view of the
  shared buffer corrupts this transfer on uvloop (checked by mutation at review time); the mmap slice is a
  ``bytes`` copy and keeps it intact on both loops."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from tcplb_helpers import run, wait_for
from test_relay_reads import _MiniLB

from tcplb import relay

LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("loop", LOOPS)
def test_get_buffer_whatever_the_size_hint(loop: str) -> None:
    async def main() -> None:
        lp = asyncio.get_running_loop()
        for size in (4096, relay.BUFSIZE, 1 << 20):
            side = relay.Pipe(lp, bufsize=size).client
            first = side.get_buffer(-1)
            for hint in (-1, 0, 1, 65536, 1 << 31, (1 << 63) - 1):
                buf = side.get_buffer(hint)
                assert buf is first
                mv = memoryview(buf)
                assert mv.nbytes == size and not mv.readonly
                mv.release()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_queued_writes_keep_their_bytes(loop: str) -> None:
    bufsize = 4 << 20  # high-water mark 4 MiB: writes stay queued in the loop without pausing the reader
    down = os.urandom(24 * 1024 * 1024 + 3)
    up = os.urandom(8 * 1024 * 1024 + 5)
    got_up = hashlib.sha256()
    n_up = [0]

    async def server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async def reader() -> None:
            while data := await r.read(1 << 16):
                got_up.update(data)
                n_up[0] += len(data)

        t = asyncio.create_task(reader())
        for i in range(0, len(down), 1 << 20):
            w.write(down[i : i + (1 << 20)])
            await w.drain()
        w.write_eof()
        await t
        w.close()

    async def main() -> None:
        srv = await asyncio.start_server(server, "127.0.0.1", 0)
        lb = _MiniLB(srv.sockets[0].getsockname()[:2], bufsize=bufsize)
        await lb.start()
        r, w = await asyncio.open_connection("127.0.0.1", lb.port, limit=1 << 16)

        async def send() -> None:
            for i in range(0, len(up), 1 << 18):
                w.write(up[i : i + (1 << 18)])
                await w.drain()
            w.write_eof()

        t = asyncio.create_task(send())
        got = hashlib.sha256()
        total = 0
        reads = 0
        while data := await r.read(1 << 16):  # slower than the server: the relay's queue toward us grows
            got.update(data)
            total += len(data)
            reads += 1
            if reads % 8 == 0:
                await asyncio.sleep(0.001)  # pacing only (the outcome is the digest)
        await t
        assert total == len(down)
        assert got.digest() == hashlib.sha256(down).digest()
        await wait_for(lambda: n_up[0] == len(up))
        assert got_up.digest() == hashlib.sha256(up).digest()
        await wait_for(lambda: len(lb.closed) == 1)
        p = lb.closed[0]
        assert (p.bytes_in, p.bytes_out, p.termination) == (len(up), len(down), "--")
        w.close()
        lb.close()
        srv.close()

    run(loop, main)
