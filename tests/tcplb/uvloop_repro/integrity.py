"""Does a relay deliver the bytes it was given? Bulk transfer through relay_repro.py's protocols, in-process.

    python integrity.py MODE LOOP      (MODE as in relay_repro.py; LOOP uvloop|asyncio)

A source server streams 64 MiB of a position-dependent pattern; the client reads it through the relay with
small pauses (so the relay's writes often do not complete at once) and compares with what was sent.
Exit status 0 when the bytes are intact, 1 when they differ (prints the first bad offset).
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

import relay_repro as rr

TOTAL = 64 * 1024 * 1024


def pattern(total: int) -> bytes:
    block = b"".join(i.to_bytes(4, "big") for i in range(65536))  # 256 KiB, every 4 bytes distinct
    return (block * (total // len(block) + 1))[:total]


async def main(mode: str) -> int:
    loop = asyncio.get_running_loop()
    data = pattern(TOTAL)

    async def source(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(data)
        await w.drain()
        w.close()

    src = await asyncio.start_server(source, "127.0.0.1", 0)
    sport = src.sockets[0].getsockname()[1]
    rr.Buffered.mode = mode
    cls = rr.Plain if mode == "plain" else rr.Buffered

    tasks: set[asyncio.Task[None]] = set()

    def factory() -> asyncio.BaseProtocol:
        client = cls()

        async def connect() -> None:
            server = cls()
            server.peer, client.peer = client, server
            await loop.create_connection(lambda: server, "127.0.0.1", sport)
            server.connected = client.connected = True

        tasks.add(loop.create_task(connect()))
        return client

    relay = await loop.create_server(factory, "127.0.0.1", 0)
    rport = relay.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", rport, limit=1 << 20)
    got = bytearray()
    n = 0
    while chunk := await r.read(1 << 20):
        got += chunk
        n += 1
        if n % 4 == 0:
            await asyncio.sleep(0.002)  # a slightly slow reader: the relay's writes stay pending
    w.close()
    relay.close()
    src.close()
    ok = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    if ok:
        print(f"{mode}: intact ({len(got)} bytes)")
        return 0
    bad = next((i for i in range(min(len(got), len(data))) if got[i] != data[i]), min(len(got), len(data)))
    print(f"{mode}: CORRUPTED: received {len(got)} of {len(data)} bytes, first difference at offset {bad}")
    return 1


if __name__ == "__main__":
    mode = sys.argv[1]
    kind = sys.argv[2] if len(sys.argv) > 2 else "uvloop"
    if kind == "uvloop":
        import uvloop

        sys.exit(uvloop.run(main(mode)))
    sys.exit(asyncio.run(main(mode)))
