"""The listener settings the connection path reads as plain attributes (``Frontend._apply_timeouts``: limits,
keepalive, whether sessions are logged) follow a reload: a connection accepted after it gets the new ones."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from tcplb_helpers import run, wait_for
from test_server import make_cfg, stop_lb

from tcplb import config
from tcplb.lb import LoadBalancer

LOOPS = ("asyncio", "uvloop")


def _cfg(sport: int, port: int, glob: str = "", listen_extra: str = "") -> config.Config:
    cfg, _ = make_cfg(
        f'{{ name = "s1", address = "127.0.0.1:{sport}", check = false }},',
        glob=glob,
        listen_extra=listen_extra,
        port=port,
    )
    return cfg


async def _one_connection(lb: LoadBalancer, port: int) -> socket.socket:
    """A client connected through tcplb (the session is in its data phase); the caller closes it."""
    lp = asyncio.get_running_loop()
    c = socket.socket()
    c.setblocking(False)
    await lp.sock_connect(c, ("127.0.0.1", port))
    await wait_for(lambda: any(s.pipe.server is not None for s in lb.sessions), what="connected")
    return c


@pytest.mark.parametrize("loop", LOOPS)
def test_limits_follow_a_reload(loop: str) -> None:
    async def main() -> None:
        lp = asyncio.get_running_loop()
        srv = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        cfg = _cfg(sport, 0)
        port = cfg.listeners[0].bind[0][1]
        lb = LoadBalancer(cfg)
        lb.start()
        try:
            fe = lb.frontends["t"]
            assert fe.maxconn == lb.maxconn
            lb.reload(_cfg(sport, port, listen_extra="maxconn = 1"))
            assert fe.maxconn == 1
            c1 = await _one_connection(lb, port)
            # the second client waits: the listener is full (paused, or parked if the loop accepted it)
            c2 = socket.create_connection(("127.0.0.1", port))
            # the listener stops accepting at its limit (with the limit not applied it never does)
            await wait_for(lambda: not fe.accepting, what="the listener paused at maxconn 1")
            assert fe.cur == 1
            lb.reload(_cfg(sport, port, glob="maxconn = 7"))
            assert fe.maxconn == lb.maxconn == 7
            await wait_for(lambda: fe.cur == 2, what="the second client started")
            c1.close()
            c2.close()
            await wait_for(lambda: lb.actconn == 0, what="sessions closed")
        finally:
            await stop_lb(lb)
            srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_client_keepalive_follows_a_reload(loop: str) -> None:
    async def main() -> None:
        lp = asyncio.get_running_loop()
        srv = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        cfg = _cfg(sport, 0)
        port = cfg.listeners[0].bind[0][1]
        lb = LoadBalancer(cfg)
        lb.start()

        async def keepalive() -> tuple[int, int]:
            c = await _one_connection(lb, port)
            try:
                (sess,) = [s for s in lb.sessions if s.pipe.server is not None]
                out = []
                for side in (sess.pipe.client, sess.pipe.server):
                    assert side is not None and side.transport is not None
                    sock = side.transport.get_extra_info("socket")
                    out.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
                return out[0], out[1]
            finally:
                c.close()
                await wait_for(lambda: lb.actconn == 0, what="session closed")

        try:
            assert await keepalive() == (0, 0)
            lb.reload(_cfg(sport, port, listen_extra="tcpka = { client = { idle = 30 } }"))
            assert await keepalive() == (1, 0)
            lb.reload(_cfg(sport, port, listen_extra="tcpka = { server = { idle = 30 } }"))
            assert await keepalive() == (0, 1)
        finally:
            await stop_lb(lb)
            srv.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_session_logging_follows_a_reload(loop: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        lp = asyncio.get_running_loop()
        srv = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        cfg = _cfg(sport, 0, glob='log = "none"')
        port = cfg.listeners[0].bind[0][1]
        lb = LoadBalancer(cfg)
        lb.start()

        async def lines() -> int:
            caplog.clear()
            c = await _one_connection(lb, port)
            c.close()
            await wait_for(lambda: lb.actconn == 0, what="session closed")
            return len(
                [r for r in caplog.records if r.name == "tcplb.traffic" and " t t/s1 " in r.getMessage()]
            )

        try:
            with caplog.at_level(logging.INFO, logger="tcplb.traffic"):
                assert await lines() == 0
                lb.reload(_cfg(sport, port, glob='log = "stdout"'))
                assert await lines() == 1
                lb.reload(_cfg(sport, port, glob='log = "stdout"', listen_extra="log = false"))
                assert await lines() == 0
                lb.reload(_cfg(sport, port, glob='log = "none"'))
                events: list[str] = []
                lb.on_event = events.append  # a hook logs whatever global.log says
                assert await lines() == 1
                assert len([e for e in events if " t t/s1 " in e]) == 1
        finally:
            lb.on_event = None
            await stop_lb(lb)
            srv.close()

    run(loop, main)
