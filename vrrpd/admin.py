"""The daemon side of ``vrrpd ctl``: runtime priority overrides and maintenance, per instance.

Imported on the first ctl command only. Rules (README "Planned switchover: vrrpd ctl"):

* ``priority NAME N`` replaces the configured priority (1..254); track weights apply on top, as they do on
  the configured one (keepalived's base priority). No immediate handover: the usual election rules apply.
* ``maint NAME|all [N]`` pins the effective priority at N (default 1; weights are not added, a positive one
  would lift it back over the peers), a Master hands over at once with a priority-0 advert, and the instance
  does not preempt while in maintenance (it still takes over as a last resort when no master is heard).
* ``restore NAME|all`` clears both. Overrides live in the running daemon: kept across SIGHUP reloads while
  the instance (interface + VRID) stays in the file, lost at restart. An address owner (priority 255) is
  refused: it would take the VIP back at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vrrpd import fsm

if TYPE_CHECKING:
    from vrrpd.host import Host

__all__ = ["command"]

log = logging.getLogger("vrrpd")

USAGE = "usage: maint NAME|all [PRIORITY] | restore NAME|all | priority NAME PRIORITY"


def _prio(word: str) -> int | None:
    try:
        n = int(word)
    except ValueError:
        return None
    return n if 1 <= n <= 254 else None


def command(host: Host, words: list[str], now: float) -> dict[str, Any]:
    """One ``vrrpd ctl`` command against the daemon's core (public methods of :class:`vrrpd.host.Host`)."""
    verb, args = words[0], words[1:]
    want = {"maint": (1, 2), "restore": (1, 1), "priority": (2, 2)}.get(verb)
    if want is None or not want[0] <= len(args) <= want[1]:
        return {"error": USAGE}
    prio: int | None = None
    if verb != "restore":
        prio = _prio(args[1]) if len(args) > 1 else 1
        if prio is None:
            return {"error": f"priority {args[1]!r}: must be an integer 1..254"}
    target = args[0]
    names = host.names()
    if target == "all":
        targets = names
    elif target in names:
        targets = [target]
    else:
        return {"error": f"unknown instance {target!r} (running: {', '.join(sorted(names)) or 'none'})"}
    if verb != "restore":
        owners = [n for n in targets if host.describe(n)["priority"] == fsm.OWNER_PRIORITY]
        if owners:
            return {
                "error": f"{', '.join(owners)}: address owner (priority 255): it takes the VIP back at once "
                "whatever the others do; lower its priority in the configuration (and reload) instead. "
                "Nothing changed"
            }
    for name in targets:
        before = host.describe(name)
        if verb == "maint":
            assert prio is not None
            host.set_maintenance(name, prio, now)
        else:
            host.set_priority(name, prio, now)
        after = host.describe(name)
        log.info(
            "%s: vrrpd ctl %s: %s, priority %s -> %s (effective %d -> %d)%s",
            name,
            " ".join(words),
            after["state"],
            before["override_priority"] or f"{before['priority']} (configured)",
            after["override_priority"] or f"{after['priority']} (configured)",
            before["effective_priority"],
            after["effective_priority"],
            ", maintenance" if after["maintenance"] else "",
        )
    return {"ok": True, "action": verb, "instances": [host.describe(n) for n in targets]}
