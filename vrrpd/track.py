"""Tracking, the pure part: track scripts' rise/fall state, track processes' quorum state, the start gate and
the effective priority. No I/O, no clock: time is passed in.

keepalived semantics (``vrrp_script``/``track_script``, ``vrrp_track_process``/``track_process``,
keepalived.conf(5) and keepalived 2.2.7's vrrp_track.c / vrrp_scheduler.c):

* A script is INIT (no result yet), OK or FAILED. From INIT its *first* result decides at once (keepalived:
  "one success is enough", and a first failure takes effect at once). From OK it takes ``fall`` consecutive
  failures to become FAILED; from FAILED ``rise`` consecutive successes to become OK. With ``init_fail`` a
  script starts FAILED instead of INIT. A timeout, a spawn failure and exit 126/127 (cannot execute, not
  found) are failures (keepalived counts 126/127 as success; here they are failures, logged).
* A tracked process is INIT until the first scan; then UP while the number of matching processes is within
  ``quorum..quorum_max``, DOWN otherwise. Leaving quorum waits ``terminate_delay``, regaining it waits
  ``fork_delay`` (``delay`` sets both); a change back within the delay cancels it. The first scan decides at
  once.
* ``weight`` 0: a FAILED/DOWN tracker puts the instance in FAULT (:func:`effective_priority` returns
  ``None``). An instance does not start (stays INIT: no adverts, no notify) until every weight-0 tracker has
  its first result (:class:`StartGate`); a weighted tracker never holds the start.
* ``weight`` +W: W is added to the priority while the tracker is OK; ``weight`` -W: W is subtracted while it
  is FAILED. An INIT tracker adds nothing either way ("no weight counts before the script has ever run").
* The result is clamped to 1..254; an owner (configured priority 255) is never changed by weights
  (keepalived ``vrrp_set_effective_priority``). A weight-0 failure still means FAULT for an owner.
* On reload a script whose command (argv or user) changed goes back to INIT but keeps its last verdict for
  the instance until its first new result (keepalived's INIT_RELOAD): never straight to OK. Other changes
  (interval, rise, fall, weight, timeout) keep the state (:meth:`ScriptState.reloaded`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ProcessQuorum", "ScriptState", "StartGate", "effective_priority", "param_match"]

OWNER_PRIORITY = 255
MIN_PRIORITY = 1
MAX_TRACKED_PRIORITY = 254


class ScriptState:
    """Rise/fall debouncing of one track script's results, with keepalived's INIT state.

    ``ok`` is ``None`` (INIT: no result yet), ``True`` (OK) or ``False`` (FAILED). ``verdict`` is what the
    instance should act on: ``ok``, except after a reload that changed the command, where the previous
    verdict holds until the first new result.
    """

    __slots__ = ("_count", "_held", "fall", "ok", "rise")

    def __init__(self, rise: int = 1, fall: int = 1, init_fail: bool = False) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.rise = rise
        self.fall = fall
        self.ok: bool | None = False if init_fail else None
        self._held: bool | None = None  # verdict kept across a command change until the first result
        self._count = 0  # consecutive results contradicting the current state

    @property
    def initialised(self) -> bool:
        """True once the script has a verdict (a result, ``init_fail``, or one held across a reload)."""
        return self.verdict is not None

    @property
    def verdict(self) -> bool | None:
        return self.ok if self.ok is not None else self._held

    def observe(self, ok: bool) -> bool | None:
        """Feed one result; returns the new verdict (True = OK) when it changes, else ``None``."""
        before = self.verdict
        if self.ok is None:  # INIT: the first result decides at once
            self.ok = ok
            self._held = None
            self._count = 0
            return ok if ok != before else None
        if ok == self.ok:
            self._count = 0
            return None
        self._count += 1
        if self._count >= (self.rise if ok else self.fall):
            self.ok = ok
            self._count = 0
            return ok
        return None

    def reloaded(self, rise: int, fall: int, *, command_changed: bool) -> ScriptState:
        """The state for a new definition of this script (SIGHUP).

        Unchanged command: the state is kept, a pending count is clamped below the new threshold (so the
        reload alone never flips the state). Changed command: INIT again, the current verdict held until
        the first result of the new command."""
        new = ScriptState(rise, fall)
        if command_changed:
            new._held = self.verdict
            return new
        new.ok = self.ok
        new._held = self._held
        if self.ok is not None:
            limit = (fall if self.ok else rise) - 1
            new._count = min(self._count, limit)
        return new

    @property
    def pending(self) -> int:
        """How many consecutive contradicting results have been seen so far."""
        return self._count

    def __repr__(self) -> str:
        return f"ScriptState(rise={self.rise}, fall={self.fall}, ok={self.ok}, pending={self._count})"


# ------------------------------------------------------------------------------------------ processes


class ProcessQuorum:
    """UP/DOWN of one ``vrrp_track_process`` from the count of matching processes (keepalived semantics).

    ``update(count, now)`` after every change of the count (a process found, an exit); ``expire(now)`` when
    :meth:`next_deadline` passes. Both return the new state when it changes, else ``None``.
    """

    __slots__ = ("_deadline", "count", "fork_delay", "quorum", "quorum_max", "terminate_delay", "up")

    def __init__(
        self,
        quorum: int = 1,
        quorum_max: int | None = None,
        fork_delay: float = 0.0,
        terminate_delay: float = 0.0,
    ) -> None:
        if quorum < 0 or (quorum_max is not None and quorum_max < quorum):
            raise ValueError("need 0 <= quorum <= quorum_max")
        if fork_delay < 0 or terminate_delay < 0:
            raise ValueError("delays must be >= 0")
        self.quorum = quorum
        self.quorum_max = quorum_max
        self.fork_delay = fork_delay
        self.terminate_delay = terminate_delay
        self.up: bool | None = None  # None: INIT, before the first scan
        self.count = 0
        self._deadline: float | None = None

    def wanted(self, count: int) -> bool:
        return count >= self.quorum and (self.quorum_max is None or count <= self.quorum_max)

    def update(self, count: int, now: float) -> bool | None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self.count = count
        want = self.wanted(count)
        if self.up is None:  # the first scan decides at once
            self.up = want
            return want
        if want == self.up:
            self._deadline = None  # a bounce within the delay: nothing happened
            return None
        delay = self.fork_delay if want else self.terminate_delay
        if delay <= 0:
            self._deadline = None
            self.up = want
            return want
        if self._deadline is None:
            self._deadline = now + delay
        return self.expire(now)

    def expire(self, now: float) -> bool | None:
        if self._deadline is None or now < self._deadline:
            return None
        self._deadline = None
        want = self.wanted(self.count)
        if self.up is None or want == self.up:
            return None
        self.up = want
        return want

    def next_deadline(self) -> float | None:
        return self._deadline

    def __repr__(self) -> str:
        return f"ProcessQuorum(up={self.up}, count={self.count}, quorum={self.quorum}..{self.quorum_max})"


def param_match(argv: tuple[str, ...], want: tuple[str, ...], mode: str) -> bool:
    """keepalived's ``check_params`` for a process's parameters ``argv[1:]`` against ``want`` (the
    configured ones): ``exact`` (the same list), ``partial`` (the configured ones are a prefix) or
    ``initial`` (a prefix, the last configured one a prefix of the process's parameter)."""
    if mode == "exact":
        return argv == want
    if len(argv) < len(want):
        return False
    if mode == "partial" or not want:
        return argv[: len(want)] == want
    if mode == "initial":
        return argv[: len(want) - 1] == want[:-1] and argv[len(want) - 1].startswith(want[-1])
    raise ValueError(f"unknown param_match {mode!r}")


# ----------------------------------------------------------------------------------------- start gate


@dataclass(slots=True)
class StartGate:
    """Whether an instance may start: ``vrrp_startup_delay`` has passed and every weight-0 tracker has a
    verdict. ``trackers`` maps a tracker's name to its verdict (``None`` = INIT)."""

    not_before: float = 0.0

    def open(self, now: float, weight0_verdicts: Iterable[bool | None]) -> bool:
        return now >= self.not_before and all(v is not None for v in weight0_verdicts)

    def waiting_for(self, now: float, weight0: Iterable[tuple[str, bool | None]]) -> list[str]:
        """Why the gate is closed, for the log and the status (empty when open)."""
        why = [f"{name} has no result yet" for name, v in weight0 if v is None]
        if now < self.not_before:
            why.insert(0, f"vrrp_startup_delay ({self.not_before - now:.3g}s left)")
        return why


# ----------------------------------------------------------------------------------- effective priority


def effective_priority(configured: int, scripts: Iterable[tuple[int, bool | None]]) -> int | None:
    """Effective priority from the configured one and ``(weight, verdict)`` per tracker.

    ``None`` means FAULT: a weight-0 tracker is failing. A verdict of ``None`` (INIT) counts nothing.
    """
    if not 1 <= configured <= OWNER_PRIORITY:
        raise ValueError(f"configured priority {configured} not in 1..255")
    delta = 0
    for weight, ok in scripts:
        if ok is None:
            continue
        if weight == 0:
            if not ok:
                return None
        elif (weight > 0) == ok:  # +W counts while OK, -W while FAILED
            delta += weight
    if configured == OWNER_PRIORITY:
        return OWNER_PRIORITY
    return max(MIN_PRIORITY, min(MAX_TRACKED_PRIORITY, configured + delta))
