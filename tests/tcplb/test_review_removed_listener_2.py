"""Review of 82d169d (a listener removed by a reload re-reads the running globals once, at its removal):
the running ``global.log`` can change again in a LATER reload while the removed listener still has
sessions; before 4226aa7 their lines followed it (the predicate read ``lb.cfg`` live). Here ``t`` is removed
by a first reload (``global.log`` still "none") and logging is switched on by a second one: the session of
``t`` still open then ends afterwards and (as before 4226aa7) is logged."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from helpers import free_port
from tcplb_helpers import run, wait_for
from test_review_conn_settings import _text
from test_server import stop_lb

from tcplb.lb import LoadBalancer

LOOPS = ("asyncio", "uvloop")


@pytest.mark.parametrize("loop", LOOPS)
def test_a_removed_listeners_session_follows_a_later_reloads_global_log(
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
            with caplog.at_level(logging.INFO, logger="tcplb.traffic"):
                c = socket.socket()
                c.setblocking(False)
                await lp.sock_connect(c, ("127.0.0.1", pt))
                await wait_for(lambda: any(s.pipe.server is not None for s in lb.sessions))
                lb.reload(_text(sport, {"u": pu}, 'log = "none"'))  # t removed
                lb.reload(_text(sport, {"u": pu}, 'log = "stdout"'))  # then logging on
                caplog.clear()
                c.close()
                await wait_for(lambda: lb.actconn == 0)
                lines = [
                    r for r in caplog.records if r.name == "tcplb.traffic" and " t t/s1 " in r.getMessage()
                ]
                assert len(lines) == 1
        finally:
            await stop_lb(lb)
            srv.close()

    run(loop, main)
