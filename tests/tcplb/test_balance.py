"""tcplb.balance: the selection policies, with hypothesis.

Stated bounds (checked below):
* roundrobin: after k * sum(weights) picks every server has exactly k * weight picks; after any number N of
  picks, |picks_i - N * w_i / W| < number of servers.
* leastconn (no connection closes): |conns_i - N * w_i / W| <= w_i after any N picks; with equal weights the
  counts never differ by more than 1.
* source: a server that leaves moves only its own clients; when it returns they come back; shares follow the
  weights within 10 % (absolute share) on 4000 fixed client addresses.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb.balance import (
    LeastConn,
    RoundRobin,
    SourceHash,
    count_usable,
    eligible,
    make_balancer,
    select,
)


@dataclass
class Srv:
    name: str
    weight: int = 1
    active_conns: int = 0
    backup: bool = False
    usable: bool = True


def servers(weights: list[int], **kw: object) -> list[Srv]:
    return [Srv(f"s{i}", w, **kw) for i, w in enumerate(weights)]  # type: ignore[arg-type]


weights_st = st.lists(st.integers(1, 10), min_size=1, max_size=6)
clients = [
    (f"198.51.100.{i % 250 + 1}" if i < 250 else f"203.0.113.{i % 250 + 1}", 40000 + i) for i in range(500)
]
many_clients = [(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 5000) for i in range(4000)]


# ---------------------------------------------------------------------------------------- roundrobin


@settings(max_examples=60, deadline=None)
@given(weights_st, st.integers(1, 4))
def test_roundrobin_exact_per_cycle_and_bounded_prefix(weights: list[int], cycles: int) -> None:
    srvs = servers(weights)
    rr = RoundRobin()
    total = sum(weights)
    counts: Counter[str] = Counter()
    for n in range(1, cycles * total + 1):
        c = rr.pick(srvs)
        assert c is not None
        counts[c.name] += 1
        for s in srvs:
            assert abs(counts[s.name] - n * s.weight / total) < len(srvs)
        if n % total == 0:
            assert all(counts[s.name] == (n // total) * s.weight for s in srvs)


def test_roundrobin_is_smooth() -> None:
    rr = RoundRobin()
    srvs = [Srv("a", 5), Srv("b", 1), Srv("c", 1)]
    seq = [rr.pick(srvs) for _ in range(7)]
    assert [s.name for s in seq if s] == ["a", "a", "b", "a", "c", "a", "a"]


def test_roundrobin_equal_weights_rotate() -> None:
    rr = RoundRobin()
    srvs = servers([1, 1, 1])
    assert [s.name for s in (rr.pick(srvs) for _ in range(6)) if s] == ["s0", "s1", "s2"] * 2


# ----------------------------------------------------------------------------------------- leastconn


@settings(max_examples=60, deadline=None)
@given(weights_st, st.integers(1, 200))
def test_leastconn_shares_proportional(weights: list[int], n: int) -> None:
    srvs = servers(weights)
    lc = LeastConn()
    total = sum(weights)
    for _ in range(n):
        c = lc.pick(srvs)
        assert c is not None
        c.active_conns += 1
    for s in srvs:
        assert abs(s.active_conns - n * s.weight / total) <= s.weight
    if len(set(weights)) == 1:
        conns = [s.active_conns for s in srvs]
        assert max(conns) - min(conns) <= 1


@settings(max_examples=60, deadline=None)
@given(
    weights_st,
    st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=100),
)
def test_leastconn_always_picks_a_minimum_ratio(weights: list[int], ops: list[tuple[bool, int]]) -> None:
    srvs = servers(weights)
    lc = LeastConn()
    for is_open, idx in ops:
        if not is_open:
            s = srvs[idx % len(srvs)]
            s.active_conns = max(0, s.active_conns - 1)
            continue
        c = lc.pick(srvs)
        assert c is not None
        best = min(s.active_conns / s.weight for s in srvs)
        assert c.active_conns / c.weight == best
        c.active_conns += 1


def test_leastconn_ties_rotate() -> None:
    lc = LeastConn()
    srvs = servers([1, 1, 1])  # connections never counted: always a three-way tie
    assert [s.name for s in (lc.pick(srvs) for _ in range(6)) if s] == ["s0", "s1", "s2"] * 2


def test_leastconn_fills_a_recovered_server_first() -> None:
    srvs = [Srv("a", active_conns=50), Srv("b", active_conns=50), Srv("c", active_conns=0)]
    lc = LeastConn()
    for _ in range(50):
        c = lc.pick(srvs)
        assert c is not None and c.name == "c"
        c.active_conns += 1
    assert lc.pick(srvs) is not None


def test_leastconn_weighted_ratio() -> None:
    srvs = [Srv("a", weight=2, active_conns=3), Srv("b", weight=1, active_conns=2)]
    assert LeastConn().pick(srvs) is srvs[0]  # 3/2 < 2/1


# -------------------------------------------------------------------------------------------- source


def mapping(bal: SourceHash, srvs: list[Srv], who: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    out = {}
    for c in who:
        s = bal.pick(srvs, c)
        assert s is not None
        out[c] = s.name
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=2, max_size=6), st.data())
def test_source_only_the_leaving_servers_clients_move(weights: list[int], data: st.DataObject) -> None:
    srvs = servers(weights)
    bal = SourceHash()
    before = mapping(bal, srvs, clients)
    gone = data.draw(st.sampled_from(srvs))
    how = data.draw(st.sampled_from(["down", "drain", "exclude"]))
    if how == "down":
        gone.usable = False
    elif how == "drain":
        gone.weight = 0
    after = {c: bal.pick(srvs, c, exclude={gone.name} if how == "exclude" else ()) for c in clients}
    for c in clients:
        moved = after[c]
        assert moved is not None
        if before[c] != gone.name:
            assert moved.name == before[c]
        else:
            assert moved.name != gone.name
    gone.usable, gone.weight = True, weights[srvs.index(gone)]
    assert mapping(bal, srvs, clients) == before


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=2, max_size=5), st.data())
def test_source_a_heavier_server_only_takes_clients(weights: list[int], data: st.DataObject) -> None:
    srvs = servers(weights)
    bal = SourceHash()
    before = mapping(bal, srvs, clients)
    s = data.draw(st.sampled_from(srvs))
    s.weight += data.draw(st.integers(1, 5))
    after = mapping(bal, srvs, clients)
    for c in clients:
        assert after[c] == before[c] or after[c] == s.name


def test_source_shares_follow_weights() -> None:
    srvs = [Srv("a", 1), Srv("b", 2), Srv("c", 3)]
    counts = Counter(mapping(SourceHash(), srvs, many_clients).values())
    for s in srvs:
        assert abs(counts[s.name] / len(many_clients) - s.weight / 6) < 0.10 * s.weight / 6 + 0.01


def test_source_ignores_port_and_is_stable_across_instances() -> None:
    srvs = servers([1, 1, 1])
    a = SourceHash().pick(srvs, ("192.0.2.50", 1))
    b = SourceHash().pick(srvs, ("192.0.2.50", 2))
    assert a is b
    assert SourceHash().pick(srvs, ("not-an-ip", 1)) is not None


def test_source_without_client_falls_back_to_roundrobin() -> None:
    bal = SourceHash()
    srvs = servers([1, 1])
    assert [s.name for s in (bal.pick(srvs, None) for _ in range(4)) if s] == ["s0", "s1"] * 2
    bal.forget("s0")


# -------------------------------------------------------------------------------- eligibility, select


@pytest.mark.parametrize("kind", ["roundrobin", "leastconn", "source"])
def test_never_picks_drained_down_or_excluded(kind: str) -> None:
    bal = make_balancer(kind)
    srvs = [Srv("drain", weight=0), Srv("down", usable=False), Srv("ex"), Srv("ok")]
    for c in clients[:50]:
        s = bal.pick(srvs, c, exclude={"ex"})
        assert s is not None and s.name == "ok"
    assert bal.pick([Srv("drain", weight=0)], clients[0]) is None
    assert bal.pick([], None) is None
    bal.forget("ok")
    bal.forget("unknown")


def test_make_balancer_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown balance"):
        make_balancer("random")


srv_st = st.builds(
    Srv,
    name=st.just(""),
    weight=st.integers(0, 3),
    active_conns=st.integers(0, 3),
    backup=st.booleans(),
    usable=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(srv_st, max_size=6),
    st.sampled_from(["roundrobin", "leastconn", "source"]),
    st.booleans(),
    st.sets(st.integers(0, 5), max_size=2),
)
def test_select_backup_rule(srvs: list[Srv], kind: str, allbackups: bool, excl: set[int]) -> None:
    for i, s in enumerate(srvs):
        s.name = f"s{i}"
    exclude = {f"s{i}" for i in excl}
    chosen = select(make_balancer(kind), srvs, ("192.0.2.7", 1), exclude, allbackups)
    ok = [s for s in srvs if eligible(s, exclude)]
    actives = [s for s in ok if not s.backup]
    backups = [s for s in ok if s.backup]
    if actives:
        assert chosen in actives
    elif backups:
        assert chosen in backups
        if not allbackups:
            assert chosen is backups[0]
    else:
        assert chosen is None


def test_allbackups_spreads_over_backups() -> None:
    srvs = [Srv("a", usable=False), Srv("b1", backup=True), Srv("b2", backup=True)]
    rr = make_balancer("roundrobin")
    assert {s.name for s in (select(rr, srvs) for _ in range(4)) if s} == {"b1"}
    assert {s.name for s in (select(rr, srvs, allbackups=True) for _ in range(4)) if s} == {"b1", "b2"}


def test_drained_actives_fall_back_to_backup_and_count_usable() -> None:
    srvs = [
        Srv("a", weight=0),
        Srv("b", usable=False),
        Srv("bk", backup=True),
        Srv("bk2", backup=True, weight=0),
    ]
    chosen = select(make_balancer("leastconn"), srvs)
    assert chosen is not None and chosen.name == "bk"
    assert count_usable(srvs) == (0, 1)
    assert count_usable([Srv("x"), Srv("y", backup=True)]) == (1, 1)
