"""``python -m netns up|status|down|exec``: the lab for an operator.

* ``up`` builds the whole stack (3 RabbitMQ nodes, lb1 and lb2 with vrrpd + tcplb, a client), starts it,
  and leaves it running; its state file (``/run/netns-lab/<uid>.json``) lets ``down`` clean it up.
* ``status`` lists the labs (``up`` ones and those of running tests): namespaces, processes, VIP holder.
* ``exec UID HOST -- CMD...`` runs a command in a lab host (through ``ip netns exec``, so names resolve).
* ``down [UID...] | --all`` stops the processes (by PID, checked against their start time), deletes the
  namespaces, ``/etc/netns`` entries and temp dirs. ``--all`` only takes labs whose owner is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from netns import state


def _owner_alive(data: dict[str, Any]) -> bool:
    pid = int(data.get("owner_pid", 0))
    return pid > 0 and state.pid_alive(pid)


def _vip_holders(data: dict[str, Any], vip: str) -> list[str]:
    out = []
    for name, info in data.get("hosts", {}).items():
        ns = info.get("ns", "")
        if not (state.NETNS_RUN / ns).exists():
            continue
        res = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show"], capture_output=True, text=True)
        if f" {vip}/" in res.stdout:
            out.append(name)
    return out


def cmd_up(args: argparse.Namespace) -> int:
    from netns.lab import Lab
    from netns.stack import VIP, Stack

    lab = Lab(tag=args.tag)
    try:
        st = Stack.build(lab)
        print(f"lab {lab.uid}: booting RabbitMQ ...", flush=True)
        boot = st.rabbit.start()
        print(f"RabbitMQ cluster up in {boot:.1f} s", flush=True)
        if not args.no_lbs:
            kinds: dict[str, Any] = {}
            if args.classic_on:
                kinds[args.classic_on] = ("keepalived", "haproxy")
            st.start_lbs(kinds)
            if st.monitor is not None:
                st.monitor.stop()
                st.monitor = None
    except BaseException:
        lab.teardown()
        raise
    lab.detach()
    print(f"lab {lab.uid} is up (state: {state.state_path(lab.uid)}); work dir {lab.workdir}")
    for name, h in lab.hosts.items():
        print(f"  {name:8} {h.ip:15} ip netns exec {h.ns} bash")
    if not args.no_lbs:
        print(f"  VIP {VIP} on {', '.join(st.vip_holders())}")
    print(f"try: python -m netns exec {lab.uid} client -- curl -s telnet://{VIP}:5672 | head -c 8 | xxd")
    print(f"stop: python -m netns down {lab.uid}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from netns.stack import VIP

    labs = state.all_states()
    if args.json:
        print(json.dumps([d for _p, d in labs], indent=1))
        return 0
    if not labs:
        print("no labs")
        return 0
    for _path, d in labs:
        owner = (
            "detached (python -m netns up)"
            if d.get("detached")
            else (f"owner pid {d.get('owner_pid')} {'running' if _owner_alive(d) else 'gone'}")
        )
        procs = d.get("procs", [])
        live = [p for p in procs if state.same_process(int(p["pid"]), p.get("starttime"))]
        print(
            f"lab {d['uid']} [{d.get('tag')}]: {owner}; {len(d.get('namespaces', []))} namespaces, "
            f"{len(live)}/{len(procs)} processes running"
        )
        for name, info in d.get("hosts", {}).items():
            addrs = [a for link in info.get("links", {}).values() for a in link.get("addrs", [])]
            print(f"  {name:8} {info.get('ns')}  {' '.join(addrs)}")
        for p in live:
            print(f"  pid {p['pid']:>7} {p['host']}/{p['name']}  log {p.get('log')}")
        holders = _vip_holders(d, VIP)
        if holders:
            print(f"  VIP {VIP} on {', '.join(holders)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    labs = state.all_states()
    chosen = [(p, d) for p, d in labs if d.get("uid") in args.uid]
    if args.all:
        chosen = [(p, d) for p, d in labs if d.get("detached") or not _owner_alive(d)]
        skipped = [d["uid"] for p, d in labs if (p, d) not in chosen]
        if skipped:
            print(f"left alone (their owner is running): {', '.join(skipped)}")
    missing = set(args.uid) - {d.get("uid") for _p, d in labs}
    for uid in sorted(missing):
        print(f"no lab {uid}", file=sys.stderr)
    rc = 1 if missing else 0
    for path, d in chosen:
        errors = state.cleanup(d)
        path.unlink(missing_ok=True)
        print(f"lab {d['uid']} down" + (f" (errors: {'; '.join(errors)})" if errors else ""))
        rc = rc or (1 if errors else 0)
    return rc


def cmd_exec(args: argparse.Namespace) -> int:
    data = state.read_state(state.state_path(args.uid))
    if data is None:
        print(f"no lab {args.uid}", file=sys.stderr)
        return 1
    host = data.get("hosts", {}).get(args.host)
    ns = host.get("ns") if host else data.get("switches", {}).get(args.host)
    if not ns:
        print(f"lab {args.uid} has no host {args.host}", file=sys.stderr)
        return 1
    cmd = [c for c in args.cmd if c != "--"] or [os.environ.get("SHELL", "/bin/sh")]
    os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])
    return 127  # not reached


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m netns", description="network-namespace labs for rmq-frontdoor"
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the whole stack up and leave it running")
    up.add_argument("--tag", default="up")
    up.add_argument("--no-lbs", action="store_true", help="only RabbitMQ, lb1, lb2 and client hosts")
    up.add_argument("--classic-on", choices=["lb1", "lb2"], help="run keepalived + HAProxy on this LB")
    st = sub.add_parser("status", help="list labs")
    st.add_argument("--json", action="store_true")
    down = sub.add_parser("down", help="tear labs down")
    down.add_argument("uid", nargs="*")
    down.add_argument("--all", action="store_true", help="every lab whose owner is gone (or detached)")
    ex = sub.add_parser("exec", help="run a command in a lab host")
    ex.add_argument("uid")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    handlers = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "exec": cmd_exec}
    if args.command == "down" and not args.uid and not args.all:
        p.error("down: name a lab uid or use --all")
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
