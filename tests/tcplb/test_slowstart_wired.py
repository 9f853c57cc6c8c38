"""``slowstart`` wired into the balancer (tcplb.backend weights in 1/16 units, tcplb.slowstart's ramp), on
real sockets and both loops: a server that comes back does not get the reconnect herd at once."""

from __future__ import annotations

import asyncio

import pytest
from tcplb_helpers import AsyncBackend, free_port, listen_t, run, start_lb, stop_lb, wait_for

from tcplb import config, stats
from tcplb.lb import LoadBalancer

LOOPS = ["asyncio", "uvloop"]


async def _client(port: int) -> asyncio.StreamWriter:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"x")
    assert await asyncio.wait_for(r.readexactly(1), 10) == b"x"
    return w


def _lb(lport: int, a1: str, a2: str, slowstart: str) -> LoadBalancer:
    """A started balancer: leastconn over ``a1``, ``a2`` with ``slowstart``."""
    body = f"""
balance = "leastconn"
check = {{ type = "tcp", inter = "100ms", rise = 1, fall = 1 }}
default_server = {{ slowstart = "{slowstart}" }}
server = [{{ name = "s1", address = "{a1}" }}, {{ name = "s2", address = "{a2}" }}]
"""
    return start_lb(listen_t(lport, body))[0]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("slowstart", ["60s", "0s"])
def test_a_returning_server_is_ramped(loop: str, slowstart: str) -> None:
    """8 clients sit on s1 while s2 is DOWN; s2 comes back and 8 more arrive. With slowstart 60 s s2 starts
    at 1/16 of its weight and gets at most a few of them; without, leastconn sends it all 8 (the herd)."""

    async def main() -> None:
        b1, b2 = await AsyncBackend().start(), await AsyncBackend().start()
        lport = free_port()
        lb = _lb(lport, b1.addr, b2.addr, slowstart)
        s1, s2 = lb.frontends["t"].server("s1"), lb.frontends["t"].server("s2")
        assert s1 is not None and s2 is not None
        assert s2.weight == 16 and s2.throttle is None  # full weight at start-up: never ramped then
        port2 = b2.port
        await b2.stop()
        await wait_for(lambda: not s2.usable, 10, "s2 DOWN")
        held = [await _client(lport) for _ in range(8)]
        assert len(b1.firsts) == 8
        b2 = await AsyncBackend().start(port2)
        await wait_for(lambda: s2.usable, 10, "s2 UP again")
        if slowstart == "60s":
            assert s2.ss_since is not None and 1 <= s2.weight <= 2, s2.weight
            assert s2.shown_weight == 1 and s2.throttle is not None and s2.throttle <= 13
            snap = lb.snapshot()
            row = next(s for s in snap["listeners"][0]["servers"] if s["name"] == "s2")
            assert row["throttle"] == s2.throttle and row["weight"] == 1
            assert f",{s2.throttle}," in stats.render_csv(snap)
        else:
            assert s2.ss_since is None and s2.weight == 16
        held += [await _client(lport) for _ in range(8)]
        if slowstart == "60s":
            assert len(b2.firsts) <= 3, (len(b1.firsts), len(b2.firsts))
        else:
            assert len(b2.firsts) == 8, (len(b1.firsts), len(b2.firsts))
        for w in held:
            w.close()
        stop_lb(lb)
        await b1.stop()
        await b2.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_ramp_ends_and_maintenance_exit_ramps(loop: str) -> None:
    """Out of maintenance (admin) a server ramps too; once slowstart has passed it has its full weight."""

    async def main() -> None:
        b1, b2 = await AsyncBackend().start(), await AsyncBackend().start()
        lb = _lb(free_port(), b1.addr, b2.addr, "500ms")
        s2 = lb.frontends["t"].server("s2")
        assert s2 is not None
        lb.set_state("t", "s2", "maint")
        lb.set_state("t", "s2", "ready")
        assert s2.ss_since is not None and s2.weight < 16
        await wait_for(lambda: s2.weight == 16, 10, "the ramp's end")
        assert s2.ss_since is None and s2.throttle is None
        stop_lb(lb)
        await b1.stop()
        await b2.stop()

    run(loop, main)


def test_slowstart_config() -> None:
    base = '[listen.t]\nbind = ["127.0.0.1:5673"]\n'
    cfg = config.loads(
        base + 'default_server = { slowstart = "30s" }\n'
        'server = [{ name = "a", address = "127.0.0.1:1" },'
        ' { name = "b", address = "127.0.0.1:2", slowstart = 0 }]\n'
    )
    a, b = cfg.listeners[0].servers
    assert (a.slowstart, b.slowstart) == (30.0, 0.0)
    assert config.loads(config.to_toml(cfg, secrets=True)) == cfg
    with pytest.raises(config.ConfigError) as ei:
        config.loads(base + 'server = [{ name = "a", address = "127.0.0.1:1", slowstart = "soon" }]\n')
    assert "listen.t.server[0].slowstart" in str(ei.value)
