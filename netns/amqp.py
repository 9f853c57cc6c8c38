"""AMQP load for failover scenarios: publishers with confirms, consumers with manual acks, and a ledger.

Run as separate processes in the client namespace::

    python -m netns.amqp publish --host 192.0.2.100 --queue q1 --rate 100 --out pub1.json --id-prefix p1
    python -m netns.amqp consume --host 192.0.2.100 --queue q1 --out cons1.json
    python -m netns.amqp burst --host 192.0.2.100 --interval 0.1 --out burst.json

``burst`` opens a new AMQP connection every ``--interval`` seconds (until SIGTERM or ``--duration``): the
full handshake (header, Start, Start-Ok, Tune, Tune-Ok, Open, Open-Ok) then a clean Close, each bounded by
``--timeout``. A connection counts as failed when it does not reach Open-Ok (refused, reset, closed, garbage
or the timeout: a "hung" connect). Its record lists every connection as ``[start (epoch s), seconds, ok,
error]``; the status file holds the running counts.

Both reconnect and resume on their own (pika, explicit recovery loop). Every message carries an id
(``message_id`` and the body). The publisher publishes one message at a time and waits for its confirm
(synchronous confirms, so "confirmed" is exact); a message whose confirm never came is republished with the
*same* id after reconnecting (at-least-once; duplicates are counted, not hidden). The consumer acks each
message after recording it. Both write a small status file while running and their full record as JSON on
exit:

* publisher: SIGTERM stops publishing (the one in flight is finished or abandoned), then writes the record;
* consumer: SIGTERM starts a drain: it keeps consuming until no message arrived for ``--drain-idle`` seconds
  (bounded by ``--drain-timeout``), then writes the record.

:class:`Ledger` accounts for every id across the records: published, confirmed, consumed, duplicates, lost
(confirmed but never consumed) and the outage (the longest gap without a confirm / a delivery).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Self

from netns.lab import Host, LabError, Proc, WaitTimeout, dead, wait_until

QUORUM = "quorum"
CLASSIC = "classic"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class _Stopper:
    def __init__(self) -> None:
        self.stop_at: float | None = None
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_at is None:
            self.stop_at = time.time()

    @property
    def stopping(self) -> bool:
        return self.stop_at is not None


@dataclass
class _Common:
    role: str
    host: str
    port: int
    queue: str
    queue_type: str
    out: Path
    started: float = field(default_factory=time.time)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, kind, detail)
    attempts: int = 0
    failed_attempts: int = 0  # connection attempts that did not reach an open AMQP connection
    setup_failures: int = 0  # open connections whose channel set-up the broker refused (queue leader moving)
    disconnects: int = 0  # established connections lost
    connected: bool = False

    def event(self, kind: str, detail: str = "") -> None:
        self.events.append((time.time(), kind, detail[:300]))

    def base_record(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "host": self.host,
            "port": self.port,
            "queue": self.queue,
            "queue_type": self.queue_type,
            "started": self.started,
            "finished": time.time(),
            "attempts": self.attempts,
            "failed_attempts": self.failed_attempts,
            "setup_failures": self.setup_failures,
            "disconnects": self.disconnects,
            "events": self.events,
        }


def _params(host: str, port: int, heartbeat: int, blocked_timeout: float = 10.0) -> Any:
    import pika

    return pika.ConnectionParameters(
        host=host,
        port=port,
        heartbeat=heartbeat,
        connection_attempts=1,
        socket_timeout=2.0,
        stack_timeout=5.0,
        blocked_connection_timeout=blocked_timeout if blocked_timeout > 0 else None,
        credentials=pika.PlainCredentials("guest", "guest"),
    )


def _declare(channel: Any, queue: str, queue_type: str) -> None:
    args = {"x-queue-type": QUORUM} if queue_type == QUORUM else {}
    channel.queue_declare(queue=queue, durable=True, arguments=args)


def _open(args: argparse.Namespace, st: _Common, setup: Callable[[Any], None]) -> tuple[Any, Any] | None:
    """One connection attempt, counted in ``st``: a connection and its channel after ``setup(channel)``, or
    None after a failure (the connection closed, ``retry_delay`` waited)."""
    import pika
    from pika.exceptions import AMQPError

    st.attempts += 1
    try:
        conn = pika.BlockingConnection(_params(args.host, args.port, args.heartbeat, args.blocked_timeout))
    except (AMQPError, OSError) as exc:
        # TCP connect or AMQP handshake failed: what a load balancer is there to prevent
        st.failed_attempts += 1
        st.event("connect_failed", repr(exc))
        time.sleep(args.retry_delay)
        return None
    try:
        ch = conn.channel()
        setup(ch)
    except (AMQPError, OSError) as exc:
        # the connection was fine; the broker refused the channel's set-up (a quorum queue whose leader is
        # on a node shutting down answers 541 INTERNAL_ERROR for a moment)
        st.setup_failures += 1
        st.event("setup_failed", repr(exc))
        with contextlib.suppress(Exception):
            conn.close()
        time.sleep(args.retry_delay)
        return None
    st.connected = True
    st.event("connected")
    return conn, ch


def publish(args: argparse.Namespace) -> int:
    import pika
    from pika.exceptions import AMQPError, NackError, UnroutableError

    st = _Common("publisher", args.host, args.port, args.queue, args.queue_type, Path(args.out))
    stopper = _Stopper()
    published: list[str] = []  # every id attempted, in order (first attempt)
    confirmed: list[tuple[str, float]] = []
    republished = 0
    nacked = 0
    pending: str | None = None  # id whose confirm has not come
    seq = 0
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    next_at = time.monotonic()
    status_at = 0.0
    status_path = Path(args.out + ".status")
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    body_pad = b"x" * max(0, args.size - 40)

    def write_status() -> None:
        _write_json(
            status_path,
            {
                "confirmed": len(confirmed),
                "published": len(published),
                "last_confirm": confirmed[-1][1] if confirmed else None,
                "connected": st.connected,
                "disconnects": st.disconnects,
            },
        )

    def setup(ch: Any) -> None:
        ch.confirm_delivery()
        _declare(ch, args.queue, args.queue_type)

    conn: Any = None
    while not stopper.stopping and (deadline is None or time.monotonic() < deadline):
        if conn is None:
            opened = _open(args, st, setup)
            if opened is None:
                continue
            conn, ch = opened
        if pending is None:
            now = time.monotonic()
            if interval:
                if now < next_at:
                    time.sleep(next_at - now)
                next_at = max(next_at + interval, time.monotonic() - interval)
            seq += 1
            pending = f"{args.id_prefix}-{seq:08d}"
            published.append(pending)
        else:
            republished += 1
        body = json.dumps({"id": pending, "t": time.time()}).encode() + body_pad
        try:
            ch.basic_publish(
                exchange="",
                routing_key=args.queue,
                body=body,
                properties=pika.BasicProperties(message_id=pending, delivery_mode=2),
                mandatory=True,
            )
        except (NackError, UnroutableError) as exc:
            nacked += 1
            if nacked <= 20 or nacked % 100 == 0:
                st.event("nack", f"#{nacked} {exc!r}")
            time.sleep(args.retry_delay)
            continue  # retried with the same id
        except (AMQPError, OSError) as exc:
            st.disconnects += 1
            st.connected = False
            st.event("disconnected", repr(exc))
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
            continue
        confirmed.append((pending, time.time()))
        pending = None
        if time.monotonic() >= status_at:
            write_status()
            status_at = time.monotonic() + 0.25
    with contextlib.suppress(Exception):
        if conn is not None:
            conn.close()
    st.connected = False
    write_status()
    record = st.base_record()
    record.update(
        {
            "published": published,
            "confirmed": confirmed,
            "republished": republished,
            "nacked": nacked,
            "stop_requested": stopper.stop_at,
        }
    )
    _write_json(st.out, record)
    return 0


def consume(args: argparse.Namespace) -> int:
    from pika.exceptions import AMQPError

    st = _Common("consumer", args.host, args.port, args.queue, args.queue_type, Path(args.out))
    stopper = _Stopper()
    consumed: list[tuple[str, float]] = []
    redelivered = 0
    last_delivery = time.monotonic()
    status_path = Path(args.out + ".status")
    status_at = 0.0
    ids_file = open(args.out + ".ids", "a", buffering=1)  # noqa: SIM115 - one line per delivery, for drains

    def write_status() -> None:
        _write_json(
            status_path,
            {
                "consumed": len(consumed),
                "last_consume": consumed[-1][1] if consumed else None,
                "connected": st.connected,
                "disconnects": st.disconnects,
            },
        )

    def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
        nonlocal redelivered, last_delivery
        mid = props.message_id
        if mid is None:
            try:
                mid = json.loads(body[: body.index(b"}") + 1])["id"]
            except (ValueError, KeyError):
                mid = "?"
        consumed.append((str(mid), time.time()))
        ids_file.write(f"{mid}\n")
        if method.redelivered:
            redelivered += 1
        last_delivery = time.monotonic()
        ch.basic_ack(delivery_tag=method.delivery_tag)

    def setup(ch: Any) -> None:
        ch.basic_qos(prefetch_count=args.prefetch)
        _declare(ch, args.queue, args.queue_type)
        ch.basic_consume(queue=args.queue, on_message_callback=on_message, auto_ack=False)

    conn: Any = None
    drain_started: float | None = None
    while True:
        if stopper.stopping and drain_started is None:
            drain_started = time.monotonic()
            last_delivery = max(last_delivery, drain_started)
        if drain_started is not None:
            idle = time.monotonic() - last_delivery
            if (conn is not None and idle >= args.drain_idle) or (
                time.monotonic() - drain_started > args.drain_timeout
            ):
                break
        if conn is None:
            opened = _open(args, st, setup)
            if opened is None:
                continue
            conn, _ch = opened
        try:
            conn.process_data_events(time_limit=0.1)
        except (AMQPError, OSError) as exc:
            st.disconnects += 1
            st.connected = False
            st.event("disconnected", repr(exc))
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
        if time.monotonic() >= status_at:
            write_status()
            status_at = time.monotonic() + 0.25
    with contextlib.suppress(Exception):
        if conn is not None:
            conn.close()
    st.connected = False
    write_status()
    record = st.base_record()
    ids_file.close()
    record.update({"consumed": consumed, "redelivered": redelivered, "stop_requested": stopper.stop_at})
    _write_json(st.out, record)
    return 0


# --------------------------------------------------------------------------------------------------------
# accounting


def longest_gap(
    times: Sequence[float], start: float | None = None, end: float | None = None
) -> tuple[float, float]:
    """The longest interval between consecutive ``times`` (sorted), optionally bounded by start/end.

    Returns ``(gap_seconds, gap_start)``.
    """
    ts = sorted(times)
    if start is not None:
        ts = [start, *[t for t in ts if t >= start]]
    if end is not None:
        ts = [*[t for t in ts if t <= end], end]
    best, at = 0.0, ts[0] if ts else 0.0
    for a, b in itertools.pairwise(ts):
        if b - a > best:
            best, at = b - a, a
    return best, at


@dataclass
class Ledger:
    """Every message id across publisher and consumer records."""

    published: list[str]
    confirmed: dict[str, float]  # id -> confirm time
    consumed: list[tuple[str, float]]
    publisher_records: list[dict[str, Any]] = field(default_factory=list)
    consumer_records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> Ledger:
        pubs: list[dict[str, Any]] = []
        cons: list[dict[str, Any]] = []
        for r in records:
            (pubs if r.get("role") == "publisher" else cons).append(r)
        published = [i for r in pubs for i in r.get("published", [])]
        confirmed = {str(i): float(t) for r in pubs for i, t in r.get("confirmed", [])}
        consumed = [(str(i), float(t)) for r in cons for i, t in r.get("consumed", [])]
        return cls(published, confirmed, consumed, pubs, cons)

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> Ledger:
        return cls.from_records(json.loads(Path(p).read_text()) for p in paths)

    @property
    def consumed_ids(self) -> Counter[str]:
        return Counter(i for i, _t in self.consumed)

    @property
    def lost(self) -> list[str]:
        seen = self.consumed_ids
        return sorted(i for i in self.confirmed if i not in seen)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.consumed_ids.values() if n > 1)

    @property
    def unexpected(self) -> list[str]:
        """Consumed ids nobody published (another run's leftovers)."""
        pub = set(self.published)
        return sorted({i for i, _t in self.consumed if i not in pub})

    def confirm_gap(self, start: float | None = None, end: float | None = None) -> tuple[float, float]:
        return longest_gap(list(self.confirmed.values()), start, end)

    def consume_gap(self, start: float | None = None, end: float | None = None) -> tuple[float, float]:
        return longest_gap([t for _i, t in self.consumed], start, end)

    def first_confirm_after(self, t: float) -> float | None:
        after = [c for c in self.confirmed.values() if c >= t]
        return min(after) if after else None

    def first_consume_after(self, t: float) -> float | None:
        after = [c for _i, c in self.consumed if c >= t]
        return min(after) if after else None

    def count(self, key: str) -> int:
        return sum(int(r.get(key, 0)) for r in [*self.publisher_records, *self.consumer_records])

    def summary(self) -> dict[str, Any]:
        return {
            "published": len(set(self.published)),
            "confirmed": len(self.confirmed),
            "consumed": len(self.consumed_ids),
            "deliveries": len(self.consumed),
            "duplicates": self.duplicates,
            "lost": len(self.lost),
            "republished": self.count("republished"),
            "redelivered": self.count("redelivered"),
            "failed_connection_attempts": self.count("failed_attempts"),
            "setup_failures": self.count("setup_failures"),
            "disconnects": self.count("disconnects"),
            "longest_confirm_gap": round(self.confirm_gap()[0], 3),
            "longest_consume_gap": round(self.consume_gap()[0], 3),
        }

    def report(self) -> str:
        s = self.summary()
        return (
            f"published {s['published']}, confirmed {s['confirmed']}, consumed {s['consumed']} "
            f"({s['deliveries']} deliveries, {s['duplicates']} duplicates, {s['redelivered']} redelivered), "
            f"lost {s['lost']}; republished {s['republished']}, disconnects {s['disconnects']}, "
            f"failed connection attempts {s['failed_connection_attempts']}, channel set-ups refused by the "
            f"broker {s['setup_failures']}; longest gap without confirm "
            f"{s['longest_confirm_gap']:.2f} s, without delivery {s['longest_consume_gap']:.2f} s"
        )


class AmqpLoad:
    """Publisher and consumer processes on a lab host, against ``target`` (the VIP or a node)."""

    def __init__(
        self,
        host: Host,
        target: str,
        queue: str,
        *,
        publishers: int = 1,
        consumers: int = 1,
        rate: float = 100.0,
        queue_type: str = QUORUM,
        port: int = 5672,
        heartbeat: int = 3,
        tag: str = "",
        blocked_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.target = target
        self.queue = queue
        self.n_publishers = publishers
        self.n_consumers = consumers
        self.rate = rate
        self.queue_type = queue_type
        self.port = port
        self.heartbeat = heartbeat
        self.blocked_timeout = blocked_timeout
        self.tag = tag or queue
        self.publishers: list[Proc] = []
        self.consumers: list[Proc] = []
        self.outputs: list[Path] = []
        self.ledger: Ledger | None = None

    def _argv(self, cmd: str, out: Path, extra: list[str]) -> list[str]:
        return [
            sys.executable, "-m", "netns.amqp", cmd, "--host", self.target, "--port", str(self.port),
            "--queue", self.queue, "--queue-type", self.queue_type, "--out", str(out),
            "--heartbeat", str(self.heartbeat), "--blocked-timeout", str(self.blocked_timeout), *extra,
        ]  # fmt: skip

    def start(self) -> AmqpLoad:
        wd = self.host.lab.workdir
        env = {"PYTHONPATH": _package_root()}
        for i in range(self.n_consumers):
            out = wd / f"{self.tag}-cons{i}.json"
            self.outputs.append(out)
            self.consumers.append(
                self.host.start(self._argv("consume", out, []), name=f"{self.tag}-cons{i}", env=env)
            )
        for i in range(self.n_publishers):
            out = wd / f"{self.tag}-pub{i}.json"
            self.outputs.append(out)
            extra = ["--rate", str(self.rate / self.n_publishers), "--id-prefix", f"{self.tag}-p{i}"]
            self.publishers.append(
                self.host.start(self._argv("publish", out, extra), name=f"{self.tag}-pub{i}", env=env)
            )
        return self

    def _confirmed_ids(self) -> set[str]:
        ids: set[str] = set()
        for path in self.outputs:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if data.get("role") == "publisher":
                ids.update(str(i) for i, _t in data.get("confirmed", []))
        return ids

    def _consumed_ids(self) -> set[str]:
        ids: set[str] = set()
        for path in self.outputs:
            try:
                ids.update(Path(str(path) + ".ids").read_text().split())
            except OSError:
                continue
        return ids

    def status(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in self.outputs:
            try:
                out.append(json.loads(Path(str(path) + ".status").read_text()))
            except (OSError, ValueError):
                out.append({})
        return out

    def confirmed(self) -> int:
        return sum(int(s.get("confirmed", 0)) for s in self.status())

    def consumed(self) -> int:
        return sum(int(s.get("consumed", 0)) for s in self.status())

    def wait_flowing(self, confirmed: int = 50, timeout: float = 30.0) -> None:
        """Wait until ``confirmed`` more confirms and as many deliveries have happened."""
        base_c, base_d = self.confirmed(), self.consumed()

        def flowing() -> bool:
            return self.confirmed() >= base_c + confirmed and self.consumed() >= base_d + confirmed

        # a dead publisher or consumer fails the wait at once (not a timeout 30 s later)
        wait_until(
            flowing, timeout, interval=0.1, what=f"{confirmed} messages confirmed and consumed",
            fail_if=lambda: dead(*self.publishers, *self.consumers),
        )  # fmt: skip

    def stop(self, timeout: float = 60.0, drained: Callable[[], bool] | None = None) -> Ledger:
        """Stop the publishers, let the consumers drain, and account for every id.

        The consumers are told to stop once every confirmed id has reached one of them (bounded by
        ``timeout``), plus an optional ``drained`` condition. RabbitMQ's queue counters are no help here:
        for quorum queues they lag by the statistics interval.
        """
        for p in self.publishers:
            p.term()
        for p in self.publishers:
            if p.wait(timeout) is None:
                raise LabError(f"{p.name} did not stop:\n{p.output()[-2000:]}")
        if self.consumers:
            # every confirmed id delivered to a consumer (messages held unacked by a half-dead connection come
            # back only when the broker notices it is dead: up to two heartbeat intervals)
            confirmed = self._confirmed_ids()
            with contextlib.suppress(WaitTimeout):  # the ledger reports what is missing
                wait_until(
                    lambda: not confirmed - self._consumed_ids(), timeout, interval=0.25,
                    what=f"every confirmed message of {self.queue} consumed",
                    fail_if=lambda: dead(*self.consumers),
                )  # fmt: skip
        if drained is not None:
            wait_until(drained, timeout, interval=0.5, what=f"queue {self.queue} drained")
        for p in self.consumers:
            p.term()
        for p in self.consumers:
            if p.wait(timeout) is None:
                raise LabError(f"{p.name} did not drain:\n{p.output()[-2000:]}")
        for p in [*self.publishers, *self.consumers]:
            if p.returncode != 0:
                raise LabError(f"{p.name} exited with {p.returncode}:\n{p.output()[-3000:]}")
        self.ledger = Ledger.from_files(self.outputs)
        return self.ledger


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


# --------------------------------------------------------------------------------------------------------
# connection bursts


async def _amqp_session(host: str, port: int, timeout: float) -> tuple[bool, str, float]:
    """One client connection: the full handshake as guest, then Close/Close-Ok. (ok, error, seconds)."""
    import asyncio

    from tcplb import amqpwire as aw

    t0 = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    frames = aw.FrameReader()
    pending: list[aw.Frame] = []

    async def frame(reader: asyncio.StreamReader, want: tuple[int, int]) -> aw.Frame:
        while True:
            while pending:
                f = pending.pop(0)
                if f.method == want:
                    return f
                if f.method == (aw.CONNECTION_CLASS, 50):  # Connection.Close from the broker
                    raise ConnectionError(f"closed by the broker: {f.payload[4:60]!r}")
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("closed")
            got = frames.feed(data)
            if isinstance(got, aw.NotAmqp):
                raise ConnectionError(got.reason)
            pending.extend(got)

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(aw.PROTOCOL_HEADER)
            await frame(reader, (10, 10))
            writer.write(aw.start_ok("guest", "guest", client_properties={"product": "netns.amqp burst"}))
            tune = await frame(reader, (10, 30))
            cmax = int.from_bytes(tune.payload[4:6], "big")
            fmax = int.from_bytes(tune.payload[6:10], "big")
            writer.write(aw.tune_ok(cmax, fmax, 0) + aw.connection_open("/"))
            await frame(reader, (10, 41))
            ok_at = time.monotonic() - t0
            writer.write(aw.close())
            await frame(reader, (10, 51))
        return True, "", ok_at
    except TimeoutError:
        return False, "timeout", time.monotonic() - t0
    except (OSError, aw.AmqpWireError) as exc:
        return False, f"{type(exc).__name__}: {exc}"[:120], time.monotonic() - t0
    finally:
        if writer is not None:
            writer.close()


async def _burst(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    stopper = _Stopper()
    conns: list[list[Any]] = []
    tasks: set[asyncio.Task[None]] = set()
    status_path = Path(args.out + ".status")
    t0 = time.monotonic()
    e0 = time.time()

    async def one() -> None:
        start = e0 + (time.monotonic() - t0)
        ok, err, dur = await _amqp_session(args.host, args.port, args.timeout)
        conns.append([round(start, 4), round(dur, 4), ok, err])

    i = 0
    while not stopper.stopping and (args.duration <= 0 or time.monotonic() - t0 < args.duration):
        delay = t0 + i * args.interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(min(delay, 0.05))
            continue
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        if i % 5 == 0:
            done = [c for c in conns]
            _write_json(status_path, {"started": i, "done": len(done), "failed": sum(not c[2] for c in done)})
    if tasks:
        await asyncio.gather(*tasks)
    conns.sort()
    _write_json(status_path, {"started": i, "done": len(conns), "failed": sum(not c[2] for c in conns)})
    return {"role": "burst", "host": args.host, "interval": args.interval, "conns": conns}


def burst(args: argparse.Namespace) -> int:
    import asyncio

    record = asyncio.run(_burst(args))
    _write_json(Path(args.out), record)
    return 0


class _Child:
    """A ``python -m netns.amqp <cmd>`` process on a lab host that writes its record to ``<tag>.json`` (and
    its progress to ``<tag>.json.status``)."""

    def __init__(self, host: Host, tag: str, cmd: list[str]) -> None:
        self.host = host
        self.out = host.lab.workdir / f"{tag}.json"
        self.argv = [sys.executable, "-m", "netns.amqp", *cmd, "--out", str(self.out)]
        self.tag = tag
        self.proc: Proc | None = None

    def start(self) -> Self:
        self.out.unlink(missing_ok=True)
        self.proc = self.host.start(self.argv, name=self.tag, env={"PYTHONPATH": _package_root()})
        return self

    def _status(self) -> dict[str, int] | None:
        """The last progress line, or None before the first (or while it is being written)."""
        try:
            data = json.loads(Path(str(self.out) + ".status").read_text())
        except (OSError, ValueError):
            return None
        return {k: int(v) for k, v in data.items()}

    def _finish(self, timeout: float) -> dict[str, Any] | None:
        """SIGTERM, wait for a clean exit, and return the record (None if it was never started)."""
        proc = self.proc
        if proc is None:
            return None
        proc.term()
        if proc.wait(timeout) is None or proc.returncode != 0:
            raise LabError(f"{proc.name} did not finish cleanly:\n{proc.output()[-2000:]}")
        record: dict[str, Any] = json.loads(self.out.read_text())
        return record


class Burst(_Child):
    """``python -m netns.amqp burst`` on a lab host: a new AMQP connection every ``interval`` seconds."""

    def __init__(self, host: Host, target: str, *, interval: float = 0.1, timeout: float = 10.0,
                 port: int = 5672, tag: str = "burst") -> None:  # fmt: skip
        super().__init__(host, tag, [
            "burst", "--host", target, "--port", str(port), "--interval", str(interval),
            "--timeout", str(timeout),
        ])  # fmt: skip

    def status(self) -> dict[str, int]:
        status = self._status()
        return {"started": 0, "done": 0, "failed": 0} if status is None else status

    def stop(self, timeout: float = 30.0) -> list[list[Any]]:
        """SIGTERM, wait for the connections in flight, and return every connection's record."""
        record = self._finish(timeout)
        if record is None:
            return []
        conns: list[list[Any]] = record["conns"]
        return conns


# --------------------------------------------------------------------------------------------------------
# long-lived connections


def hold(args: argparse.Namespace) -> int:
    """``--connections`` long-lived pika connections (one channel each), kept open until SIGTERM and
    reopened whenever they close, whatever closed them: a reset, a missed heartbeat, or the broker
    (``ConnectionClosedByBroker``, e.g. 320 CONNECTION_FORCED from a drain or a rebalancing close; pika's own
    recovery example would stop there, rabbitmq-aware.md §5). Opened ``--open-rate`` per second."""
    import pika
    from pika.exceptions import AMQPError, ConnectionClosedByBroker

    st = _Common("holder", args.host, args.port, "", "", Path(args.out))
    stopper = _Stopper()
    conns: list[Any] = [None] * args.connections
    closed_by_broker: Counter[str] = Counter()
    status_path = Path(args.out + ".status")
    status_at = 0.0
    next_open = 0.0

    def write_status() -> None:
        _write_json(status_path, {
            "open": sum(c is not None for c in conns), "attempts": st.attempts,
            "failed_attempts": st.failed_attempts, "disconnects": st.disconnects,
            "closed_by_broker": sum(closed_by_broker.values()),
        })  # fmt: skip

    while not stopper.stopping:
        for i, conn in enumerate(conns):
            if stopper.stopping:
                break
            if conn is None:
                if time.monotonic() < next_open:
                    continue
                next_open = time.monotonic() + 1.0 / args.open_rate
                st.attempts += 1
                try:
                    c = pika.BlockingConnection(_params(args.host, args.port, args.heartbeat))
                    c.channel()
                except (AMQPError, OSError) as exc:
                    st.failed_attempts += 1
                    st.event("connect_failed", repr(exc))
                    continue
                conns[i] = c
                continue
            try:
                conn.process_data_events(time_limit=0)
            except ConnectionClosedByBroker as exc:
                closed_by_broker[f"{exc.reply_code} {exc.reply_text}"[:120]] += 1
                st.event("closed_by_broker", repr(exc))
                conns[i] = None
            except (AMQPError, OSError) as exc:
                st.disconnects += 1
                st.event("disconnected", repr(exc))
                with contextlib.suppress(Exception):
                    conn.close()
                conns[i] = None
        if time.monotonic() >= status_at:
            write_status()
            status_at = time.monotonic() + 0.25
        time.sleep(0.02)
    for conn in conns:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
    record = st.base_record()
    record.update({"connections": args.connections, "closed_by_broker": dict(closed_by_broker)})
    write_status()
    _write_json(st.out, record)
    return 0


class Holder(_Child):
    """``python -m netns.amqp hold`` on a lab host: ``n`` long-lived pika connections with reconnect."""

    def __init__(self, host: Host, target: str, n: int, *, open_rate: float = 20.0, heartbeat: int = 10,
                 tag: str = "hold") -> None:  # fmt: skip
        super().__init__(host, tag, [
            "hold", "--host", target, "--connections", str(n), "--open-rate", str(open_rate),
            "--heartbeat", str(heartbeat),
        ])  # fmt: skip
        self.n = n

    def status(self) -> dict[str, int]:
        status = self._status()
        return {} if status is None else status

    def wait_open(self, timeout: float = 60.0) -> None:
        proc = self.proc
        wait_until(lambda: self.status().get("open", 0) >= self.n, timeout, interval=0.2,
                   what=f"{self.n} connections open", fail_if=lambda: dead(proc))  # fmt: skip

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        record = self._finish(timeout)
        return {} if record is None else record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns.amqp", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("burst")
    b.add_argument("--host", required=True)
    b.add_argument("--port", type=int, default=5672)
    b.add_argument("--interval", type=float, default=0.1, help="seconds between new connections")
    b.add_argument("--duration", type=float, default=0.0, help="seconds (0: until SIGTERM)")
    b.add_argument("--timeout", type=float, default=10.0, help="a connection not open by then has failed")
    b.add_argument("--out", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--host", required=True)
    h.add_argument("--port", type=int, default=5672)
    h.add_argument("--connections", type=int, default=60)
    h.add_argument("--open-rate", type=float, default=20.0, help="new connections per second at most")
    h.add_argument("--heartbeat", type=int, default=10)
    h.add_argument("--out", required=True)
    for name in ("publish", "consume"):
        s = sub.add_parser(name)
        s.add_argument("--host", required=True)
        s.add_argument("--port", type=int, default=5672)
        s.add_argument("--queue", required=True)
        s.add_argument("--queue-type", choices=[QUORUM, CLASSIC], default=QUORUM)
        s.add_argument("--out", required=True)
        s.add_argument("--heartbeat", type=int, default=3)
        s.add_argument("--retry-delay", type=float, default=0.02)
        s.add_argument(
            "--blocked-timeout", type=float, default=10.0,
            help="pika's blocked_connection_timeout: close a connection blocked (resource alarm) this long "
            "(0: never)",
        )  # fmt: skip
        if name == "publish":
            s.add_argument(
                "--rate", type=float, default=100.0, help="messages per second (0: as fast as possible)"
            )
            s.add_argument("--duration", type=float, default=0.0, help="seconds (0: until SIGTERM)")
            s.add_argument("--id-prefix", default="m")
            s.add_argument("--size", type=int, default=100)
        else:
            s.add_argument("--prefetch", type=int, default=50)
            s.add_argument("--drain-idle", type=float, default=2.0)
            s.add_argument("--drain-timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    if args.cmd == "burst":
        return burst(args)
    if args.cmd == "hold":
        return hold(args)
    return publish(args) if args.cmd == "publish" else consume(args)


if __name__ == "__main__":
    sys.exit(main())
