"""Minimal relay used to investigate "double free or corruption" with uvloop 0.23 + BufferedProtocol.

    python relay_repro.py MODE LISTEN_PORT BACKEND_PORT [LOOP]

MODE:
  buffered-view   BufferedProtocol, one reused 256 KiB bytearray per side, peer.write(memoryview[:n])
                  (zero copy; the variant from lab-facts.md)
  buffered-copy   same, but peer.write(bytes(view[:n]))  (one copy per chunk)
  buffered-swap   zero copy, but a fresh buffer whenever the peer kept data queued after write()
  plain           asyncio.Protocol, data_received(bytes) -> peer.write(bytes)
The relay forwards EOF (write_eof, return True) and closes the pair once both directions ended.
LOOP: uvloop (default) or asyncio.
"""

from __future__ import annotations

import asyncio
import os
import sys

BUF = 256 * 1024
HIGH_WATER = int(os.environ.get("RELAY_HIGH_WATER", "0"))  # 0: the loop's default (64 KiB)


class Half:
    peer: Half | None = None
    transport: asyncio.Transport | None = None
    eof = False
    connected = False

    def __init__(self) -> None:
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if HIGH_WATER:
            transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        self.eof = True
        p = self.peer
        if p is not None and p.transport is not None and p.connected:
            if p.eof:
                p.transport.close()
                assert self.transport is not None
                self.transport.close()
            elif p.transport.can_write_eof():
                p.transport.write_eof()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        p = self.peer
        if p is not None and p.transport is not None:
            p.transport.close()

    def pause_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.resume_reading()


class Plain(Half, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early.append(data)
            return
        self.peer.transport.write(data)


class Buffered(Half, asyncio.BufferedProtocol):
    mode = "buffered-view"

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early.append(bytes(self.view[:nbytes]))
            return
        t = self.peer.transport
        if self.mode == "buffered-copy":
            t.write(bytes(self.view[:nbytes]))
        else:
            t.write(self.view[:nbytes])
            if self.mode == "buffered-swap" and t.get_write_buffer_size():
                self.buf = bytearray(BUF)
                self.view = memoryview(self.buf)


async def main(mode: str, port: int, backend: int, loop_kind: str) -> None:
    loop = asyncio.get_running_loop()
    Buffered.mode = mode
    cls = Plain if mode == "plain" else Buffered

    tasks: set[asyncio.Task[None]] = set()

    def factory() -> asyncio.BaseProtocol:
        client = cls()

        async def connect() -> None:
            server = cls()
            server.peer, client.peer = client, server
            try:
                await loop.create_connection(lambda: server, "127.0.0.1", backend)
            except OSError:
                if client.transport:
                    client.transport.close()
                return
            assert server.transport is not None
            server.connected = client.connected = True
            if client.early:
                server.transport.writelines(client.early)
                client.early.clear()
            if client.eof and server.transport is not None:
                server.transport.write_eof()

        tasks.add(loop.create_task(connect()))
        return client

    srv = await loop.create_server(factory, "127.0.0.1", port, backlog=1024)
    print("ready", mode, loop_kind, flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    mode, port, backend = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    kind = sys.argv[4] if len(sys.argv) > 4 else "uvloop"
    if kind == "uvloop":
        import uvloop

        uvloop.run(main(mode, port, backend, kind))
    else:
        asyncio.run(main(mode, port, backend, kind))
