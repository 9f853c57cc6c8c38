"""Active health checks (tcplb.checks) against fake servers on loopback, on both loops."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections.abc import Callable
from typing import Any

import pytest
from tcplb_helpers import Blackhole, FakeServer, free_port, listen_t, run, start_lb, stop_lb, wait_for

from tcplb import checks
from tcplb.config import CheckConfig, HttpCheck

LOOPS = ["asyncio", "uvloop"]
CONNECTION_START = (
    struct.pack("!BHI", 1, 0, 4 + 10) + struct.pack("!HH", 10, 10) + b"\x00\x09" + b"\0" * 8 + b"\xce"
)


class Fake(FakeServer):
    """Records what each connection sent; answers with ``answer(first_bytes)``."""

    def __init__(self, answer: Callable[[bytes], bytes | None] | None = None) -> None:
        self.answer = answer
        self.seen: list[bytes] = []

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = b""
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(0.5 if self.answer is None else 5):
                if self.answer is None:
                    data = await r.read(-1)
                else:
                    data = await r.read(4096)
                    while b"\r\n\r\n" not in data and not data.startswith(b"AMQP") and data:
                        more = await r.read(4096)
                        if not more:
                            break
                        data += more
        self.seen.append(data)
        if self.answer is not None:
            out = self.answer(data)
            if out:
                w.write(out)
                with contextlib.suppress(OSError):
                    await w.drain()
        w.close()


def ck(**kw: Any) -> CheckConfig:
    """A check whose timeouts (10 s, no inter budget) only bound a stuck probe of a fake server on the same
    loop (0.5 s was outlasted by a busy machine's stall: L7TOUT for an answer); the timeout tests pass a
    short one."""
    base: dict[str, Any] = {"connect_timeout": 10.0, "timeout": 10.0, "budget": None}
    base.update(kw)
    return CheckConfig(**base)


@pytest.mark.parametrize("loop", LOOPS)
def test_tcp_check_is_silent(loop: str) -> None:
    async def main() -> None:
        f = await Fake().start()
        res = await checks.probe(ck(type="tcp"), "127.0.0.1", f.port)
        assert res.ok and res.status == "L4OK"
        await wait_for(lambda: f.seen, 10, "the fake server saw the check's connection end")
        assert f.seen == [b""]  # connected, sent nothing, closed
        res = await checks.probe(ck(type="tcp"), "127.0.0.1", free_port())
        assert not res.ok and res.status == "L4CON" and "refused" in res.detail.lower()
        f.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_tcp_check_timeout(loop: str) -> None:
    async def main() -> None:
        bh = Blackhole()  # connects hang
        res = await checks.probe(ck(type="tcp", connect_timeout=0.2), "127.0.0.1", bh.port)
        assert not res.ok and res.status == "L4TOUT"
        bh.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_amqp_check(loop: str) -> None:
    async def main() -> None:
        good = await Fake(lambda d: CONNECTION_START if d == checks.AMQP_HEADER else b"").start()
        res = await checks.probe(ck(type="amqp"), "127.0.0.1", good.port)
        assert res.ok and res.status == "L7OK", res
        assert good.seen == [b"AMQP\x00\x00\x09\x01"]
        # a server that refuses the protocol version answers with its own header and closes
        old = await Fake(lambda d: b"AMQP\x00\x00\x09\x00").start()
        res = await checks.probe(ck(type="amqp"), "127.0.0.1", old.port)
        assert not res.ok and res.status == "L7RSP"
        junk = await Fake(lambda d: b"HTTP/1.1 400 Bad Request\r\n\r\n").start()
        res = await checks.probe(ck(type="amqp"), "127.0.0.1", junk.port)
        assert not res.ok and res.status == "L7RSP"
        mute = await Fake(lambda d: None).start()
        mute.answer = None  # reads until EOF, never answers
        res = await checks.probe(ck(type="amqp", timeout=0.2), "127.0.0.1", mute.port)
        assert not res.ok and res.status == "L7TOUT"
        for f in (good, old, junk, mute):
            f.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_http_check(loop: str) -> None:
    auth = "Basic " + base64.b64encode(b"guest:secret").decode()

    def answer(d: bytes) -> bytes:
        text = d.decode()
        if f"Authorization: {auth}" not in text:
            return b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
        if text.startswith("GET /api/health/checks/ready-to-serve-clients HTTP/1.1\r\n"):
            return b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'
        return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"

    async def main() -> None:
        f = await Fake(answer).start()
        h = HttpCheck(
            path="/api/health/checks/ready-to-serve-clients",
            user="guest",
            password="secret",
            expect_status=((200, 200),),
        )
        res = await checks.probe(ck(type="http", http=h), "127.0.0.1", f.port)
        assert res.ok and res.status == "L7OK" and res.code == 200, res
        assert b"Host: 127.0.0.1:" in f.seen[0]
        bad = HttpCheck(path="/api/health/checks/is-in-service", user="guest", password="secret")
        res = await checks.probe(ck(type="http", http=bad), "127.0.0.1", f.port)
        assert not res.ok and res.status == "L7STS" and res.code == 503
        noauth = HttpCheck(path="/api/health/checks/ready-to-serve-clients")
        res = await checks.probe(ck(type="http", http=noauth), "127.0.0.1", f.port)
        assert not res.ok and res.code == 401
        f.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_rise_fall_and_logged_reasons(loop: str) -> None:
    """A server whose port closes goes DOWN after `fall` checks, UP after `rise`; both logged with reasons."""

    async def main() -> None:
        f = await Fake().start()
        port = f.port
        lport = free_port()
        cfg = listen_t(
            lport,
            f"""
check = {{ type = "tcp", inter = "100ms", fastinter = "50ms", rise = 2, fall = 2 }}
server = [{{ name = "s1", address = "127.0.0.1:{port}" }}]
""",
            timeout="5s",
        )
        lb, events = start_lb(cfg)
        st = lb.frontends["t"].server("s1")
        assert st is not None
        # servers start usable (HAProxy's "going down" state): the first passed check is the real event
        await wait_for(lambda: st.last_check is not None, 10, "the first check of s1")
        assert st.last_check is not None and st.last_check.ok and st.usable
        assert not any("is DOWN" in e for e in events)
        f.close()
        await f.server.wait_closed()  # type: ignore[union-attr]
        await wait_for(lambda: not st.usable, 10, "s1 DOWN after its port closed")
        down = [e for e in events if "is DOWN" in e]
        assert down and "Layer4 connection problem" in down[0] and "check duration" in down[0], down
        assert any("has no server available" in e for e in events)
        f2 = await Fake().start(port)
        await wait_for(lambda: st.usable, 10, "s1 UP again")
        assert any("is UP" in e and "Layer4 check passed" in e for e in events)
        snap = lb.snapshot()
        s = snap["listeners"][0]["servers"][0]
        assert s["chkdown"] == 1 and s["check_status"] == "L4OK"
        stop_lb(lb)
        f2.close()

    run(loop, main)
