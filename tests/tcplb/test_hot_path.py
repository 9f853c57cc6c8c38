"""Per-connection allocations the churn figure (issue 10) pays for, pinned: the session machine's commands
about a server are built once per server (a command is a Python-level ``__init__`` call: four per connection
otherwise), and the same commands still come out."""

from __future__ import annotations

from collections.abc import Collection

from tcplb_helpers import run
from test_server import make_cfg, start_lb, stop_lb

from tcplb.session import FREE, Cmds, Connect, Passive, Release, SessionMachine, Take


class Srv:
    def __init__(self, name: str, cached: bool) -> None:
        self.name = name
        self.usable = True
        if cached:
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
    srv = Srv("a", cached=True)
    first = _life(srv)
    second = _life(srv)
    assert first == [Take(srv), Connect(srv), Passive(srv, True), first[3], Release(srv)]
    c = srv.cmds
    for cmds in (first, second):
        assert cmds[0] is c.take and cmds[1] is c.connect and cmds[2] is c.ok and cmds[4] is c.release


def test_a_server_without_cached_commands_gets_equal_new_ones() -> None:
    srv = Srv("b", cached=False)
    cmds = _life(srv)
    assert cmds == [Take(srv), Connect(srv), Passive(srv, True), cmds[3], Release(srv)]


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
