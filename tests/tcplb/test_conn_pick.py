"""``Frontend.pick`` without server limits skips ``select()`` when no server is a backup (one call and a
property read per server less per connection). Whether there is a backup is known per list of servers (a
reload replaces the list whenever a server changes): the backup rule still holds, before and after reloads
that add, remove or change backups."""

from __future__ import annotations

import asyncio

import pytest
from tcplb_helpers import run
from test_server import make_cfg

from tcplb import config
from tcplb.lb import LoadBalancer
from tcplb.session import FREE

CLIENT = ("10.0.0.1", 1234)


def _cfg(servers: list[tuple[str, bool]], port: int = 0) -> config.Config:
    lines = "\n".join(
        f'{{ name = "{n}", address = "127.0.0.1:{i + 1}", check = false, backup = {str(b).lower()} }},'
        for i, (n, b) in enumerate(servers)
    )
    cfg, _ = make_cfg(lines, listen_extra='balance = "roundrobin"', port=port)
    return cfg


def _picks(lb: LoadBalancer, n: int = 4) -> list[str]:
    fe = lb.frontends["t"]
    out = []
    for _ in range(n):
        srv, how = fe.pick(CLIENT, (), None)
        assert srv is not None and how == FREE
        out.append(srv.name)
    return out


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_backup_rule_across_reloads(loop: str) -> None:
    async def main() -> None:
        cfg = _cfg([("a", False), ("b", False)])
        port = cfg.listeners[0].bind[0][1]
        lb = LoadBalancer(cfg, asyncio.get_running_loop())
        lb.start()
        try:
            assert _picks(lb) == ["a", "b", "a", "b"]
            lb.reload(_cfg([("a", False), ("b", True)], port))  # b becomes a backup
            assert _picks(lb) == ["a"] * 4
            fe = lb.frontends["t"]
            fe.servers[0].maint = True  # the active server leaves: the backup takes over
            assert _picks(lb) == ["b"] * 4
            lb.reload(_cfg([("a", False), ("b", False), ("c", True)], port))  # b active again, c a backup
            fe.servers[0].maint = True
            assert _picks(lb) == ["b"] * 4
            fe.servers[0].maint = False
            assert sorted(_picks(lb)) == ["a", "a", "b", "b"]
            lb.reload(_cfg([("c", True)], port))  # only a backup left
            assert _picks(lb) == ["c"] * 4
            # nothing eligible: <NOSRV> either way
            lb.frontends["t"].servers[0].maint = True
            assert lb.frontends["t"].pick(CLIENT, (), None) == (None, "SC")
        finally:
            lb.stop_accepting()
            lb.stop_checks()

    run(loop, main)
