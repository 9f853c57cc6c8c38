"""Review of 4226aa7 (a listener's settings read as plain attributes, set per (re)configuration): a listener
that a reload ADDS gets the new global settings (maxconn, session logging), and the listeners kept by the
reload get them too, on both loops."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from helpers import free_port
from tcplb_helpers import run, wait_for
from test_server import stop_lb

from tcplb import config
from tcplb.lb import LoadBalancer

LOOPS = ("asyncio", "uvloop")


def _text(sport: int, listeners: dict[str, int], glob: str = "") -> config.Config:
    out = [
        f'[global]\nhard_stop_after = "2s"\n{glob}\n[defaults]\ntimeout_connect = "1s"\n'
        'timeout_client = "30s"\ntimeout_server = "30s"\n'
    ]
    for name, port in listeners.items():
        out.append(
            f'[listen.{name}]\nbind = ["127.0.0.1:{port}"]\n'
            f'server = [{{ name = "s1", address = "127.0.0.1:{sport}", check = false }}]\n'
        )
    return config.loads("\n".join(out))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_listener_added_by_reload_gets_the_new_settings(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        lp = asyncio.get_running_loop()
        srv = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        pt, pu = free_port(), free_port()
        lb = LoadBalancer(_text(sport, {"t": pt}, 'log = "none"'))
        lb.start()
        try:
            lb.reload(_text(sport, {"t": pt, "u": pu}, 'log = "stdout"\nmaxconn = 5'))
            t, u = lb.frontends["t"], lb.frontends["u"]
            assert lb.maxconn == t.maxconn == u.maxconn == 5
            with caplog.at_level(logging.INFO, logger="tcplb.traffic"):
                for name, port in (("u", pu), ("t", pt)):
                    caplog.clear()
                    c = socket.socket()
                    c.setblocking(False)
                    await lp.sock_connect(c, ("127.0.0.1", port))
                    await wait_for(lambda: any(s.pipe.server is not None for s in lb.sessions))
                    c.close()
                    await wait_for(lambda: lb.actconn == 0)
                    lines = [
                        r
                        for r in caplog.records
                        if r.name == "tcplb.traffic" and f" {name} {name}/s1 " in r.getMessage()
                    ]
                    assert len(lines) == 1, name
        finally:
            await stop_lb(lb)
            srv.close()

    run(loop, main)
