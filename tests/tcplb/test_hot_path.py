"""Per-connection allocations the churn figure (issue 10) pays for, pinned: the session machine's commands
about a server are built once per server (a command is a Python-level ``__init__`` call: four per connection
otherwise), and the same commands still come out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Collection
from typing import Any

from tcplb_helpers import run, wait_for
from test_server import make_cfg, start_lb, stop_lb

from tcplb.lb import LoadBalancer
from tcplb.session import FREE, Cmds, Connect, Passive, Release, SessionMachine, Take


class Srv:
    def __init__(self, name: str) -> None:
        self.name = name
        self.usable = True
        self.cmds = Cmds(self)


class Ctx:
    retries = 3
    redispatch = -1
    t_connect: float | None = 1.0
    t_queue: float | None = 5.0
    logasap = False

    def __init__(self, srv: Srv) -> None:
        self.srv = srv

    def pick(self, client: tuple[str, int], exclude: Collection[str], pinned: Srv | None) -> tuple[Srv, str]:
        return self.srv, FREE

    def any_eligible(self, exclude: Collection[str]) -> bool:
        return True


def _life(srv: Srv) -> list[object]:
    m: SessionMachine[Srv] = SessionMachine(Ctx(srv), ("10.0.0.1", 1234))
    return [*m.start(0.0), *m.connected(0.1), *m.closed(1.0)]


def test_commands_about_a_server_are_built_once() -> None:
    srv = Srv("a")
    first = _life(srv)
    second = _life(srv)
    assert first == [Take(srv), Connect(srv), Passive(srv, True), first[3], Release(srv)]
    c = srv.cmds
    for cmds in (first, second):
        assert cmds[0] is c.take and cmds[1] is c.connect and cmds[2] is c.ok and cmds[4] is c.release


def test_tcplb_servers_cache_their_commands() -> None:
    async def main() -> None:
        cfg, _ = make_cfg('{ name = "s1", address = "127.0.0.1:9", check = false },')
        lb, _ = await start_lb(cfg)
        try:
            (srv,) = next(iter(lb.frontends.values())).servers
            assert isinstance(srv.cmds, Cmds)
            assert srv.cmds.take == Take(srv) and srv.cmds.release == Release(srv)
        finally:
            await stop_lb(lb)

    run("asyncio", main)


def test_the_data_phase_makes_no_setup_callback() -> None:
    """Once the server side is attached the client's end belongs to the relay: the pipe no longer calls
    the session back when the client goes (a call chain of three frames per connection before)."""

    async def main() -> None:
        lp = asyncio.get_running_loop()
        srv = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        cfg, port = make_cfg(f'{{ name = "s1", address = "127.0.0.1:{sport}", check = false }},')
        lb, _ = await start_lb(cfg)
        c = socket.socket()
        c.setblocking(False)
        try:
            await lp.sock_connect(c, ("127.0.0.1", port))
            sess = await wait_for(
                lambda: next((s for s in lb.sessions if s.pipe.server is not None), None), what="connected"
            )
            assert sess.pipe.on_client_lost is None
            c.close()
            await wait_for(lambda: lb.actconn == 0, what="session closed")
        finally:
            c.close()
            await stop_lb(lb)
            srv.close()

    for loop in ("asyncio", "uvloop"):
        run(loop, main)


def test_no_log_call_per_connection_when_nothing_logs() -> None:
    """With ``log = "none"`` (and no event hook) a connection's end makes no call into the logging path;
    with a hook it still logs its line."""

    async def main() -> None:
        lp = asyncio.get_running_loop()
        srv = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        cfg, port = make_cfg(
            f'{{ name = "s1", address = "127.0.0.1:{sport}", check = false }},', glob='log = "none"'
        )
        lb = LoadBalancer(cfg)
        lb.start()
        calls: list[bool] = []
        orig = lb.log_session

        def counting(sess: Any, asap: bool = False) -> None:
            calls.append(asap)
            orig(sess, asap)

        lb.log_session = counting  # type: ignore[method-assign]
        try:
            for hook in (None, events.append):
                events.clear()
                calls.clear()
                lb.on_event = hook
                c = socket.socket()
                c.setblocking(False)
                await lp.sock_connect(c, ("127.0.0.1", port))
                await wait_for(lambda: any(s.pipe.server is not None for s in lb.sessions), what="connected")
                c.close()
                await wait_for(lambda: lb.actconn == 0, what="session closed")
                if hook is None:
                    assert calls == []
                else:
                    assert calls == [False]
                    assert len([e for e in events if " t t/s1 " in e]) == 1
        finally:
            lb.on_event = None
            await stop_lb(lb)
            srv.close()

    events: list[str] = []
    for loop in ("asyncio", "uvloop"):
        run(loop, main)
