"""Review of 4226aa7: a listener REMOVED by a reload keeps its sessions (they run to their end), and they must
end under the running globals. Before 4226aa7 whether such a session's line is logged followed the running
``global.log`` (the predicate read ``lb.cfg`` live); 4226aa7 cached it per configuration, and a removed
listener was never refreshed. Here ``global.log`` goes from "none" to "stdout" either in the reload that
removes listener ``t`` or in a later one (the listener already gone): its session still open then ends
afterwards and (as before 4226aa7) is logged."""

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
@pytest.mark.parametrize("later", [False, True], ids=["same-reload", "later-reload"])
def test_a_removed_listeners_session_is_logged_per_the_running_global_log(
    loop: str, later: bool, caplog: pytest.LogCaptureFixture
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
                if later:
                    lb.reload(_text(sport, {"u": pu}, 'log = "none"'))  # t removed
                lb.reload(_text(sport, {"u": pu}, 'log = "stdout"'))  # (t removed,) logging on
                assert "t" not in lb.frontends
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
