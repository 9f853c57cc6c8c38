"""The accounting seam between tcplb's core and the processes that share its listeners.

The core (:mod:`tcplb.lb`, :mod:`tcplb.frontend`, :mod:`tcplb.snapshot`) never asks whether it runs alone or
as one of ``global.workers`` processes: it asks its :class:`Accounting`. :class:`SingleProcess` is the
default (one process: nothing shared, every answer trivial); the shared-table implementations for the main
process and for the relay workers live with the table, in :mod:`tcplb.workers`.

What the core needs to know or hand over:

* ``nprocs``: limits (``global.maxconn``, a listener's and a server's ``maxconn`` / ``maxqueue``) are divided
  among the processes;
* ``runs_checks``: only one process runs active checks and owns the servers' health;
* :meth:`Accounting.connect_failed`: a failed connect where this process does not own health is handed to the
  one that does (True), else the core feeds its own health machine (False);
* :meth:`Accounting.others`: the other processes' counters, for the stats page and the rate sampler;
* :meth:`Accounting.tell_others`: an admin operation (``shutdown-sessions``, ``rebalance``) reaches the other
  processes (only the main process has the admin API; a worker applies it in ``WorkerProcess.handle``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .backend import ServerState
    from .frontend import Frontend

EMPTY: Mapping[str, int] = {}


class Counts(Protocol):
    """Counters of the other processes (HAProxy stats names: ``cur``, ``stot``, ``bin``...)."""

    def of(self, obj: Frontend | ServerState) -> Mapping[str, int]:
        """The other processes' counters for a listener or a server (empty when there are none)."""
        ...


class Accounting(Protocol):
    """What the core asks about the other processes (see the module's docstring)."""

    @property
    def nprocs(self) -> int: ...

    @property
    def runs_checks(self) -> bool: ...

    def connect_failed(self, srv: ServerState, timeout: bool) -> bool:
        """A connect to ``srv`` failed (``timeout``: it timed out). True if the failure was handed to the
        process that owns ``srv``'s health; False: this process owns it and feeds its own health machine."""
        ...

    def others(self) -> Counts:
        """The other processes' counters, as of now."""
        ...

    def tell_others(self, msg: dict[str, Any]) -> None:
        """Hand an admin operation (``{"op": ..., ...}``) to the other processes (none: nothing to do)."""
        ...


class _NoCounts:
    __slots__ = ()

    def of(self, obj: Frontend | ServerState) -> Mapping[str, int]:
        return EMPTY


NO_COUNTS: Counts = _NoCounts()


class SingleProcess:
    """One process (``global.workers = 1``, the default): it owns everything; nobody else counts."""

    __slots__ = ()

    @property
    def nprocs(self) -> int:
        return 1

    @property
    def runs_checks(self) -> bool:
        return True

    def connect_failed(self, srv: ServerState, timeout: bool) -> bool:
        return False

    def others(self) -> Counts:
        return NO_COUNTS

    def tell_others(self, msg: dict[str, Any]) -> None:
        return None
