"""A frozen broker: a RabbitMQ node SIGSTOPped for 20 s under a new client connection every 100 ms (issue 13).

The full stack (``netns.stack``): client, lb1/lb2, a 3-node RabbitMQ 3.10 cluster with the management plugin.
A frozen Erlang VM is the half-dead node a layer-4 balancer cannot see: the kernel still completes the TCP
handshake (backlog), nothing answers AMQP. Variants, in alternating order every round:

* ``tcplb``: vrrpd + tcplb as the stack configures it: ``protocol = "amqp"`` (a server connection counts only
  when Connection.Start arrives; silence past ``timeout_greeting = 1s`` is a failed connect, the client is
  retried elsewhere with the same bytes) and the ``rabbitmq`` check (clean AMQP probe + management API,
  inter 1s, fastinter 250ms, rise 2, fall 2, timeout_check 1s), leastconn, retries 3, redispatch;
* ``haproxy``: keepalived + HAProxy 2.6 as such setups usually configure it: ``mode tcp``, ``balance
  leastconn``, ``check inter 1s rise 2 fall 3`` (a TCP connect check), retries 3, ``option redispatch``.

A round of a variant: start both LB hosts, open a new AMQP connection every 100 ms through the VIP
(``netns.amqp burst``: the full handshake to Open-Ok, then Close; a connection not open within 10 s is
*hung*, one that ends in an error before that *failed*), SIGSTOP ``rmq2``'s VM 1 s in, SIGCONT it 20 s later,
and keep the load 2 s more. Measured over the connections started while the node was frozen.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Budget, add, figure, log, pad_samples, part_result, rel, results_dir, round_order
from bench.report import timeline_chart
from netns import Lab, wait_until
from netns.stack import Stack

VARIANTS = ["tcplb", "haproxy"]
KINDS: dict[str, dict[str, tuple[str, str]]] = {
    "tcplb": {"lb1": ("vrrpd", "tcplb"), "lb2": ("vrrpd", "tcplb")},
    "haproxy": {"lb1": ("keepalived", "haproxy"), "lb2": ("keepalived", "haproxy")},
}
VICTIM = "rmq2"
INTERVAL = 0.1  # a new client connection every 100 ms
FREEZE = 20.0  # seconds frozen (the measurement)
CONNECT_TIMEOUT = 10.0  # a connection not open by then is hung


def analyse(conns: list[list[Any]], t_stop: float, t_cont: float) -> dict[str, Any]:
    during = [c for c in conns if t_stop <= c[0] < t_cont]
    hung = [c for c in during if not c[2] and c[3] == "timeout"]
    failed = [c for c in during if not c[2] and c[3] != "timeout"]
    ok = [c for c in during if c[2]]
    return {
        "connections": len(during),
        "failed": len(failed),
        "hung": len(hung),
        "failed_or_hung": len(failed) + len(hung),
        "errors": sorted({str(c[3]) for c in failed}),
        "delayed": sum(1 for c in ok if c[1] > 0.5),
        "slowest_ok": max((c[1] for c in ok), default=None),
        "last_bad_start": max((c[0] - t_stop for c in [*failed, *hung]), default=None),
    }


def one(stack: Stack, variant: str, r: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    stack.start_lbs(KINDS[variant])  # type: ignore[arg-type]
    burst = stack.burst(interval=INTERVAL, timeout=CONNECT_TIMEOUT)
    wait_until(lambda: burst.status()["started"] >= 10, 10, interval=0.05, what="burst running")
    victim = stack.rabbit[VICTIM]
    t_stop = time.time()
    victim.freeze()
    down_after: float | None = None
    while time.time() - t_stop < FREEZE:  # the freeze's length is the measurement; tcplb's view sampled
        if variant == "tcplb" and down_after is None:
            st = stack.servers().get(VICTIM, {}).get("status")
            if st and str(st).split()[0] == "DOWN":
                down_after = time.time() - t_stop
        time.sleep(0.2)
    t_cont = time.time()
    victim.thaw()
    time.sleep(2.0)  # the load goes on 2 s after the thaw
    conns = burst.stop(timeout=CONNECT_TIMEOUT + 20)
    a = analyse(conns, t_stop, t_cont)
    a["marked_down_after_s"] = down_after
    wait_until(lambda: stack.rabbit.amqp_reachable(stack.client, victim), 30, interval=0.5,
               what=f"{VICTIM} answering again")  # fmt: skip
    stack.reset()
    timeline = [{"t": round(c[0] - t_stop, 3), "dur": c[1], "ok": c[2]} for c in conns]
    log(f"frozen-broker r{r} {variant}: {a['failed']} failed, {a['hung']} hung of {a['connections']}, "
        f"marked down after {down_after}")  # fmt: skip
    return a, timeline


def run(rounds: int = 2, *, quick: bool = False, budget: float | None = None) -> dict[str, Any]:
    clock = Budget(budget)
    planned = 1 if quick else rounds
    f_bad = figure(
        "failed_or_hung", "failed or hung client connects", "count", better="lower", impls=VARIANTS
    )
    f_failed = figure("failed", "failed (an error)", "count", better="lower", impls=VARIANTS, chart=False)
    f_hung = figure(
        "hung", "hung (not open after 10 s)", "count", better="lower", impls=VARIANTS, chart=False
    )
    f_delayed = figure("delayed", "delayed > 0.5 s (opened)", "count", better="lower", impls=VARIANTS,
                       chart=False)  # fmt: skip
    f_down = figure(
        "down_s", "frozen node marked DOWN after", "s", better="lower", impls=VARIANTS, chart=False
    )
    figures = [f_bad, f_failed, f_hung, f_delayed, f_down]
    raw: list[dict[str, Any]] = []
    notes: list[str] = []
    timelines: dict[str, list[dict[str, Any]]] = {}
    done = 0
    with Lab("bench-frozen-broker") as lab:
        stack = Stack.build(lab)
        boot = stack.rabbit.start()
        log(f"frozen-broker: cluster up in {boot:.1f} s")
        for r in range(planned):
            if not clock.next_round():
                notes.append(f"stopped after {r} of {planned} rounds: the part's time budget")
                break
            for variant in round_order(VARIANTS, r):
                try:
                    a, timeline = one(stack, variant, r)
                except Exception as exc:  # a failed run leaves None, the part goes on
                    notes.append(f"round {r} {variant}: {exc}"[:300])
                    log(f"frozen-broker r{r} {variant} failed: {exc!r}")
                    stack.reset()
                    continue
                add(f_bad, variant, a["failed_or_hung"])
                add(f_failed, variant, a["failed"])
                add(f_hung, variant, a["hung"])
                add(f_delayed, variant, a["delayed"])
                add(f_down, variant, a["marked_down_after_s"])
                raw.append({"round": r, "variant": variant, **a})
                timelines[variant] = timeline
            for f in figures:
                pad_samples(f, r + 1)
            done = r + 1
    charts: list[str] = []
    p = timeline_chart(timelines, results_dir() / "frozen-broker-timeline.png", event_label="SIGSTOP",
                       title=f"{VICTIM} frozen (SIGSTOP) for {FREEZE:g} s, a new AMQP client every 100 ms "
                       "(last round)")  # fmt: skip
    if p is not None:
        charts.append(rel(p))
    res = part_result(
        "frozen-broker",
        f"A frozen broker: a RabbitMQ node SIGSTOPped for {FREEZE:g} s, a new client connection every 100 ms",
        VARIANTS,
        figures,
        rounds=done,
        subject="tcplb",
        baseline="haproxy",
        notes=[
            "The full stack (client, two LB hosts, RabbitMQ 3.10.8 x3 with the management plugin). tcplb: "
            'protocol = "amqp" (timeout_greeting 1s), rabbitmq check (inter 1s, fastinter 250ms, rise 2, '
            "fall 2, timeout_check 1s), leastconn, retries 3, redispatch. HAProxy: mode tcp, leastconn, "
            "check inter 1s rise 2 fall 3 (TCP connect), retries 3, option redispatch.",
            "Each client connection does the full AMQP handshake to Open-Ok as guest; 'hung' = not open "
            "after 10 s, 'failed' = an error before that. Counted over the connections started while the "
            f"node was frozen ({FREEZE:g} s, about {FREEZE / INTERVAL:.0f} connections); the frozen node "
            "had no other clients.",
            "'marked DOWN after' is read from tcplb's stats JSON every 0.2 s; HAProxy's TCP check passes "
            "on a frozen node (the kernel completes the handshake), so it never marks it down.",
            *notes,
        ],
        raw={"runs": raw, "timelines_last_round": timelines},
    )
    res["charts"] = charts
    return res
