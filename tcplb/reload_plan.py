"""The reload planner: old configuration + new configuration -> what a reload has to do. Pure: no sockets, no
clock, no state; :mod:`tcplb.reload` applies a plan all or nothing.

The sockets part is what makes a reload safe. Listening sockets are identified by their bind address and
move between listeners by address (a bind renamed from listener ``a`` to ``b`` keeps its socket and its
kernel backlog). So a plan says, per address:

* ``keep``: bound in both configurations: the running socket is reused (and handed to its new listener);
* ``open``: only in the new one: a new socket must be bound *before anything changes* (the one step of a
  reload that can fail: address in use, no such address, permission);
* ``close``: only in the old one: closed once everything else succeeded.

Then per listener (``added``, ``removed``, ``changed``, ``unchanged``) and per server of a kept listener
(``added``, ``removed``, ``changed``), for the log and for the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Config, Listener

__all__ = ["Addr", "Plan", "ReloadError", "ServerChanges", "plan"]

Addr = tuple[str, int]


class ReloadError(Exception):
    """A reload refused before anything changed: ``listener``'s bind ``address`` cannot be opened."""

    def __init__(self, listener: str, address: Addr, reason: str) -> None:
        host, port = address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"listen.{listener}: cannot bind {where}: {reason}")
        self.listener = listener
        self.address = address
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ServerChanges:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True, slots=True)
class Plan:
    keep: dict[Addr, tuple[str, str]] = field(default_factory=dict)  # addr -> (old owner, new owner)
    open: tuple[tuple[str, Addr], ...] = ()  # (new owner, addr), in configuration order
    close: tuple[Addr, ...] = ()
    added: tuple[str, ...] = ()  # listeners
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    servers: dict[str, ServerChanges] = field(default_factory=dict)  # kept listeners with server changes

    @property
    def moved(self) -> dict[Addr, tuple[str, str]]:
        """Kept sockets that change listener."""
        return {a: oo for a, oo in self.keep.items() if oo[0] != oo[1]}

    def summary(self) -> str:
        """One line for the log: ``2 listeners changed (a, b), 1 bind to open``."""
        parts = []
        for what, names in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
            if names:
                parts.append(
                    f"{len(names)} listener{'s' if len(names) != 1 else ''} {what} ({', '.join(names)})"
                )
        if self.open:
            parts.append(f"{len(self.open)} bind{'s' if len(self.open) != 1 else ''} opened")
        if self.close:
            parts.append(f"{len(self.close)} bind{'s' if len(self.close) != 1 else ''} closed")
        return ", ".join(parts) or "no change"


def _owners(cfg: Config) -> dict[Addr, str]:
    """Bind address -> listener (config validation forbids an address in two listeners)."""
    out: dict[Addr, str] = {}
    for li in cfg.listeners:
        for addr in li.bind:
            out.setdefault(addr, li.name)
    return out


def _servers(old: Listener, new: Listener) -> ServerChanges:
    was = {s.name: s for s in old.servers}
    now = {s.name: s for s in new.servers}
    return ServerChanges(
        added=tuple(n for n in now if n not in was),
        removed=tuple(n for n in was if n not in now),
        changed=tuple(n for n in now if n in was and now[n] != was[n]),
    )


def plan(old: Config, new: Config) -> Plan:
    """What reloading from ``old`` to ``new`` does (see the module docstring)."""
    before, after = _owners(old), _owners(new)
    keep = {a: (before[a], after[a]) for a in after if a in before}
    opened = tuple((after[a], a) for a in after if a not in before)
    close = tuple(a for a in before if a not in after)
    old_li = {li.name: li for li in old.listeners}
    new_li = {li.name: li for li in new.listeners}
    added = tuple(n for n in new_li if n not in old_li)
    removed = tuple(n for n in old_li if n not in new_li)
    changed = tuple(n for n in new_li if n in old_li and new_li[n] != old_li[n])
    unchanged = tuple(n for n in new_li if n in old_li and new_li[n] == old_li[n])
    servers = {}
    for n in changed:
        sc = _servers(old_li[n], new_li[n])
        if sc:
            servers[n] = sc
    return Plan(keep, opened, close, added, removed, changed, unchanged, servers)
