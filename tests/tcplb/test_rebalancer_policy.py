"""tcplb.rebalancer.Policy: the wired policy (runs on a server's return or on demand, max lifetime), pure.

Hypothesis drives the policy in virtual time over a simulated listener: closed connections leave their server
and come back ``settle``-ish later through a simulated weighted leastconn (as tcplb's balancer would place
them). The promises checked: a first step never closes more than each server's surplus (computed here
independently), the rate bound holds over every window, runs converge (every server within its limit and the
policy idle), a lifetime close happens between ``max_lifetime`` and ``max_lifetime * (1 + jitter)`` after the
connection opened, and nothing is ever closed when neither rebalancing nor lifetimes are configured.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb.config import Rebalance
from tcplb.rebalance import Conn, ServerLoad
from tcplb.rebalancer import RETRY_AFTER, Order, Policy


class Sim:
    """Servers with connections; a closed connection's client reconnects ``back`` seconds later to the
    least loaded eligible server (weighted leastconn: min (n + 1) / w)."""

    def __init__(self, weights: dict[str, int], counts: dict[str, int], now: float = 1000.0) -> None:
        self.weights = weights
        self.ids = count()
        self.conns: dict[str, list[Conn]] = {
            n: [Conn(next(self.ids), now - 100.0 - i) for i in range(counts.get(n, 0))] for n in weights
        }
        self.eligible = dict.fromkeys(weights, True)
        self.returning: list[float] = []

    def loads(self) -> list[ServerLoad]:
        return [ServerLoad(n, w, list(self.conns[n]), self.eligible[n]) for n, w in self.weights.items()]

    def close(self, o: Order, now: float, back: float) -> None:
        self.conns[o.server] = [c for c in self.conns[o.server] if c.id != o.conn.id]
        self.returning.append(now + back)

    def reconnect(self, now: float) -> None:
        due = [t for t in self.returning if t <= now]
        self.returning = [t for t in self.returning if t > now]
        for _ in due:
            pool = [n for n in self.weights if self.eligible[n] and self.weights[n] > 0]
            n = min(pool, key=lambda x: (Fraction(len(self.conns[x]) + 1, self.weights[x]), x))
            self.conns[n].append(Conn(next(self.ids), now))

    def total(self) -> int:
        return sum(len(v) for v in self.conns.values())


def limits(sim: Sim, tolerance: float) -> dict[str, int]:
    pool = [n for n in sim.weights if sim.eligible[n] and sim.weights[n] > 0]
    t = sum(len(sim.conns[n]) for n in pool)
    w = sum(sim.weights[n] for n in pool)
    tol = Fraction(repr(float(tolerance)))
    return {n: math.ceil(Fraction(t * sim.weights[n], w) * (1 + tol)) for n in pool}


servers_st = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]), st.tuples(st.integers(1, 4), st.integers(0, 60)), min_size=2
)
tolerance_st = st.sampled_from([0.0, 0.05, 0.1, 0.25, 1.0])
rate_st = st.sampled_from([0.5, 1.0, 3.0, 20.0])


@settings(max_examples=150, deadline=None)
@given(servers_st, tolerance_st, rate_st, st.integers(1, 50))
def test_first_step_never_closes_more_than_the_surplus(
    servers: dict[str, tuple[int, int]], tolerance: float, rate: float, burst: int
) -> None:
    sim = Sim({n: w for n, (w, _) in servers.items()}, {n: c for n, (_, c) in servers.items()})
    pol = Policy(Rebalance(enabled=True, tolerance=tolerance, rate=rate, burst=burst))
    pol.request()
    step = pol.step(sim.loads(), 1000.0)
    lim = limits(sim, tolerance)
    assert step.limits == lim
    per: dict[str, int] = {}
    for o in step.orders:
        assert o.kind == "rebalance" and "rebalance" in o.reason
        per[o.server] = per.get(o.server, 0) + 1
    total = sum(len(sim.conns[n]) for n in lim)
    wsum = sum(sim.weights[n] for n in lim)
    for n, k in per.items():
        # never more than the surplus, or (to fill a server short of its floor) below its fair share
        share = Fraction(total * sim.weights[n], wsum)
        assert k <= max(0, len(sim.conns[n]) - lim[n]) or len(sim.conns[n]) - k >= share, (n, k, lim)
    assert len(step.orders) <= burst


@settings(max_examples=80, deadline=None)
@given(servers_st, tolerance_st, rate_st, st.floats(0.5, 30.0), st.floats(1.0, 20.0))
def test_rate_bound_and_convergence(
    servers: dict[str, tuple[int, int]], tolerance: float, rate: float, back: float, settle: float
) -> None:
    """A run started by a server's return: the policy is stepped at the times it asks for; the closes over
    any window [t, t + d] are at most burst + rate * d; the run ends with every server within its limit."""
    weights = {n: w for n, (w, _) in servers.items()}
    counts = {n: c for n, (_, c) in servers.items()}
    empty = min(weights)
    counts[empty] = 0  # the server that just came back
    sim = Sim(weights, counts)
    cfg = Rebalance(enabled=True, tolerance=tolerance, rate=rate, settle=settle, delay_after_up=2.0)
    pol = Policy(cfg)
    now = 1000.0
    pol.server_back(empty, now)
    first = pol.step(sim.loads(), now)
    assert first.orders == () and first.next_at == now + 2.0 and first.rebalancing
    burst = pol.planner.burst
    times: list[float] = []
    steps = 0
    step = first
    while step.next_at is not None:
        steps += 1
        assert steps < 20_000, "does not converge"
        assert step.next_at > now
        now = step.next_at
        sim.reconnect(now)
        step = pol.step(sim.loads(), now)
        for o in step.orders:
            times.append(now)
            sim.close(o, now, min(back, settle))  # clients are back before the policy stops counting them
    while sim.returning:  # the last ones
        now = max(sim.returning)
        sim.reconnect(now)
    assert not pol.running and step.finished
    for i, t0 in enumerate(times):
        for t1 in times[i:]:
            n = sum(1 for t in times if t0 <= t <= t1)
            assert n <= burst + rate * (t1 - t0) + 1e-6, (n, t0, t1)
    lim = limits(sim, tolerance)
    assert all(len(sim.conns[n]) <= lim[n] for n in lim), (lim, {n: len(c) for n, c in sim.conns.items()})
    assert sim.total() == sum(counts.values())  # nothing lost in the simulation itself


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0.0, 500.0), min_size=1, max_size=30),
    st.floats(10.0, 600.0),
    st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)
def test_lifetime_close_within_its_jittered_bounds(
    opened: list[float], max_lifetime: float, jitter: float
) -> None:
    cfg = Rebalance(max_lifetime=max_lifetime, lifetime_jitter=jitter)
    pol = Policy(cfg, seed="t")
    conns = [Conn(i, 1000.0 + o) for i, o in enumerate(opened)]
    live = {c.id: c for c in conns}
    closed_at: dict[int, float] = {}
    now = 1000.0
    for _ in range(len(conns) + 2):
        step = pol.step([ServerLoad("a", 1, list(live.values())), ServerLoad("b", 1, [])], now)
        for o in step.orders:
            assert o.kind == "max-lifetime" and "max-lifetime" in o.reason
            closed_at[o.conn.id] = now  # type: ignore[index]
            del live[o.conn.id]
        if step.next_at is None:
            break
        assert step.next_at > now
        now = step.next_at
    assert set(closed_at) == {c.id for c in conns}
    for c in conns:
        t = closed_at[c.id]  # type: ignore[index]
        assert c.opened_at + max_lifetime <= t + 1e-6
        assert t <= c.opened_at + max_lifetime * (1 + jitter) + 1e-6
        lt = pol.lifetime_of(c)
        assert lt is not None and abs(t - (c.opened_at + lt)) < 1e-6


def test_failed_lifetime_close_is_retried_later() -> None:
    pol = Policy(Rebalance(max_lifetime=60.0, lifetime_jitter=0.0))
    c = Conn("x", 0.0)
    s = pol.step([ServerLoad("a", 1, [c])], 100.0)
    assert [o.conn for o in s.orders] == [c]
    assert pol.step([ServerLoad("a", 1, [c])], 101.0).orders == ()  # ordered: not twice
    pol.failed(s.orders[0], 101.0)
    s2 = pol.step([ServerLoad("a", 1, [c])], 102.0)
    assert s2.orders == () and s2.next_at == 101.0 + RETRY_AFTER
    assert [o.conn for o in pol.step([ServerLoad("a", 1, [c])], 101.0 + RETRY_AFTER).orders] == [c]


def test_failed_rebalance_close_counts_again() -> None:
    pol = Policy(Rebalance(enabled=True, tolerance=0.0, rate=100.0, burst=1))
    a = ServerLoad("a", 1, [Conn(i, float(i)) for i in range(4)])
    b = ServerLoad("b", 1, [])
    pol.request()
    s = pol.step([a, b], 100.0)
    assert len(s.orders) == 1 and s.orders[0].conn.id == 0  # the oldest
    pol.failed(s.orders[0], 100.0)
    s2 = pol.step([a, b], 101.0)
    assert [o.conn.id for o in s2.orders] == [0]  # chosen again: it stayed


@settings(max_examples=60, deadline=None)
@given(servers_st, st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=5))
def test_nothing_closed_when_disabled(servers: dict[str, tuple[int, int]], backs: list[str]) -> None:
    """enabled = false and no max_lifetime: server returns do nothing, steps close nothing, no timer."""
    sim = Sim({n: w for n, (w, _) in servers.items()}, {n: c for n, (_, c) in servers.items()})
    pol = Policy(Rebalance())
    now = 1000.0
    for n in backs:
        pol.server_back(n, now)
        s = pol.step(sim.loads(), now)
        assert s.orders == () and s.next_at is None and not s.rebalancing
        now += 1.0
    assert pol.step(sim.loads(), now + 86400 * 365).orders == ()


def test_delay_defaults_to_the_servers_slowstart() -> None:
    pol = Policy(Rebalance(enabled=True))
    pol.server_back("b", 100.0, slowstart=30.0)
    assert pol.pending == {"b": 130.0}
    pol2 = Policy(Rebalance(enabled=True, delay_after_up=5.0))
    pol2.server_back("b", 100.0, slowstart=30.0)
    assert pol2.pending == {"b": 105.0}
    pol3 = Policy(Rebalance(enabled=True))
    pol3.server_back("b", 100.0)
    assert pol3.pending == {"b": 100.0}  # no slowstart: at once


def test_lifetime_closes_are_not_counted_by_rebalancing() -> None:
    """A connection ordered closed for its lifetime is not also chosen to rebalance."""
    cfg = replace(Rebalance(enabled=True, tolerance=0.0, rate=100.0, burst=100), max_lifetime=50.0)
    pol = Policy(cfg, seed=1)
    old = [Conn(f"old{i}", 0.0) for i in range(4)]
    young = [Conn(f"y{i}", 90.0) for i in range(4)]
    pol.request()
    s = pol.step([ServerLoad("a", 1, old + young), ServerLoad("b", 1, [])], 100.0)
    kinds = [(o.kind, o.conn.id) for o in s.orders]
    assert sorted(str(i) for k, i in kinds if k == "max-lifetime") == [f"old{i}" for i in range(4)]
    # without the 4 old ones: a 4, b 0 -> limits 2: two of the young ones move
    assert len([i for k, i in kinds if k == "rebalance"]) == 2
    assert len({i for _, i in kinds}) == len(kinds)
