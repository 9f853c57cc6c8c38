"""Graceful rebalancing and max lifetime wired (tcplb.rebalancer.Driver) on real sockets, both loops, with
fake brokers and a fake RabbitMQ management API that records every ``DELETE /api/connections/{name}`` and,
like the broker, answers it by sending the client ``connection.close`` 320 and closing the connection (a FIN).

The connection names are computed here independently, from the broker's side of each socket (peer ->
local, as RabbitMQ names connections), so a DELETE only succeeds when tcplb named a real connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import urllib.parse
from typing import Any

import pytest
from tcplb_helpers import FakeServer, free_port, run, wait_for

from tcplb import amqpwire as aw
from tcplb import config
from tcplb.rebalancer import Driver, MissingManagement
from tcplb.server import LoadBalancer

LOOPS = ["asyncio", "uvloop"]


def start_frame() -> bytes:
    props = aw.encode_table({"product": "RabbitMQ", "version": "3.10.8"})
    args = b"\x00\x09" + props + struct.pack("!I", 5) + b"PLAIN" + struct.pack("!I", 5) + b"en_US"
    return aw.method_frame(10, 10, args)


START = start_frame()


class Broker(FakeServer):
    """Answers the AMQP protocol header with Connection.Start, then echoes. ``conns`` maps RabbitMQ's name of
    each connection (``peer -> local``) to its writer."""

    def __init__(self) -> None:
        self.conns: dict[str, asyncio.StreamWriter] = {}

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peer, local = w.get_extra_info("peername"), w.get_extra_info("sockname")
        name = f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}"
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            if await r.readexactly(8) != aw.PROTOCOL_HEADER:
                return
            w.write(START)
            self.conns[name] = w
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        self.conns.pop(name, None)
        w.close()

    def live(self) -> int:
        return len(self.conns)

    def close(self) -> None:
        super().close()
        for w in list(self.conns.values()):
            w.transport.abort()


class Mgmt(FakeServer):
    """``DELETE /api/connections/{name}``: 204 and the broker's graceful close when a broker has that
    connection, else 404 (``fail``: always 500). Every other request: 404."""

    def __init__(self, brokers: list[Broker]) -> None:
        self.brokers = brokers
        self.deletes: list[tuple[str, str, str]] = []  # (name, X-Reason, Authorization)
        self.fail = False

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target = head.split(" ", 2)[:2]
            hdrs = {
                k.strip().lower(): v.strip()
                for k, _, v in (ln.partition(":") for ln in head.split("\r\n")[1:])
            }
            status = 404
            if method == "DELETE" and target.startswith("/api/connections/"):
                name = urllib.parse.unquote(target.removeprefix("/api/connections/"))
                reason = hdrs.get("x-reason", "Closed via management plugin")
                self.deletes.append((name, reason, hdrs.get("authorization", "")))
                if self.fail:
                    status = 500
                else:
                    for b in self.brokers:
                        bw = b.conns.get(name)
                        if bw is not None:
                            bw.write(aw.close(320, f"CONNECTION_FORCED - {reason}"[:255]))
                            bw.close()  # after Close-Ok in RabbitMQ; a FIN either way, never a reset
                            status = 204
            body = b"" if status == 204 else json.dumps({"error": "x"}).encode()
            w.write(
                f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await w.drain()
        w.close()


class Client:
    """An AMQP-ish client: sends the header, reads Connection.Start, then echoes; ``ended`` says how its
    connection ended: ``close320`` (the broker's Connection.Close, then EOF), ``eof``, ``reset``."""

    def __init__(self) -> None:
        self.ended: str | None = None
        self.text = b""
        self.task: asyncio.Task[None] | None = None
        self.w: asyncio.StreamWriter | None = None

    async def open(self, port: int) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        self.w = w
        w.write(aw.PROTOCOL_HEADER)
        assert await asyncio.wait_for(r.readexactly(len(START)), 10) == START
        w.write(b"ping")
        assert await asyncio.wait_for(r.readexactly(4), 10) == b"ping"
        self.task = asyncio.get_running_loop().create_task(self._watch(r))
        return self

    async def _watch(self, r: asyncio.StreamReader) -> None:
        try:
            data = await r.read()  # until EOF
            self.text = data
            self.ended = (
                "close320" if data[:1] == b"\x01" and struct.pack("!HH", 10, 50) in data[7:11] else "eof"
            )
        except (ConnectionResetError, OSError):
            self.ended = "reset"

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def _cfg(lport: int, b1: int, b2: int, m: int, rebalance: str, r2_extra: str = "", r2_check: str = "") -> str:
    mg = f'management = {{ url = "http://127.0.0.1:{m}", user = "admin", password = "apw", inter = "1h" }}'
    chk = f'{{ type = "rabbitmq", inter = "100ms", rise = 1, fall = 1, {mg} }}'
    # timeout_check 10 s: without it inter (100 ms) bounds the whole probe of the fake broker on this loop,
    # and with fall 1 a busy machine's stall took a server out, moving connections outside the test's plan
    return f"""
[defaults]
timeout_connect = "1s"
timeout_check = "10s"
timeout_client = "30s"
timeout_server = "30s"
[listen.t]
bind = ["127.0.0.1:{lport}"]
balance = "leastconn"
check = {chk}
server = [{{ name = "r1", address = "127.0.0.1:{b1}" }},
          {{ name = "r2", address = "127.0.0.1:{b2}"{r2_extra}{r2_check} }}]
[listen.t.rebalance]
min_age = "0s"
{rebalance}
"""


def _driver(lb: LoadBalancer) -> Driver:
    """The load balancer's own driver when it has one wired in, else one started here."""
    drv = getattr(lb, "rebalance", None)
    if not isinstance(drv, Driver):
        drv = Driver(lb)
    if not drv.started:
        drv.start()
    return drv


async def _setup(rebalance: str, r2_extra: str = "", r2_check: str = "") -> tuple[Any, ...]:
    b1, b2 = await Broker().start(), await Broker().start()
    api = await Mgmt([b1, b2]).start()
    lport = free_port()
    lb = LoadBalancer(config.loads(_cfg(lport, b1.port, b2.port, api.port, rebalance, r2_extra, r2_check)))
    events: list[str] = []
    lb.on_event = events.append
    lb.start()
    return b1, b2, api, lport, lb, events


def _close(lb: LoadBalancer, clients: list[Client], *rest: Any) -> None:
    """Close the clients, stop the load balancer, then close ``rest`` (brokers, management API)."""
    for c in clients:
        c.close()
    lb.stop_accepting()
    lb.stop_checks()
    lb.kill_all()
    for x in rest:
        x.close()


async def _teardown(lb: LoadBalancer, drv: Driver, clients: list[Client], *rest: Any) -> None:
    drv.stop()
    _close(lb, clients, *rest)


@pytest.mark.parametrize("loop", LOOPS)
def test_server_back_rebalances_gracefully(loop: str) -> None:
    """10 connections on r1 while r2 is in maintenance; r2 comes back: 5 (the surplus over ceil(10 / 2)) are
    closed through the management API, each with its real RabbitMQ name and the reason; the clients get the
    broker's Connection.Close 320 and a FIN, none a reset; reconnected, the spread is 5/5. Logged, counted."""

    async def main() -> None:
        rb = 'enabled = true\ntolerance = 0.0\nrate = 50\ndelay_after_up = "0s"\nsettle = "2s"'
        b1, b2, api, lport, lb, events = await _setup(rb, ", disabled = true")
        drv = _driver(lb)
        clients = [await Client().open(lport) for _ in range(10)]
        assert b1.live() == 10 and b2.live() == 0
        names_on_r1 = set(b1.conns)
        lb.set_state("t", "r2", "ready")
        await wait_for(lambda: sum(1 for c in clients if c.ended) == 5, 15, "5 closed")
        await asyncio.sleep(0)
        assert len(api.deletes) == 5, api.deletes
        assert {n for n, _, _ in api.deletes} <= names_on_r1
        for _, reason, auth in api.deletes:
            assert reason.startswith("tcplb rebalance: r1 above its limit of 5"), reason
            assert auth.startswith("Basic ")
        ended = [c for c in clients if c.ended]
        assert all(c.ended == "close320" for c in ended), [c.ended for c in ended]
        assert all(b"CONNECTION_FORCED - tcplb rebalance" in c.text for c in ended)
        # the clients reconnect (as pika's reconnect pattern and aio-pika's connect_robust do): leastconn
        clients = [c for c in clients if not c.ended] + [await Client().open(lport) for _ in range(5)]
        assert b1.live() == 5 and b2.live() == 5
        await asyncio.sleep(0.3)
        assert len(api.deletes) == 5  # within tolerance: nothing more
        assert drv.snapshot("t", "r1") == {"rebalance_closes": 5, "lifetime_closes": 0, "close_failures": 0}
        closed_lines = [e for e in events if "closed by the broker (rebalance)" in e]
        assert len(closed_lines) == 5 and all("t/r1" in e for e in closed_lines)
        assert any("is back: rebalancing t" in e for e in events)
        await wait_for(lambda: any("Rebalancing t: done" in e for e in events), 10, "done logged")
        await _teardown(lb, drv, clients, b1, b2, api)

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_on_demand_and_missing_management(loop: str) -> None:
    """request(): rebalances at once even with enabled = false; an unknown listener is a KeyError; a server
    without management refuses, naming the key, and closes nothing."""

    async def main() -> None:
        b1, b2, api, lport, lb, _ = await _setup("rate = 100", ", disabled = true")
        drv = _driver(lb)
        clients = [await Client().open(lport) for _ in range(6)]
        lb.set_state("t", "r2", "ready")
        await asyncio.sleep(1.5)  # enabled = false: the return starts nothing
        assert api.deletes == [] and not any(c.ended for c in clients)
        ans = drv.request("t")
        # the default tolerance 0.1: limits ceil(3 * 1.1) = 4, so 2 of r1's 6 move
        assert ans["listener"] == "t" and ans["closing_now"] == 2 and ans["limits"] == {"r1": 4, "r2": 4}
        assert ans["connections"] == {"r1": 6, "r2": 0} and ans["surplus"] == 0
        await wait_for(lambda: sum(1 for c in clients if c.ended) == 2, 10, "2 closed")
        assert len(api.deletes) == 2 and all(c.ended in (None, "close320") for c in clients)
        with pytest.raises(KeyError):
            drv.request("nope")
        await _teardown(lb, drv, clients, b1, b2, api)

        b1, b2, api, lport, lb, _ = await _setup("rate = 100", r2_check=", check = { management = false }")
        drv = _driver(lb)
        clients = [await Client().open(lport) for _ in range(4)]
        with pytest.raises(MissingManagement, match=r"listen\.t\.server\[1\]\.check\.management"):
            drv.request("t")
        await asyncio.sleep(0.3)
        assert api.deletes == [] and not any(c.ended for c in clients)
        await _teardown(lb, drv, clients, b1, b2, api)

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_max_lifetime_closes_gracefully_within_its_jitter(loop: str) -> None:
    async def main() -> None:
        rb = 'max_lifetime = "1s"\nlifetime_jitter = 0.5'
        b1, b2, api, lport, lb, events = await _setup(rb)
        drv = _driver(lb)
        loop_ = asyncio.get_running_loop()
        clients: list[tuple[Client, float]] = []
        for _ in range(4):
            c = await Client().open(lport)
            clients.append((c, loop_.time()))
        ends: dict[int, float] = {}

        def poll() -> bool:
            for i, (c, _) in enumerate(clients):
                if c.ended and i not in ends:
                    ends[i] = loop_.time()
            return len(ends) == 4

        await wait_for(poll, 10, "all 4 closed")
        for i, (c, opened) in enumerate(clients):
            assert c.ended == "close320"
            age = ends[i] - opened
            assert age >= 1.0 - 0.05, age  # never before max_lifetime
            assert age <= 1.5 + 2.0, age  # max_lifetime * (1 + jitter), plus generous slack
        assert all("max-lifetime" in r for _, r, _ in api.deletes) and len(api.deletes) == 4
        total = sum(drv.snapshot("t", s)["lifetime_closes"] for s in ("r1", "r2"))
        assert total == 4
        assert sum(1 for e in events if "(max-lifetime)" in e) == 4
        await _teardown(lb, drv, [c for c, _ in clients], b1, b2, api)

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_failed_close_is_counted_and_the_connection_stays(loop: str) -> None:
    async def main() -> None:
        rb = 'max_lifetime = "500ms"\nlifetime_jitter = 0.0'
        b1, b2, api, lport, lb, events = await _setup(rb)
        api.fail = True
        drv = _driver(lb)
        clients = [await Client().open(lport) for _ in range(2)]
        await wait_for(lambda: sum(drv.snapshot("t", s)["close_failures"] for s in ("r1", "r2")) >= 2, 10)
        assert not any(c.ended for c in clients)  # tcplb never cuts it itself
        assert any("could not close connection" in e and "HTTP status 500" in e for e in events), events
        for c in clients:  # still relayed
            assert c.w is not None
        await _teardown(lb, drv, clients, b1, b2, api)

    run(loop, main)
