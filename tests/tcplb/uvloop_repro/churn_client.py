"""Lean churn client: N concurrent workers open a connection, send a request, read the answer, close.

    python churn_client.py HOST PORT TOTAL CONCURRENCY [MIX]

MIX "clean" (default): HTTP GET with Connection: close, read to EOF, close.
MIX "nasty": a third of the connections reset (SO_LINGER 0) right after sending, a third half-close
first, a third clean. Prints one JSON line: {"ok": n, "reset": n, "failed": n, "seconds": s, "rate": r}:
``ok`` counts only answers read and checked; ``reset`` the connections that were connected, sent their request
and were reset by us (no answer to check: they are not "ok").
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import time

REQ = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
LINGER0 = struct.pack("ii", 1, 0)


async def worker(
    loop: asyncio.AbstractEventLoop, addr: tuple[str, int], n: int, mix: str, res: list[int], wid: int
) -> None:
    for i in range(n):
        kind = (i + wid) % 3 if mix == "nasty" else 2
        s = socket.socket()
        s.setblocking(False)
        try:
            await loop.sock_connect(s, addr)
            await loop.sock_sendall(s, REQ)
            if kind == 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
                res[2] += 1
                continue
            if kind == 1:
                s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = await loop.sock_recv(s, 65536)
                if not chunk:
                    break
                got += chunk
            if got.startswith(b"HTTP/1.1 200"):
                res[0] += 1
            else:
                res[1] += 1
        except OSError:
            res[1] += 1
        finally:
            s.close()


async def main(host: str, port: int, total: int, conc: int, mix: str) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    res = [0, 0, 0]  # ok, failed, reset
    t0 = time.monotonic()
    per = total // conc
    await asyncio.gather(*(worker(loop, (host, port), per, mix, res, w) for w in range(conc)))
    dt = time.monotonic() - t0
    done = res[0] + res[1] + res[2]
    rate = round(done / dt)
    return {"ok": res[0], "reset": res[2], "failed": res[1], "seconds": round(dt, 2), "rate": rate}


if __name__ == "__main__":
    host, port, total, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mix = sys.argv[5] if len(sys.argv) > 5 else "clean"
    try:
        import uvloop

        out = uvloop.run(main(host, port, total, conc, mix))
    except ImportError:
        out = asyncio.run(main(host, port, total, conc, mix))
    print(json.dumps(out), flush=True)
