"""The ``rabbitmq`` check (tcplb.checks + tcplb.nodestate) against a fake broker and a fake management API,
on both loops: every answer of the AMQP handshake, and what the node's state does to the server."""

from __future__ import annotations

import asyncio
import contextlib
import csv as csvmod
import json
import struct
from typing import Any

import pytest
from tcplb_helpers import FakeServer, free_port, run, wait_for

from tcplb import amqpwire as aw
from tcplb import checks, config, stats
from tcplb.config import CheckConfig
from tcplb.server import LoadBalancer

LOOPS = ["asyncio", "uvloop"]


def start_frame() -> bytes:
    props = aw.encode_table({"product": "RabbitMQ", "version": "3.10.8", "cluster_name": "rabbit@fake"})
    args = b"\x00\x09" + props + struct.pack("!I", 14) + b"PLAIN AMQPLAIN" + struct.pack("!I", 5) + b"en_US"
    return aw.method_frame(10, 10, args)


TUNE = aw.method_frame(10, 30, struct.pack("!HIH", 2047, 131072, 60))
OPEN_OK = aw.method_frame(10, 41, b"\x00")
CLOSE_OK = aw.method_frame(10, 51)


class FakeBroker(FakeServer):
    """One behaviour per connection: ``full`` (the whole handshake and close), ``start`` (Start, then waits),
    ``silent``, ``garbage``, ``close`` (closes after the header), ``close_after_start_ok``, ``refuse``
    (Close 403 after Start-Ok). Records the AMQP methods each client sent and whether it ended with FIN
    after Close-Ok (``clean``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.methods: list[list[tuple[int, int]]] = []
        self.clean: list[bool] = []

    async def _frame(self, r: asyncio.StreamReader, seen: list[tuple[int, int]]) -> tuple[int, int]:
        head = await r.readexactly(7)
        _t, _ch, size = struct.unpack("!BHI", head)
        body = await r.readexactly(size + 1)
        m = struct.unpack("!HH", body[:4])
        seen.append(m)
        return m

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen: list[tuple[int, int]] = []
        self.methods.append(seen)
        try:
            self.clean.append(await self._talk(r, w, seen))
        finally:
            w.close()

    async def _talk(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, seen: list[tuple[int, int]]
    ) -> bool:
        clean = False
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            async with asyncio.timeout(5):
                hdr = await r.readexactly(8)
                assert hdr == aw.PROTOCOL_HEADER
                if self.mode == "silent":
                    await r.read()  # until the client gives up
                    return False
                if self.mode == "close":
                    return False
                if self.mode == "garbage":
                    w.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    await w.drain()
                    return False
                w.write(start_frame())
                await w.drain()
                if self.mode == "start":
                    await r.read()
                    return False
                await self._frame(r, seen)  # Start-Ok
                if self.mode == "close_after_start_ok":
                    return False
                if self.mode == "refuse":
                    w.write(aw.close(403, "ACCESS_REFUSED - Login was refused", 0, 0))
                    await w.drain()
                    await self._frame(r, seen)  # Close-Ok
                    return False
                w.write(TUNE)
                await w.drain()
                await self._frame(r, seen)  # Tune-Ok
                await self._frame(r, seen)  # Open
                w.write(OPEN_OK)
                await w.drain()
                if await self._frame(r, seen) == (10, 50):  # Close
                    w.write(CLOSE_OK)
                    await w.drain()
                    clean = await r.read() == b""  # FIN, nothing more
        return clean


def ck(**kw: Any) -> CheckConfig:
    """A rabbitmq check; its timeouts (10 s, no inter budget) only bound a stuck probe of the fake broker on
    the same loop: 0.5 s was outlasted by a busy machine's stall, and the probe then ended L7TOUT. A test
    that wants the timeout passes a short one."""
    base: dict[str, Any] = {"type": "rabbitmq", "connect_timeout": 10.0, "timeout": 10.0, "budget": None}
    base.update(kw)
    return CheckConfig(**base)


@pytest.mark.parametrize("loop", LOOPS)
def test_clean_probe_with_credentials(loop: str) -> None:
    """Start-Ok, Tune-Ok, Open, Close, then FIN after Close-Ok: the exchange RabbitMQ logs at info only."""

    async def main() -> None:
        b = await FakeBroker("full").start()
        res = await checks.probe(ck(amqp_user="probe", amqp_password="pw"), "127.0.0.1", b.port)
        assert res.ok and res.status == "L7OK", res
        assert "RabbitMQ" in res.detail and "3.10.8" in res.detail
        await wait_for(lambda: b.clean, 10, "the fake broker saw the probe end")
        assert b.methods == [[(10, 11), (10, 31), (10, 40), (10, 50)]]
        assert b.clean == [True]
        b.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_header_only_probe_without_credentials(loop: str) -> None:
    async def main() -> None:
        b = await FakeBroker("start").start()
        res = await checks.probe(ck(), "127.0.0.1", b.port)
        assert res.ok and res.status == "L7OK" and "header only" in res.detail, res
        b.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    ("mode", "status", "words"),
    [
        ("silent", "L7TOUT", "no answer"),
        ("garbage", "L7RSP", ""),
        ("close", "L7RSP", "closed"),
        ("close_after_start_ok", "L7RSP", "closed the TCP connection"),
    ],
)
def test_failed_answers(loop: str, mode: str, status: str, words: str) -> None:
    async def main() -> None:
        b = await FakeBroker(mode).start()
        t = 0.3 if mode == "silent" else 10.0  # the others' outcome must not depend on the timer
        res = await checks.probe(ck(amqp_user="probe", amqp_password="pw", timeout=t), "127.0.0.1", b.port)
        assert not res.ok and res.status == status, res
        assert words in res.detail, res
        b.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_broker_refusing_the_probe_is_alive(loop: str) -> None:
    """403 for the probe user: the broker speaks AMQP (L7OKC, not a mark-down of every node), the probe
    answers Close-Ok, and the reason shows."""

    async def main() -> None:
        b = await FakeBroker("refuse").start()
        res = await checks.probe(ck(amqp_user="probe", amqp_password="bad"), "127.0.0.1", b.port)
        assert res.ok and res.status == "L7OKC" and "403" in res.detail, res
        await wait_for(lambda: b.clean, 10, "the fake broker saw the probe end")
        assert b.methods == [[(10, 11), (10, 51)]]
        b.close()

    run(loop, main)


class FakeMgmt(FakeServer):
    """A management API: ``answers[path] = (status, json body)``; records the paths and auth headers."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, object]] = {}
        self.requests: list[tuple[str, str]] = []

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
            path = head.split(" ", 2)[1]
            auth = next((ln.split(":", 1)[1].strip() for ln in head.split("\r\n") if ln.lower().startswith(
                "authorization:")), "")  # fmt: skip
            self.requests.append((path, auth))
            status, body = self.answers.get(path, (404, {"error": "Object Not Found"}))
            data = json.dumps(body).encode()
            w.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
                f"connection: close\r\n\r\n".encode()
                + data
            )
            await w.drain()
        w.close()


OK = (200, {"status": "ok"})
MEM_ALARM = (503, {"status": "failed", "reason": "resource alarm(s) in effect",
                   "alarms": [{"resource": "memory", "node": "rabbit@r1"}]})  # fmt: skip
IN_SERVICE = "/api/health/checks/is-in-service"
LOCAL_ALARMS = "/api/health/checks/local-alarms"


def _lb(lport: int, b1: int, b2: int, m: int, extra: str = "") -> LoadBalancer:
    mg = f'management = {{ url = "http://127.0.0.1:{m}", user = "mon", password = "mpw", inter = "100ms" }}'
    chk = (
        f'{{ type = "rabbitmq", inter = "100ms", rise = 1, fall = 1, user = "probe", password = "pw", {mg} }}'
    )
    r1 = f'{{ name = "r1", address = "127.0.0.1:{b1}"{extra} }}'
    r2 = f'{{ name = "r2", address = "127.0.0.1:{b2}", check = {{ management = false }} }}'
    # timeout_check 10 s: without it inter (100 ms) bounds the whole probe of the fake broker on this loop,
    # and with fall 1 a busy machine's stall marked a healthy broker DOWN
    cfg = config.loads(f"""
[defaults]
timeout_connect = "1s"
timeout_check = "10s"
timeout_client = "5s"
timeout_server = "5s"
[listen.t]
bind = ["127.0.0.1:{lport}"]
check = {chk}
server = [{r1}, {r2}]
""")
    return LoadBalancer(cfg)


@pytest.mark.parametrize("loop", LOOPS)
def test_maintenance_drains_and_revive_brings_back(loop: str) -> None:
    """is-in-service 503 (RabbitMQ 4.1.1+ in maintenance): r1 goes DRAIN on its own (weight 0, no new
    connections, logged), stays UP for the checks; 200 again: READY. A failed API keeps the last view."""

    async def main() -> None:
        b1, b2 = await FakeBroker("full").start(), await FakeBroker("full").start()
        api = await FakeMgmt().start()
        api.answers = {IN_SERVICE: OK, LOCAL_ALARMS: OK}
        lb = _lb(free_port(), b1.port, b2.port, api.port)
        events: list[str] = []
        lb.on_event = events.append
        lb.start()
        r1 = lb.frontends["t"].server("r1")
        r2 = lb.frontends["t"].server("r2")
        assert r1 is not None and r2 is not None
        await wait_for(lambda: r1.node_health == "ready", 10, "r1's node state from the API")
        assert r1.status() == "UP" and r1.shown_weight == 1 and r2.node_health is None
        assert (IN_SERVICE, "") in api.requests  # is-in-service needs no authentication
        assert any(p == LOCAL_ALARMS and a.startswith("Basic ") for p, a in api.requests)
        api.answers[IN_SERVICE] = (503, {"status": "failed", "reason": "the node is being drained"})
        await wait_for(lambda: r1.node_drain, 10, "r1 DRAIN after is-in-service said 503")
        assert r1.status() == "DRAIN" and r1.weight == 0 and r1.health.up
        assert any("r1 is DRAIN (RabbitMQ node draining" in e for e in events), events
        s = lb.snapshot()["listeners"][0]["servers"][0]
        assert s["status"] == "DRAIN" and s["node_state"] == "draining"
        api.close()  # the API goes away: the view stays
        await api.server.wait_closed()  # type: ignore[union-attr]
        n = len(b1.methods)
        await wait_for(lambda: len(b1.methods) > n + 2, 10, "more AMQP checks")
        assert r1.node_drain and r1.status() == "DRAIN"
        api2 = FakeMgmt()
        api2.answers = {IN_SERVICE: OK, LOCAL_ALARMS: OK}
        await api2.start(api.port)
        await wait_for(lambda: not r1.node_drain, 10, "r1 READY again")
        assert r1.status() == "UP" and r1.shown_weight == 1
        assert any("r1 is READY (RabbitMQ node ready" in e for e in events)
        lb.stop_accepting()
        lb.stop_checks()
        for x in (b1, b2, api2):
            x.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_node_api_being_drained_and_old_brokers(loop: str) -> None:
    """A broker without is-in-service (3.10: 406) with ``node`` set: ``/api/nodes/{node}`` decides
    (``being_drained``, 3.11.19/3.12.1+), and is-in-service is not asked at every round."""

    async def main() -> None:
        b1, b2 = await FakeBroker("full").start(), await FakeBroker("full").start()
        api = await FakeMgmt().start()
        node = {"name": "rabbit@r1", "running": True, "mem_alarm": False, "disk_free_alarm": False}
        api.answers = {IN_SERVICE: (406, ""), "/api/nodes/rabbit%40r1": (200, node),
                       "/api/health/checks/alarms": OK}  # fmt: skip
        lb = _lb(free_port(), b1.port, b2.port, api.port, ', check = { management = { node = "rabbit@r1" } }')
        lb.start()
        r1 = lb.frontends["t"].server("r1")
        assert r1 is not None
        await wait_for(lambda: r1.node_health == "ready", 10, "r1's node state")
        api.answers["/api/nodes/rabbit%40r1"] = (200, {**node, "being_drained": True})
        await wait_for(lambda: r1.node_drain, 10, "r1 DRAIN from being_drained")
        assert r1.status() == "DRAIN"
        api.answers["/api/nodes/rabbit%40r1"] = (200, {**node, "running": False})
        await wait_for(lambda: r1.node_health == "down", 10, "node not running")
        assert r1.status() == "DRAIN"  # out of rotation; the AMQP check decides about DOWN
        api.answers["/api/nodes/rabbit%40r1"] = (200, node)
        await wait_for(lambda: not r1.node_drain, 10, "r1 back")
        asked = sum(1 for p, _ in api.requests if p == IN_SERVICE)
        rounds = sum(1 for p, _ in api.requests if p.startswith("/api/nodes/"))
        assert asked < rounds / 3, (asked, rounds)
        lb.stop_accepting()
        lb.stop_checks()
        for x in (b1, b2, api):
            x.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_memory_alarm_is_shown_not_acted_on(loop: str) -> None:
    async def main() -> None:
        b1, b2 = await FakeBroker("full").start(), await FakeBroker("full").start()
        api = await FakeMgmt().start()
        api.answers = {IN_SERVICE: OK, LOCAL_ALARMS: OK}
        lb = _lb(free_port(), b1.port, b2.port, api.port)
        events: list[str] = []
        lb.on_event = events.append
        lb.start()
        r1 = lb.frontends["t"].server("r1")
        assert r1 is not None
        await wait_for(lambda: r1.node_health == "ready", 10, "r1's node state")
        api.answers[LOCAL_ALARMS] = MEM_ALARM
        await wait_for(lambda: r1.alarms, 10, "the memory alarm seen")
        assert r1.alarms == frozenset({"memory"})
        assert r1.status() == "UP" and r1.shown_weight == 1 and r1.usable and not r1.node_drain
        assert any("resource alarm raised: memory" in e and "stays in rotation" in e for e in events)
        snap = lb.snapshot()
        s = snap["listeners"][0]["servers"][0]
        assert s["alarms"] == ["memory"] and s["status"] == "UP"
        csv = stats.render_csv(snap)
        rows = list(csvmod.reader(csv.removeprefix("# ").splitlines()))
        header, row = rows[0], next(r for r in rows if r[:2] == ["t", "r1"])
        assert row[header.index("rmq_alarms")] == "memory" and row[header.index("rmq_node")] == "ready"
        m = stats.render_metrics(snap)
        assert 'tcplb_server_rabbitmq_alarm{proxy="t",server="r1",resource="memory"} 1' in m
        assert 'tcplb_server_rabbitmq_alarm{proxy="t",server="r1",resource="disk"} 0' in m
        assert 'tcplb_server_rabbitmq_node_state{proxy="t",server="r1",state="ready"} 1' in m
        assert 'server="r2"' not in m.split("tcplb_server_rabbitmq_alarm")[1].split("# HELP")[0]
        assert "memory alarm" in stats.render_html(snap)
        api.answers[LOCAL_ALARMS] = OK
        await wait_for(lambda: not r1.alarms, 10, "the alarm cleared")
        assert any("resource alarm cleared: memory" in e for e in events)
        lb.stop_accepting()
        lb.stop_checks()
        for x in (b1, b2, api):
            x.close()

    run(loop, main)


def test_config_keys_and_errors() -> None:
    base = '[listen.t]\nbind = ["127.0.0.1:5673"]\n'

    def err(check: str, srv: str = "") -> str:
        with pytest.raises(config.ConfigError) as ei:
            config.loads(
                base + f'check = {check}\nserver = [{{ name = "a", address = "127.0.0.1:1"{srv} }}]\n'
            )
        return str(ei.value)

    assert "listen.t.check.management.url" in err('{ type = "rabbitmq", management = { url = "https://x" } }')
    assert "unknown key" in err('{ type = "rabbitmq", management = { nod = "x" } }')
    assert "listen.t.check.vhost" in err('{ type = "tcp", vhost = "/" }')
    assert "listen.t.check.management" in err('{ type = "amqp", management = true }')
    assert "listen.t.check.path" in err('{ type = "rabbitmq", path = "/x" }')
    cfg = config.loads(
        base + 'check = { type = "rabbitmq", user = "p", password = "s", vhost = "v",'
        ' management = { user = "m", password = "q" } }\n'
        'server = [{ name = "a", address = "127.0.0.1:1", check = { management = { node = "rabbit@a" } } },'
        ' { name = "b", address = "127.0.0.1:2", check = { management = { url = "http://192.0.2.9" } } }]\n'
    )
    a, b = cfg.listeners[0].servers
    assert a.check.amqp_user == "p" and a.check.vhost == "v"
    assert a.check.management == config.Management(None, 15672, "m", "q", "rabbit@a")
    assert b.check.management == config.Management("192.0.2.9", 80, "m", "q", None)
    assert config.loads(config.to_toml(cfg, secrets=True)) == cfg
    text = config.to_toml(cfg)
    assert 'password = "q"' not in text and 'password = "s"' not in text and "<hidden>" in text


@pytest.mark.parametrize("loop", LOOPS)
def test_reload_without_management_forgets_the_node_state(loop: str) -> None:
    """A server drained by its node state, then a reload to a plain tcp check: nothing would ever clear
    the node's drain again, so the reload does (regression: it stayed DRAIN for good)."""

    async def main() -> None:
        b1, b2 = await FakeBroker("full").start(), await FakeBroker("full").start()
        api = await FakeMgmt().start()
        api.answers = {IN_SERVICE: (503, {"status": "failed", "reason": "drained"}), LOCAL_ALARMS: MEM_ALARM}
        lport = free_port()
        lb = _lb(lport, b1.port, b2.port, api.port)
        lb.start()
        r1 = lb.frontends["t"].server("r1")
        assert r1 is not None
        await wait_for(lambda: r1.node_drain and r1.alarms, 10, "r1 drained, with an alarm")
        text = f"""
[listen.t]
bind = ["127.0.0.1:{lport}"]
timeout_connect = "1s"
timeout_client = "5s"
timeout_server = "5s"
check = {{ type = "tcp", inter = "100ms" }}
server = [{{ name = "r1", address = "127.0.0.1:{b1.port}" }},
          {{ name = "r2", address = "127.0.0.1:{b2.port}" }}]
"""
        lb.reload(config.loads(text))
        r1 = lb.frontends["t"].server("r1")
        assert r1 is not None
        assert (
            not r1.node_drain and r1.status() == "UP" and r1.alarms == frozenset() and r1.node_health is None
        )
        lb.stop_accepting()
        lb.stop_checks()
        for x in (b1, b2, api):
            x.close()

    run(loop, main)
