"""``python -m netns.demo`` (``make demo``): the whole front door, a master crash under load, a report.

Brings up 3 RabbitMQ nodes, lb1 and lb2 (vrrpd + tcplb each) and a client in network namespaces, runs
publishers (confirms) and consumers (manual acks) through the VIP, SIGKILLs both daemons on the master, lets
traffic continue, then reports who held the VIP when, the detection time and the client outage, and the
message ledger. The last line is ``lost: N`` (confirmed messages never consumed); the exit status is 0 only
if N is 0. Everything is torn down whatever happens.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from netns.amqp import Ledger
from netns.lab import Lab
from netns.pcap import garps, vrrp_adverts
from netns.rabbitmq import available as rabbit_available
from netns.stack import ADVERT_INT, LB_ADDRS, PRIORITIES, VIP, Stack, is_v3, master_down_interval


def _say(t0: float, msg: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    artifacts = Path(args.artifacts).resolve()
    with Lab("demo", artifacts=artifacts) as lab:
        lab.keep_artifacts = args.keep
        _say(t0, f"lab {lab.uid}: namespaces for rmq1-3, lb1, lb2, client on one bridge")
        st = Stack.build(lab)
        st.advert_int = args.advert_int
        cap = lab.capture(st.switch, "demo", filter="ip proto 112 or arp")
        boot = st.rabbit.start()
        _say(t0, f"RabbitMQ cluster up in {boot:.1f} s: {', '.join(st.rabbit.running_nodes())}")
        st.start_lbs()
        version = 3 if is_v3(st.advert_int) else 2
        _say(
            t0,
            f"lb1 (priority {PRIORITIES['lb1']}) is MASTER for {VIP}, lb2 ({PRIORITIES['lb2']}) is BACKUP "
            f"(VRRPv{version}, advert_int {st.advert_int:g} s)",
        )
        load = st.load(publishers=args.publishers, consumers=args.consumers, rate=args.rate).start()
        load.wait_flowing(100)
        _say(
            t0,
            f"traffic: {args.publishers} publishers (confirms), {args.consumers} consumers (manual acks), "
            f"{args.rate:g} msg/s to quorum queue {load.queue} through the VIP",
        )
        time.sleep(args.before)
        t_kill = st.event("SIGKILL vrrpd + tcplb on lb1")
        st.lbs["lb1"].crash()
        _say(t0, "lb1 crashed: SIGKILL of vrrpd and tcplb")
        st.wait_master("lb2", 15, alone=False)
        load.wait_flowing(50)
        _say(t0, "lb2 holds the VIP and clients are flowing again")
        time.sleep(args.after)
        ledger = load.stop(timeout=60)
        cap.terminate(2)
        pcap = lab.workdir / "demo.pcap"
        lines = report(st, ledger, t_kill, pcap)
        _say(t0, "done, tearing down")
    print()
    for line in lines:
        print(line)
    elapsed = time.monotonic() - t0
    print(
        f"(demo took {elapsed:.0f} s; lab torn down{', artifacts in ' + str(artifacts) if args.keep else ''})"
    )
    lost = len(ledger.lost)
    print(f"lost: {lost}")
    return 0 if lost == 0 else 1


def report(st: Stack, ledger: Ledger, t_kill: float, pcap: Path) -> list[str]:
    mdi = master_down_interval(PRIORITIES["lb2"], st.advert_int)
    adverts = vrrp_adverts(pcap) if pcap.exists() else []
    lb1_ip, lb2_ip = LB_ADDRS["lb1"], LB_ADDRS["lb2"]
    last_lb1 = max((a.time for a in adverts if a.src == lb1_ip and a.time <= t_kill), default=None)
    first_lb2 = min((a.time for a in adverts if a.src == lb2_ip and a.time >= t_kill), default=None)
    garp_lb2 = (
        min((g.time for g in garps(pcap) if g.ip == VIP and g.time >= t_kill), default=None)
        if pcap.exists()
        else None
    )
    took_over = st.monitor.first_holding_after(t_kill, "lb2") if st.monitor else None
    summary = ledger.summary()
    gap, gap_start = ledger.confirm_gap(t_kill - 2 * st.advert_int)
    cgap, _ = ledger.consume_gap(t_kill - 2 * st.advert_int)
    outage_end = gap_start + gap

    def rel(t: float | None) -> str:
        return f"{t - t_kill:+.3f} s" if t is not None else "n/a"

    lines = ["== rmq-frontdoor failover demo ==", "who held the VIP (times relative to the crash of lb1):"]
    entries: list[tuple[float, str]] = [(t_kill, "lb1 crashed: SIGKILL of vrrpd and tcplb")]
    if st.monitor is not None:
        for ts, holders in st.monitor.transitions:
            if holders:
                names = [
                    h + (" (stale address, daemons dead)" if h == "lb1" and ts >= t_kill else "")
                    for h in holders
                ]
                entries.append((ts, ", ".join(names)))
    for ts, text in sorted(entries):
        lines.append(f"  {ts - t_kill:+8.3f} s  {text}")
    lines.append("detection:")
    lines.append(
        f"  lb1's last advert {rel(last_lb1)}; lb2's first advert as master {rel(first_lb2)}, "
        f"first gratuitous ARP {rel(garp_lb2)}; VIP on lb2 {rel(took_over)}"
    )
    if last_lb1 is not None and first_lb2 is not None:
        lines.append(
            f"  takeover {first_lb2 - last_lb1:.3f} s after the last advert "
            f"(Master_Down_Interval at priority {PRIORITIES['lb2']}: {mdi:.3f} s)"
        )
    lines.append("client outage:")
    lines.append(f"  longest gap without a publisher confirm {gap:.3f} s, without a delivery {cgap:.3f} s")
    if last_lb1 is not None:
        lines.append(
            f"  confirms resumed {outage_end - last_lb1:.3f} s after lb1's last advert "
            f"(bound: Master_Down_Interval + 0.1 s = {mdi + 0.1:.3f} s)"
        )
    lines.append("messages:")
    lines.append(
        f"  published {summary['published']}, confirmed {summary['confirmed']}, consumed "
        f"{summary['consumed']}, duplicated {summary['duplicates']} (redelivered {summary['redelivered']}, "
        f"republished {summary['republished']}), lost {summary['lost']}"
    )
    lines.append(
        f"  client reconnects {summary['disconnects']}, failed connection attempts while the VIP moved "
        f"{summary['failed_connection_attempts']}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns.demo", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="messages per second in total (default 200)")
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--before", type=float, default=5.0, help="seconds of traffic before the crash")
    p.add_argument("--after", type=float, default=8.0, help="seconds of traffic after the takeover")
    p.add_argument(
        "--advert-int",
        type=float,
        default=float(ADVERT_INT),
        help=f"VRRP advert interval in seconds (default {ADVERT_INT}); fractional: VRRPv3 (e.g. 0.1)",
    )
    p.add_argument("--keep", action="store_true", help="keep logs and the capture under --artifacts")
    p.add_argument("--artifacts", default="netns-artifacts/demo")
    args = p.parse_args(argv)
    ai = args.advert_int
    if not (0.01 <= ai <= 40.95 if is_v3(ai) else 1 <= ai <= 255):
        p.error("--advert-int: whole seconds 1..255 (VRRPv2), or 0.01..40.95 with a fraction (VRRPv3)")
    if os.geteuid() != 0:
        print("the demo needs root (network namespaces)", file=sys.stderr)
        print("lost: unknown")
        return 2
    if not rabbit_available():
        print("the demo needs Debian's rabbitmq-server (make deps)", file=sys.stderr)
        print("lost: unknown")
        return 2
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; the lab was torn down", file=sys.stderr)
        print("lost: unknown")
        return 130
    except Exception as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        print("lost: unknown")
        return 1


if __name__ == "__main__":
    sys.exit(main())
