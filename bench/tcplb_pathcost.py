"""The Python cost of tcplb's connection path, without sockets: a microbenchmark for development.

``python -m bench.tcplb_pathcost [conn|req|both] [--loop uvloop|asyncio] [--rounds 5] [--n 20000]
[--servers 1] [--balance leastconn] [--log] [--profile]``

One ``LoadBalancer`` and one listener run on a real event loop, but every transport is a fake (no socket, no
syscall): the listener's protocol factory is called as the loop would call it on accept, the loop's
``create_connection`` is replaced by one that makes a fake server transport at once, and data is fed
through ``get_buffer``/``buffer_updated`` as the loop does for a ``BufferedProtocol``. What is measured is
the CPU time (``time.process_time``) of tcplb's own Python code and the loop's scheduling of it:

``conn``
    accept -> pick -> connect -> one request and one answer relayed -> both FINs -> close -> release, in
    batches of 50 connections; microseconds per connection, best of ``--rounds`` x ``--n`` connections
    (``log = "none"``, as in the bench's configuration; ``--log``: a tcplog line per connection, written to
    /dev/null through the logging module as ``log = "stdout"`` does).
``req``
    one established connection; a small request relayed to the server and a small answer relayed back,
    ``--n`` times: microseconds per request/answer pair (two reads, two writes), best of ``--rounds``.

Not a benchmark of tcplb against anything (that is ``python -m bench tcplb``, with sockets, beside HAProxy):
a reproducible figure for changes to this path. Figures are in docs/design.md ("Cost").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import os
import pstats
import sys
import time
from typing import Any

from tcplb import config as cfgmod
from tcplb.frontend import Frontend
from tcplb.lb import LoadBalancer
from tcplb.procstart import setup_logging

REQ = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"


class FakeTransport(asyncio.Transport):
    """A transport that accepts every write at once and closes on the next loop iteration.

    With ``uv`` a write does what uvloop's does with its argument before the syscall (uvloop/handles/
    stream.pyx, ``_buffer_write``): anything but ``bytes`` is wrapped as ``memoryview(data).cast('b')``."""

    uv = True

    def __init__(self, loop: asyncio.AbstractEventLoop, proto: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._loop = loop
        self._proto: asyncio.BaseProtocol | None = proto
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.uv and type(data) is not bytes:
            memoryview(data).cast("b")

    def write_eof(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._lost)

    def _lost(self) -> None:
        proto = self._proto
        self._proto = None  # as both loops do after connection_lost (no transport <-> protocol cycle left)
        if proto is not None:
            proto.connection_lost(None)

    def abort(self) -> None:
        self.close()


def feed(proto: asyncio.BaseProtocol, data: bytes) -> None:
    """What the loop does for one read of ``data``."""
    if isinstance(proto, asyncio.BufferedProtocol):
        buf = proto.get_buffer(-1)
        n = len(data)
        memoryview(buf)[:n] = data
        proto.buffer_updated(n)
    else:
        proto.data_received(data)  # type: ignore[attr-defined]


def config(servers: int, balance: str, log: bool = False) -> cfgmod.Config:
    srv = ", ".join(f'{{ name = "s{i}", address = "127.0.0.1:{i + 2}" }}' for i in range(servers))
    return cfgmod.loads(f"""
[global]
log = "{"stdout" if log else "none"}"
[defaults]
timeout_connect = "5s"
timeout_client = "3h"
timeout_server = "3h"
[listen.web]
bind = ["127.0.0.1:1"]
check = false
balance = "{balance}"
server = [{srv}]
""")


class Rig:
    def __init__(self, loop: asyncio.AbstractEventLoop, cfg: cfgmod.Config) -> None:
        self.loop = loop
        self.server_protos: list[asyncio.BaseProtocol] = []
        loop.create_connection = self._create_connection  # type: ignore[method-assign,assignment]
        self.lb = LoadBalancer(cfg, loop)
        self.fe = Frontend(self.lb, cfg.listeners[0])
        self.lb.frontends["web"] = self.fe

    async def _create_connection(self, factory: Any, *args: Any, **kw: Any) -> tuple[Any, Any]:
        proto = factory()
        tr = FakeTransport(self.loop, proto)
        proto.connection_made(tr)
        self.server_protos.append(proto)
        return tr, proto

    def accept(self, i: int) -> asyncio.BaseProtocol:
        proto = self.fe._factory(("127.0.0.1", 40000 + i % 20000))
        proto.connection_made(FakeTransport(self.loop, proto))
        return proto

    async def turn(self, k: int = 3) -> None:
        for _ in range(k):
            await asyncio.sleep(0)

    async def conns(self, n: int, batch: int = 50) -> None:
        for _ in range(n // batch):
            clients = [self.accept(i) for i in range(batch)]
            for c in clients:
                feed(c, REQ)
            await self.turn()
            servers, self.server_protos = self.server_protos, []
            for s in servers:
                feed(s, RESP)
                s.eof_received()  # type: ignore[attr-defined]
            for c in clients:
                c.eof_received()  # type: ignore[attr-defined]
            await self.turn()

    async def open_one(self) -> tuple[asyncio.BaseProtocol, asyncio.BaseProtocol]:
        c = self.accept(0)
        feed(c, REQ)
        await self.turn()
        (s,) = self.server_protos
        self.server_protos = []
        feed(s, RESP)
        return c, s


def measure(fn: Any, n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        t = time.process_time()
        fn(n)
        best = min(best, (time.process_time() - t) / n * 1e6)
    return best


def run(
    mode: str,
    loop_kind: str,
    rounds: int,
    n: int,
    servers: int,
    balance: str,
    profile: bool,
    log: bool = False,
) -> None:
    if loop_kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
        FakeTransport.uv = False
    asyncio.set_event_loop(loop)
    cfg = config(servers, balance, log)
    if log:  # a tcplog line per connection, through the logging module, written to /dev/null
        setup_logging(cfg)
        for h in logging.getLogger("tcplb").handlers:
            if isinstance(h, logging.StreamHandler):
                h.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the life of the process
    rig = Rig(loop, cfg)
    prof = cProfile.Profile() if profile else None

    def conns(k: int) -> None:
        loop.run_until_complete(rig.conns(k))

    def reqs(k: int) -> None:
        for _ in range(k):
            feed(c, REQ)
            feed(s, RESP)

    try:
        if mode in ("conn", "both"):
            conns(2000)
            assert rig.lb.actconn == 0, rig.lb.actconn
            if prof:
                prof.enable()
            us = measure(conns, n, rounds)
            if prof:
                prof.disable()
            assert rig.lb.actconn == 0, rig.lb.actconn
            what = f"{balance} log" if log else balance
            print(
                f"conn {loop_kind} servers={servers} {what}: {us:.2f} us/connection (best of {rounds} x {n})"
            )
        if mode in ("req", "both"):
            c, s = loop.run_until_complete(rig.open_one())
            reqs(2000)
            if prof:
                prof.enable()
            us = measure(reqs, n * 5, rounds)
            if prof:
                prof.disable()
            print(f"req  {loop_kind}: {us:.3f} us/request+answer (best of {rounds} x {n * 5})")
    finally:
        loop.close()
    if prof:
        # PATHCOST_SORT (a pstats key, default tottime) and PATHCOST_LINES (default 30) shape the listing
        sort = os.environ.get("PATHCOST_SORT", "tottime")
        pstats.Stats(prof).sort_stats(sort).print_stats(int(os.environ.get("PATHCOST_LINES", "30")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tcplb_pathcost", description=__doc__.split("\n")[0])
    ap.add_argument("mode", nargs="?", default="both", choices=("conn", "req", "both"))
    ap.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--balance", default="leastconn", choices=("leastconn", "roundrobin", "source"))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--log", action="store_true", help="a tcplog line per connection (to /dev/null)")
    a = ap.parse_args(argv)
    run(a.mode, a.loop, a.rounds, a.n, a.servers, a.balance, a.profile, a.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
