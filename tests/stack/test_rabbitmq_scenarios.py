"""RabbitMQ-aware scenarios on the full stack (issue 13): vrrpd + tcplb on lb1/lb2 with the ``rabbitmq``
check (clean AMQP probe + each node's management API) and a ``protocol = "amqp"`` listener, 3 RabbitMQ
3.10.8 nodes with the management plugin, a client.

Each scenario runs publishers (confirms) and consumers through the VIP and asserts no confirmed message lost
and no failed connection attempt (the load's own reconnects, and in the frozen-broker and maintenance
scenarios a new client connection every 100 ms: a connection fails when it does not reach Open-Ok within
10 s). Scenarios are kept short (they share the session lab): each fault lasts until its property is
proven, not a fixed time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from netns import wait_until
from netns.amqp import Burst
from netns.stack import CLIENT_ADDR, LB_ADDRS, VIP, Outcome, SpreadMonitor, Stack, spread

pytestmark = [pytest.mark.netns, pytest.mark.rabbitmq, pytest.mark.slow]

Record = Callable[[Outcome], None]

AFTER_DOWN = 30  # new client connections (3 s at 100 ms) that must all avoid the node once it is down


def word(status: object) -> str:
    """``"UP 1/2"`` -> ``"UP"`` (HAProxy's transitional statuses keep the current state first)."""
    return str(status).split()[0] if status else ""


def server(stack: Stack, name: str, lb: str = "lb1") -> dict[str, Any]:
    return stack.servers(lb).get(name, {})


def burst_failures(conns: list[list[Any]]) -> list[list[Any]]:
    return [c for c in conns if not c[2]]


def assert_clean(out: Outcome, stack: Stack) -> None:
    assert out.lost == [], f"confirmed but never consumed: {out.lost[:20]}"
    assert out.summary["confirmed"] > 0 and out.summary["consumed"] >= out.summary["confirmed"]
    assert not out.ledger.unexpected
    assert out.summary["failed_connection_attempts"] == 0, out.ledger.report()
    assert stack.vip_holders() == ["lb1"], out.timeline


def burst_figures(conns: list[list[Any]], t0: float) -> dict[str, Any]:
    failed = burst_failures(conns)
    return {
        "burst_connections": len(conns),
        "burst_failed": len(failed),
        "burst_failed_errors": sorted({str(c[3]) for c in failed}),
        "burst_slowest_s": round(max((c[1] for c in conns if c[0] >= t0), default=0.0), 3),
        "burst_delayed_over_0_5s": sum(1 for c in conns if c[0] >= t0 and c[1] > 0.5),
    }


def wait_burst(burst: Burst, more: int, timeout: float = 30.0) -> None:
    """Until ``more`` further connections of ``burst`` have been started (it paces itself: 100 ms each)."""
    base = burst.status()["started"]
    wait_until(lambda: burst.status()["started"] >= base + more, timeout, interval=0.1,
               what=f"{more} more burst connections")  # fmt: skip


def test_frozen_broker(stack: Stack, record: Record) -> None:
    """SIGSTOP of the Erlang VM of the node leastconn picks next (its port still accepts TCP, nothing
    answers AMQP) with a new client connection every 100 ms: no client connection fails (tcplb retries a
    silent broker elsewhere after timeout_greeting), the node is marked DOWN, no new client is sent there
    afterwards, SIGCONT brings it back. The freeze lasts until that is proven (DOWN, then 30 more
    connections): about 6 s, well under 20 s."""
    stack.start_lbs()
    load = stack.load(publishers=2, consumers=2, rate=100).start()
    load.wait_flowing(100)
    burst = stack.burst(interval=0.1)
    wait_burst(burst, 10)
    # the node leastconn picks next (fewest current connections): new clients are sure to be sent to it
    rows = stack.servers()
    name = min(sorted(rows), key=lambda n: int(rows[n]["scur"]))
    victim = stack.rabbit[name]
    t = stack.event(f"SIGSTOP {name}")
    victim.freeze()
    sent_at_freeze = int(server(stack, name)["lbtot"])
    row = wait_until(lambda: (s := server(stack, name)) and word(s.get("status")) == "DOWN" and s, 20,
                     interval=0.1, what=f"{name} DOWN on lb1")  # fmt: skip
    down_after = time.time() - t
    sent_before = int(row["lbtot"])
    wait_burst(burst, AFTER_DOWN)
    row_late = server(stack, name)
    frozen_for = time.time() - t
    tc = stack.event(f"SIGCONT {name}")
    victim.thaw()
    wait_until(lambda: word(server(stack, name).get("status")) == "UP", 30, interval=0.2, what=f"{name} UP")
    up_after = time.time() - tc
    wait_burst(burst, 10)
    load.wait_flowing(100, timeout=40)
    conns = burst.stop()
    out = stack.finish(load, "frozen broker", t, [("SIGCONT", tc)])
    out.extra.update(burst_figures(conns, t))
    out.extra.update({
        "frozen": name, "marked_down_after_s": round(down_after, 3), "frozen_for_s": round(frozen_for, 3),
        "up_after_sigcont_s": round(up_after, 3), "check_status_down": row.get("check_status"),
        "sent_to_frozen_before_down": sent_before - sent_at_freeze,
    })  # fmt: skip
    record(out)
    assert_clean(out, stack)
    # clients were sent to the silent node (and retried elsewhere after timeout_greeting), none failed
    assert sent_before > sent_at_freeze, (sent_at_freeze, row)
    assert not burst_failures(conns), burst_failures(conns)[:10]
    assert int(row_late["lbtot"]) == sent_before, (row, row_late)  # nothing sent to the frozen node
    assert word(row_late.get("status")) == "DOWN", row_late
    assert frozen_for < 20, frozen_for


def test_maintenance_drain_and_revive(stack: Stack, record: Record) -> None:
    """``rabbitmq-upgrade drain`` on rmq3 under load and a new client connection every 100 ms: tcplb stops
    sending it new connections (3.10 suspends its listeners: the first refused connect marks it DOWN and the
    client is retried elsewhere), its clients are closed by the broker (320) and reconnect elsewhere with no
    failed attempt; ``revive`` brings it back UP with slowstart (throttle below 100 %).

    A burst connection that tcplb had already placed on rmq3 when the drain closed the node's clients gets
    the same 320 "Node was put into maintenance mode" as the held clients: that is the broker closing its
    clients, as the issue expects, not a failed connection attempt. It is counted apart
    (``burst_closed_by_drain``), and only a connection started before tcplb saw rmq3 DOWN may end so."""
    stack.start_lbs()
    load = stack.load(publishers=2, consumers=2, rate=100).start()
    load.wait_flowing(100)
    burst = stack.burst(interval=0.1)
    wait_burst(burst, 10)
    victim = stack.rabbit["rmq3"]
    t = stack.event("rabbitmq-upgrade drain rmq3")
    victim.drain()
    drained_in = time.time() - t
    row = wait_until(lambda: (s := server(stack, "rmq3")) and word(s.get("status")) == "DOWN" and s, 20,
                     interval=0.1, what="rmq3 DOWN on lb1")  # fmt: skip
    down_at = time.time()
    sent_before = int(row["lbtot"])
    wait_burst(burst, AFTER_DOWN)
    load.wait_flowing(100, timeout=40)
    row_late = server(stack, "rmq3")
    tr = stack.event("rabbitmq-upgrade revive rmq3")
    victim.revive()
    ramp = wait_until(lambda: (s := server(stack, "rmq3")) and word(s.get("status")) == "UP" and s, 60,
                      interval=0.1, what="rmq3 UP after revive")  # fmt: skip
    up_after = time.time() - tr
    wait_burst(burst, 10)
    load.wait_flowing(100, timeout=40)
    conns = burst.stop()
    out = stack.finish(load, "maintenance drain and revive", t, [("revive", tr)])
    closed_by_drain = [
        c
        for c in burst_failures(conns)
        if "CONNECTION_FORCED" in str(c[3]) and "maintenance" in str(c[3]) and c[0] <= down_at
    ]
    out.extra.update(burst_figures(conns, t))
    out.extra.update({
        "burst_closed_by_drain": len(closed_by_drain),
        "drain_command_s": round(drained_in, 3), "check_status_down": row.get("check_status"),
        "up_after_revive_s": round(up_after, 3), "throttle_when_up": ramp.get("throttle"),
        "weight_when_up": ramp.get("weight"),
    })  # fmt: skip
    record(out)
    assert_clean(out, stack)
    failed = [c for c in burst_failures(conns) if c not in closed_by_drain]
    assert not failed, failed[:10]
    assert int(row_late["lbtot"]) == sent_before, (row, row_late)  # no new client sent to the drained node
    throttle = ramp.get("throttle")
    assert throttle is not None and int(throttle) < 100, ramp  # ramped, not the full weight at once


def test_memory_alarm(stack: Stack, record: Record) -> None:
    """The memory watermark of rmq1 lowered under load: publishers are blocked cluster-wide; no node is
    marked down, the alarm shows in tcplb's stats JSON and metrics, no connection is cut although tcplb's
    idle timeouts (5 s) are shorter than the alarm (heartbeats flow, the client does not give up on a
    blocked connection: pika's blocked_connection_timeout off), publishing resumes when the alarm clears."""
    stack.timeout_idle = "5s"
    stack.start_lbs()
    load = stack.load(publishers=2, consumers=2, rate=100, blocked_timeout=0).start()
    load.wait_flowing(100)
    victim = stack.rabbit["rmq1"]
    t = stack.event("memory watermark of rmq1 lowered")
    victim.lower_watermark()
    statuses: set[str] = set()
    metric = re.compile(r'tcplb_server_rabbitmq_alarm\{[^}]*server="rmq1"[^}]*resource="memory"[^}]*\} 1\b')

    def alarm_shown() -> bool:
        rows = stack.servers()
        statuses.update(f"{n}:{word(r.get('status'))}" for n, r in rows.items())
        shown = rows.get("rmq1", {}).get("alarms") == ["memory"]
        return shown and bool(metric.search(stack.lbs["lb1"].metrics()))

    wait_until(alarm_shown, 30, interval=0.2, what="rmq1's memory alarm in the stats JSON and the metrics")
    seen_at = time.time() - t
    confirmed_blocked = load.confirmed()

    def held_past_timeouts() -> bool:  # every server checked UP on each poll, for longer than timeout_idle
        alarm_shown()
        return time.time() - t > seen_at + 7.0

    wait_until(held_past_timeouts, 30, interval=0.2, what="the alarm held past tcplb's idle timeouts")
    blocked_progress = load.confirmed() - confirmed_blocked
    tc = stack.event("watermark of rmq1 restored")
    victim.restore_watermark()
    wait_until(lambda: server(stack, "rmq1").get("alarms") == [], 30, interval=0.2, what="alarm cleared")
    load.wait_flowing(100, timeout=40)
    resumed = (load.confirmed() - confirmed_blocked) > blocked_progress
    out = stack.finish(load, "memory alarm", t, [("cleared", tc)])
    out.extra.update({
        "alarm_shown_after_s": round(seen_at, 3), "statuses_seen": sorted(statuses),
        "confirms_while_blocked": blocked_progress, "tcplb_timeout_idle": stack.timeout_idle,
    })  # fmt: skip
    record(out)
    assert_clean(out, stack)
    assert all(s.endswith(":UP") for s in statuses), statuses  # no node marked down (nor going down)
    assert out.summary["disconnects"] == 0, out.ledger.report()  # no connection cut by tcplb's timeouts
    assert resumed and out.outage["cleared"] < 10, out.outage
    assert blocked_progress <= 4, blocked_progress  # the alarm did block the publishers (a few in flight)


def test_proxy_protocol_peer_host(stack: Stack, record: Record) -> None:
    """``proxy_protocol = true`` on the brokers (set at run time) and ``send_proxy = "v2"`` on tcplb:
    ``rabbitmqctl list_connections`` shows the client namespace's address as ``peer_host`` (and the VIP as
    ``host``) for every connection through the VIP; the checks (PROXY header describing their own socket,
    never LOCAL) keep every node UP."""
    stack.send_proxy = "v2"
    stack.rabbit.set_proxy_protocol(True)
    stack.start_lbs()
    load = stack.load(publishers=2, consumers=2, rate=100).start()
    load.wait_flowing(100)
    t = stack.event("list_connections")

    def through_vip() -> list[dict[str, str]]:
        rows = stack.rabbit.list_connections("peer_host", "peer_port", "host", "port", "user")
        vip = [r for r in rows if r.get("host") == VIP]
        if len(vip) < 4:
            raise ValueError(f"{len(vip)} of the load's 4 connections through the VIP yet: {rows}")
        return vip

    rows = wait_until(through_vip, 30, interval=0.5, what="the load's 4 connections listed")
    all_rows = stack.rabbit.list_connections("peer_host", "host", "user")
    statuses = {n: word(r.get("status")) for n, r in stack.servers().items()}
    load.wait_flowing(50)
    out = stack.finish(load, "PROXY protocol", t, [])
    out.extra.update({"connections_through_vip": rows, "statuses": statuses})
    record(out)
    assert_clean(out, stack)
    assert {r["peer_host"] for r in rows} == {CLIENT_ADDR}, rows
    assert all(r["user"] == "guest" for r in rows), rows
    # nothing of the load's shows the balancer's own address (those would be relayed without a header)
    lb_rows = [r for r in all_rows if r.get("peer_host") in LB_ADDRS.values() and r.get("user") == "guest"]
    assert not lb_rows, lb_rows
    assert set(statuses.values()) == {"UP"}, statuses


HELD = 60  # long-lived client connections in the rolling restart
SETTLE = 30.0  # the spread is judged this long after the last node is back
# The planner bounds the top only: at most ceil(share * (1 + tolerance)) per node, so with 64 connections
# on 3 nodes tolerance 0.05 allows 23/23/18 (-16 % for the third; measured so in the first run);
# 0.03 allows 22 per node with the 64 here (60 + the load's 4), but with 62 the lowest could be 18 (-12.9 %:
# bench/rolling.py measured that). Tolerance 0 allows ceil(share) per node: 22 with 64 and 21 with 62, so the
# lowest holds at least 20 either way (-6 % / -3 %), as bench/rolling.py configures it. settle 2 s: the
# clients here are back within a second.
REBALANCE = {"enabled": "true", "tolerance": "0", "rate": "5", "settle": '"2s"'}


def test_rolling_restart_with_rebalancing(stack: Stack, record: Record) -> None:
    """60 long-lived pika connections (reopened whenever closed) and a publisher-confirm load; the three
    nodes restarted one at a time the RabbitMQ way (drain, stop, start): 0 lost, 0 failed connects, and
    30 s after the last node is back the per-node connection counts are within ±10 % of even, because
    tcplb's rebalancing (on) moves surplus connections back to each returning node (a broker-side close,
    320, that the clients recover from). The longest scenario of the file (three node restarts)."""
    stack.rebalance = dict(REBALANCE)
    stack.start_lbs()
    load = stack.load(publishers=2, consumers=2, rate=100).start()
    load.wait_flowing(100)
    holder = stack.hold(HELD)
    holder.wait_open(60)
    mon = SpreadMonitor(stack.lbs["lb1"], interval=1.0).start()
    t = stack.event("rolling restart")
    marks = stack.rolling_restart()
    last_back = marks[-1][0]
    wait_until(lambda: mon.samples and mon.samples[-1][0] >= last_back + SETTLE, SETTLE + 30, interval=0.5,
               what=f"{SETTLE:g} s of samples after the last node is back")  # fmt: skip
    counts = mon.last()
    mon.stop()
    rows = stack.servers()
    held = holder.stop()
    load.wait_flowing(50, timeout=40)
    out = stack.finish(load, "rolling restart with rebalancing", t, [(m, ts) for ts, m in marks])
    series = [(round(ts - t, 1), c) for ts, c in mon.samples]
    out.extra.update({
        "counts_30s_after_last_back": counts, "spread_30s_after_last_back": round(spread(counts), 3),
        "series": series, "marks": [(round(ts - t, 1), m) for ts, m in marks],
        "held": {k: held.get(k) for k in ("attempts", "failed_attempts", "disconnects", "closed_by_broker")},
        "rebalance_closes": {n: r.get("rebalance_closes") for n, r in rows.items()},
    })  # fmt: skip
    record(out)
    assert_clean(out, stack)
    assert held["failed_attempts"] == 0, held["events"][-20:]
    assert spread(counts) <= 0.10, (counts, series[-10:])
