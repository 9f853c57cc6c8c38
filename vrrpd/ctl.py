"""``vrrpd ctl``: planned switchover of a running daemon through its control socket (client side).

    vrrpd ctl [-c node.toml | --socket PATH] [--json] maint INSTANCE|all [--priority N]
    vrrpd ctl ... restore INSTANCE|all
    vrrpd ctl ... priority INSTANCE N

Exit status: 0 done, 1 refused by the daemon (unknown instance, address owner, ...) or daemon unreachable,
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys

from vrrpd.control import query, socket_path_of

__all__ = ["main"]


def _priority(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = 0
    if not 1 <= n <= 254:
        raise argparse.ArgumentTypeError(f"{v!r}: must be an integer 1..254")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vrrpd ctl",
        description="Change a running vrrpd's priorities for a planned switchover (lost at restart).",
    )
    common = argparse.ArgumentParser(add_help=False)  # accepted before and after the verb
    for q, default in ((p, None), (common, argparse.SUPPRESS)):
        q.add_argument("--socket", default=default, help="control socket path (default: from -c FILE)")
        q.add_argument("-c", "--config", default=default, help="configuration file naming the control socket")
        q.add_argument(
            "--json", action="store_true", default=default or False, help="print the daemon's JSON answer"
        )
    sub = p.add_subparsers(dest="verb", required=True, metavar="{maint,restore,priority}")
    m = sub.add_parser(
        "maint",
        parents=[common],
        help="lower to priority 1 (or --priority N); a master hands over at once (priority-0 advert) and "
        "the instance stays backup without preempting",
    )
    m.add_argument("instance", help="instance name, or 'all'")
    m.add_argument("--priority", type=_priority, default=1, help="priority while in maintenance (default 1)")
    r = sub.add_parser(
        "restore", parents=[common], help="back to the configured priority (clears maint and priority)"
    )
    r.add_argument("instance", help="instance name, or 'all'")
    pr = sub.add_parser(
        "priority", parents=[common], help="run with priority N (1..254) instead of the configured one"
    )
    pr.add_argument("instance", help="instance name, or 'all'")
    pr.add_argument("priority", type=_priority)
    return p


def _describe(i: dict[str, object]) -> str:
    if i.get("maintenance"):
        mode = f"maintenance, priority {i.get('override_priority')}"
    elif i.get("override_priority"):
        mode = f"priority override {i.get('override_priority')}"
    else:
        mode = "configured priority"
    return (
        f"{i.get('name')}: {i.get('state')}, {mode} (configured {i.get('priority')}, "
        f"effective {i.get('effective_priority')})"
    )


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    path = socket_path_of(a.socket, a.config, "vrrpd ctl")
    if path is None:
        return 2
    words = [a.verb, a.instance]
    if a.verb == "maint" or a.verb == "priority":
        words.append(str(a.priority))
    try:
        res = query(path, " ".join(words))
    except (OSError, ValueError) as e:
        print(f"vrrpd ctl: cannot reach the daemon at {path}: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(res, indent=2))
    if "error" in res or not res.get("ok"):
        print(f"vrrpd ctl: {res.get('error', 'failed')}", file=sys.stderr)
        return 1
    if not a.json:
        for i in res.get("instances", []):
            print(_describe(i))
    return 0
