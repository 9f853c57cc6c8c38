"""Latency added per round trip (what AMQP publisher confirms pay): tcplb, HAProxy and direct (issue #10).

    python -m bench rtt [--rounds N] [--quick]

Topology (netns, one bridge)::

    client 192.0.2.50 ── lbt 192.0.2.21 (tcplb) ──┐
                      └─ lbh 192.0.2.22 (HAProxy) ─┼─ echo 192.0.2.30, rmq1..3 192.0.2.11-13
                      └─ direct ───────────────────┘

Per round, in rotating order of tcplb / HAProxy / direct:

* *ping-pong*: one TCP connection (TCP_NODELAY on both ends) sends 64 bytes and waits for the 64-byte echo,
  again and again for D seconds: round trips per second. Client and echo server are small blocking Python
  loops, the same on every path.
* *publish, a confirm per message*: one AMQP connection publishes and waits for each message's confirm
  (``bench.amqpgen publish --window 1``) against the 3-node RabbitMQ cluster: 1 KiB persistent messages to
  a durable classic queue mirrored x3 (the setup being replaced), and 1 KiB transient messages to an
  unmirrored queue (the broker's fastest path: the LB's share of each round trip is largest).

Both LBs: tcplb's default configuration (one process, default ``bufsize``, uvloop) and HAProxy 2.6 with Debian
defaults, the same listeners (leastconn, check inter 1s rise 2 fall 3 for the brokers, no check for echo).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from typing import Any

from bench.amqp_bench import gen, quiesce
from bench.common import (
    PY,
    Budget,
    add,
    figure,
    log,
    markdown_part,
    pad_samples,
    part_result,
    round_order,
)
from bench.lbs import LBSpec, start_lb
from netns import Host, Lab
from netns.rabbitmq import RabbitCluster, available

IMPLS = ["tcplb", "haproxy", "direct"]
ECHO_IP, ECHO_PORT = "192.0.2.30", 7000
MSG = 64
SIZE = 1024

ECHO = textwrap.dedent("""
    import socket, sys, threading
    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with c:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                c.sendall(d)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(128)
    print("listening", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")

PINGPONG = textwrap.dedent("""
    import json, socket, sys, time
    host, port, size, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    c = socket.create_connection((host, port), timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"p" * size
    def once():
        c.sendall(msg)
        got = 0
        while got < size:
            d = c.recv(size - got)
            if not d:
                raise SystemExit("closed")
            got += len(d)
    end = time.monotonic() + 0.5  # warm-up: connection set up through the LB, caches
    while time.monotonic() < end:
        once()
    n, t0 = 0, time.monotonic()
    end = t0 + secs
    while True:
        once()
        n += 1
        if n % 64 == 0 and time.monotonic() >= end:
            break
    el = time.monotonic() - t0
    print(json.dumps({"round_trips": n, "elapsed": el, "rate": n / el, "rtt_us": el / n * 1e6}))
""")


def pingpong(client: Host, host: str, secs: float) -> dict[str, Any]:
    res = client.run([PY, "-c", PINGPONG, host, str(ECHO_PORT), str(MSG), str(secs)], check=False,
                     timeout=secs + 30)  # fmt: skip
    lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"ping-pong via {host} failed ({res.returncode}): {res.stderr[-800:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def run(rounds: int = 3, *, quick: bool = False, budget: float | None = None) -> dict[str, Any]:
    clock = Budget(budget)
    planned = rounds
    if not available():
        raise RuntimeError("RabbitMQ (Debian's rabbitmq-server) is not installed")
    secs = 2.0 if quick else 4.0
    dur = 2.0 if quick else 3.0
    f_pp = figure("pingpong", f"ping-pong, {MSG}-byte messages, one connection", "round trips/s", impls=IMPLS)
    f_cf = figure(
        "confirm1", "publish, a confirm per message (persistent, mirrored x3)", "msg/s", impls=IMPLS
    )
    f_ct = figure("confirm1_transient", "publish, a confirm per message (transient, unmirrored)", "msg/s",
                  impls=IMPLS)  # fmt: skip
    figures = [f_pp, f_cf, f_ct]
    samples: list[dict[str, Any]] = []
    notes: list[str] = []
    with Lab("bench-rtt") as lab:
        sw = lab.switch()
        cluster = RabbitCluster(lab, sw, memory="1GiB")
        hosts: dict[str, Host] = {}
        for name, ip in (("client", "192.0.2.50"), ("lbt", "192.0.2.21"), ("lbh", "192.0.2.22"),
                         ("echo", ECHO_IP)):  # fmt: skip
            hosts[name] = lab.host(name)
            lab.link(hosts[name], sw, f"{ip}/24")
        hosts["echo"].start([PY, "-c", ECHO, ECHO_IP, str(ECHO_PORT)], name="echo", ready_log="listening")
        log("rtt: booting the 3-node RabbitMQ cluster")
        boot = cluster.start()
        cluster.set_ha_policy()
        log(f"rtt: cluster up in {boot:.1f} s")
        servers = [(n.name, n.ip, 5672) for n in cluster.nodes]
        procs = []
        for impl, hname in (("tcplb", "lbt"), ("haproxy", "lbh")):
            h = hosts[hname]
            amqp = LBSpec(binds=[(h.ip, 5672)], servers=servers, redispatch=True, maxconn=2000)
            echo = LBSpec(binds=[(h.ip, ECHO_PORT)], servers=[("echo", ECHO_IP, ECHO_PORT)], check=False)
            procs.append(start_lb(impl, h, amqp, name=f"{impl}-amqp", workdir=lab.workdir))
            procs.append(start_lb(impl, h, echo, name=f"{impl}-echo", workdir=lab.workdir))
        time.sleep(2.5)  # rise: both LBs see the three nodes UP
        target = {"tcplb": hosts["lbt"].ip, "haproxy": hosts["lbh"].ip}
        client = hosts["client"]

        def measure(r: int, impl: str) -> None:
            pp = pingpong(client, target.get(impl, ECHO_IP), secs)
            add(f_pp, impl, pp["rate"])
            amqp_host = target.get(impl, cluster.nodes[0].ip)
            common = ["--window", "1", "--duration", str(dur), "--size", str(SIZE), "--delete"]
            quiesce(cluster)
            cf = gen(client, ["publish", "--host", amqp_host, "--queue", f"ha.rtt-r{r}-{impl}", *common],
                     dur + 60)  # fmt: skip
            add(f_cf, impl, cf["rate"])
            quiesce(cluster)
            ct = gen(client, ["publish", "--host", amqp_host, "--queue", f"rtt-r{r}-{impl}-tr", "--transient",
                              *common], dur + 60)  # fmt: skip
            add(f_ct, impl, ct["rate"])
            samples.append(
                {"round": r, "impl": impl, "pingpong": pp, "confirm1": cf, "confirm1_transient": ct}
            )
            log(f"rtt r{r} {impl}: ping-pong {pp['rate']:.0f}/s ({pp['rtt_us']:.0f} us), confirm per message "
                f"{cf['rate']:.0f} msg/s, transient {ct['rate']:.0f} msg/s")  # fmt: skip

        for r in range(planned):
            if not clock.next_round():
                notes.append(f"stopped after {r} of {planned} rounds: the part's time budget")
                rounds = r
                break
            for impl in round_order(IMPLS, r):
                try:
                    measure(r, impl)
                except Exception as exc:  # one failed measurement leaves None, the run goes on
                    notes.append(f"round {r} {impl}: {exc}"[:300])
                    log(f"rtt r{r} {impl} failed: {exc!r}")
                for f in figures:
                    while len(f["samples"][impl]) < r + 1:
                        add(f, impl, None)
        for p in procs:
            p.terminate()
    for f in figures:
        pad_samples(f, rounds)
    notes += [
        f"Ping-pong: one connection, {MSG}-byte request, {MSG}-byte echo, TCP_NODELAY, {secs:g} s per "
        "measurement after 0.5 s of warm-up; client and echo server are blocking Python loops (the same "
        "cost on every path, so the ratio to direct is the LB's share).",
        f"Confirm per message: bench/amqpgen.py `publish --window 1`, {SIZE}-byte messages, {dur:g} s per "
        "measurement; direct = to rmq1; through either LB leastconn picks the node. Cluster boot "
        f"{boot:.0f} s (not counted).",
    ]
    return part_result(
        "rtt",
        "Latency per round trip: ping-pong and a confirm per message",
        IMPLS,
        figures,
        rounds=rounds,
        subject="tcplb",
        baseline="direct",
        notes=notes,
        raw={"samples": samples, "msg": MSG, "size": SIZE, "pingpong_seconds": secs, "duration": dur},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rtt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    print(markdown_part(run(args.rounds, quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
