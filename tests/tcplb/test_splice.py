"""``splice = true``: the data phase moves to splice(2) (tcplb/splice.py), on uvloop and on stock asyncio.

Integrity both ways with half-close in either order, resets propagated, a slow reader bounded by the kernel
pipe, the idle timeout, an admin kill, counters, and that connections with bytes still queued in user space
stay in the user-space relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from typing import Any

import pytest
from tcplb_helpers import run, wait_for

from tcplb import config
from tcplb.server import LoadBalancer

LOOPS = ["asyncio", "uvloop"]


def cfg_text(port: int, backend: int, extra: str = "") -> str:
    return f"""
[global]
log = "none"
[defaults]
timeout_connect = "2s"
timeout_client = "30s"
timeout_server = "30s"
{extra}
[listen.t]
bind = ["127.0.0.1:{port}"]
splice = true
check = false
server = [{{ name = "s", address = "127.0.0.1:{backend}" }}]
"""


async def start_lb(backend: int, extra: str = "") -> tuple[LoadBalancer, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    lb = LoadBalancer(config.loads(cfg_text(port, backend, extra)))
    lb.start()
    return lb, port


def spliced(lb: LoadBalancer) -> int:
    return sum(1 for sess in lb.sessions if sess.pipe.splicer is not None)


async def read_all(r: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await r.read(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("server_first", [False, True], ids=["client-fin-first", "server-fin-first"])
def test_integrity_and_half_close(loop: str, server_first: bool) -> None:
    up, down = os.urandom(6 << 20), os.urandom(5 << 20)
    got_up: list[bytes] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if server_first:
            w.write(down)
            await w.drain()
            w.write_eof()  # our direction ends first; the client's keeps flowing
            got_up.append(await read_all(r))
        else:
            got_up.append(await read_all(r))
            w.write(down)
            await w.drain()
            w.write_eof()
        w.close()

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        lb, port = await start_lb(srv.sockets[0].getsockname()[1])
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await wait_for(lambda: spliced(lb), what="the connection spliced")
        if server_first:
            got_down = await read_all(r)  # the server's FIN reached us while our direction is open
            w.write(up)
            await w.drain()
            w.write_eof()
        else:
            w.write(up)
            await w.drain()
            w.write_eof()
            got_down = await read_all(r)
        w.close()
        assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
        await wait_for(lambda: got_up, 30, what="server got everything")
        assert hashlib.sha256(got_up[0]).digest() == hashlib.sha256(up).digest()
        await wait_for(lambda: lb.actconn == 0, 30, what="the pair closed")
        fe = lb.frontends["t"]
        assert (fe.bin, fe.bout) == (len(up), len(down))
        lb.stop_accepting()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_server_reset_reaches_the_client(loop: str) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(4)
        w.write(b"x" * 1000)
        await w.drain()
        await asyncio.sleep(0.1)
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        lb, port = await start_lb(srv.sockets[0].getsockname()[1])
        terms: list[str] = []
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await wait_for(lambda: spliced(lb), what="spliced")
        for sess in lb.sessions:
            cb = sess.pipe.on_close
            sess.pipe.on_close = lambda p, cb=cb: (terms.append(p.termination), cb and cb(p))
        w.write(b"ping")
        assert len(await r.readexactly(1000)) == 1000
        with pytest.raises(ConnectionResetError):
            await r.read(100)
        await wait_for(lambda: lb.actconn == 0, what="closed")
        assert terms == ["SD"]
        assert lb.frontends["t"].servers[0].eresp == 1  # a server abort counts as a response error
        w.close()
        lb.stop_accepting()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_slow_reader_is_bounded_and_idle_timeout_closes(loop: str) -> None:
    sent = [0]
    total = 256 << 20

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        chunk = b"z" * (1 << 20)
        try:
            while sent[0] < total:
                w.write(chunk)
                await w.drain()
                sent[0] += len(chunk)
        except (ConnectionError, OSError):
            pass

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        lb, port = await start_lb(srv.sockets[0].getsockname()[1], 'timeout_tunnel = "1s"')
        _r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        await wait_for(lambda: spliced(lb), what="spliced")
        # the client reads nothing: the server stalls after socket buffers + one kernel pipe
        last = -1
        for _ in range(100):  # bounded: one sample every 0.3 s until the sender stops moving
            if last == sent[0]:
                break
            last = sent[0]
            await asyncio.sleep(0.3)
        assert last == sent[0], "the sender never stalled"
        assert sent[0] < 64 << 20, sent[0]
        # nothing moves: the tunnel timeout (1 s) closes the spliced pair, well before timeout_client/server
        # (30 s) would (15 s: a busy machine's slack; the bound was 5 s)
        await wait_for(lambda: lb.actconn == 0, 15, what="idle timeout")
        w.close()
        lb.stop_accepting()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_admin_kill_and_early_data(loop: str) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        lb, port = await start_lb(srv.sockets[0].getsockname()[1])
        # early data (sent before the server connection exists, like AMQP's header) still arrives first
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"AMQP\x00\x00\x09\x01")
        assert await r.readexactly(8) == b"AMQP\x00\x00\x09\x01"
        await wait_for(lambda: spliced(lb), what="spliced after the early data went out")
        w.write(b"more")
        assert await r.readexactly(4) == b"more"
        _st, n = lb.shutdown_sessions("t", "s")
        assert n == 1
        assert await r.read(10) == b""  # closed (a FIN: reset=False for admin kills)
        await wait_for(lambda: lb.actconn == 0, what="closed")
        w.close()
        lb.stop_accepting()
        srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_churn_leaks_no_descriptor(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 short spliced connections (each: 2 sockets + 2 kernel pipes): descriptors back to baseline."""
    import tcplb.frontend
    from tcplb.splice import start_splice

    moved = [0]

    def counting(pipe: Any) -> bool:
        ok = start_splice(pipe)
        moved[0] += ok
        return ok

    monkeypatch.setattr(tcplb.frontend, "start_splice", counting)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read(100)
        w.write(data)
        await w.drain()
        w.close()

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def one(port: int) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello")
        assert await r.read(100) == b"hello"
        assert await r.read(100) == b""
        w.close()
        await w.wait_closed()

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
        lb, port = await start_lb(srv.sockets[0].getsockname()[1])
        await one(port)
        await wait_for(lambda: lb.actconn == 0, what="warm-up closed")
        base = fds()
        for _ in range(40):
            await asyncio.gather(*(one(port) for _ in range(50)))
        await wait_for(lambda: lb.actconn == 0, 30, what="all closed")
        assert lb.frontends["t"].stot == 2001
        assert moved[0] > 1000, moved  # most of them went through splice(2)
        await wait_for(lambda: fds() <= base, 30, what=f"descriptors back to {base}")
        lb.stop_accepting()
        srv.close()

    run(loop, main)


def test_config_key() -> None:
    base = cfg_text(1, 2).replace("splice = true\n", "")
    assert config.loads(base).listeners[0].splice is False
    assert config.loads(cfg_text(1, 2)).listeners[0].splice is True
    with pytest.raises(config.ConfigError) as ei:
        config.loads(cfg_text(1, 2).replace("splice = true", 'splice = "yes"'))
    assert "listen.t.splice" in str(ei.value.lines())
    # two kernel pipes more per connection: the derived maxconn leaves room for them
    assert config.effective_maxconn(None, 1024, fds_per_conn=6) == 160
