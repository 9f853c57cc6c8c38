"""Protocol-aware connect (``protocol = "amqp"`` listeners) on real sockets, both loops: a server connection
counts as established only when Connection.Start arrives; a server that accepts TCP but stays silent past
``timeout_greeting`` (a frozen broker), closes, or answers garbage is a failed attempt, and the client is
retried on another server with the same first bytes, without noticing."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from tcplb_helpers import FakeServer, free_port, listen_t, run, start_lb, stop_lb, wait_for
from test_rabbitmq_check import start_frame

from tcplb import amqpwire as aw
from tcplb import config
from tcplb.lb import LoadBalancer

LOOPS = ["asyncio", "uvloop"]
START = start_frame()


class Broker(FakeServer):
    """``good``: Start after the protocol header, then echoes with its name; ``frozen``: reads, never
    answers; ``garbage``: answers HTTP; ``closer``: closes after the header. ``headers`` counts the
    protocol headers received."""

    def __init__(self, name: str, mode: str) -> None:
        self.name = name
        self.mode = mode
        self.headers = 0

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            async with asyncio.timeout(20):
                hdr = await r.readexactly(8)
                if hdr == aw.PROTOCOL_HEADER:
                    self.headers += 1
                if self.mode == "frozen":
                    await r.read()
                elif self.mode == "garbage":
                    w.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    await w.drain()
                elif self.mode == "good":
                    w.write(START)
                    await w.drain()
                    while data := await r.read(65536):
                        w.write(self.name.encode() + b":" + data)
                        await w.drain()
        w.close()


async def amqp_client(port: int, delay: float = 0.0) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        if delay:
            await asyncio.sleep(delay)  # a client slow to send its header (the wait is the client's)
        w.write(aw.PROTOCOL_HEADER)
        got = b""
        while len(got) < len(START):
            chunk = await asyncio.wait_for(r.read(65536), 10)
            if not chunk:
                break
            got += chunk
        assert got == START, got
        w.write(b"hello")
        return await asyncio.wait_for(r.read(65536), 10)
    finally:
        w.close()


def _lb(
    lport: int, brokers: list[Broker], protocol: str = "amqp", check: str = "false", greeting: str = "1s"
) -> tuple[LoadBalancer, list[str]]:
    """A started balancer in front of ``brokers`` and its events. ``timeout_greeting`` is 1 s (was 300 ms):
    the good broker runs on the same loop, and a busy machine's stall of the process between the header
    sent and its answer read fired the timer first (the good broker taken for a frozen one)."""
    srv = ", ".join(f'{{ name = "{b.name}", address = "127.0.0.1:{b.port}" }}' for b in brokers)
    return start_lb(
        listen_t(
            lport,
            f"""
protocol = "{protocol}"
balance = "roundrobin"
check = {check}
server = [{srv}]
""",
            defaults=f'timeout_greeting = "{greeting}"\nretries = 3',
        )
    )


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("bad", ["frozen", "garbage", "closer"])
def test_clients_never_see_a_server_that_does_not_greet(loop: str, bad: str) -> None:
    async def main() -> None:
        b1, b2 = await Broker("bad", bad).start(), await Broker("good", "good").start()
        lport = free_port()
        lb, _ = _lb(lport, [b1, b2])
        answers = [await amqp_client(lport) for _ in range(4)]
        # a client slower than timeout_greeting to send its header: the timer runs from the header on
        answers.append(await amqp_client(lport, delay=1.5))
        assert answers == [b"good:hello"] * 5
        assert b1.headers >= 2  # round robin sent clients there: each was retried on "good"
        fe = lb.frontends["t"]
        bad_srv = fe.server("bad")
        assert bad_srv is not None and bad_srv.econ >= 2 and bad_srv.wredis >= 2
        stop_lb(lb)
        for b in (b1, b2):
            b.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_frozen_broker_is_marked_down_by_passive_and_checks(loop: str) -> None:
    """With a rabbitmq check: greeting timeouts re-arm the check at fastinter (a timeout alone is no proof),
    the check then marks the frozen broker DOWN; no client connection failed meanwhile."""

    async def main() -> None:
        b1, b2 = await Broker("bad", "frozen").start(), await Broker("good", "good").start()
        lport = free_port()
        chk = '{ type = "rabbitmq", inter = "5s", fastinter = "100ms", rise = 1, fall = 2 }'
        lb, _ = _lb(lport, [b1, b2], check=chk)
        bad = lb.frontends["t"].server("bad")
        assert bad is not None
        answers = [await amqp_client(lport) for _ in range(3)]
        assert answers == [b"good:hello"] * 3
        await wait_for(lambda: not bad.usable, 30, "the frozen broker DOWN")
        assert bad.last_check is not None and bad.last_check.status == "L7TOUT"
        stop_lb(lb)
        for b in (b1, b2):
            b.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_plain_tcp_listener_hands_the_client_to_a_frozen_broker(loop: str) -> None:
    """The contrast: protocol = "tcp" counts the TCP connect as established; the client waits in vain."""

    async def main() -> None:
        b1 = await Broker("bad", "frozen").start()
        lport = free_port()
        # timeout_greeting 300 ms: waiting 0.8 s shows it unused (the right outcome here needs no timing)
        lb, _ = _lb(lport, [b1], protocol="tcp", greeting="300ms")
        r, w = await asyncio.open_connection("127.0.0.1", lport)
        w.write(aw.PROTOCOL_HEADER)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.read(65536), 0.8)
        w.close()
        stop_lb(lb)
        b1.close()

    run(loop, main)


def test_config_protocol_and_greeting() -> None:
    base = '[listen.t]\nbind = ["127.0.0.1:5673"]\nserver = [{ name = "a", address = "127.0.0.1:1" }]\n'
    cfg = config.loads(base + 'protocol = "amqp"\n')
    li = cfg.listeners[0]
    assert li.protocol == "amqp" and li.timeouts.greeting_wait == config.DEFAULT_GREETING
    cfg = config.loads(base + 'protocol = "amqp"\ntimeout_greeting = "500ms"\n')
    assert cfg.listeners[0].timeouts.greeting_wait == 0.5
    assert config.loads(config.to_toml(cfg, secrets=True)) == cfg
    cfg = config.loads(base + "timeout_greeting = 0\n")
    assert cfg.listeners[0].timeouts.greeting_wait is None
    assert any("timeout_greeting: does nothing" in w for w in config.warnings(cfg))
    with pytest.raises(config.ConfigError) as ei:
        config.loads(base + 'protocol = "mqtt"\n')
    assert "listen.t.protocol" in str(ei.value)
