"""End to end at ``advert_int = 0.1`` (issue #14): the longest gap without a publisher confirm after a master
crash, vrrpd + tcplb on both LB hosts against keepalived + HAProxy on both, in alternating rounds on the same
lab (the same run, the same machine, the same RabbitMQ cluster).

Run: ``python -m bench failover-e2e [--rounds N]`` (root; part ``failover-e2e`` of the run file and of
docs/performance.md).

The lab is :class:`netns.stack.Stack` (3 RabbitMQ 3.10 nodes, lb1 priority 150 and lb2 priority 100 with the
VIP 192.0.2.100, a client), with ``advert_int = 0.1`` (VRRPv3 on both daemons). Each round, per variant: both
LB hosts start, 2 publishers and 2 consumers on the client run 200 msg/s with publisher confirms against a
fresh quorum queue through the VIP, then lb1's VRRP daemon and balancer are SIGKILLed together (the host's
software dies, the VIP stays configured on lb1). Measured: the longest gap without a publisher confirm from
0.2 s before the kill to the end (the scenario of tests/stack/test_v3_scenarios.py), the VIP's move as the
stack's monitor sees it (every 20 ms), and the messages lost (confirmed, never consumed).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.common import add, failed_rounds_note, figure, host_info, log, markdown_part, part_result
from netns import Lab
from netns.rabbitmq import RabbitCluster
from netns.stack import PRIORITIES, Stack, master_down_interval

ADVERT_INT = 0.1
MDI = master_down_interval(PRIORITIES["lb2"], ADVERT_INT)  # 0.361 s
KINDS: dict[str, dict[str, tuple[Any, Any]]] = {
    "vrrpd+tcplb": {"lb1": ("vrrpd", "tcplb"), "lb2": ("vrrpd", "tcplb")},
    "keepalived+haproxy": {"lb1": ("keepalived", "haproxy"), "lb2": ("keepalived", "haproxy")},
}
VARIANTS = tuple(KINDS)


def one_round(stack: Stack, variant: str, tag: str) -> dict[str, Any]:
    stack.advert_int = ADVERT_INT
    try:
        stack.start_lbs(KINDS[variant])
        load = stack.load(publishers=2, consumers=2, rate=200).start()
        load.wait_flowing(100)
        t = stack.event(f"SIGKILL VRRP daemon + balancer on lb1 ({tag})")
        stack.lbs["lb1"].crash()
        stack.wait_master("lb2", 10, alone=False)  # the crashed lb1 still has the VIP configured
        load.wait_flowing(100)
        out = stack.finish(load, f"master crash, VRRPv3 0.1 s, {variant}", t, [])
        gap, gap_at = out.ledger.confirm_gap(t - 2 * ADVERT_INT)
        return {
            "variant": variant,
            "confirm_gap_s": gap,
            "confirm_gap_at_s": gap_at - t,
            "detection_s": out.detection,
            "lost": len(out.lost),
            "confirmed": out.summary.get("confirmed"),
            "consumed": out.summary.get("consumed"),
            "unexpected": len(out.ledger.unexpected),
            "timeline": out.timeline[:12],
        }
    finally:
        stack.reset()


def run(rounds: int = 3, quick: bool = False) -> dict[str, Any]:
    """``rounds`` rounds per variant (alternating order) on one lab; ``quick``: one round."""
    if quick:
        rounds = 1
    f_gap = figure("confirm_gap_s", "longest gap without a publisher confirm after the master crash", "s",
                   better="lower", impls=VARIANTS, chart="strip")  # fmt: skip
    f_det = figure("detection_s", "master crash -> the VIP on lb2 (monitor, 20 ms)", "s", better="lower",
                   impls=VARIANTS, chart="strip")  # fmt: skip
    f_lost = figure("lost", "confirmed messages lost", "", better="lower", impls=VARIANTS, chart=False)
    results: list[dict[str, Any]] = []
    with Lab("bench-e2e") as lab:
        sw = lab.switch("sw")
        cluster = RabbitCluster(lab, sw, management=True)
        log("failover-e2e: booting the 3-node RabbitMQ cluster")
        boot = cluster.start()
        log(f"failover-e2e: cluster up in {boot:.1f} s")
        stack = Stack.build(lab, switch=sw, rabbit=cluster)
        for i in range(rounds):
            for v in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                try:
                    cluster.ensure_all_running()
                    r = {"round": i, **one_round(stack, v, f"round {i + 1}")}
                except Exception as e:  # a failed round is reported, not fatal
                    r = {"round": i, "variant": v, "error": repr(e)}
                results.append(r)
                add(f_gap, v, r.get("confirm_gap_s"))
                add(f_det, v, r.get("detection_s"))
                add(f_lost, v, r.get("lost"))
                log(f"failover-e2e round {i + 1} {v}: gap {r.get('confirm_gap_s')}, detection "
                    f"{r.get('detection_s')}, lost {r.get('lost')}, error {r.get('error')}")  # fmt: skip
    errors = [r for r in results if "error" in r]
    notes = [
        f"advert_int 0.1 s (VRRPv3 on both daemons), priorities 150/100: Master_Down_Interval "
        f"{MDI * 1000:.0f} ms. 2 publishers (confirms) and 2 consumers at 200 msg/s through the VIP to a "
        "quorum queue on a 3-node RabbitMQ 3.10 cluster; lb1's VRRP daemon and balancer SIGKILLed together. "
        "The gap is measured from 0.2 s before the kill to the end of the round.",
    ]
    if errors:
        notes.append(failed_rounds_note(errors, "variant"))
    return part_result(
        "failover-e2e",
        "End to end at advert_int 0.1: confirm gap after a master crash, vrrpd+tcplb vs keepalived+HAProxy",
        VARIANTS,
        [f_gap, f_det, f_lost],
        rounds=rounds,
        notes=notes,
        raw={
            "expected": {"master_down_interval_s": MDI, "advert_int_s": ADVERT_INT},
            "rounds": results,
            "rabbit_boot_s": boot,
            "host": host_info(),
        },
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.vrrp_e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    print(markdown_part(run(a.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
