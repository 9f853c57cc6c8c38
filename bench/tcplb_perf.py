"""tcplb vs Debian's HAProxy 2.6, side by side in one run: bulk TCP, small requests, churn, idle footprint.

    python -m bench.tcplb_perf [--rounds N] [--quick]

Topology (netns): client 192.0.2.50 -> lb 192.0.2.10 -> srv 192.0.2.20, one bridge. Implementations, in
alternating order every round (bench.common.round_order):

* ``haproxy``         HAProxy 2.6, mode tcp, Debian defaults (threads = CPUs), no splice
* ``haproxy-splice``  the same with ``option splice-request`` + ``option splice-response`` (``splice-auto``
                      never engages, see lab-facts.md)
* ``haproxy-1t``      HAProxy defaults with ``nbthread 1``: the single core tcplb has (no target; context)
* ``tcplb``           tcplb on uvloop

Figures per round: iperf3 single stream (Gbit/s), wrk 20 keep-alive connections to nginx returning 6 bytes
(req/s), wrk ``Connection: close`` 50 concurrent (req/s). Once per implementation (tcplb vs HAProxy
default): RSS with 10,000 idle connections held through the LB, and idle RSS / CPU with three servers
checked every second. Ratios tcplb/HAProxy per round and their medians; JSON + Markdown into bench/results/.

``run(rounds) -> dict`` is the entry point used by ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PY,
    RESULTS,
    ROOT,
    add,
    children_pids,
    cpu_percent,
    figure,
    log,
    markdown_part,
    parse_wrk,
    part_result,
    proc_rss_kib,
    raise_nofile,
    ratios,
    round_order,
    write_json,
)
from netns import Host, Lab, Proc, wait_until

LB_IP, SRV_IP, CLIENT_IP = "192.0.2.10", "192.0.2.20", "192.0.2.50"
IPERF, WEB, HOLD = 5201, 80, 9000
NOFILE: list[str] = []  # the hard RLIMIT_NOFILE (20000 here) cannot be raised: no CAP_SYS_RESOURCE
IMPLS = ["haproxy", "haproxy-splice", "haproxy-1t", "tcplb", "tcplb-2w", "tcplb-splice"]

HOLD_SERVER = textwrap.dedent("""
    import asyncio, sys
    class P(asyncio.Protocol):
        def connection_made(self, t): self.t = t
        def data_received(self, d): pass
    async def main():
        s = await asyncio.get_running_loop().create_server(P, sys.argv[1], int(sys.argv[2]), backlog=4096)
        print("listening", flush=True)
        await s.serve_forever()
    asyncio.run(main())
""")

HOLD_CLIENT = textwrap.dedent("""
    import asyncio, sys
    async def main():
        host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        loop = asyncio.get_running_loop()
        conns, sem = [], asyncio.Semaphore(200)
        async def one():
            async with sem:
                t, _ = await loop.create_connection(asyncio.Protocol, host, port)
                conns.append(t)
        await asyncio.gather(*(one() for _ in range(n)))
        print(f"held {len(conns)}", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
""")


def haproxy_cfg(splice: bool, servers3: bool = False, one_thread: bool = False) -> str:
    lines = [
        "global",
        # 2 descriptors per connection (+ 2 per pipe with splice) must fit the hard limit of 20,000
        f"  maxconn {7000 if splice else 9900}",
        *(["  nbthread 1"] if one_thread else []),
        "defaults",
        "  mode tcp",
        "  timeout connect 5s",
        "  timeout client 3h",
        "  timeout server 3h",
        *(["  option splice-request", "  option splice-response"] if splice else []),
    ]
    if servers3:
        lines += ["listen idle", f"  bind {LB_IP}:{WEB}", "  balance leastconn"]
        lines += [f"  server s{i} {SRV_IP}:{WEB} check inter 1s" for i in (1, 2, 3)]
        return "\n".join(lines) + "\n"
    for name, port in (("iperf", IPERF), ("web", WEB), ("hold", HOLD)):
        lines += [
            f"listen {name}",
            f"  bind {LB_IP}:{port}",
            "  balance leastconn",
            f"  server s1 {SRV_IP}:{port}",
        ]
    return "\n".join(lines) + "\n"


def cfg_head(workers: int = 1) -> str:
    """[global] and [defaults] of every tcplb configuration the benchmarks use (bench.redesign too)."""
    return textwrap.dedent(f"""
        [global]
        workers = {workers}
        maxconn = 9990
        hard_stop_after = "2s"
        log = "none"
        [defaults]
        timeout_connect = "5s"
        timeout_client = "3h"
        timeout_server = "3h"
    """)


def tcplb_cfg(servers3: bool = False, workers: int = 1, splice: bool = False) -> str:
    head = cfg_head(workers)
    if servers3:
        srv = ", ".join(f'{{ name = "s{i}", address = "{SRV_IP}:{WEB}" }}' for i in (1, 2, 3))
        return head + textwrap.dedent(f"""
            [listen.idle]
            bind = ["{LB_IP}:{WEB}"]
            check = {{ type = "tcp", inter = "1s" }}
            server = [{srv}]
        """)
    out = head
    for name, port in (("iperf", IPERF), ("web", WEB), ("hold", HOLD)):
        out += textwrap.dedent(f"""
            [listen.{name}]
            bind = ["{LB_IP}:{port}"]
            splice = {"true" if splice else "false"}
            check = false
            server = [{{ name = "s1", address = "{SRV_IP}:{port}" }}]
        """)
    return out


def _listening(host: Host, port: int) -> bool:
    out = host.run(["ss", "-Hltn"], check=False).stdout
    return any(f"{LB_IP}:{port}" in line for line in out.splitlines())


def start_impl(impl: str, lb: Host, workdir: Path, servers3: bool = False) -> Proc:
    if impl.startswith("haproxy"):
        cfg = workdir / f"{impl}{'-idle' if servers3 else ''}.cfg"
        cfg.write_text(haproxy_cfg(impl == "haproxy-splice", servers3, one_thread=impl == "haproxy-1t"))
        argv = [*NOFILE, "haproxy", "-db", "-f", str(cfg)]
        env: dict[str, str] = {}
    else:
        cfg = workdir / f"{impl}{'-idle' if servers3 else ''}.toml"
        workers, splice = (2 if impl == "tcplb-2w" else 1), impl == "tcplb-splice"
        cfg.write_text(tcplb_cfg(servers3, workers=workers, splice=splice))
        argv = [*NOFILE, PY, "-m", "tcplb", "-c", str(cfg), "--loop", "uvloop"]
        env = {"PYTHONPATH": str(ROOT)}
    ports = [WEB] if servers3 else [IPERF, WEB, HOLD]
    p = lb.start(
        argv, name=impl, env=env, ready=lambda: all(_listening(lb, pt) for pt in ports), ready_timeout=20
    )
    return p


def stop_impl(p: Proc, lb: Host) -> None:
    p.terminate(5)
    wait_until(lambda: not _listening(lb, WEB), 10, interval=0.1, what="LB closed")


def lb_pid(p: Proc) -> int:
    """The LB's own PID (prlimit exec()s in place, so it is the started PID)."""
    return p.pid


def iperf(client: Host, secs: int) -> float | None:
    r = client.run(
        ["iperf3", "-c", LB_IP, "-p", str(IPERF), "-t", str(secs), "-J"], check=False, timeout=secs + 30
    )
    try:
        return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9
    except (ValueError, KeyError):
        log(f"iperf3 failed: {r.stdout[-300:]} {r.stderr[-300:]}")
        return None


def wrk(client: Host, secs: int, conns: int, close: bool) -> tuple[float | None, float]:
    argv = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    r = client.run([*argv, f"http://{LB_IP}:{WEB}/"], check=False, timeout=secs + 30)
    res = parse_wrk(r.stdout)
    return res["rps"], res["errors"] or 0.0


def build(lab: Lab) -> tuple[Host, Host, Host]:
    sw = lab.switch()
    # churn leaves tens of thousands of TIME-WAIT sockets (60 s each) in every namespace; without reuse and a
    # wide port range the implementation that runs last in a round would meet an exhausted port space
    # (RabbitMQ's networking guide gives the same advice for hosts with connection churn)
    churn = {"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "1024 65000"}
    client = lab.host("client", sysctls=churn)
    lb = lab.host("lb", sysctls=churn)
    srv = lab.host("srv", sysctls=churn)
    lab.link(client, sw, f"{CLIENT_IP}/24")
    lab.link(lb, sw, f"{LB_IP}/24")
    lab.link(srv, sw, f"{SRV_IP}/24")
    return client, lb, srv


def start_backends(srv: Host, workdir: Path) -> None:
    conf = workdir / "nginx.conf"
    conf.write_text(
        textwrap.dedent(f"""
        worker_processes 1;
        worker_rlimit_nofile 20000;
        daemon off;
        pid {workdir}/nginx.pid;
        error_log {workdir}/nginx-error.log;
        events {{ worker_connections 19000; }}
        http {{
          access_log off;
          keepalive_requests 1000000;
          server {{ listen {SRV_IP}:{WEB} backlog=4096; location / {{ return 200 "hello\\n"; }} }}
        }}
    """)
    )
    srv.start(
        [*NOFILE, "nginx", "-c", str(conf), "-e", str(workdir / "nginx-error.log")],
        name="nginx",
        ready=lambda: (
            "LISTEN" in srv.run(["ss", "-Hltn", f"sport = :{WEB}"], check=False).stdout
            or bool(srv.run(["ss", "-Hltn", f"sport = :{WEB}"], check=False).stdout.strip())
        ),
    )
    srv.start(
        ["iperf3", "-s", "-B", SRV_IP, "-p", str(IPERF)],
        name="iperf3",
        ready=lambda: bool(srv.run(["ss", "-Hltn", f"sport = :{IPERF}"], check=False).stdout.strip()),
    )
    srv.start([*NOFILE, PY, "-c", HOLD_SERVER, SRV_IP, str(HOLD)], name="hold", ready_log="listening")


def idle_conns(client: Host, lb: Host, p: Proc, n: int) -> float | None:
    base = proc_rss_kib(lb_pid(p))
    holder = client.start(
        [*NOFILE, PY, "-c", HOLD_CLIENT, LB_IP, str(HOLD), str(n)],
        name=f"hold-{p.name}",
        ready_log=f"held {n}",
        ready_timeout=120,
    )
    time.sleep(1.0)
    rss = proc_rss_kib(lb_pid(p))
    holder.kill()
    holder.wait(5)
    log(f"  {p.name}: RSS {base} KiB idle -> {rss} KiB with {n} connections")
    if rss is None or base is None:
        return None
    return (base + (rss - base) * 10000 / n) / 1024  # scaled to 10,000 connections


def run(rounds: int = 3, quick: bool = False) -> dict[str, Any]:
    raise_nofile()
    secs = 3 if quick else 5
    # 10,000 proxied connections need 20,000+ descriptors in the LB; the hard limit here is 20,000 and cannot
    # be
    # raised (no CAP_SYS_RESOURCE), so 9,900 are held and the RSS is scaled linearly to 10,000
    n_idle = 2000 if quick else 9900
    figs = {
        "bulk": figure("bulk", "iperf3 single stream", "Gbit/s", impls=IMPLS, group="throughput"),
        "small": figure(
            "small", "wrk 20 keep-alive conns, 6-byte answers", "req/s", impls=IMPLS, group="requests"
        ),
        "churn": figure("churn", "wrk Connection: close, 50 concurrent", "req/s", impls=IMPLS, group="churn"),
    }
    extra = {
        "idle10k": figure(
            "idle10k",
            f"RSS with 10,000 idle connections (scaled from {n_idle})",
            "MiB",
            better="lower",
            impls=["haproxy", "tcplb"],
            group="footprint",
        ),
        "idle_rss": figure(
            "idle_rss",
            "idle RSS, 3 servers checked every 1s (all processes)",
            "MiB",
            better="lower",
            impls=["haproxy", "tcplb", "tcplb-2w"],
            group="footprint",
        ),
        "idle_cpu": figure(
            "idle_cpu",
            "idle CPU, 3 servers checked every 1s (all processes)",
            "%",
            better="lower",
            impls=["haproxy", "tcplb", "tcplb-2w"],
            group="footprint",
        ),
    }
    errors: dict[str, list[float]] = {i: [] for i in IMPLS}
    with Lab("tcplb-perf") as lab:
        workdir = lab.workdir
        client, lb, srv = build(lab)
        start_backends(srv, workdir)
        for r in range(rounds):
            for impl in round_order(IMPLS, r):
                p = start_impl(impl, lb, workdir)
                try:
                    bulk = iperf(client, secs)
                    small, e1 = wrk(client, secs, 20, close=False)
                    churn, e2 = wrk(client, secs, 50, close=True)
                finally:
                    stop_impl(p, lb)
                add(figs["bulk"], impl, bulk)
                add(figs["small"], impl, small)
                add(figs["churn"], impl, churn)
                errors[impl].append(e1 + e2)
                log(
                    f"round {r + 1} {impl}: bulk {bulk} Gbit/s, small {small} req/s, churn {churn} req/s, "
                    f"errors {e1 + e2:g}"
                )
        for impl in ("haproxy", "tcplb", "tcplb-2w"):
            if impl != "tcplb-2w":
                p = start_impl(impl, lb, workdir)
                try:
                    add(extra["idle10k"], impl, idle_conns(client, lb, p, n_idle))
                finally:
                    stop_impl(p, lb)
            p = start_impl(impl, lb, workdir, servers3=True)
            try:
                time.sleep(3.0)
                pids = children_pids(lb_pid(p))
                cpu = cpu_percent(pids, 10.0 if not quick else 5.0)
                rss = sum(proc_rss_kib(x) or 0 for x in pids) or None
                add(extra["idle_rss"], impl, rss / 1024 if rss else None)
                add(extra["idle_cpu"], impl, cpu)
                log(f"  {impl} idle: RSS {rss} KiB, CPU {cpu:.2f}%" if cpu is not None else f"  {impl} idle")
            finally:
                stop_impl(p, lb)

    def med(xs: list[float | None]) -> float | None:
        v = [x for x in xs if x is not None]
        return statistics.median(v) if v else None

    s = {k: f["samples"] for k, f in figs.items()}
    ratio = {
        "bulk_vs_haproxy": med(ratios(s["bulk"]["tcplb"], s["bulk"]["haproxy"])),
        # like for like: both with splice(2) (tcplb: `splice = true` on the listener)
        "bulk_splice_vs_haproxy_splice": med(ratios(s["bulk"]["tcplb-splice"], s["bulk"]["haproxy-splice"])),
        "bulk_vs_haproxy_splice": med(ratios(s["bulk"]["tcplb"], s["bulk"]["haproxy-splice"])),
        "small_vs_haproxy": med(ratios(s["small"]["tcplb"], s["small"]["haproxy"])),
        "small_vs_haproxy_2workers": med(ratios(s["small"]["tcplb-2w"], s["small"]["haproxy"])),
        # HAProxy by default runs one thread per CPU (two here); tcplb's default is one process, and
        # `workers = 2` is the like-for-like configuration
        "churn_vs_haproxy_2workers": med(ratios(s["churn"]["tcplb-2w"], s["churn"]["haproxy"])),
        "churn_vs_haproxy": med(ratios(s["churn"]["tcplb"], s["churn"]["haproxy"])),
        "churn_vs_haproxy_1thread": med(ratios(s["churn"]["tcplb"], s["churn"]["haproxy-1t"])),
    }
    targets = {
        "bulk_vs_haproxy": 1.3,
        "bulk_splice_vs_haproxy_splice": 1.0,
        "small_vs_haproxy": 0.9,
        "small_vs_haproxy_2workers": 0.9,
        "churn_vs_haproxy_2workers": 0.7,
    }
    e = {k: f["samples"] for k, f in extra.items()}
    footprint = {
        "idle10k_mib": med(e["idle10k"]["tcplb"]),
        "idle_rss_mib": med(e["idle_rss"]["tcplb"]),
        "idle_cpu_pct": med(e["idle_cpu"]["tcplb"]),
    }
    limits = {"idle10k_mib": 150.0, "idle_rss_mib": 35.0, "idle_cpu_pct": 0.5}
    notes = [
        (
            f"median per-round ratio {k}: {v:.2f}x (target >= {targets[k]}x) "
            f"{'MET' if v >= targets[k] else 'NOT MET'}"
            if k in targets
            else f"median per-round ratio {k}: {v:.2f}x (no target)"
        )
        if v is not None
        else f"{k}: n/a"
        for k, v in ratio.items()
    ]
    notes += [
        f"tcplb {k}: {v:.2f} (limit <= {limits[k]}) {'MET' if v <= limits[k] else 'NOT MET'}"
        if v is not None
        else f"{k}: n/a"
        for k, v in footprint.items()
    ]
    notes.append(
        "haproxy = HAProxy 2.6 defaults (no splice, one thread per CPU: 2 here); haproxy-splice = option "
        "splice-request + splice-response; haproxy-1t = defaults with nbthread 1 (the same single core as "
        "tcplb); tcplb on uvloop, one process (the default); tcplb-2w = `workers = 2` (two relay processes "
        "on SO_REUSEPORT listeners with shared accounting); tcplb-splice = `splice = true` (data phase "
        "through splice(2), one process); client/lb/server in separate namespaces on one "
        "bridge"
    )
    res = part_result(
        "tcplb",
        "tcplb vs HAProxy: throughput, requests, churn, footprint",
        IMPLS,
        [*figs.values(), *extra.values()],
        rounds=rounds,
        subject="tcplb",
        baseline="haproxy",
        notes=notes,
        raw={
            "ratios": ratio,
            "targets": targets,
            "footprint": footprint,
            "limits": limits,
            "wrk_errors": errors,
        },
    )
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tcplb_perf")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.rounds, quick=args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "tcplb_perf.json", res)
    md = markdown_part(res)
    (RESULTS / "tcplb_perf.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
