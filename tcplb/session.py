"""The life of one client connection, as a sans-IO machine: events in, commands out, time passed in.

Theory of operation
-------------------
A :class:`SessionMachine` decides everything that happens to one client connection between its activation
(it got a place under ``maxconn``) and its end: which server, queueing for a server slot, connecting,
retrying, redispatching, giving up, and what is logged and released. It does no I/O and reads no clock:
every event method takes ``now`` and returns a list of commands for the driver (:mod:`tcplb.frontend`) to
carry out in order. Deadlines live in the machine (:meth:`SessionMachine.next_deadline`); the driver keeps
one timer at that deadline and calls :meth:`SessionMachine.timer` when it fires. An early or stale wakeup
does nothing, so a timer that races another event (a slot granted and ``timeout_queue`` in the same loop
iteration) cannot undo it.

States (:class:`State`)::

    NEW --start--> QUEUED --granted--> CONNECTING --connected--> DATA --closed--> CLOSED
         \\          | \\--server_left--> (choose again)     | \\--failed--> TURNAROUND --timer--> (choose)
          \\         |                                      |               or choose at once (redispatch)
           \\--------+--- timer/client_gone/kill/NOSRV ----+--> CLOSING --closed--> CLOSED

Protocol-aware connect (``protocol = "amqp"`` listeners): a connect attempt stays CONNECTING after TCP is up
(:meth:`SessionMachine.tcp_up`) until the server greets (:meth:`SessionMachine.connected`); the driver sends
a copy of the client's first bytes (:meth:`SessionMachine.greeting_sent`, which arms ``timeout_greeting``)
and keeps the originals, so a server that stays silent, closes or answers garbage fails the attempt
(``GREETING_TIMEOUT`` / ``GREETING``: passive health as a timeout / a refusal) and the retry goes to
another server with the same bytes, whatever ``redispatch`` says.

The data phase itself is not event-driven here: bytes, half-closes and inactivity timeouts stay on the
relay's callbacks (:mod:`tcplb.relay`, :mod:`tcplb.splice`); the relay reports the end through
:meth:`SessionMachine.closed` (its termination state is the pipe's). The machine still handles an admin
kill in the data phase (:meth:`SessionMachine.kill` emits :class:`Abort` with no phase: the relay knows
whether it is ``D`` or ``L``).

What the machine needs from its listener is a :class:`Context`: the retry/redispatch/timeout settings and a
pure server choice (``pick``, ``any_eligible``: balancer plus server limits, no I/O).

Invariants (tests/tcplb/test_session.py checks them over random event sequences): a started session ends
exactly once (one :class:`Log` without ``asap``); every slot it takes (:class:`Take`) or is granted is
released exactly once (:class:`Release`); it never waits past a deadline: in every waiting state
``next_deadline()`` is set (when the timeouts are) and firing it moves the machine on.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .config import redispatch_on_retry

__all__ = [
    "FREE",
    "GREETING",
    "GREETING_TIMEOUT",
    "LOCAL",
    "QUEUE",
    "REFUSED",
    "TIMEOUT",
    "Abort",
    "CancelConnect",
    "Connect",
    "Context",
    "Dequeue",
    "Enqueue",
    "Log",
    "Passive",
    "Release",
    "Retry",
    "SessionMachine",
    "State",
    "Take",
    "failure_kind",
]


class State(enum.Enum):
    NEW = "new"  # accepted, not yet started (parked beyond maxconn, or about to start)
    QUEUED = "queued"  # waiting in a server's queue for a slot
    CONNECTING = "connecting"  # holds a slot, connect in flight
    RETRY = "retry"  # a connect failed: the retry is decided once the failure's commands ran (due now)
    TURNAROUND = "turnaround"  # waiting before retrying the same server
    DATA = "data"  # relaying (the relay owns this phase)
    CLOSING = "closing"  # aborted by the machine; waiting for the sockets to be gone
    CLOSED = "closed"

    # members are singletons compared by identity: hash them by identity too, in C (Enum.__hash__ is a
    # Python function hashing the name, run for every set/dict lookup: twice per connection)
    __hash__ = object.__hash__


# how a connect attempt failed
REFUSED = "refused"  # refused, reset, unreachable: the server's fault (L4CON)
TIMEOUT = "timeout"  # timeout_connect (or the kernel's) expired (L4TOUT)
LOCAL = "local"  # a local resource ran out (fds, memory, source ports): not the server's fault
# protocol-aware connect (``protocol = "amqp"``): TCP was up but the server did not greet
GREETING = "greeting"  # it closed, reset or sent something else than Connection.Start (L7RSP)
GREETING_TIMEOUT = "greeting-timeout"  # silence past timeout_greeting (a frozen broker) (L7TOUT)
_GREET_KINDS = frozenset({GREETING, GREETING_TIMEOUT})

# pick() answers
FREE = "free"  # the server has a free slot
QUEUE = "queue"  # the server is full: wait in its queue

_LOCAL_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL, errno.EADDRINUSE}
)


def failure_kind(err: int | None) -> str:
    """REFUSED or LOCAL for a connect's ``errno`` (local resource errors do not count against a server)."""
    return LOCAL if err in _LOCAL_ERRNOS else REFUSED


class Server(Protocol):
    """What the machine reads of a server."""

    @property
    def name(self) -> str: ...

    @property
    def usable(self) -> bool: ...

    @property
    def cmds(self) -> Cmds[Any]:
        """Its :class:`Cmds`, built once (``Cmds(self)``)."""
        ...


S = TypeVar("S", bound=Server)


class Context(Protocol[S]):
    """The listener's side: settings and a pure server choice."""

    retries: int
    redispatch: int  # config.redispatch_on_retry's encoding
    t_connect: float | None
    t_queue: float | None

    @property
    def logasap(self) -> bool: ...

    def pick(
        self, client: tuple[str, int], exclude: Collection[str], pinned: S | None
    ) -> tuple[S | None, str]:
        """(server, FREE) | (server, QUEUE) | (None, termination state such as "SC" or "sQ")."""
        ...

    def any_eligible(self, exclude: Collection[str]) -> bool:
        """Whether a server outside ``exclude`` could be chosen (must not change any balancer state)."""
        ...


# --------------------------------------------------------------------------------------------- commands
# (plain slotted classes: cheap to build; equality includes the class, so transcripts compare exactly)


@dataclass(slots=True)
class Take(Generic[S]):
    """Take a connection slot on ``srv`` (it has room)."""

    srv: S


@dataclass(slots=True)
class Release(Generic[S]):
    """Give the slot on ``srv`` back (the driver hands it to the first waiter of its queue)."""

    srv: S


@dataclass(slots=True)
class Enqueue(Generic[S]):
    """Wait in ``srv``'s queue; the driver calls :meth:`SessionMachine.granted` when a slot is ours."""

    srv: S


@dataclass(slots=True)
class Dequeue(Generic[S]):
    """Leave ``srv``'s queue (gave up)."""

    srv: S


@dataclass(slots=True)
class Connect(Generic[S]):
    """Start a connect attempt to ``srv``; report :meth:`~SessionMachine.connected` or
    :meth:`~SessionMachine.failed`."""

    srv: S


@dataclass(slots=True)
class CancelConnect:
    """Abandon the attempt in flight (its outcome must not be reported)."""


@dataclass(slots=True)
class Passive(Generic[S]):
    """A live connect result for ``srv``'s passive health (``ok``), with the check status and why."""

    srv: S
    ok: bool
    timeout: bool = False
    info: str = ""


@dataclass(slots=True)
class Retry(Generic[S]):
    """A retry after a failed connect to ``srv`` (``redispatch``: to another server)."""

    srv: S
    redispatch: bool


@dataclass(slots=True)
class Abort:
    """Tear the connection down with this termination cause and phase (None: the relay's current one)."""

    cause: str
    phase: str | None


@dataclass(slots=True)
class Log:
    """Write the session's log line (``asap``: HAProxy's logasap line at connect, not the final one)."""

    asap: bool


class Cmds(Generic[S]):
    """The commands about one server that carry nothing else, built once: every server keeps them as its
    ``cmds`` attribute (building a command runs a Python-level ``__init__``: four per connection otherwise;
    read as ``srv.cmds.take``, no call)."""

    __slots__ = ("connect", "ok", "release", "take")

    def __init__(self, srv: S) -> None:
        self.take = Take(srv)
        self.connect = Connect(srv)
        self.release = Release(srv)
        self.ok = Passive(srv, True)


_CANCEL = CancelConnect()
_LOG_END = Log(False)
_LOG_ASAP = Log(True)

Command = (
    Take[S]
    | Release[S]
    | Enqueue[S]
    | Dequeue[S]
    | Connect[S]
    | CancelConnect
    | Passive[S]
    | Retry[S]
    | Abort
    | Log
)

_SETUP = frozenset({State.QUEUED, State.CONNECTING, State.RETRY, State.TURNAROUND})
_PHASE = {State.NEW: "Q", State.QUEUED: "Q", State.CONNECTING: "C", State.RETRY: "C", State.TURNAROUND: "C"}

# the members as module globals: an Enum member read through its class is a descriptor call (~70 ns on
# Python 3.11), and the machine reads them a dozen times per connection
_NEW = State.NEW
_QUEUED = State.QUEUED
_CONNECTING = State.CONNECTING
_RETRY = State.RETRY
_TURNAROUND = State.TURNAROUND
_DATA = State.DATA
_CLOSING = State.CLOSING
_CLOSED = State.CLOSED


class SessionMachine(Generic[S]):
    """One client connection's control flow (see the module docstring)."""

    __slots__ = (
        "attempt",
        "client",
        "ctx",
        "deadline",
        "exclude",
        "greet_failed",
        "greeting",
        "pinned",
        "qdeadline",
        "redispatched",
        "retries",
        "slot",
        "srv",
        "state",
        "t0",
        "t_connect",
        "t_queue",
        "tc0",
        "tq0",
    )

    def __init__(self, ctx: Context[S], client: tuple[str, int] = ("", 0)) -> None:
        self.ctx = ctx
        self.client = client
        self.state = _NEW
        self.srv: S | None = None  # the server chosen last (kept for the log after a queue timeout)
        self.slot = False  # holds a connection slot on srv
        self.deadline: float | None = None
        self.qdeadline: float | None = None  # timeout_queue of the current acquisition (kept on a re-pick)
        self.t0 = 0.0  # start time
        self.tq0 = 0.0  # start of the current acquisition (Tw)
        self.tc0 = 0.0  # start of the current connect attempt (Tc)
        self.t_queue = -1.0  # Tw (s), -1: never got a slot
        self.t_connect = -1.0  # Tc (s) of the last attempt, -1: none ended
        self.attempt = 0
        self.retries = 0
        self.redispatched = False
        self.exclude: set[str] | None = None  # servers this session failed on (redispatch)
        self.pinned: S | None = None  # retry on this server (no redispatch)
        # protocol-aware connect: 0 no greeting phase, 1 TCP up and waiting for the client's first bytes,
        # 2 those bytes sent to the server, waiting for its greeting (Connection.Start)
        self.greeting = 0
        self.greet_failed = False  # the last failure was a greeting failure: the retry goes elsewhere

    # ----------------------------------------------------------------------------------------- queries
    def next_deadline(self) -> float | None:
        """When :meth:`timer` has something to do (None: nothing pending)."""
        return self.deadline

    @property
    def in_setup(self) -> bool:
        """Queueing, connecting or between retries (the client's departure is ours to handle)."""
        return self.state in _SETUP

    @property
    def phase(self) -> str:
        """HAProxy's phase letter for the current state (D for the data phase and after)."""
        return _PHASE.get(self.state, "D")

    # ------------------------------------------------------------------------------------------ events
    def start(self, now: float) -> list[Command[S]]:
        """The connection got a place under maxconn: choose a server."""
        if self.state is not _NEW:
            return []
        self.t0 = self.tq0 = now
        return self._pick(now, [])

    def granted(self, srv: S, now: float) -> list[Command[S]]:
        """``srv`` handed us a slot from its queue (the driver already counted it as ours)."""
        if self.state is not _QUEUED or srv is not self.srv:
            return [srv.cmds.release]  # not waiting for it (any more): give it straight back
        self.slot = True
        return self._connect(now, [])

    def server_left(self, now: float) -> list[Command[S]]:
        """Our queue's server left rotation (down, drain, weight 0, maintenance, removed) and dropped us
        from its queue: choose again, as HAProxy redistributes pending connections."""
        if self.state is not _QUEUED:
            return []
        self.pinned = None
        return self._pick(now, [])

    def timer(self, now: float) -> list[Command[S]]:
        """The driver's timer fired (at or after :meth:`next_deadline`; earlier or stale calls do nothing)."""
        dl = self.deadline
        if dl is None or now < dl:
            return []
        st = self.state
        self.deadline = None
        if st is _QUEUED:
            assert self.srv is not None
            self.t_queue = now - self.tq0
            return self._abort("s", "Q", [Dequeue(self.srv)])
        if st is _CONNECTING:
            if self.greeting == 1:  # the client never sent its first bytes: its timeout, not the server's
                self.t_connect = now - self.tc0
                return self._abort("c", "C", [_CANCEL])
            if self.greeting == 2:
                why = "no greeting (Connection.Start) in time"
                return self._failed(now, GREETING_TIMEOUT, why, [_CANCEL])
            return self._failed(now, TIMEOUT, "connect timeout", [_CANCEL])
        if st is _RETRY:
            return self._retry(now)
        if st is _TURNAROUND:
            self.tq0 = now
            return self._pick(now, [])
        return []

    def tcp_up(self, now: float, client_timeout: float | None) -> list[Command[S]]:
        """Protocol-aware connect: the TCP connection is up, but it counts as established only when the
        server greets (:meth:`connected`). Until the client's first bytes are there to send, the wait is
        the client's (``client_timeout``; expiry: cause ``c``, not the server's fault)."""
        if self.state is not _CONNECTING or self.greeting:
            return []
        self.greeting = 1
        self.deadline = now + client_timeout if client_timeout is not None else None
        return []

    def greeting_sent(self, now: float, greet_timeout: float | None) -> list[Command[S]]:
        """The client's first bytes went to the server: it must greet within ``greet_timeout``, else the
        attempt fails (GREETING_TIMEOUT) and the client is retried on another server with the same bytes."""
        if self.state is not _CONNECTING or self.greeting == 2:
            return []
        self.greeting = 2
        self.deadline = now + greet_timeout if greet_timeout is not None else None
        return []

    def connected(self, now: float) -> list[Command[S]]:
        """The connect attempt succeeded (the relay takes over)."""
        if self.state is not _CONNECTING:
            return []
        srv = self.srv
        assert srv is not None
        self.state = _DATA
        self.deadline = None
        self.greeting = 0
        self.t_connect = now - self.tc0
        out: list[Command[S]] = [srv.cmds.ok]
        if self.ctx.logasap:
            out.append(_LOG_ASAP)
        return out

    def failed(self, now: float, kind: str, info: str = "") -> list[Command[S]]:
        """The connect attempt failed (``kind``: REFUSED, TIMEOUT, LOCAL, GREETING or GREETING_TIMEOUT)."""
        if self.state is not _CONNECTING:
            return []
        return self._failed(now, kind, info, [])

    def client_gone(self, now: float) -> list[Command[S]]:
        """The client closed or reset before the data phase."""
        return self._stop("C")

    def kill(self, now: float) -> list[Command[S]]:
        """An administrator (or a hard stop) kills the session."""
        if self.state is _DATA:
            self.state = _CLOSING
            return [Abort("K", None)]
        return self._stop("K")

    def closed(self, now: float) -> list[Command[S]]:
        """Both sockets are gone (the relay's end, or the end of an abort): log and release. Once."""
        st = self.state
        if st is _CLOSED:
            return []
        if st is _NEW:  # never started (parked beyond maxconn): not counted, not logged
            self.state = _CLOSED
            return []
        out: list[Command[S]] = []
        if st in _SETUP:  # gone without telling us first
            out = self._stop("C")
        self.state = _CLOSED
        self.deadline = None
        out.append(_LOG_END)
        if self.slot:
            assert self.srv is not None
            self.slot = False
            out.append(self.srv.cmds.release)
        return out

    # --------------------------------------------------------------------------------------- internals
    def _pick(self, now: float, out: list[Command[S]]) -> list[Command[S]]:
        ctx = self.ctx
        srv, how = ctx.pick(self.client, self.exclude or (), self.pinned)
        if srv is None:
            if self.t_queue < 0:
                self.t_queue = now - self.tq0
            return self._abort(how[0], how[1], out)
        self.srv = srv
        if how == FREE:
            self.slot = True
            out.append(srv.cmds.take)
            return self._connect(now, out)
        self.state = _QUEUED
        if self.qdeadline is None and ctx.t_queue is not None:
            self.qdeadline = now + ctx.t_queue
        self.deadline = self.qdeadline
        out.append(Enqueue(srv))
        return out

    def _connect(self, now: float, out: list[Command[S]]) -> list[Command[S]]:
        if self.t_queue < 0:
            self.t_queue = now - self.tq0
        self.qdeadline = None
        self.state = _CONNECTING
        self.greeting = 0
        self.tc0 = now
        tc = self.ctx.t_connect
        self.deadline = now + tc if tc is not None else None
        assert self.srv is not None
        out.append(self.srv.cmds.connect)
        return out

    def _failed(self, now: float, kind: str, info: str, out: list[Command[S]]) -> list[Command[S]]:
        srv = self.srv
        assert srv is not None
        ctx = self.ctx
        self.deadline = None
        if self.slot:
            self.slot = False
            out.append(srv.cmds.release)
        timeout = kind in (TIMEOUT, GREETING_TIMEOUT)
        if kind != LOCAL:
            out.append(Passive(srv, False, timeout, info))
        self.greeting = 0
        self.greet_failed = kind in _GREET_KINDS
        self.attempt += 1
        if self.attempt > ctx.retries:
            self.t_connect = now - self.tc0
            return self._abort("s" if timeout else "R" if kind == LOCAL else "S", "C", out)
        # decide where the retry goes once the commands above ran (a passive failure may just have marked
        # the server DOWN): due at once, the driver calls timer(now) right after carrying them out
        self.retries = self.attempt
        self.state = _RETRY
        self.deadline = now
        return out

    def _retry(self, now: float) -> list[Command[S]]:
        srv = self.srv
        assert srv is not None
        ctx = self.ctx
        out: list[Command[S]] = []
        # a server that left rotation is never retried: go elsewhere at once, whatever `redispatch` says
        # (HAProxy without persistence); otherwise as `redispatch` says
        # a server that took the connection but did not greet is not retried either (a frozen broker)
        redispatch = (
            not srv.usable
            or self.greet_failed
            or redispatch_on_retry(self.attempt, ctx.retries, ctx.redispatch)
        )
        out.append(Retry(srv, redispatch))
        self.pinned = None
        if redispatch:
            self.redispatched = True
            ex = self.exclude
            if ex is None:
                ex = self.exclude = set()
            ex.add(srv.name)
            if ctx.any_eligible(ex):
                self.tq0 = now
                return self._pick(now, out)  # another server, no turn-around
            ex.clear()  # every server failed: start over after the turn-around
        else:
            self.pinned = srv
        self.state = _TURNAROUND
        self.deadline = now + min(ctx.t_connect or 1.0, 1.0)
        return out

    def _stop(self, cause: str) -> list[Command[S]]:
        st = self.state
        out: list[Command[S]] = []
        if st is _QUEUED:
            assert self.srv is not None
            out.append(Dequeue(self.srv))
        elif st is _CONNECTING:
            out.append(_CANCEL)
        elif st is not _TURNAROUND and st is not _RETRY:
            return out
        return self._abort(cause, _PHASE[st], out)

    def _abort(self, cause: str, phase: str, out: list[Command[S]]) -> list[Command[S]]:
        self.state = _CLOSING
        self.deadline = None
        self.qdeadline = None
        if self.slot:
            assert self.srv is not None
            self.slot = False
            out.append(self.srv.cmds.release)
        out.append(Abort(cause, phase))
        return out
