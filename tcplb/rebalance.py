"""Graceful rebalancing of long-lived connections: which to close now, and when to look again (pure).

After a rolling restart every long-lived AMQP connection sits on the nodes that stayed up; leastconn only
places *new* connections. The planner picks connections to close on the most loaded servers so that, once
their clients have reconnected (through the balancer, which sends them to the least loaded servers), the
spread is within a tolerance. The close itself is someone else's job (graceful: the broker's own
``connection.close`` 320 through the management API, never a TCP reset); this module only decides.

Rules (``Rebalancer.plan``):

* Only *eligible* servers (usable, weight > 0) take part. Connections on other servers (down, draining) are
  neither counted nor closed here.
* Fair share of server *i*: ``T * w_i / W`` (``T`` the connections on eligible servers, plus those this
  planner closed less than ``settle`` seconds ago, which are assumed to be on their way back). Its limit is
  ``ceil(share * (1 + tolerance))``; the **surplus** is what exceeds the limit. A plan never closes more
  than a server's surplus, so a server is never pushed below its limit, let alone below its fair share.
  Counting the connections still on their way back matters: without it, a second look before the clients
  reconnect would see a smaller ``T``, smaller shares, and close again what was already moved.
* The tolerance bounds the bottom too. Its floor is ``floor(share * (1 - tolerance))``; the **deficit** is
  what the servers under their floors lack, less the clients already on their way back (each reconnects to
  the least loaded server). A deficit is filled by closing connections on servers at least one connection
  above their fair share (the most above first), so a donor never ends below its share. Without this, three
  nodes after a rolling restart end at 22/22/16 of 60 with a tolerance of 0.1 (the last node 20 % short).
  Each such move lowers ``sum((live_i - share_i)^2 / w_i)``, so repeated plans end.
* **Rate bound**: a token bucket of ``rate`` closes per second holding at most ``burst`` (default
  ``max(1, ceil(rate))``): over any interval of ``d`` seconds at most ``burst + rate * d`` closes.
* Which connections: the **oldest first** (ties by id), among those at least ``min_age`` old. A connection
  that was just opened, often one that was just moved, is the last to be moved (again); the oldest ones are
  the ones that piled up during the restart. Each connection is ordered closed at most once (the planner
  remembers the ids it ordered until they disappear from its input). Servers with the largest surplus go
  first, one close at a time, so a rate-limited plan spreads its closes over the overloaded servers.
* **When to look again** (``Plan.next_at``): when the next token arrives if surplus remains, else when the
  earliest closed connection is assumed back (``settle`` after its close), else ``None`` (balanced: look
  again on an event, such as a server coming back, or on demand).
* **Convergence**: a closed connection reconnects to the least loaded server *j*, which has fewer than its
  share (someone does, since another is above its share), so it ends at most at ``ceil(share_j)``, within
  its limit. Repeated application therefore reaches "every server within its limit"; the test drives that
  with a simulated leastconn.

:func:`lifetime` is the simpler alternative, Envoy's ``max_downstream_connection_duration`` with
``max_downstream_connection_duration_jitter_percentage``: each connection lives ``max_lifetime`` plus a
jitter up to ``jitter * max_lifetime``; here the jitter is derived from a seed and the connection's id
(BLAKE2b), so it is reproducible and testable, and spreads the reconnects of connections opened together.

Wired by :mod:`tcplb.rebalancer` (``[listen.NAME.rebalance]``, ``tcplb ctl rebalance``, the closes).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = ["Close", "Conn", "Plan", "Rebalancer", "ServerLoad", "expired", "lifetime"]


@dataclass(frozen=True, slots=True)
class Conn:
    id: Hashable
    opened_at: float  # when the connection was established (the caller's clock, as ``now``)


@dataclass(frozen=True, slots=True)
class ServerLoad:
    name: str
    weight: int
    conns: Sequence[Conn]
    eligible: bool = True  # usable (up, not in maintenance); weight 0 also makes it ineligible


@dataclass(frozen=True, slots=True)
class Close:
    server: str
    conn: Conn
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    close: tuple[Close, ...]
    next_at: float | None
    limits: Mapping[str, int]  # per eligible server: ceil(share * (1 + tolerance))
    surplus: int  # connections above the limits or short of the floors after this plan (left to move)
    away: int  # connections closed less than ``settle`` ago, counted as on their way back
    floors: Mapping[str, int] = field(default_factory=dict)  # per eligible server: floor(share * (1 - tol))

    @property
    def balanced(self) -> bool:
        return self.surplus == 0


class Rebalancer:
    """The planner with its state (the token bucket, the connections it ordered closed). Pure: time comes
    in as ``now``; nothing is closed here."""

    def __init__(
        self,
        tolerance: float,
        rate: float,
        *,
        burst: int | None = None,
        settle: float = 10.0,
        min_age: float = 0.0,
    ) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0 (a fraction, 0.1 = 10 %), got {tolerance}")
        if not rate > 0:
            raise ValueError(f"rate must be > 0 closes per second, got {rate}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if not settle >= 0 or not min_age >= 0:
            raise ValueError("settle and min_age must be >= 0 seconds")
        self.tolerance = Fraction(repr(float(tolerance)))  # 0.1 means 1/10 exactly, not the binary float
        self.rate = rate
        self.burst = burst if burst is not None else max(1, math.ceil(rate))
        self.settle = settle
        self.min_age = min_age
        self._tokens = float(self.burst)
        self._tokens_at: float | None = None
        self._ordered: set[Hashable] = set()  # ids ordered closed, until they disappear from the input
        self._away: list[float] = []  # times of closes, while the client is assumed to be reconnecting
        # the total (live + on their way back) the last plan saw: once the clients reconnect, the live count
        # rises again and the ones still "away" are fewer than len(_away) (not counted twice)
        self._total: int | None = None

    def _refill(self, now: float) -> None:
        if self._tokens_at is not None and now > self._tokens_at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._tokens_at) * self.rate)
        if self._tokens_at is None or now > self._tokens_at:
            self._tokens_at = now

    def limits(self, servers: Sequence[ServerLoad], extra: int = 0) -> dict[str, int]:
        """ceil(share * (1 + tolerance)) per eligible server, for ``extra`` connections on their way back."""
        pool = [s for s in servers if s.eligible and s.weight > 0]
        wsum = sum(s.weight for s in pool)
        live = sum(sum(1 for c in s.conns if c.id not in self._ordered) for s in pool) + extra
        return {s.name: math.ceil(Fraction(live * s.weight, wsum) * (1 + self.tolerance)) for s in pool}

    def floors(self, servers: Sequence[ServerLoad], extra: int = 0) -> dict[str, int]:
        """floor(share * (1 - tolerance)) per eligible server (0 once the tolerance is 1 or more)."""
        pool = [s for s in servers if s.eligible and s.weight > 0]
        wsum = sum(s.weight for s in pool)
        live = sum(sum(1 for c in s.conns if c.id not in self._ordered) for s in pool) + extra
        low = max(Fraction(0), 1 - self.tolerance)
        return {s.name: math.floor(Fraction(live * s.weight, wsum) * low) for s in pool}

    def plan(self, servers: Sequence[ServerLoad], now: float) -> Plan:
        self._refill(now)
        present = {c.id for s in servers for c in s.conns}
        self._ordered &= present
        self._away = [t for t in self._away if now < t + self.settle]
        away_n = self._away_count(servers)
        pool = [s for s in servers if s.eligible and s.weight > 0]
        if len(pool) < 2:
            # nowhere to move anything to
            limits = self.limits(servers, extra=away_n) if pool else {}
            floors = self.floors(servers, extra=away_n) if pool else {}
            return Plan((), self._next_away(), limits, 0, away_n, floors)
        limits = self.limits(servers, extra=away_n)
        floors = self.floors(servers, extra=away_n)
        wsum = sum(s.weight for s in pool)
        total = self._live(servers) + away_n
        candidates: dict[str, list[Conn]] = {}
        surplus: dict[str, int] = {}
        # how many may go to fill a deficit, each server staying at or above its share
        above: dict[str, int] = {}
        deficit = 0
        for s in pool:
            live = [c for c in s.conns if c.id not in self._ordered]
            surplus[s.name] = max(0, len(live) - limits[s.name])
            above[s.name] = max(0, math.floor(len(live) - Fraction(total * s.weight, wsum)))
            deficit += max(0, floors[s.name] - len(live))
            old = [c for c in live if now - c.opened_at >= self.min_age]
            old.sort(key=lambda c: (c.opened_at, repr(c.id)))
            candidates[s.name] = old
        short = [s.name for s in pool if self._count(s) < floors[s.name]]  # named in the closes' reasons
        deficit = max(0, deficit - away_n)  # the clients on their way back fill it first
        closes: list[Close] = []
        allowed = math.floor(self._tokens + 1e-9)
        while len(closes) < allowed and (name := _most(surplus, candidates)) is not None:
            conn = candidates[name].pop(0)
            surplus[name] -= 1
            above[name] = max(0, above[name] - 1)
            deficit = max(0, deficit - 1)  # this client reconnects to the least loaded server
            closes.append(
                Close(name, conn, f"rebalance: {name} above its limit of {limits[name]} connections")
            )
        # what the surplus still to be closed will fill anyway (its clients reconnect to the least loaded)
        deficit = max(0, deficit - sum(surplus.values()))
        while len(closes) < allowed and deficit > 0 and (name := _most(above, candidates)) is not None:
            conn = candidates[name].pop(0)
            above[name] -= 1
            deficit -= 1
            closes.append(
                Close(name, conn, f"rebalance: {name} above its share while {_under(short, floors)}")
            )
        self._tokens -= len(closes)
        for c in closes:
            self._ordered.add(c.conn.id)
            self._away.append(now)
        donors = deficit > 0 and any(above[n] > 0 for n in above)  # else the deficit cannot be filled
        left = sum(surplus.values()) + (deficit if donors else 0)  # the deficit net of the surplus
        movable = any(surplus[n] > 0 and candidates[n] for n in surplus) or (
            donors and any(above[n] > 0 and candidates[n] for n in above)
        )
        due: list[float] = []
        if movable:  # more to close as soon as the bucket has a token
            due.append(now + max(0.0, 1.0 - self._tokens) / self.rate)
        elif left:  # what is left is younger than min_age: when the first of it is old enough
            due.extend(
                c.opened_at + self.min_age
                for s in pool
                if surplus[s.name] > 0 or (donors and above[s.name] > 0)
                for c in s.conns
                if c.id not in self._ordered and c.opened_at + self.min_age > now
            )
        away = self._next_away()
        if away is not None:  # the closed connections should be back: look at the real spread
            due.append(away)
        self._total = self._live(servers) + away_n + len(closes) if self._away else None
        return Plan(tuple(closes), min(due, default=None), limits, left, away_n + len(closes), floors)

    def forget(self, conn_id: Hashable) -> None:
        """The close of ``conn_id`` failed (the connection stays): count it again, and it may be chosen
        again."""
        self._ordered.discard(conn_id)

    def _count(self, s: ServerLoad) -> int:
        return sum(1 for c in s.conns if c.id not in self._ordered)

    def _live(self, servers: Sequence[ServerLoad]) -> int:
        pool = [s for s in servers if s.eligible and s.weight > 0]
        return sum(sum(1 for c in s.conns if c.id not in self._ordered) for s in pool)

    def _away_count(self, servers: Sequence[ServerLoad]) -> int:
        """How many closed clients are still on their way back: at most those closed less than ``settle``
        ago, and no more than the live count is short of the last plan's total (a client that reconnected
        is live again, under a new id: counting it as away too would raise every limit)."""
        n = len(self._away)
        if n and self._total is not None:
            n = max(0, min(n, self._total - self._live(servers)))
        return n

    def _next_away(self) -> float | None:
        return min(self._away) + self.settle if self._away else None


def _most(excess: Mapping[str, int], candidates: Mapping[str, list[Conn]]) -> str | None:
    """The server with the most ``excess`` (ties: the greater name) that still has a candidate to close."""
    return max(
        (n for n in excess if excess[n] > 0 and candidates[n]), key=lambda n: (excess[n], n), default=None
    )


def _under(short: Sequence[str], floors: Mapping[str, int]) -> str:
    if not short:
        return "a server is below its floor"
    return ", ".join(f"{n} is below its floor of {floors[n]}" for n in short[:3])


def _unit(seed: bytes | str | int, conn_id: Hashable) -> float:
    """A uniform number in [0, 1) from (seed, id): stable across processes (BLAKE2b, not hash())."""
    h = hashlib.blake2b(f"{seed!r}\0{conn_id!r}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def lifetime(max_lifetime: float, jitter: float, seed: bytes | str | int, conn_id: Hashable) -> float:
    """Envoy's model: ``max_lifetime`` plus a jitter in ``[0, jitter * max_lifetime)`` (``jitter`` a fraction,
    0.1 = Envoy's 10 %), deterministic in (seed, conn_id)."""
    if not max_lifetime > 0:
        raise ValueError(f"max_lifetime must be > 0 seconds, got {max_lifetime}")
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0 (a fraction of max_lifetime), got {jitter}")
    return max_lifetime * (1.0 + jitter * _unit(seed, conn_id))


def expired(
    conns: Iterable[Conn], now: float, max_lifetime: float, jitter: float, seed: bytes | str | int
) -> tuple[list[Conn], float | None]:
    """The connections whose lifetime is over at ``now`` (oldest first), and the next expiry after ``now``."""
    due: list[tuple[float, Conn]] = []
    nxt: float | None = None
    for c in conns:
        end = c.opened_at + lifetime(max_lifetime, jitter, seed, c.id)
        if end <= now:
            due.append((end, c))
        elif nxt is None or end < nxt:
            nxt = end
    due.sort(key=lambda e: (e[0], repr(e[1].id)))
    return [c for _, c in due], nxt
