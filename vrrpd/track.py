"""Track scripts, the pure part: a rise/fall state per script and the effective priority.

keepalived semantics (``vrrp_script``/``track_script``, keepalived.conf(5)):

* A script is OK or FAILED. From OK it takes ``fall`` consecutive failures to become FAILED; from FAILED it
  takes ``rise`` consecutive successes to become OK. A script starts OK, or FAILED with ``init_fail``. A
  timeout is a failure (the daemon reports it as ``observe(False)``).
* ``weight`` 0: a FAILED script puts the instance in FAULT (:func:`effective_priority` returns ``None``).
* ``weight`` +W: W is added to the priority while the script is OK.
* ``weight`` -W: W is subtracted while the script is FAILED.
* The result is clamped to 1..254; an owner (configured priority 255) is never changed by weights
  (keepalived ``vrrp_set_effective_priority``). A weight-0 failure still means FAULT for an owner.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ScriptState", "effective_priority"]

OWNER_PRIORITY = 255
MIN_PRIORITY = 1
MAX_TRACKED_PRIORITY = 254


class ScriptState:
    """Rise/fall debouncing of one track script's results."""

    __slots__ = ("_count", "fall", "ok", "rise")

    def __init__(self, rise: int = 1, fall: int = 1, init_fail: bool = False) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.rise = rise
        self.fall = fall
        self.ok = not init_fail
        self._count = 0  # consecutive results contradicting the current state

    def observe(self, ok: bool) -> bool | None:
        """Feed one result; returns the new state (True = OK) when it changes, else ``None``."""
        if ok == self.ok:
            self._count = 0
            return None
        self._count += 1
        if self._count >= (self.rise if ok else self.fall):
            self.ok = ok
            self._count = 0
            return ok
        return None

    @property
    def pending(self) -> int:
        """How many consecutive contradicting results have been seen so far."""
        return self._count

    def __repr__(self) -> str:
        return f"ScriptState(rise={self.rise}, fall={self.fall}, ok={self.ok}, pending={self._count})"


def effective_priority(configured: int, scripts: Iterable[tuple[int, bool]]) -> int | None:
    """Effective priority from the configured one and ``(weight, ok)`` per tracked script.

    ``None`` means FAULT: a weight-0 script is failing.
    """
    if not 1 <= configured <= OWNER_PRIORITY:
        raise ValueError(f"configured priority {configured} not in 1..255")
    delta = 0
    for weight, ok in scripts:
        if weight == 0:
            if not ok:
                return None
        elif (weight > 0) == ok:  # +W counts while OK, -W while FAILED
            delta += weight
    if configured == OWNER_PRIORITY:
        return OWNER_PRIORITY
    return max(MIN_PRIORITY, min(MAX_TRACKED_PRIORITY, configured + delta))
