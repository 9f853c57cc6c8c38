"""tcplb.server in-process, against real loopback sockets, on uvloop and on stock asyncio.

Timeouts, maxconn and queueing, retries and redispatch, bad clients and bad backends, reload with live
connections, keepalive, logging. Every test builds its configuration from TOML text (tcplb.config.loads).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct

import pytest
from helpers import free_port
from tcplb_helpers import AsyncBackend as Backend
from tcplb_helpers import Blackhole, run, wait_for

from tcplb import config
from tcplb.server import LoadBalancer

LOOPS = ["asyncio", "uvloop"]


def make_cfg(
    servers: str, *, listen_extra: str = "", defaults: str = "", glob: str = "", port: int | None = None
) -> tuple[config.Config, int]:
    port = port or free_port()
    d = {
        "timeout_connect": '"1s"',
        "timeout_client": '"30s"',
        "timeout_server": '"30s"',
        "retries": "3",
        "redispatch": "true",
    }
    for line in defaults.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            d[k.strip()] = v.strip()
    dtext = "\n".join(f"{k} = {v}" for k, v in d.items())
    text = f"""
[global]
hard_stop_after = "2s"
{glob}
[defaults]
{dtext}
[listen.t]
bind = ["127.0.0.1:{port}"]
{listen_extra}
server = [
{servers}
]
"""
    return config.loads(text), port


async def start_lb(cfg: config.Config) -> tuple[LoadBalancer, list[str]]:
    lb = LoadBalancer(cfg)
    events: list[str] = []
    lb.on_event = events.append
    lb.start()
    return lb, events


async def stop_lb(lb: LoadBalancer) -> None:
    lb.stop_accepting()
    lb.stop_checks()
    lb.kill_all()
    await asyncio.sleep(0.05)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def echo_ok(port: int, msg: bytes = b"ping") -> bool:
    r, w = await connect(port)
    try:
        w.write(msg)
        await w.drain()
        got = await asyncio.wait_for(r.readexactly(len(msg)), 30)
        return got == msg
    finally:
        w.close()


def traffic(events: list[str]) -> list[str]:
    return [e for e in events if " t t/" in e]


# ------------------------------------------------------------------------------------------- basics


@pytest.mark.parametrize("loop", LOOPS)
def test_roundtrip_and_tcplog(loop: str) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(f'{{ name = "s1", address = "{b.addr}", check = false }},')
        lb, events = await start_lb(cfg)
        assert await echo_ok(port, b"hello world")
        line = (await wait_for(lambda: traffic(events)))[0]
        # 127.0.0.1:PORT [date] t t/s1 Tw/Tc/Tt 11 -- 1/1/1/1/0 0/0
        f = line.split()
        assert f[2] == "t" and f[3] == "t/s1" and f[5] == "11" and f[6] == "--"
        assert f[7] == "1/1/1/1/0" and f[8] == "0/0"
        assert lb.actconn == 0
        # TCP_NODELAY on the LB's server-side socket
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_keepalive_and_nodelay_per_side(loop: str) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "{b.addr}", check = false }},',
            listen_extra="tcpka = { client = { idle = 30, interval = 5, count = 4 }, server = true }",
        )
        lb, _ = await start_lb(cfg)
        r, w = await connect(port)
        w.write(b"x")
        await r.readexactly(1)
        sess = next(iter(lb.sessions))
        ct = sess.pipe.client.transport
        st = sess.pipe.server.transport  # type: ignore[union-attr]
        assert ct is not None and st is not None
        cs, ss = ct.get_extra_info("socket"), st.get_extra_info("socket")
        assert cs.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert cs.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert cs.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert cs.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
        assert ss.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert cs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert ss.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        w.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_half_close_through_lb(loop: str) -> None:
    async def main() -> None:
        b = await Backend("silent", banner=b"").start()
        cfg, port = make_cfg(f'{{ name = "s1", address = "{b.addr}", check = false }},')
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        w.write(b"request")
        w.write_eof()  # the backend reads until EOF ("silent" mode), then closes
        assert await asyncio.wait_for(r.read(-1), 3) == b""
        await wait_for(lambda: traffic(events))
        assert b.received == [b"request"]
        assert " -- " in traffic(events)[0]
        w.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


# ------------------------------------------------------------------------------------------ timeouts


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    ("defaults", "expect_state", "lo", "hi"),
    [
        # never early; late only by scheduling slack (up to 10 s on a busy machine), and well before the other
        # (30 s) timeout, which the wrong one would wait for
        ('timeout_client = "300ms"\ntimeout_server = "30s"', "cD", 0.29, 10.0),
        ('timeout_client = "30s"\ntimeout_server = "300ms"', "sD", 0.29, 10.0),
        ('timeout_tunnel = "300ms"', "cD", 0.29, 10.0),
    ],
    ids=["client", "server", "tunnel"],
)
def test_idle_timeouts(loop: str, defaults: str, expect_state: str, lo: float, hi: float) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(f'{{ name = "s1", address = "{b.addr}", check = false }},', defaults=defaults)
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        w.write(b"x")
        await r.readexactly(1)
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(r.read(-1), 20) == b""  # closed by the LB
        dt = asyncio.get_running_loop().time() - t0
        assert lo <= dt <= hi, dt
        line = (await wait_for(lambda: traffic(events)))[0]
        assert f" {expect_state} " in line, line
        w.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_activity_keeps_connection_open(loop: str) -> None:
    """Traffic every 150 ms keeps a connection open past its 1 s timeout_tunnel (an idle one closes:
    test_idle_timeouts). The tunnel is 1 s, not 300 ms: a 150 ms stall of a busy machine between two
    writes then no longer outlasts it."""

    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "{b.addr}", check = false }},', defaults='timeout_tunnel = "1s"'
        )
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        for _ in range(16):  # 2.4 s of traffic every 150 ms: more than twice the tunnel
            w.write(b"y")
            assert await r.readexactly(1) == b"y"
            await asyncio.sleep(0.15)
        assert not traffic(events)
        w.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_client_fin_timeout(loop: str) -> None:
    """The client half-closes, the server never answers nor closes: timeout_client_fin ends it."""

    async def main() -> None:
        b = await Backend("silent").start()
        b.mode = "hold"  # read nothing, say nothing

        async def hold(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            b.writers.append(w)
            await asyncio.sleep(30)

        b.server.close()  # type: ignore[union-attr]
        b.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        b.port = b.server.sockets[0].getsockname()[1]
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "{b.addr}", check = false }},',
            defaults='timeout_client_fin = "300ms"',
        )
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        w.write(b"bye")
        w.write_eof()
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(r.read(-1), 10) == b""
        assert asyncio.get_running_loop().time() - t0 < 10  # timeout_client_fin, not the 30 s timeouts
        line = (await wait_for(lambda: traffic(events)))[0]
        assert " cD " in line or " cL " in line, line
        w.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_connect_timeout_then_redispatch(loop: str) -> None:
    """A server that never answers SYNs: after timeout_connect the client lands on the live server."""

    async def main() -> None:
        bh = Blackhole()
        b = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "hole", address = "{bh.addr}" }},\n{{ name = "ok", address = "{b.addr}" }},',
            defaults='timeout_connect = "300ms"',
            listen_extra='balance = "roundrobin"\ncheck = { inter = "10s" }',
        )
        lb, events = await start_lb(cfg)
        results = await asyncio.gather(*(echo_ok(port) for _ in range(4)))
        assert all(results)
        lines = await wait_for(lambda: len(traffic(events)) >= 4 and traffic(events))
        assert all("t/ok" in ln for ln in lines)
        # a connect timeout is not proof of a dead server (issue 10 #6): it is not marked DOWN at once, so
        # the retries go back to it and the last one is redispatched (redispatch = true)
        assert any("/+3 " in ln for ln in lines), lines
        await stop_lb(lb)
        await b.stop()
        bh.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_connect_timeout_all_servers(loop: str) -> None:
    async def main() -> None:
        bh = Blackhole()
        cfg, port = make_cfg(
            f'{{ name = "hole", address = "{bh.addr}", check = false }},',
            defaults='timeout_connect = "200ms"\nretries = 1',
        )
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(r.read(-1), 5) == b""
        assert asyncio.get_running_loop().time() - t0 >= 0.35  # two attempts
        line = (await wait_for(lambda: traffic(events)))[0]
        assert " sC " in line and "t/hole" in line and "/+1 " in line, line
        w.close()
        await stop_lb(lb)
        bh.close()

    run(loop, main)


# ---------------------------------------------------------------------------------- retries / health


@pytest.mark.parametrize("loop", LOOPS)
def test_dead_server_no_client_fails(loop: str) -> None:
    """A refused server among live ones: every client connection still succeeds, the dead one goes DOWN at
    the first refused connect (passive health) instead of after fall * inter."""

    async def main() -> None:
        b1 = await Backend().start()
        b2 = await Backend().start()
        dead = free_port()
        cfg, port = make_cfg(
            f'{{ name = "a", address = "{b1.addr}" }},\n{{ name = "dead", address = "127.0.0.1:{dead}" }},\n'
            f'{{ name = "b", address = "{b2.addr}" }},',
            listen_extra='balance = "roundrobin"\ncheck = { inter = "10s" }',
        )
        lb, events = await start_lb(cfg)
        results = await asyncio.gather(*(echo_ok(port) for _ in range(30)))
        assert all(results)
        st = lb.frontends["t"].server("dead")
        assert st is not None and not st.usable and 1 <= st.econ <= 10
        assert any("Server t/dead is DOWN" in e for e in events)
        await stop_lb(lb)
        await b1.stop()
        await b2.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_server_killed_under_load(loop: str) -> None:
    """A backend dies while clients keep connecting: no new connection fails."""

    async def main() -> None:
        b1 = await Backend().start()
        b2 = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "a", address = "{b1.addr}" }},\n{{ name = "b", address = "{b2.addr}" }},',
            listen_extra='balance = "leastconn"\ncheck = { inter = "5s" }',
        )
        lb, _events = await start_lb(cfg)
        ok = 0
        for i in range(60):
            if i == 20:
                await b1.stop()
            if i == 40:
                await b1.start(b1.port)
                lb.frontends["t"].server("a").health.force_up(status="L4OK", now=0.0)  # type: ignore[union-attr]
            ok += await echo_ok(port)
        assert ok == 60
        await stop_lb(lb)
        await b1.stop()
        await b2.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_no_server_at_all(loop: str) -> None:
    async def main() -> None:
        cfg, port = make_cfg(
            f'{{ name = "dead", address = "127.0.0.1:{free_port()}", check = false }},',
            defaults="retries = 2",
        )
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        assert await asyncio.wait_for(r.read(-1), 8) == b""
        line = (await wait_for(lambda: traffic(events)))[0]
        assert " SC " in line and "t/dead" in line and "/+2 " in line, line
        w.close()
        await stop_lb(lb)

    run(loop, main)


# -------------------------------------------------------------------------------- bad input / peers


@pytest.mark.parametrize("loop", LOOPS)
def test_backend_resets(loop: str) -> None:
    async def main() -> None:
        b = await Backend("reset").start()
        ok = await Backend().start()
        cfg, port = make_cfg(f'{{ name = "rst", address = "{b.addr}", check = false }},')
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        w.write(b"hello")
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(r.read(-1), 3) == b""
        line = (await wait_for(lambda: traffic(events)))[0]
        assert " SD " in line or " SC " in line, line
        w.close()
        assert lb.actconn == 0
        await stop_lb(lb)
        await b.stop()
        await ok.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_backend_accepts_never_answers(loop: str) -> None:
    async def main() -> None:
        b = await Backend("silent").start()
        cfg, port = make_cfg(
            f'{{ name = "mute", address = "{b.addr}", check = false }},',
            defaults='timeout_server = "300ms"\ntimeout_client = "5s"',
        )
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        w.write(b"AMQP\x00\x00\x09\x01")
        assert await asyncio.wait_for(r.read(-1), 30) == b""  # which timeout ended it: the log's sD
        line = (await wait_for(lambda: traffic(events)))[0]
        assert " sD " in line and "t/mute" in line, line
        w.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_garbage_and_half_open_clients(loop: str) -> None:
    """Garbage is relayed as bytes; a client that connects and goes silent hits timeout_client; a client
    that resets is logged CD; the others are not disturbed."""

    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "{b.addr}", check = false }},',
            # 1 s, not 400 ms: a stall of the loop before the resetting client's reset must not time it out
            defaults='timeout_client = "1s"\ntimeout_server = "1s"',
        )
        lb, events = await start_lb(cfg)
        junk = os.urandom(100_000)
        r, w = await connect(port)
        w.write(junk)
        assert await asyncio.wait_for(r.readexactly(len(junk)), 10) == junk
        w.close()
        # half-open: connects, never sends anything
        r2, w2 = await connect(port)
        # a resetting client
        r3, w3 = await connect(port)
        w3.write(b"abc")
        await r3.readexactly(3)
        w3.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w3.transport.abort()
        assert await echo_ok(port)  # others still fine
        assert await asyncio.wait_for(r2.read(-1), 10) == b""
        lines = await wait_for(lambda: len(traffic(events)) >= 4 and traffic(events))
        states = sorted(ln.split()[6] for ln in lines)
        assert "cD" in states and "CD" in states, states
        w2.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


# ------------------------------------------------------------------------------- maxconn & queueing


@pytest.mark.parametrize("loop", LOOPS)
def test_global_maxconn_stops_accepting(loop: str) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(f'{{ name = "s1", address = "{b.addr}", check = false }},', glob="maxconn = 2")
        lb, _events = await start_lb(cfg)
        conns = [await connect(port) for _ in range(2)]
        for r, w in conns:
            w.write(b"a")
            await r.readexactly(1)
        # the third TCP connect completes in the kernel backlog, but nothing is relayed yet
        r3, w3 = await connect(port)
        w3.write(b"b")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r3.readexactly(1), 0.3)
        assert lb.actconn == 2 and lb.paused_full
        conns[0][1].close()
        assert await asyncio.wait_for(r3.readexactly(1), 3) == b"b"
        w3.close()
        conns[1][1].close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_listener_maxconn(loop: str) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "{b.addr}", check = false }},', listen_extra="maxconn = 1"
        )
        lb, _ = await start_lb(cfg)
        r1, w1 = await connect(port)
        w1.write(b"a")
        await r1.readexactly(1)
        r2, w2 = await connect(port)
        w2.write(b"b")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r2.readexactly(1), 0.3)
        w1.close()
        assert await asyncio.wait_for(r2.readexactly(1), 3) == b"b"
        w2.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_server_maxconn_queue_fifo(loop: str) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "{b.addr}", maxconn = 1, check = false }},',
            defaults='timeout_queue = "5s"',
        )
        lb, events = await start_lb(cfg)
        r1, w1 = await connect(port)
        w1.write(b"1")
        await r1.readexactly(1)
        order: list[int] = []

        async def client(i: int) -> None:
            r, w = await connect(port)
            w.write(b"%d" % i)
            await r.readexactly(1)
            order.append(i)
            w.close()

        tasks = []
        srv = lb.frontends["t"].server("s1")
        assert srv is not None
        for i in (2, 3, 4):
            tasks.append(asyncio.create_task(client(i)))
            await wait_for(lambda n=i - 1: len(srv.queue) == n)  # queued in this order
        assert srv.cur == 1
        await asyncio.sleep(0.2)
        w1.close()
        await asyncio.gather(*tasks)
        assert order == [2, 3, 4]  # FIFO
        assert srv.qmax == 3 and srv.smax == 1
        lines = await wait_for(lambda: len(traffic(events)) >= 4 and traffic(events))
        waited = [int(ln.split()[4].split("/")[0]) for ln in lines[1:]]
        assert all(w >= 150 for w in waited), lines
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_queue_timeout_and_maxqueue(loop: str) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "{b.addr}", maxconn = 1, maxqueue = 1, check = false }},',
            defaults='timeout_queue = "1s"',  # long enough to see it queued on a busy machine
        )
        lb, events = await start_lb(cfg)
        r1, w1 = await connect(port)
        w1.write(b"1")
        await r1.readexactly(1)
        r2, w2 = await connect(port)  # queued, then times out
        srv = lb.frontends["t"].server("s1")
        assert srv is not None
        await wait_for(lambda: len(srv.queue) == 1)
        r3, w3 = await connect(port)  # queue full: refused at once
        assert await asyncio.wait_for(r3.read(-1), 2) == b""
        assert await asyncio.wait_for(r2.read(-1), 10) == b""
        lines = await wait_for(lambda: len(traffic(events)) >= 2 and traffic(events))
        assert all(" sQ " in ln for ln in lines), lines
        assert await asyncio.wait_for(r1.read(0), 1) == b""  # the first one untouched
        w1.write(b"z")
        assert await r1.readexactly(1) == b"z"
        for w in (w1, w2, w3):
            w.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


# -------------------------------------------------------------------------------------------- reload


@pytest.mark.parametrize("loop", LOOPS)
def test_reload_keeps_sockets_and_connections(loop: str) -> None:
    async def main() -> None:
        b1 = await Backend().start()
        b2 = await Backend().start()
        cfg, port = make_cfg(f'{{ name = "s1", address = "{b1.addr}", check = false }},')
        lb, _events = await start_lb(cfg)
        fe = lb.frontends["t"]
        lsock = fe.sockets[("127.0.0.1", port)]
        r, w = await connect(port)
        w.write(b"before")
        assert await r.readexactly(6) == b"before"
        # new config: s1 drained (weight 0), s2 added
        cfg2, _ = make_cfg(
            f'{{ name = "s1", address = "{b1.addr}", weight = 0, check = false }},\n'
            f'{{ name = "s2", address = "{b2.addr}", check = false }},',
            port=port,
        )
        lb.reload(cfg2)
        assert fe.sockets[("127.0.0.1", port)] is lsock  # same listening socket object
        assert lb.frontends["t"] is fe
        w.write(b"after")  # the established connection is untouched
        assert await r.readexactly(5) == b"after"
        assert await echo_ok(port)
        assert b2.accepted == 1 and b1.accepted == 1
        w.close()
        await stop_lb(lb)
        await b1.stop()
        await b2.stop()

    run(loop, main)


# --------------------------------------------------------------------------------------- admin / drain


@pytest.mark.parametrize("loop", LOOPS)
def test_admin_drain_and_maint(loop: str) -> None:
    async def main() -> None:
        b1 = await Backend().start()
        b2 = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "a", address = "{b1.addr}", check = false }},\n'
            f'{{ name = "b", address = "{b2.addr}", check = false }},',
            listen_extra='balance = "roundrobin"',
        )
        lb, events = await start_lb(cfg)
        lb.set_state("t", "a", "drain")
        for _ in range(4):
            assert await echo_ok(port)
        assert b1.accepted == 0 and b2.accepted == 4
        lb.set_state("t", "a", "ready")
        lb.set_state("t", "b", "maint")
        assert any("going DOWN for maintenance" in e for e in events)
        lb.set_state("t", "a", "maint")
        r, w = await connect(port)
        assert await asyncio.wait_for(r.read(-1), 3) == b""
        w.close()
        nosrv = await wait_for(lambda: [ln for ln in traffic(events) if "<NOSRV>" in ln])
        assert " SC " in nosrv[0]
        assert any("has no server available" in e for e in events)
        lb.set_state("t", "a", "ready")
        for _ in range(2):
            assert await echo_ok(port)
        assert b1.accepted == 2
        lb.set_weight("t", "b", 3)
        with pytest.raises(ValueError):
            lb.set_weight("t", "b", 1000)
        with pytest.raises(KeyError):
            lb.set_state("t", "nope", "maint")
        await stop_lb(lb)
        await b1.stop()
        await b2.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_server_speaks_first_and_closes(loop: str) -> None:
    """Data and FIN that arrive from the server before the relay is wired must still reach the client."""

    async def main() -> None:
        async def banner(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"220 hello\r\n")
            w.close()

        srv = await asyncio.start_server(banner, "127.0.0.1", 0)
        bport = srv.sockets[0].getsockname()[1]
        cfg, port = make_cfg(f'{{ name = "s1", address = "127.0.0.1:{bport}", check = false }},')
        lb, events = await start_lb(cfg)
        for _ in range(20):
            r, w = await connect(port)
            assert await asyncio.wait_for(r.read(-1), 3) == b"220 hello\r\n"
            w.close()
        lines = await wait_for(lambda: len(traffic(events)) >= 20 and traffic(events))
        assert all(" 11 -- " in ln for ln in lines), lines
        await stop_lb(lb)
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_server_fin_timeout(loop: str) -> None:
    """The server half-closes and the client never answers nor closes: timeout_server_fin ends it."""

    async def main() -> None:
        async def half(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"bye")
            w.write_eof()
            await r.read(-1)
            w.close()

        srv = await asyncio.start_server(half, "127.0.0.1", 0)
        bport = srv.sockets[0].getsockname()[1]
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "127.0.0.1:{bport}", check = false }},',
            defaults='timeout_server_fin = "300ms"\ntimeout_client_fin = "30s"',
        )
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        assert await asyncio.wait_for(r.read(-1), 30) == b"bye"  # data and FIN forwarded
        t0 = asyncio.get_running_loop().time()
        line = (await wait_for(lambda: traffic(events), 15))[0]
        assert asyncio.get_running_loop().time() - t0 < 15  # timeout_server_fin, not client_fin (30 s)
        assert " sL " in line, line  # half-closed: the last data phase
        w.close()
        await stop_lb(lb)
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_logasap(loop: str) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "{b.addr}", check = false }},', listen_extra="logasap = true"
        )
        lb, events = await start_lb(cfg)
        r, w = await connect(port)
        w.write(b"abc")
        await r.readexactly(3)
        first = (await wait_for(lambda: traffic(events)))[0]
        f = first.split()
        assert f[4].split("/")[2].startswith("+") and f[5].startswith("+"), first  # Tt and bytes so far
        w.close()
        lines = await wait_for(lambda: len(traffic(events)) >= 2 and traffic(events))
        assert " -- " in lines[1] and "/+" not in lines[1].split()[4]
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_stats_auth_and_read_only(loop: str) -> None:
    from tcplb.config import StatsConfig, StatsUser
    from tcplb.stats import StatsServer

    async def get(port: int, path: str, auth: str | None = None, method: str = "GET") -> tuple[int, str]:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        hdr = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        if auth:
            hdr += f"Authorization: Basic {auth}\r\n"
        w.write((hdr + "\r\n").encode())
        data = await r.read(-1)
        w.close()
        head, _, body = data.decode().partition("\r\n\r\n")
        return int(head.split()[1]), body

    async def main() -> None:
        import base64

        b = await Backend().start()
        cfg, _port = make_cfg(f'{{ name = "s1", address = "{b.addr}", check = false }},')
        lb, _events = await start_lb(cfg)
        st = StatsServer(lb, StatsConfig(bind=("127.0.0.1", 0), auth=(StatsUser("admin", "s3cret"),)))
        await st.start()
        good = base64.b64encode(b"admin:s3cret").decode()
        bad = base64.b64encode(b"admin:nope").decode()
        assert (await get(st.port, "/stats;csv"))[0] == 401
        assert (await get(st.port, "/stats;csv", bad))[0] == 401
        code, body = await get(st.port, "/stats;csv", good)
        assert code == 200 and body.startswith("# pxname,svname")
        assert (await get(st.port, "/api/servers/t/s1/state", good, "POST"))[0] == 403  # read-only
        assert (await get(st.port, "/nope", good))[0] == 404
        await st.close()
        await stop_lb(lb)
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_admin_kill_while_connecting_and_queued(loop: str) -> None:
    """shutdown-sessions / hard stop reach sessions still being set up: a connect in flight ends ``KC``, a
    queued one ``KQ``; every slot comes back and nothing stays behind."""

    async def main() -> None:
        bh = Blackhole()
        cfg, port = make_cfg(
            f'{{ name = "hole", address = "{bh.addr}", check = false, maxconn = 1 }},',
            defaults='timeout_connect = "30s"\ntimeout_queue = "30s"',
        )
        lb, events = await start_lb(cfg)
        st = lb.frontends["t"].servers[0]
        _r1, w1 = await connect(port)
        await wait_for(lambda: st.cur == 1, what="connecting")
        _r2, w2 = await connect(port)
        await wait_for(lambda: len(st.queue) == 1, what="queued")
        assert lb.kill_all() == 2
        lines = await wait_for(lambda: len(traffic(events)) >= 2 and traffic(events), what="two lines")
        states = sorted(ln.split()[6] for ln in lines)
        assert states == ["KC", "KQ"], lines
        await wait_for(lambda: lb.actconn == 0, what="all gone")
        assert st.cur == 0 and not st.queue
        w1.close()
        w2.close()
        await stop_lb(lb)
        bh.close()

    run(loop, main)
