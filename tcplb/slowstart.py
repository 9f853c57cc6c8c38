"""HAProxy's ``slowstart`` ramp, pure: the weight and connection limit of a server that has just come back.

A server that comes back UP after being seen as failed (or leaves maintenance) does not get its full weight
at once: over ``slowstart`` seconds its weight "grows linearly from 1 to 100%" and its connection limit
"from 1 to 100% of the usual dynamic limit" (HAProxy configuration.txt, ``slowstart``). Without it leastconn
sends the whole reconnect herd to the empty server at once. It never applies at start-up, only after a
failure; whoever drives this decides when ``since`` (the time the server went UP) is set.

The formulas are HAProxy's (src/server.c ``server_recalc_eweight``, src/queue.c ``srv_dynamic_maxconn``,
include/haproxy/server.h ``server_throttle_rate``, read in haproxy/haproxy 3.5-dev):

* weights are kept in 1/16 units (``BE_WEIGHT_SCALE`` = 16 for roundrobin, leastconn, first and consistent
  hashing, which set ``lbprm.wdiv``): full weight is ``uweight * 16``;
* while starting, ``w = (16 * elapsed + slowstart) // slowstart`` and the effective weight is
  ``uweight * w``: ``uweight`` (1/16 of the full weight) at the first instant, growing in 16 linear steps,
  ``uweight * 16`` once ``elapsed >= slowstart``. So it is **never 0 while the server is UP** with a non-zero
  weight, even at weight 1 (this is why the scale exists: in whole units a weight-1 server could not ramp);
* the connection limit is ``max(1, maxconn * ratio // 100)`` with ``ratio = 100 * elapsed // slowstart``;
* the "throttle" shown in stats is ``ceil(100 * eweight / (16 * uweight))`` percent;
* HAProxy re-evaluates every ``max(1 s, slowstart / 20)`` ("resulting in small 5% steps", ``server_warmup``);
  :func:`ramp` returns that as ``next_at``, the driver's next deadline.

Differences, on purpose: HAProxy counts ``elapsed`` and ``slowstart`` in whole seconds (``slowstart`` rounded
up from ms); here both are float seconds from the caller's clock, so sub-second ramps are exact. A weight of 0
(drain) stays 0.

Using it: a balancer that compares weights only as ratios (tcplb's leastconn and roundrobin) must then see
*every* server's weight in the same 1/16 units: ``full_weight(w)`` for servers not ramping,
``ramp(...).eweight`` for the one that is. Not wired into tcplb.balance or the health machine yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["WEIGHT_SCALE", "Ramp", "full_weight", "maxconn_limit", "ramp", "throttle", "weight_factor"]

WEIGHT_SCALE = 16  # HAProxy's BE_WEIGHT_SCALE


def _check(uweight: int, slowstart: float) -> None:
    if uweight < 0:
        raise ValueError(f"weight must be >= 0, got {uweight}")
    if not slowstart > 0:
        raise ValueError(f"slowstart must be > 0 seconds, got {slowstart}")


def _over(since: float, now: float, slowstart: float) -> bool:
    # absolute times, so that "not over" implies now < since + slowstart exactly (next_at is in the future)
    return now < since or now >= since + slowstart


def full_weight(uweight: int) -> int:
    """A server's weight in 1/16 units when it is not ramping."""
    return uweight * WEIGHT_SCALE


def weight_factor(since: float, now: float, slowstart: float) -> int:
    """HAProxy's ``w`` in 1..16: ``(16 * elapsed + slowstart) // slowstart``, 16 once the ramp is over. A
    clock that went backwards (``now < since``) counts as the ramp being over, as in HAProxy."""
    if _over(since, now, slowstart):
        return WEIGHT_SCALE
    return min(WEIGHT_SCALE, math.floor((WEIGHT_SCALE * (now - since) + slowstart) / slowstart))


def throttle(eweight: int, uweight: int) -> int:
    """The throttle percentage shown in stats (100 when the weight is 0: draining is not a slow start)."""
    if uweight == 0:
        return 100
    return (100 * eweight + WEIGHT_SCALE * uweight - 1) // (WEIGHT_SCALE * uweight)


def maxconn_limit(maxconn: int, since: float, now: float, slowstart: float) -> int:
    """The connection limit during the ramp: ``max(1, maxconn * ratio // 100)``, ``ratio`` the elapsed
    percentage; ``maxconn`` itself once the ramp is over (or when ``maxconn`` is 0, meaning no limit)."""
    if maxconn <= 0 or _over(since, now, slowstart):
        return maxconn
    ratio = min(100, math.floor(100 * (now - since) / slowstart))
    return max(1, maxconn * ratio // 100)


@dataclass(frozen=True, slots=True)
class Ramp:
    eweight: int  # effective weight in 1/16 units (full weight = uweight * 16)
    throttle: int  # percent, for stats
    maxconn: int | None  # the ramped connection limit (None when no limit was given)
    done: bool  # the ramp is over: full weight, no further deadline
    next_at: float | None  # evaluate again: max(1 s, slowstart/20) from now, or the ramp's end if sooner


def ramp(uweight: int, since: float, now: float, slowstart: float, maxconn: int | None = None) -> Ramp:
    """Everything the slow start gives at ``now`` for a server UP since ``since`` with configured weight
    ``uweight``; ``slowstart`` in seconds (> 0; a server without slowstart is simply not ramped)."""
    _check(uweight, slowstart)
    done = _over(since, now, slowstart)
    w = weight_factor(since, now, slowstart)
    eweight = uweight * w
    limit = None if maxconn is None else maxconn_limit(maxconn, since, now, slowstart)
    next_at = None if done else min(since + slowstart, now + max(1.0, slowstart / 20))
    return Ramp(eweight, throttle(eweight, uweight), limit, done, next_at)
