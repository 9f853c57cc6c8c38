"""A lean, pipelined AMQP 0-9-1 load generator on raw asyncio (no client library in the hot path).

Why not pika: one pika client publishing 1 KiB messages is the limit at about 5k msg/s (lab-facts.md), so it
would measure itself rather than the load balancer. Here a publish is three pre-encoded frames written in
batches; incoming frames are parsed from one buffer per ``data_received``. The generator reports its own CPU
use, so a reader can see it was not saturated (and ``amqp_bench`` also runs two of them at once).

Run in a lab namespace; prints one JSON object on its last line::

    python -m bench.amqpgen publish --host H --queue Q --duration 3 [--window 64] [--size 1024]
    python -m bench.amqpgen latency --host H [--consume-host H2] --queue Q --rate 1000 --duration 3

* ``publish --window 0``: no confirms; publishes as fast as the socket takes it for ``duration`` seconds,
  then a synchronous ``queue.declare(passive)`` on the same channel marks the moment the broker has
  processed every publish: rate = published / (that moment - start).
* ``publish --window N``: publisher confirms with at most N unconfirmed messages in flight (pipelined);
  rate = confirmed / elapsed, ending at the last confirm.
* ``latency``: a consumer connection (auto-ack) and a publisher connection in this process; the publisher
  sends at a fixed ``rate`` with a send timestamp (monotonic ns) in the body; the consumer records
  receive - send for every message (p50, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

FRAME_END = b"\xce"
_HDR = struct.Struct(">BHI")
_CM = struct.Struct(">HH")
_Q = struct.Struct(">Q")


class AmqpError(Exception):
    pass


def shortstr(s: str) -> bytes:
    b = s.encode()
    if len(b) > 255:
        raise ValueError("shortstr longer than 255 bytes")
    return bytes([len(b)]) + b


def longstr(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def table(d: dict[str, Any]) -> bytes:
    out = bytearray()
    for k, v in d.items():
        out += shortstr(k)
        if isinstance(v, bool):
            out += b"t" + bytes([int(v)])
        elif isinstance(v, int):
            out += b"I" + struct.pack(">i", v)
        elif isinstance(v, dict):
            out += b"F" + table(v)
        else:
            out += b"S" + longstr(str(v).encode())
    return longstr(bytes(out))


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return _HDR.pack(ftype, channel, len(payload)) + payload + FRAME_END


def method(channel: int, cls: int, meth: int, args: bytes = b"") -> bytes:
    return frame(1, channel, _CM.pack(cls, meth) + args)


def publish_frames(channel: int, queue: str, body: bytes, persistent: bool = True) -> tuple[bytes, bytes]:
    """(method + header frames, body frame header): the body bytes go between the latter and FRAME_END."""
    m = method(channel, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(queue) + b"\x00")
    flags, props = (0x1000, b"\x02") if persistent else (0, b"")
    h = frame(2, channel, struct.pack(">HHQH", 60, 0, len(body), flags) + props)
    return m + h, _HDR.pack(3, channel, len(body))


class Conn(asyncio.Protocol):
    """One AMQP connection with one channel (1)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiters: dict[tuple[int, int], deque[asyncio.Future[bytes]]] = {}
        self.error: BaseException | None = None
        self.closed = asyncio.get_event_loop().create_future()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.on_confirm: Callable[[int, bool, bool], None] | None = None  # (tag, multiple, nack)
        self.on_body: Callable[[bytes], None] | None = None
        self._body_left = 0
        self._body_parts: list[bytes] = []
        self.frame_max = 131072

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.transport.set_write_buffer_limits(high=1 << 20, low=1 << 18)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or AmqpError("connection closed"))

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        for q in self.waiters.values():
            for f in q:
                if not f.done():
                    f.set_exception(exc)
        self.waiters.clear()
        self.can_write.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 7:
            ftype, ch, size = _HDR.unpack_from(buf, pos)
            end = pos + 7 + size
            if end + 1 > n:
                break
            if buf[end] != 0xCE:
                self._fail(AmqpError("bad frame end"))
                if self.transport is not None:
                    self.transport.abort()
                return
            self._frame(ftype, ch, buf, pos + 7, end)
            pos = end + 1
        if pos:
            del buf[:pos]

    def _frame(self, ftype: int, ch: int, buf: bytearray, a: int, b: int) -> None:
        if ftype == 1:
            cls, meth = _CM.unpack_from(buf, a)
            if cls == 60 and meth in (80, 120):  # basic.ack / basic.nack (publisher confirms)
                tag = _Q.unpack_from(buf, a + 4)[0]
                multiple = bool(buf[a + 12] & 1)
                if self.on_confirm is not None:
                    self.on_confirm(tag, multiple, meth == 120)
                return
            if cls == 60 and meth == 60:  # basic.deliver: header and body follow
                return
            if (cls, meth) in ((10, 50), (20, 40)):  # connection.close / channel.close
                code = struct.unpack_from(">H", buf, a + 4)[0]
                ln = buf[a + 6]
                text = bytes(buf[a + 7 : a + 7 + ln]).decode(errors="replace")
                self._fail(AmqpError(f"closed by broker: {code} {text}"))
                if self.transport is not None:
                    if cls == 10:
                        self.transport.write(method(0, 10, 51))
                    self.transport.close()
                return
            q = self.waiters.get((cls, meth))
            if q:
                f = q.popleft()
                if not f.done():
                    f.set_result(bytes(buf[a + 4 : b]))
            return
        if ftype == 2:
            size = _Q.unpack_from(buf, a + 4)[0]
            self._body_left = size
            self._body_parts = []
            if size == 0 and self.on_body is not None:
                self.on_body(b"")
            return
        if ftype == 3:
            if self._body_left <= 0:
                return  # no content in progress (an empty body frame)
            part = bytes(buf[a : min(b, a + 16)]) if not self._body_parts else b""
            if part:
                self._body_parts.append(part)
            self._body_left -= b - a
            if self._body_left <= 0 and self.on_body is not None:
                self.on_body(self._body_parts[0] if self._body_parts else b"")
            return
        # 8 = heartbeat: ignored (we ask for none)

    # -- requests
    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        self.transport.write(data)

    def expect(self, cls: int, meth: int) -> asyncio.Future[bytes]:
        f: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault((cls, meth), deque()).append(f)
        return f

    async def rpc(self, data: bytes, cls: int, meth: int, timeout: float = 30.0) -> bytes:
        f = self.expect(cls, meth)
        self.write(data)
        return await asyncio.wait_for(f, timeout)

    async def handshake(self, user: str, password: str, vhost: str = "/") -> None:
        start = self.expect(10, 10)
        self.write(b"AMQP\x00\x00\x09\x01")
        await asyncio.wait_for(start, 15)
        props = table({"product": "bench.amqpgen", "capabilities": {"publisher_confirms": True}})
        resp = f"\0{user}\0{password}".encode()
        tune_f = self.expect(10, 30)
        self.write(method(0, 10, 11, props + shortstr("PLAIN") + longstr(resp) + shortstr("en_US")))
        tune = await asyncio.wait_for(tune_f, 15)
        ch_max, fmax, _hb = struct.unpack_from(">HIH", tune, 0)
        self.frame_max = fmax or 131072
        self.write(method(0, 10, 31, struct.pack(">HIH", ch_max or 2047, self.frame_max, 0)))
        await self.rpc(method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00"), 10, 41)
        await self.rpc(method(1, 20, 10, shortstr("")), 20, 11)

    async def declare(self, queue: str, *, passive: bool = False, durable: bool = True) -> int:
        bits = (1 if passive else 0) | (2 if durable else 0)
        args = struct.pack(">H", 0) + shortstr(queue) + bytes([bits]) + table({})
        ok = await self.rpc(method(1, 50, 10, args), 50, 11)
        ln = ok[0]
        return int(struct.unpack_from(">I", ok, 1 + ln)[0])  # message count

    async def delete(self, queue: str) -> None:
        await self.rpc(method(1, 50, 40, struct.pack(">H", 0) + shortstr(queue) + b"\x00"), 50, 41)

    async def confirm_select(self) -> None:
        await self.rpc(method(1, 85, 10, b"\x00"), 85, 11)

    async def consume(self, queue: str, *, no_ack: bool = True, prefetch: int = 0) -> None:
        if prefetch:
            await self.rpc(method(1, 60, 10, struct.pack(">IHB", 0, prefetch, 0)), 60, 11)
        flags = bytes([2 if no_ack else 0])
        args = struct.pack(">H", 0) + shortstr(queue) + shortstr("c1") + flags + table({})
        await self.rpc(method(1, 60, 20, args), 60, 21)

    async def close(self) -> None:
        if self.error is None and self.transport is not None:
            with contextlib.suppress(Exception):
                bye = struct.pack(">H", 200) + shortstr("bye") + b"\0\0\0\0"
                await self.rpc(method(0, 10, 50, bye), 10, 51, timeout=5)
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, user: str, password: str) -> Conn:
    loop = asyncio.get_running_loop()
    _t, conn = await asyncio.wait_for(loop.create_connection(Conn, host, port), 15)
    await conn.handshake(user, password)
    return conn


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _wait_start(start_at: float | None) -> None:
    if start_at is not None:
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def publish(args: argparse.Namespace) -> dict[str, Any]:
    conn = await connect(args.host, args.port, args.user, args.password)
    await conn.declare(args.queue, durable=not args.transient)
    await asyncio.sleep(args.settle)  # let the mirrors of a new queue start (no sync pause mid-measurement)
    body = b"\0" * args.size
    head, body_hdr = publish_frames(1, args.queue, body, persistent=not args.transient)
    one = head + body_hdr + body + FRAME_END
    window = args.window
    confirmed = 0
    nacked = 0
    last_confirm = 0.0
    progress = asyncio.Event()
    if window:
        await conn.confirm_select()

        def on_confirm(tag: int, multiple: bool, nack: bool) -> None:
            nonlocal confirmed, nacked, last_confirm
            # the broker confirms in order on a channel, so the tag is the count confirmed so far
            n = tag
            if nack:
                nacked += n - confirmed
            confirmed = max(confirmed, n)
            last_confirm = time.monotonic()
            progress.set()

        conn.on_confirm = on_confirm
    await _wait_start(args.start_at)
    published = 0
    cpu0 = _cpu()
    t0 = time.monotonic()
    stop = t0 + args.duration
    if not window:
        # Deep socket buffers (client, LB, broker) would hold many seconds of publishes: a passive
        # queue.declare after every `barrier` messages (at most two outstanding) keeps what is in flight
        # bounded without confirms. The channel is ordered: its reply means every earlier publish was handled.
        barriers: deque[asyncio.Future[bytes]] = deque()
        declare = method(1, 50, 10, struct.pack(">H", 0) + shortstr(args.queue) + b"\x03" + table({}))
        chunk = one * args.batch
        while time.monotonic() < stop:
            if len(barriers) >= 2:
                await asyncio.wait_for(barriers.popleft(), 30)
            sent = 0
            while sent < args.barrier:
                if not conn.can_write.is_set():
                    await conn.can_write.wait()
                conn.write(chunk)
                sent += args.batch
            published += sent
            barriers.append(conn.expect(50, 11))
            conn.write(declare)
            await asyncio.sleep(0)
        count = -1
        while barriers:
            ok = await asyncio.wait_for(barriers.popleft(), 30)
            count = int(struct.unpack_from(">I", ok, 1 + ok[0])[0])
        t_end = time.monotonic()
        # messages in the queue at the last barrier (it was empty, nobody consumes): what the broker took
        done = count if count >= 0 else published
    else:
        while time.monotonic() < stop:
            room = window - (published - confirmed)
            if room <= 0:
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), 5)
                if conn.error is not None:
                    raise conn.error
                continue
            k = min(room, args.batch)
            conn.write(one * k)
            published += k
            if not conn.can_write.is_set():
                await conn.can_write.wait()
        deadline = time.monotonic() + 15
        while confirmed < published and time.monotonic() < deadline:
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), 1)
        t_end = last_confirm or time.monotonic()
        done = confirmed
        count = -1
    elapsed = t_end - t0
    cpu = _cpu() - cpu0
    if args.delete:
        await conn.delete(args.queue)
    await conn.close()
    return {
        "mode": "publish",
        "window": window,
        "published": published,
        "confirmed": confirmed if window else None,
        "nacked": nacked,
        "queue_count": count,
        "elapsed": elapsed,
        "rate": done / elapsed if elapsed > 0 else None,
        "cpu_pct": 100.0 * cpu / elapsed if elapsed > 0 else None,
    }


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    cons = await connect(args.consume_host or args.host, args.port, args.user, args.password)
    await cons.declare(args.queue, durable=not args.transient)
    lat_ns: list[int] = []
    received = 0

    def on_body(head: bytes) -> None:
        nonlocal received
        received += 1
        if len(head) >= 8:
            lat_ns.append(time.monotonic_ns() - _Q.unpack_from(head, 0)[0])

    cons.on_body = on_body
    await cons.consume(args.queue, no_ack=True)
    await asyncio.sleep(args.settle)
    pub = await connect(args.host, args.port, args.user, args.password)
    body_rest = b"\0" * max(0, args.size - 8)
    head, body_hdr = publish_frames(1, args.queue, b"\0" * max(8, args.size), persistent=not args.transient)
    await _wait_start(args.start_at)
    cpu0 = _cpu()
    t0 = time.monotonic()
    sent = 0
    interval = 1.0 / args.rate
    while True:
        now = time.monotonic()
        if now - t0 >= args.duration:
            break
        due = int((now - t0) / interval) + 1
        if due > sent:
            out = bytearray()
            for _ in range(due - sent):
                out += head + body_hdr + _Q.pack(time.monotonic_ns()) + body_rest + FRAME_END
            pub.write(bytes(out))
            sent = due
        await asyncio.sleep(min(interval, 0.001))
    deadline = time.monotonic() + 5
    while received < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - t0
    cpu = _cpu() - cpu0
    await pub.close()
    if args.delete:
        with contextlib.suppress(Exception):
            await cons.delete(args.queue)
    await cons.close()
    ms = sorted(x / 1e6 for x in lat_ns)

    def pct(p: float) -> float | None:
        if not ms:
            return None
        return ms[min(len(ms) - 1, round((len(ms) - 1) * p / 100))]

    return {
        "mode": "latency",
        "rate_target": args.rate,
        "sent": sent,
        "received": received,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": ms[-1] if ms else None,
        "cpu_pct": 100.0 * cpu / elapsed if elapsed > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.amqpgen", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("publish", "latency"):
        s = sub.add_parser(name)
        s.add_argument("--host", required=True)
        s.add_argument("--port", type=int, default=5672)
        s.add_argument("--user", default="guest")
        s.add_argument("--password", default="guest")
        s.add_argument("--queue", required=True)
        s.add_argument("--duration", type=float, default=3.0)
        s.add_argument("--size", type=int, default=1024)
        s.add_argument("--start-at", type=float, default=None, help="epoch seconds: start together")
        s.add_argument("--delete", action="store_true", help="delete the queue at the end")
        s.add_argument(
            "--settle",
            type=float,
            default=1.0,
            help="seconds between declaring the queue and measuring (mirrors start)",
        )
        s.add_argument("--transient", action="store_true", help="non-persistent messages, non-durable queue")
        s.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
        if name == "publish":
            s.add_argument("--window", type=int, default=0, help="unconfirmed messages in flight (0: none)")
            s.add_argument("--batch", type=int, default=50, help="messages per write")
            s.add_argument(
                "--barrier",
                type=int,
                default=1000,
                help="without confirms: a synchronous passive declare after this many messages",
            )
        else:
            s.add_argument("--rate", type=float, default=1000.0)
            s.add_argument("--consume-host", default=None)
    args = ap.parse_args(argv)
    coro = publish(args) if args.cmd == "publish" else latency(args)
    if args.loop == "uvloop":
        try:
            import uvloop

            result = uvloop.run(coro)
        except ImportError:
            result = asyncio.run(coro)
    else:
        result = asyncio.run(coro)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
