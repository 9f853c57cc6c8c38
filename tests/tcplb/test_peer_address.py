"""A client that resets before tcplb accepts it is logged with its address on both loops (issue 10, #7).

uvloop accepts in C and drops the address accept() returns; getpeername() then fails for a socket whose
connection is already reset (ENOTCONN). Linux's SO_PEERNAME still has it (``frontend.peer_after_reset``).
Before, uvloop logged such a client as ``-:-``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct

import pytest
from tcplb_helpers import run, wait_for
from test_server import Backend, connect, make_cfg, start_lb, stop_lb, traffic

from tcplb.frontend import peer_after_reset

LOOPS = ["asyncio", "uvloop"]
_RST = struct.pack("ii", 1, 0)


def _established(c: socket.socket) -> bool:
    _, w, _ = select.select([], [c], [], 0)
    return bool(w) and c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_peer_after_reset_reads_the_address_getpeername_lost(family: int, host: str) -> None:
    with socket.socket(family) as lsock:
        lsock.bind((host, 0))
        lsock.listen(4)
        c = socket.socket(family)
        c.connect(lsock.getsockname()[:2])
        cport = c.getsockname()[1]
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
        c.close()  # RST while in the backlog
        s, _ = lsock.accept()
        with s:
            with pytest.raises(OSError):
                s.getpeername()
            assert peer_after_reset(s) == (host, cport)
    assert peer_after_reset(None) is None
    with socket.socket(socket.AF_UNIX) as u:
        assert peer_after_reset(u) is None


@pytest.mark.parametrize("loop", LOOPS)
def test_client_reset_in_backlog_is_logged_with_its_address_on_both_loops(loop: str) -> None:
    async def main() -> None:
        b = await Backend().start()
        cfg, port = make_cfg(f'{{ name = "s1", address = "{b.addr}", check = false }},', glob="maxconn = 1")
        lb, events = await start_lb(cfg)
        r1, w1 = await connect(port)
        w1.write(b"a")
        await r1.readexactly(1)
        await wait_for(lambda: not lb.frontends["t"].accepting, what="accepting paused")
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        await wait_for(lambda: _established(c), 5, what="the handshake done in the kernel (backlog)")
        cport = c.getsockname()[1]
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
        c.close()  # RST while in the backlog
        w1.close()
        lines = await wait_for(lambda: len(traffic(events)) >= 2 and traffic(events), 5, what="two lines")
        assert any(ln.startswith(f"127.0.0.1:{cport} ") for ln in lines), lines
        assert not any(ln.startswith(("-:- ", ":0 ")) for ln in lines), lines
        await stop_lb(lb)
        await b.stop()

    run(loop, main)
