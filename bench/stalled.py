"""Stalled uploads: RSS growth of the LB per client that sends to a server that never reads (issue #10).

    python -m bench stalled [--rounds N] [--quick]

Topology (netns, one bridge): client 192.0.2.50 -> lb 192.0.2.10 -> srv 192.0.2.20. On srv a sink accepts
connections and never reads them. Per round, in rotating order, tcplb (default configuration: one process,
default ``bufsize``) and HAProxy (Debian defaults, threads = CPUs) get the same listener (no checks); the
client opens 1,000 connections through the LB and sends on every one of them until nothing moves any more
(every socket buffer on the way is full: the LB holds what it read and cannot write) or 30 s have passed.
Figure: (RSS with the 1,000 stalled uploads - RSS before they were opened) / 1,000, in KiB per connection.

What sits in kernel socket buffers is not RSS, and bounding it keeps the machine's TCP memory small: the
three namespaces get ``tcp_rmem``/``tcp_wmem`` of 4096 65536 131072 (at most about 0.5 MiB of kernel memory
per proxied connection, 0.5 GiB for the whole run). The LB's own buffers (tcplb's ``bufsize``, HAProxy's
``tune.bufsize``) do not depend on them.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from typing import Any

from bench.common import (
    PY,
    Budget,
    add,
    children_pids,
    figure,
    log,
    markdown_part,
    pad_samples,
    part_result,
    proc_rss_kib,
    raise_nofile,
    round_order,
)
from bench.lbs import LBSpec, listening, start_lb, wait_closed
from netns import Host, Lab, Proc, wait_until

LB_IP, SRV_IP, CLIENT_IP = "192.0.2.10", "192.0.2.20", "192.0.2.50"
PORT = 6000
CONNS = 1000
STALL_LIMIT = 30.0  # seconds of sending at most
IMPLS = ["tcplb", "haproxy"]
BUFS = {"net.ipv4.tcp_rmem": "4096 65536 131072", "net.ipv4.tcp_wmem": "4096 65536 131072"}

SINK = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4096)
    print("listening", flush=True)
    held = []
    while True:
        c, _ = s.accept()
        held.append(c)  # never read
        if len(held) % 250 == 0:
            print(f"accepted {len(held)}", flush=True)
""")

# opens N connections, then sends 64 KiB chunks round-robin on non-blocking sockets until a whole second
# passes without a byte going anywhere (or LIMIT seconds): prints "stalled <conns> <bytes> <seconds>", then
# holds the connections until killed
UPLOADER = textwrap.dedent("""
    import socket, sys, time
    host, port, n, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    socks = []
    for _ in range(n):
        c = socket.create_connection((host, port), timeout=10)
        c.setblocking(False)
        socks.append(c)
    print(f"connected {len(socks)}", flush=True)
    chunk = b"x" * 65536
    total, t0, idle_since = 0, time.monotonic(), None
    while time.monotonic() - t0 < limit:
        sent = 0
        for c in socks:
            try:
                sent += c.send(chunk)
            except BlockingIOError:
                pass
        total += sent
        now = time.monotonic()
        if sent:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= 1.0:
            break
        if not sent:
            time.sleep(0.1)
    print(f"stalled {len(socks)} {total} {time.monotonic() - t0:.1f}", flush=True)
    while True:
        time.sleep(3600)
""")


def build(lab: Lab) -> tuple[Host, Host, Host]:
    sw = lab.switch()
    client = lab.host("client", sysctls=BUFS)
    lb = lab.host("lb", sysctls=BUFS)
    srv = lab.host("srv", sysctls=BUFS)
    lab.link(client, sw, f"{CLIENT_IP}/24")
    lab.link(lb, sw, f"{LB_IP}/24")
    lab.link(srv, sw, f"{SRV_IP}/24")
    return client, lb, srv


def rss_kib(p: Proc) -> int | None:
    vals = [proc_rss_kib(x) for x in children_pids(p.pid)]
    got = [v for v in vals if v is not None]
    return sum(got) if got else None


def settled_rss(p: Proc, timeout: float = 10.0) -> int | None:
    """The LB's RSS once two readings 0.5 s apart are within 1 % (at most ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    last = rss_kib(p)
    while time.monotonic() < end:
        time.sleep(0.5)
        now = rss_kib(p)
        if last is not None and now is not None and abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def one(impl: str, lab: Lab, client: Host, lb: Host, srv: Host, n: int) -> dict[str, Any]:
    spec = LBSpec(binds=[(LB_IP, PORT)], servers=[("s1", SRV_IP, PORT)], check=False, maxconn=4000)
    p = start_lb(impl, lb, spec, name=f"stalled-{impl}", workdir=lab.workdir)
    up: Proc | None = None
    try:
        time.sleep(1.0)
        base = settled_rss(p)
        argv = [PY, "-c", UPLOADER, LB_IP, str(PORT), str(n), str(STALL_LIMIT)]
        up = client.start(argv, name=f"uploader-{impl}", ready_log="stalled", ready_timeout=STALL_LIMIT + 60)
        line = next(x for x in up.output().splitlines() if x.startswith("stalled"))
        _, conns, sent, secs = line.split()
        held = srv.run(["ss", "-Htn", "state", "established", f"sport = :{PORT}"], check=False).stdout
        at_sink = len([x for x in held.splitlines() if x.strip()])
        after = settled_rss(p)
        out: dict[str, Any] = {
            "impl": impl,
            "base_kib": base,
            "stalled_kib": after,
            "conns": int(conns),
            "at_sink": at_sink,
            "sent_bytes": int(sent),
            "send_seconds": float(secs),
        }
        if base is not None and after is not None and int(conns) == n and at_sink >= n:
            out["per_conn_kib"] = (after - base) / n
        return out
    finally:
        if up is not None:
            up.kill()
            up.wait(5)
        p.terminate(5)
        wait_closed(lb, LB_IP, PORT)


def run(rounds: int = 3, *, quick: bool = False, budget: float | None = None) -> dict[str, Any]:
    raise_nofile()
    clock = Budget(budget)
    planned = rounds
    n = 250 if quick else CONNS
    fig = figure("rss_per_conn_kib", f"RSS growth per stalled upload ({n} stalled)", "KiB/conn",
                 better="lower", impls=IMPLS)  # fmt: skip
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with Lab("bench-stalled") as lab:
        client, lb, srv = build(lab)
        for r in range(planned):
            if not clock.next_round():
                notes.append(f"stopped after {r} of {planned} rounds: the part's time budget")
                rounds = r
                break
            for impl in round_order(IMPLS, r):
                # the sink holds every connection it accepted: a fresh one per measurement keeps it bounded
                sink = srv.start([PY, "-c", SINK, SRV_IP, str(PORT)], name="sink", ready_log="listening")
                try:
                    row = {"round": r, **one(impl, lab, client, lb, srv, n)}
                except Exception as exc:  # a failed measurement leaves None, the run goes on
                    row = {"round": r, "impl": impl, "error": repr(exc)[:500]}
                    notes.append(f"round {r} {impl}: {exc!r}"[:300])
                finally:
                    sink.kill()
                    sink.wait(5)
                    wait_until(lambda: not listening(srv, SRV_IP, PORT), 10, what="sink closed")
                rows.append(row)
                add(fig, impl, row.get("per_conn_kib"))
                log(f"stalled r{r} {impl}: {row}")
    pad_samples(fig, rounds)
    notes += [
        f"{n} client connections through the LB to a server that accepts and never reads; the client sends "
        f"64 KiB chunks on every connection until a whole second passes without progress (at most "
        f"{STALL_LIMIT:g} s). Figure: (LB RSS with them - LB RSS before) / {n}, RSS read once it is stable "
        "(two readings 0.5 s apart within 1 %).",
        "tcplb: default configuration (one process, default `bufsize`), uvloop; HAProxy 2.6: Debian "
        "defaults (threads = CPUs, tune.bufsize 16 KiB). Same listener for both, no checks. Kernel socket "
        "buffers (not RSS) bounded in the namespaces: tcp_rmem/tcp_wmem 4096 65536 131072.",
    ]
    return part_result(
        "stalled",
        "Stalled uploads: LB memory per connection",
        IMPLS,
        [fig],
        rounds=rounds,
        subject="tcplb",
        baseline="haproxy",
        notes=notes,
        raw={"rows": rows, "conns": n},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stalled")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    print(markdown_part(run(args.rounds, quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
