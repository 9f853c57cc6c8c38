"""Server health for tcplb: the rise/fall state machine, pure (``now`` is passed in, nothing is scheduled).

Theory of operation
-------------------
A server is UP or DOWN. Active check results feed ``observe(ok, status, now)``:

* UP: ``fall`` *consecutive* failed checks mark it DOWN; any success resets the count.
* DOWN: ``rise`` *consecutive* successful checks mark it UP; any failure resets the count.

(HAProxy keeps one "health" counter that successes increment and failures decrement; with steady results
both agree. They differ only for alternating results, which we treat as the brief asks: consecutive.)

The state before the first check comes from ``init_state`` (HAProxy's ``init-state``):
``fully-up`` (default, as HAProxy) UP, ``fall`` failures to go DOWN; ``up`` UP, but the first failed check
marks it DOWN; ``down`` DOWN, the first successful check marks it UP; ``fully-down`` DOWN, ``rise`` successes
to go UP.

Passive health: a live client connection that cannot reach the server (refused, reset, timeout) is reported
with ``passive_failure(CheckStatus.HANA, now, info)``. After ``error_limit`` consecutive such failures
(default 1: at once) the ``on_error`` action applies:

* ``mark-down`` (default): DOWN at once, and ``rise`` successful active checks are needed to come back. A
  dead RabbitMQ node therefore stops receiving clients on the first refused connect instead of after
  ``fall * inter`` (2-3 s in HAProxy), while a flapping node cannot come back on luck. A connect that
  *timed out* (``timeout=True``) is not proof of a dead node: under a reconnect storm the survivors' SYN
  backlogs overflow and their connects time out too, and marking them down would cascade into "no server
  available". So under ``mark-down`` a timeout only re-arms the active check at ``fastinter`` (the check
  decides: a live node answers it, a black-holed one fails ``fall`` checks at ``fastinter``), and it does not
  count towards ``error_limit``. A refused or reset connect is unambiguous and still marks DOWN at once.
* ``sudden-death``: one more failed active check marks it DOWN.
* ``fail-check``: counts as one failed active check.
* ``fastinter``: only checks at ``fastinter`` until the next check result.
* ``ignore``: nothing.

Every action but ``ignore`` also switches the next interval to ``fastinter``, *at once*: ``hurry`` turns
true and the I/O side re-arms a pending check to ``fastinter`` from now (HAProxy's ``health_adjust``), rather
than sleeping out the rest of ``inter``. ``passive_success`` (a live
connect that worked) resets the consecutive error count. Passive health makes sense only with active
checks: without them nothing would bring a server back, so the I/O side should not report passive failures
for servers whose checks are disabled.

Check interval (``interval``): ``inter`` when fully UP, ``downinter`` when fully DOWN, ``fastinter`` while
moving between the two (UP with failures, DOWN with successes) or after a passive error.

Reason codes are HAProxy's check status codes (``CheckStatus``); ``HANA`` ("Health analyze") marks a passive
failure of live traffic, as HAProxy's ``observe layer4``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "DESCRIPTIONS",
    "CheckStatus",
    "Health",
    "Transition",
    "describe",
]

InitState: TypeAlias = Literal["fully-up", "up", "down", "fully-down"]
OnError: TypeAlias = Literal["mark-down", "sudden-death", "fail-check", "fastinter", "ignore"]


class CheckStatus(enum.StrEnum):
    """HAProxy's check status codes (management.txt §9.1 field 36) plus tcplb's passive/admin ones."""

    UNK = "UNK"  # unknown
    INI = "INI"  # initializing: no check result yet
    SOCKERR = "SOCKERR"  # socket error (local: no fd, no route...)
    L4OK = "L4OK"  # tcp check: connected
    L4TOUT = "L4TOUT"  # connect timed out
    L4CON = "L4CON"  # connect failed: refused, reset, unreachable
    L6OK = "L6OK"
    L6TOUT = "L6TOUT"
    L6RSP = "L6RSP"
    L7OK = "L7OK"  # amqp: Connection.Start received; http: expected status
    L7OKC = "L7OKC"
    L7TOUT = "L7TOUT"  # no (complete) answer in time
    L7RSP = "L7RSP"  # not an AMQP Connection.Start / not HTTP, or connection closed early
    L7STS = "L7STS"  # http: unexpected status
    HANA = "HANA"  # passive: a live connect to the server failed
    MAINT = "MAINT"  # admin: put in / taken out of maintenance (not a check result)


DESCRIPTIONS: dict[CheckStatus, str] = {
    CheckStatus.UNK: "Unknown",
    CheckStatus.INI: "Initializing",
    CheckStatus.SOCKERR: "Socket error",
    CheckStatus.L4OK: "Layer4 check passed",
    CheckStatus.L4TOUT: "Layer4 timeout",
    CheckStatus.L4CON: "Layer4 connection problem",
    CheckStatus.L6OK: "Layer6 check passed",
    CheckStatus.L6TOUT: "Layer6 timeout",
    CheckStatus.L6RSP: "Layer6 invalid response",
    CheckStatus.L7OK: "Layer7 check passed",
    CheckStatus.L7OKC: "Layer7 check conditionally passed",
    CheckStatus.L7TOUT: "Layer7 timeout",
    CheckStatus.L7RSP: "Layer7 invalid response",
    CheckStatus.L7STS: "Layer7 wrong status",
    CheckStatus.HANA: "Health analyze",
    CheckStatus.MAINT: "Maintenance",
}


def describe(status: CheckStatus | str) -> str:
    """HAProxy's text for a status code ("L4CON" -> "Layer4 connection problem")."""
    return DESCRIPTIONS[CheckStatus(status)]


@dataclass(frozen=True, slots=True)
class Transition:
    """The server changed state: ``up`` is the new state, ``status``/``info`` the reason."""

    up: bool
    status: CheckStatus
    info: str
    at: float
    passive: bool = False  # caused by live traffic (passive health) or an admin action, not a check

    @property
    def reason(self) -> str:
        return describe(self.status)


class Health:
    """Rise/fall machine of one server. ``now`` is any monotonic clock (the loop's)."""

    def __init__(
        self,
        rise: int = 2,
        fall: int = 3,
        init_state: InitState = "fully-up",
        on_error: OnError = "mark-down",
        error_limit: int = 1,
    ) -> None:
        if rise < 1 or fall < 1 or error_limit < 1:
            raise ValueError("rise, fall and error_limit must be >= 1")
        if init_state not in ("fully-up", "up", "down", "fully-down"):
            raise ValueError(f"unknown init_state {init_state!r}")
        if on_error not in ("mark-down", "sudden-death", "fail-check", "fastinter", "ignore"):
            raise ValueError(f"unknown on_error {on_error!r}")
        self.rise = rise
        self.fall = fall
        self.on_error: OnError = on_error
        self.error_limit = error_limit
        self.up = init_state in ("fully-up", "up")
        self.failures = fall - 1 if init_state == "up" else 0  # consecutive failed checks while UP
        self.successes = rise - 1 if init_state == "down" else 0  # consecutive good checks while DOWN
        self.errors = 0  # consecutive passive errors
        self.hurry = False  # use fastinter until the next check result
        self.status = CheckStatus.INI
        self.info = ""
        self.checked = False  # at least one active check result seen
        self.last_change: float | None = None

    # ---------------------------------------------------------------------------------- active checks

    def observe(self, ok: bool, status: CheckStatus | str, now: float, info: str = "") -> Transition | None:
        """One active check result. Returns the Transition when the state changes."""
        st = CheckStatus(status)
        self.status, self.info, self.checked, self.hurry = st, info, True, False
        if ok:
            self.failures = 0
            if self.up:
                return None
            self.successes += 1
            if self.successes >= self.rise:
                return self._go(True, st, info, now, passive=False)
            return None
        self.successes = 0
        if not self.up:
            return None
        self.failures += 1
        if self.failures >= self.fall:
            return self._go(False, st, info, now, passive=False)
        return None

    # -------------------------------------------------------------------------------- passive health

    def passive_failure(
        self, status: CheckStatus | str, now: float, info: str = "", *, timeout: bool = False
    ) -> Transition | None:
        """A live connection to the server failed (refused, reset, or ``timeout``): apply ``on_error``.

        After any action but ``ignore`` ``hurry`` is true: re-arm the next check at ``fastinter`` now.
        Under ``mark-down`` a timeout only does that (see the module's docstring)."""
        if self.on_error == "ignore":
            return None
        if timeout and self.on_error == "mark-down":
            self.hurry = True
            return None
        self.errors += 1
        if self.errors < self.error_limit:
            return None
        self.errors = 0
        self.hurry = True
        st = CheckStatus(status)
        if self.on_error == "mark-down":
            return self.force_down(st, now, info)
        if self.on_error == "fail-check":
            t = self.observe(False, st, now, info)
            self.hurry = True
            return t
        if self.on_error == "sudden-death" and self.up:
            self.failures = max(self.failures, self.fall - 1)  # the next failed check marks it DOWN
        return None

    def passive_success(self) -> None:
        """A live connection reached the server: the consecutive passive error count restarts."""
        self.errors = 0

    # ------------------------------------------------------------------------------- forced changes

    def force_down(self, status: CheckStatus | str, now: float, info: str = "") -> Transition | None:
        """DOWN at once; ``rise`` good checks are needed to come back. None if already DOWN."""
        st = CheckStatus(status)
        self.successes = 0
        self.failures = 0
        if not self.up:
            return None
        self.status, self.info = st, info
        return self._go(False, st, info, now, passive=True)

    def force_up(self, status: CheckStatus | str, now: float, info: str = "") -> Transition | None:
        """UP at once (admin ``set server health up``). None if already UP."""
        st = CheckStatus(status)
        self.successes = 0
        self.failures = 0
        if self.up:
            return None
        return self._go(True, st, info, now, passive=True)

    def _go(self, up: bool, st: CheckStatus, info: str, now: float, *, passive: bool) -> Transition:
        self.up = up
        self.successes = 0
        self.failures = 0
        self.last_change = now
        return Transition(up=up, status=st, info=info, at=now, passive=passive)

    # --------------------------------------------------------------------------------------- queries

    @property
    def transitional(self) -> bool:
        """Between states: UP with failed checks, or DOWN with successful ones."""
        return self.failures > 0 if self.up else self.successes > 0

    def interval(self, inter: float, fastinter: float | None = None, downinter: float | None = None) -> float:
        """Delay until the next check: inter (fully UP), downinter (fully DOWN), fastinter (in between)."""
        fast = inter if fastinter is None else fastinter
        if self.hurry or self.transitional:
            return fast
        if not self.up:
            return inter if downinter is None else downinter
        return inter

    @property
    def health(self) -> int:
        """HAProxy's health counter (stats ``check_health``): 0..rise-1 DOWN, rise..rise+fall-1 UP."""
        if self.up:
            return self.rise + self.fall - 1 - self.failures
        return self.successes

    def status_text(self) -> str:
        """HAProxy's stats status for the check part: "UP", "UP 2/3" (going down), "DOWN", "DOWN 1/2"."""
        if self.up:
            return f"UP {self.fall - self.failures}/{self.fall}" if self.failures else "UP"
        return f"DOWN {self.successes}/{self.rise}" if self.successes else "DOWN"

    def snapshot(self) -> dict[str, object]:
        return {
            "up": self.up,
            "status": self.status_text(),
            "check_status": str(self.status),
            "check_info": self.info,
            "health": self.health,
            "rise": self.rise,
            "fall": self.fall,
            "last_change": self.last_change,
        }
