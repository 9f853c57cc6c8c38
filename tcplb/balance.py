"""Server selection policies for tcplb: pure, no I/O, no clock.

A balancer picks one of the *eligible* candidates: ``usable`` (up, not in maintenance), ``weight > 0``
(weight 0 = drain: established connections stay, no new ones) and not named in ``exclude`` (servers this
connection already failed on: redispatch). ``select`` adds HAProxy's backup rule on top: backup servers are
used only when no active server is eligible, and then only the first eligible backup in configuration order
unless ``allbackups`` is set (then the algorithm runs over all eligible backups).

Algorithms (``make_balancer(kind)``):

``roundrobin``
    Smooth weighted round robin (nginx's): each pick adds every eligible server's weight to its running
    score, takes the highest score and subtracts the total weight from it. Over every window of
    ``sum(weights)`` consecutive picks of a fixed set each server gets exactly ``weight`` picks, spread
    evenly (5,1,1 gives a a b a c a a, not a a a a a b c).
``leastconn`` (the default)
    Fewest ``active_conns / weight`` (active plus queued connections, as HAProxy counts them); ties go to the
    tied server picked least recently, so equal servers rotate. Long-lived AMQP connections make this the
    right default: it balances what is open, not what arrived.
``source``
    Weighted rendezvous (highest-random-weight) hashing of the client IP address (the port is ignored):
    each server scores ``-weight / ln(h)`` with ``h`` a uniform hash of (client IP, server name); the best
    score wins. A server that leaves (down, drained, excluded) moves exactly its own clients, spread over the
    others in proportion to their weights; a server that comes back takes exactly those clients back. The
    hash (BLAKE2b) is stable across processes and restarts. Without a client address it falls back to
    smooth round robin.

Every algorithm is O(number of servers) per pick.

Weights are compared only as ratios (all three algorithms are homogeneous: multiplying every weight by
the same factor picks the same servers), so the unit is free as long as it is the same for every candidate.
tcplb's servers (:class:`tcplb.backend.ServerState`) give HAProxy's 1/16 units (``weight * 16``), which lets
``slowstart`` (:mod:`tcplb.slowstart`) ramp even a weight-1 server in 16 steps without ever reaching 0.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from typing import Protocol, TypeVar

__all__ = [
    "KINDS",
    "Balancer",
    "Candidate",
    "LeastConn",
    "RoundRobin",
    "SourceHash",
    "count_usable",
    "eligible",
    "make_balancer",
    "select",
]

KINDS = ("leastconn", "roundrobin", "source")


class Candidate(Protocol):
    """What a balancer needs to know about a server (the I/O side's server object satisfies it)."""

    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> int: ...  # any unit shared by all candidates (tcplb's servers: 1/16 units)

    @property
    def active_conns(self) -> int: ...  # current + queued connections

    @property
    def backup(self) -> bool: ...

    @property
    def usable(self) -> bool: ...  # up and not in maintenance (weight is checked separately)


C = TypeVar("C", bound=Candidate)


def eligible(c: Candidate, exclude: Collection[str] = ()) -> bool:
    """Whether ``c`` may receive a new connection: usable, weight > 0 (not draining), not excluded."""
    return c.usable and c.weight > 0 and c.name not in exclude


def count_usable(candidates: Iterable[Candidate]) -> tuple[int, int]:
    """(active, backup) servers that can take new connections, for log lines and stats."""
    act = bck = 0
    for c in candidates:
        if c.usable and c.weight > 0:
            if c.backup:
                bck += 1
            else:
                act += 1
    return act, bck


class Balancer(ABC):
    """One instance per listener; it keeps the small state its algorithm needs, keyed by server name.

    Each candidate's ``weight`` is read once per pick (``ServerState.weight`` is computed: slow start) and
    handed to the algorithm beside the pool; a pool of one skips the comparison but keeps the state update
    the full algorithm would make, so every later pick is the same."""

    kind: str = ""

    @abstractmethod
    def _choose(self, pool: Sequence[C], weights: Sequence[int], client: tuple[str, int] | None) -> C:
        """Choose from a non-empty pool of eligible candidates (``weights[i]`` is ``pool[i].weight``)."""

    @abstractmethod
    def _choose_one(self, c: C, weight: int, client: tuple[str, int] | None) -> C:
        """``_choose([c], [weight], client)``, without the loop (the one-server case)."""

    def pick(
        self,
        candidates: Sequence[C],
        client: tuple[str, int] | None = None,
        exclude: Collection[str] = frozenset(),
    ) -> C | None:
        """The server for a new connection among ``candidates`` (backup flag not considered), or None."""
        pool: list[C] = []
        weights: list[int] = []
        for c in candidates:
            if c.usable:
                w = c.weight
                if w > 0 and c.name not in exclude:
                    pool.append(c)
                    weights.append(w)
        if not pool:
            return None
        if len(pool) == 1:
            return self._choose_one(pool[0], weights[0], client)
        return self._choose(pool, weights, client)

    def forget(self, name: str) -> None:  # noqa: B027 - optional hook
        """Drop any state kept for server ``name`` (removed by a reload)."""


class RoundRobin(Balancer):
    kind = "roundrobin"

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def _choose(self, pool: Sequence[C], weights: Sequence[int], client: tuple[str, int] | None) -> C:
        cur = self._current
        total = 0
        best = pool[0]
        best_score = -(2**62)
        for c, w in zip(pool, weights, strict=True):
            name = c.name
            score = cur.get(name, 0) + w
            cur[name] = score
            total += w
            if score > best_score:
                best, best_score = c, score
        cur[best.name] = best_score - total
        return best

    def _choose_one(self, c: C, weight: int, client: tuple[str, int] | None) -> C:
        # score = current + weight, then minus the total (= weight): the score is unchanged
        cur = self._current
        name = c.name
        if name not in cur:
            cur[name] = 0
        return c

    def forget(self, name: str) -> None:
        self._current.pop(name, None)


class LeastConn(Balancer):
    kind = "leastconn"

    def __init__(self) -> None:
        self._seq = 0
        self._last: dict[str, int] = {}

    def _choose(self, pool: Sequence[C], weights: Sequence[int], client: tuple[str, int] | None) -> C:
        best = pool[0]
        best_w = weights[0]
        best_a = best.active_conns
        last = self._last
        for i in range(1, len(pool)):
            c = pool[i]
            w = weights[i]
            a = c.active_conns
            # a/w < best_a/best_w, without floats
            lhs = a * best_w
            rhs = best_a * w
            if lhs < rhs or (lhs == rhs and last.get(c.name, -1) < last.get(best.name, -1)):
                best, best_w, best_a = c, w, a
        self._seq += 1
        last[best.name] = self._seq
        return best

    def _choose_one(self, c: C, weight: int, client: tuple[str, int] | None) -> C:
        self._seq += 1
        self._last[c.name] = self._seq
        return c

    def forget(self, name: str) -> None:
        self._last.pop(name, None)


_TWO64 = float(2**64)


def _client_key(ip: str) -> bytes:
    try:
        return ipaddress.ip_address(ip).packed
    except ValueError:
        return ip.encode("utf-8", "surrogateescape")


def hrw_score(client_key: bytes, name: str, weight: int) -> float:
    """Weighted rendezvous score of one server for one client (higher wins)."""
    h = hashlib.blake2b(client_key + b"\0" + name.encode(), digest_size=8).digest()
    u = (int.from_bytes(h, "big") + 0.5) / _TWO64  # in (0, 1)
    return -weight / math.log(u)


class SourceHash(Balancer):
    kind = "source"

    def __init__(self) -> None:
        self._fallback = RoundRobin()

    def _choose(self, pool: Sequence[C], weights: Sequence[int], client: tuple[str, int] | None) -> C:
        if client is None:
            return self._fallback._choose(pool, weights, None)
        key = _client_key(client[0])
        best = max(range(len(pool)), key=lambda i: (hrw_score(key, pool[i].name, weights[i]), pool[i].name))
        return pool[best]

    def _choose_one(self, c: C, weight: int, client: tuple[str, int] | None) -> C:
        if client is None:
            return self._fallback._choose_one(c, weight, None)
        return c

    def forget(self, name: str) -> None:
        self._fallback.forget(name)


def make_balancer(kind: str) -> Balancer:
    """A fresh balancer for ``"leastconn"``, ``"roundrobin"`` or ``"source"``; ValueError otherwise."""
    if kind == "leastconn":
        return LeastConn()
    if kind == "roundrobin":
        return RoundRobin()
    if kind == "source":
        return SourceHash()
    raise ValueError(f"unknown balance algorithm {kind!r} (expected one of {', '.join(KINDS)})")


def select(
    balancer: Balancer,
    candidates: Sequence[C],
    client: tuple[str, int] | None = None,
    exclude: Collection[str] = frozenset(),
    allbackups: bool = False,
) -> C | None:
    """The server for a new connection, HAProxy's backup rule included; None when nothing is eligible.

    ``candidates`` in configuration order (it decides which backup is "first"). Active servers first;
    only when none is eligible, the first eligible backup (or, with ``allbackups``, the algorithm over all
    eligible backups). ``exclude`` is strict: a retry that must not go back to a failed server gets None
    rather than that server; when it may go back (no redispatch), call again without ``exclude``. Servers
    whose ``maxconn`` is reached should be put in ``exclude`` (when this then returns None, the connection
    waits in a queue).
    """
    # the common case first: every candidate is an active server (no backup)
    for c in candidates:
        if c.backup:
            break
    else:
        return balancer.pick(candidates, client, exclude)
    chosen = balancer.pick([c for c in candidates if not c.backup], client, exclude)
    if chosen is not None:
        return chosen
    backups = [c for c in candidates if c.backup and eligible(c, exclude)]
    if not backups:
        return None
    if allbackups:
        return balancer.pick(backups, client, exclude)
    return backups[0]
