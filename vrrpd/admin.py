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
    from vrrpd.daemon import Daemon, Instance

__all__ = ["command"]

log = logging.getLogger("vrrpd")

USAGE = "usage: maint NAME|all [PRIORITY] | restore NAME|all | priority NAME PRIORITY"


def _prio(word: str) -> int | None:
    try:
        n = int(word)
    except ValueError:
        return None
    return n if 1 <= n <= 254 else None


def describe(inst: Instance) -> dict[str, Any]:
    vr = inst.vr
    return {
        "name": inst.name,
        "state": vr.state.value,
        "priority": inst.cfg.priority,
        "effective_priority": vr.effective_priority,
        "override_priority": inst.override,
        "maintenance": vr.maint,
    }


def command(d: Daemon, words: list[str]) -> dict[str, Any]:
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
    by_name = {i.name: i for i in d.instances.values()}
    if target == "all":
        targets = list(by_name.values())
    elif target in by_name:
        targets = [by_name[target]]
    else:
        return {"error": f"unknown instance {target!r} (running: {', '.join(sorted(by_name)) or 'none'})"}
    if verb != "restore":
        owners = [i.name for i in targets if i.cfg.priority == fsm.OWNER_PRIORITY]
        if owners:
            return {
                "error": f"{', '.join(owners)}: address owner (priority 255): it takes the VIP back at once "
                "whatever the others do; lower its priority in the configuration (and reload) instead. "
                "Nothing changed"
            }
    for inst in targets:
        before = describe(inst)
        if verb == "maint":
            assert prio is not None
            inst.override = prio
            now = d.loop.time()
            d._feed(inst, fsm.PriorityChanged(prio), now)  # lowered first: notify scripts see the new one
            d._feed(inst, fsm.Maintenance(True), now)
        else:
            inst.override = prio
            if inst.vr.maint:
                d._feed(inst, fsm.Maintenance(False), d.loop.time())
        d._refresh_faults(inst)  # effective priority from the override (or configuration) and the weights
        after = describe(inst)
        log.info(
            "%s: vrrpd ctl %s: %s, priority %s -> %s (effective %d -> %d)%s",
            inst.name,
            " ".join(words),
            after["state"],
            before["override_priority"] or f"{before['priority']} (configured)",
            after["override_priority"] or f"{after['priority']} (configured)",
            before["effective_priority"],
            after["effective_priority"],
            ", maintenance" if after["maintenance"] else "",
        )
    return {"ok": True, "action": verb, "instances": [describe(i) for i in targets]}
