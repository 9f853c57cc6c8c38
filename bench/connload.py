"""TCP connection load for the benchmarks (runs in a lab namespace, asyncio).

``burst``: open connections at a fixed rate for a while; each one waits for the backend's greeting line
(so a connection the LB accepted but could not forward counts as failed) and closes. Prints JSON with every
connection: ``[start (epoch s), seconds until greeting or failure, ok, error]``.

``hold``: open N connections (paced), wait for each greeting, then hold them idle until SIGTERM; writes a
status file (``{"open": n, "failed": m}``) as it goes, so the orchestrator can wait for the target.

``backend``: the plain TCP backend: greets every connection with ``hi\\n`` and holds it until the client
closes; small requests (``GET`` lines) are answered with a short HTTP response, so wrk works against it too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any, cast

GREETING = b"hi\n"


async def _one(host: str, port: int, timeout: float) -> tuple[bool, str, float]:
    t0 = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            data = await reader.readexactly(len(GREETING))
        ok = data == GREETING
        return ok, "" if ok else "bad greeting", time.monotonic() - t0
    except TimeoutError:
        return False, "timeout", time.monotonic() - t0
    except asyncio.IncompleteReadError:
        return False, "closed", time.monotonic() - t0
    except OSError as exc:
        return False, type(exc).__name__, time.monotonic() - t0
    finally:
        if writer is not None:
            writer.close()


async def burst(args: argparse.Namespace) -> dict[str, Any]:
    if args.start_at:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
    results: list[list[Any]] = []
    tasks: list[asyncio.Task[None]] = []
    n = int(args.rate * args.duration)
    t0 = time.monotonic()
    e0 = time.time()

    async def run(i: int) -> None:
        start = e0 + (time.monotonic() - t0)
        ok, err, dur = await _one(args.host, args.port, args.timeout)
        results.append([round(start, 4), round(dur, 4), ok, err])

    for i in range(n):
        delay = t0 + i / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run(i)))
    await asyncio.gather(*tasks)
    results.sort()
    return {"mode": "burst", "rate": args.rate, "conns": results}


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    status = Path(args.status)
    writers: list[asyncio.StreamWriter] = []
    failed = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    targets = [(h, int(p)) for h, p in (t.rsplit(":", 1) for t in args.targets.split(","))]
    sem = asyncio.Semaphore(args.parallel)

    def write_status() -> None:
        tmp = status.with_suffix(".tmp")
        tmp.write_text(json.dumps({"open": len(writers), "failed": failed}))
        tmp.replace(status)

    async def one(i: int) -> None:
        nonlocal failed
        host, port = targets[i % len(targets)]
        async with sem:
            try:
                async with asyncio.timeout(args.timeout):
                    reader, writer = await asyncio.open_connection(host, port)
                    if not args.no_greeting:
                        await reader.readexactly(len(GREETING))
                writers.append(writer)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                failed += 1

    t0 = time.monotonic()
    tasks = []
    for i in range(args.count):
        tasks.append(asyncio.create_task(one(i)))
        if args.rate and i % 100 == 99:
            await asyncio.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
            write_status()
    await asyncio.gather(*tasks)
    write_status()
    opened = time.monotonic() - t0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.hold)
    for w in writers:
        w.close()
    return {"mode": "hold", "open": len(writers), "failed": failed, "open_seconds": opened}


async def backend(args: argparse.Namespace) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\n\r\nhello\n"

    class P(asyncio.Protocol):
        t: asyncio.Transport

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = cast(asyncio.Transport, transport)
            if not args.http:
                self.t.write(GREETING)

        def data_received(self, data: bytes) -> None:
            n = data.count(b"\r\n\r\n")
            if n:
                self.t.write(response * n)

    server = await asyncio.get_running_loop().create_server(P, args.host, args.port, backlog=4096)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()
    return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.connload", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("burst")
    b.add_argument("--host", required=True)
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--rate", type=float, default=100.0)
    b.add_argument("--duration", type=float, default=5.0)
    b.add_argument("--timeout", type=float, default=10.0)
    b.add_argument("--start-at", type=float, default=0.0)
    h = sub.add_parser("hold")
    h.add_argument("--targets", required=True, help="ip:port[,ip:port...] (connections spread over them)")
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--rate", type=float, default=2000.0, help="new connections per second (0: no pacing)")
    h.add_argument("--parallel", type=int, default=200, help="connects in progress at once")
    h.add_argument("--timeout", type=float, default=10.0)
    h.add_argument("--hold", type=float, default=300.0, help="seconds at most")
    h.add_argument("--status", required=True)
    h.add_argument("--no-greeting", action="store_true", help="count a connection open once connected")
    s = sub.add_parser("backend")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--http", action="store_true", help="no greeting: an HTTP-ish responder for wrk")
    args = ap.parse_args(argv)
    coro = {"burst": burst, "hold": hold, "backend": backend}[args.cmd](args)
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
