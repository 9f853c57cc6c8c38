"""The session driver's deadline queue (tcplb/frontend.py ``Frontend._arm``): deadlines that come in order
share one loop timer; every armed deadline fires once, at or after its time; a re-armed or cancelled one never
fires at its old time, and its entry no longer holds the session; an earlier deadline than the queue's last
gets a timer of its own. On both loops."""

from __future__ import annotations

import asyncio

import pytest

from tcplb import config as cfgmod
from tcplb.frontend import Frontend, Session
from tcplb.lb import LoadBalancer
from tcplb.procstart import new_loop
from tcplb.relay import Pipe

CFG = """
[listen.t]
bind = ["127.0.0.1:1"]
server = [{ name = "a", address = "127.0.0.1:2", check = false }]
"""


class Probe(Session):
    __slots__ = ("fired",)

    def __init__(self, fe: Frontend, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(fe, Pipe(loop), ("127.0.0.1", 1), 0.0)
        self.fired: list[float] = []

    def timer(self, now: float) -> list:  # type: ignore[type-arg]
        self.fired.append(now)
        self.deadline = None
        return []


def _probe(fe: Frontend, loop: asyncio.AbstractEventLoop) -> Probe:
    return Probe(fe, loop)


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_deadline_queue(kind: str) -> None:
    loop = new_loop(kind)
    try:
        lb = LoadBalancer(cfgmod.loads(CFG), loop)
        fe = Frontend(lb, lb.cfg.listeners[0])
        t0 = loop.time()
        a, b, c, d, e = (_probe(fe, loop) for _ in range(5))
        for s, dl in ((a, t0 + 0.10), (b, t0 + 0.10), (c, t0 + 0.15), (d, t0 + 0.20)):
            s.deadline = dl
            fe._run(s, [])
        assert len(fe.deadlines) == 4 and fe._dl_timer is not None  # one loop timer for the four
        c.deadline = None  # c's connect ended: its entry goes stale
        fe._run(c, [])
        d.deadline = t0 + 0.25  # d re-armed later: its old entry goes stale, a new one is queued
        fe._run(d, [])
        # a cancelled entry lets go of its session at once (no finished session kept until its old deadline)
        assert [e[1] for e in fe.deadlines] == [a, b, None, None, d]
        e.deadline = t0 + 0.05  # earlier than the queue's last: a timer of its own
        fe._run(e, [])
        assert e.handle is not None and e.handle is not a.handle

        async def until_done() -> None:
            end = loop.time() + 10
            while not (a.fired and b.fired and d.fired and e.fired) and loop.time() < end:
                await asyncio.sleep(0.01)

        loop.run_until_complete(until_done())
        assert len(a.fired) == len(b.fired) == len(d.fired) == len(e.fired) == 1
        assert c.fired == []
        assert a.fired[0] >= t0 + 0.10 and b.fired[0] >= t0 + 0.10
        assert d.fired[0] >= t0 + 0.25
        assert e.fired[0] >= t0 + 0.05
        assert not fe.deadlines and fe._dl_timer is None  # everything consumed, no timer left
    finally:
        loop.close()
