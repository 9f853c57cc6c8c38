"""tcplb.balance's optimised picks against the reference algorithms they replaced, with hypothesis.

``select``/``pick`` read each candidate's properties once, hand the weights to the algorithm beside the pool
and skip the comparison for a pool of one (bench/tcplb_pathcost.py: the per-connection cost). The
reference below is the code before that change, verbatim in behaviour: for random sequences of picks and
server changes (up/down, weight including drain 0, connection counts, backups, excludes, allbackups, with
and without a client address) both give the same server every time, for every algorithm.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb.balance import _client_key, make_balancer, select


@dataclass
class Srv:
    name: str
    weight: int = 1
    active_conns: int = 0
    backup: bool = False
    usable: bool = True


# ------------------------------------------------------------------------ reference (before the change)


def _eligible(c: Srv, exclude: Collection[str]) -> bool:
    return c.usable and c.weight > 0 and c.name not in exclude


class RefRR:
    def __init__(self) -> None:
        self.cur: dict[str, int] = {}

    def choose(self, pool: Sequence[Srv], client: tuple[str, int] | None) -> Srv:
        cur = self.cur
        total = 0
        best = pool[0]
        best_score = -(2**62)
        for c in pool:
            score = cur.get(c.name, 0) + c.weight
            cur[c.name] = score
            total += c.weight
            if score > best_score:
                best, best_score = c, score
        cur[best.name] = best_score - total
        return best


class RefLC:
    def __init__(self) -> None:
        self.seq = 0
        self.last: dict[str, int] = {}

    def choose(self, pool: Sequence[Srv], client: tuple[str, int] | None) -> Srv:
        best = pool[0]
        for c in pool[1:]:
            lhs = c.active_conns * best.weight
            rhs = best.active_conns * c.weight
            if lhs < rhs or (lhs == rhs and self.last.get(c.name, -1) < self.last.get(best.name, -1)):
                best = c
        self.seq += 1
        self.last[best.name] = self.seq
        return best


class RefSH:
    def __init__(self) -> None:
        self.fallback = RefRR()

    def choose(self, pool: Sequence[Srv], client: tuple[str, int] | None) -> Srv:
        if client is None:
            return self.fallback.choose(pool, None)
        key = _client_key(client[0])

        def score(c: Srv) -> tuple[float, str]:
            h = hashlib.blake2b(key + b"\0" + c.name.encode(), digest_size=8).digest()
            u = (int.from_bytes(h, "big") + 0.5) / float(2**64)
            return -c.weight / math.log(u), c.name

        return max(pool, key=score)


Ref = RefRR | RefLC | RefSH


def ref_pick(
    b: Ref, cands: Sequence[Srv], client: tuple[str, int] | None, exclude: Collection[str]
) -> Srv | None:
    pool = [c for c in cands if _eligible(c, exclude)]
    return b.choose(pool, client) if pool else None


def ref_select(
    b: Ref, cands: Sequence[Srv], client: tuple[str, int] | None, exclude: Collection[str], allbackups: bool
) -> Srv | None:
    chosen = ref_pick(b, [c for c in cands if not c.backup], client, exclude)
    if chosen is not None:
        return chosen
    backups = [c for c in cands if c.backup and _eligible(c, exclude)]
    if not backups:
        return None
    if allbackups:
        return ref_pick(b, backups, client, exclude)
    return backups[0]


REFS: dict[str, type[RefRR] | type[RefLC] | type[RefSH]] = {
    "roundrobin": RefRR,
    "leastconn": RefLC,
    "source": RefSH,
}

# ------------------------------------------------------------------------------------------ the check

change_st = st.tuples(
    st.integers(0, 5),  # which server
    st.sampled_from(["weight", "conns", "usable"]),
    st.integers(0, 4),
)
step_st = st.one_of(
    st.tuples(st.just("pick"), st.sets(st.integers(0, 5), max_size=2), st.integers(-1, 3)),
    st.tuples(st.just("change"), change_st),
    st.tuples(st.just("forget"), st.integers(0, 5)),
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["roundrobin", "leastconn", "source"]),
    st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans()), min_size=1, max_size=6),
    st.booleans(),
    st.lists(step_st, max_size=60),
)
def test_same_picks_as_the_reference(
    kind: str,
    init: list[tuple[int, bool, bool]],
    allbackups: bool,
    steps: list[tuple],  # type: ignore[type-arg]
) -> None:
    srvs = [Srv(f"s{i}", w, 0, backup, usable) for i, (w, backup, usable) in enumerate(init)]
    fast = make_balancer(kind)
    ref: Ref = REFS[kind]()
    for step in steps:
        if step[0] == "pick":
            excl, ci = step[1], step[2]
            exclude = {f"s{i}" for i in excl}
            client = None if ci < 0 else (f"192.0.2.{ci + 1}", 1000 + ci)
            a = select(fast, srvs, client, exclude, allbackups)
            b = ref_select(ref, srvs, client, exclude, allbackups)
            assert (a.name if a else None) == (b.name if b else None)
            if a is not None and ci % 2:  # sometimes a connection that stays (leastconn), sometimes not
                a.active_conns += 1
        elif step[0] == "change":
            i, what, v = step[1]
            if i < len(srvs):
                s = srvs[i]
                if what == "weight":
                    s.weight = v
                elif what == "conns":
                    s.active_conns = v
                else:
                    s.usable = bool(v % 2)
        else:
            name = f"s{step[1]}"
            fast.forget(name)
            if isinstance(ref, RefSH):
                ref.fallback.cur.pop(name, None)
            elif isinstance(ref, RefRR):
                ref.cur.pop(name, None)
            else:
                ref.last.pop(name, None)


def test_one_server_keeps_the_state_of_the_full_algorithm() -> None:
    """A pool of one (the fast path) leaves later multi-server picks exactly as the loop would."""
    a, b = Srv("a"), Srv("b")
    fast = make_balancer("leastconn")
    ref = RefLC()
    b.usable = False
    for _ in range(3):
        assert select(fast, [a, b]) is a and ref_select(ref, [a, b], None, (), False) is a
    b.usable = True
    a.active_conns = b.active_conns = 0
    seq_fast = [select(fast, [a, b]) for _ in range(4)]
    seq_ref = [ref_select(ref, [a, b], None, (), False) for _ in range(4)]
    assert seq_fast == seq_ref == [b, a, b, a]
