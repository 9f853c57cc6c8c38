"""Scale: RSS and CPU with 1,000 and 10,000 concurrent idle connections, and small-request latency under
that load; tcplb against HAProxy (issue 5, item 5).

Topology: ``client`` 192.0.2.50, ``lb`` 192.0.2.21, nginx backends ``b1..b3`` 192.0.2.31-33 on :80 (one
worker each, ``return 200 "hello\\n"``, header and keep-alive timeouts of 300 s so idle connections stay).

File descriptors: a proxied connection costs the LB two, and the hard ``RLIMIT_NOFILE`` here is 20,000 and
cannot be raised, so one LB process cannot hold 10,000 connections (HAProxy also refuses ``maxconn`` much
above 6,000 under that limit: lab-facts gotcha 8). Each implementation therefore runs as **two processes**
(ports 5001 and 5002, the same listener, ``maxconn 6000`` each) and the idle connections are spread evenly
over both; RSS and CPU are the sums over both processes, so both implementations pay the same base twice.

Per round, for each implementation in rotating order: start the two processes; at 0, 1,000 and 10,000 idle
connections (opened through the LB and verified on the backends) measure the RSS, the CPU over a few
seconds (three servers checked every second per process), and ``wrk -t1 -c20 --latency`` through port 5001
(requests/s, p50, p99).
"""

from __future__ import annotations

import functools
import json
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PY,
    ROOT,
    Budget,
    add,
    children_pids,
    cpu_percent,
    figure,
    log,
    pad_samples,
    parse_wrk,
    part_result,
    raise_nofile,
    round_order,
    rss_mib,
)
from bench.lbs import LBSpec, listening, start_lb
from netns import Host, Lab, Proc, wait_until

IMPLS = ["tcplb", "haproxy"]
PORTS = (5001, 5002)
LEVELS = (0, 1000, 10000)


def nginx_conf(h: Host, wd: Path) -> Path:
    tmp = wd / f"nginx-{h.name}"
    tmp.mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            worker_processes 1;
            worker_rlimit_nofile 19000;
            daemon off;
            pid {tmp}/nginx.pid;
            error_log {tmp}/error.log warn;
            events {{ worker_connections 12000; }}
            http {{
              access_log off;
              client_body_temp_path {tmp}/body;
              proxy_temp_path {tmp}/proxy;
              fastcgi_temp_path {tmp}/fastcgi;
              uwsgi_temp_path {tmp}/uwsgi;
              scgi_temp_path {tmp}/scgi;
              keepalive_timeout 300s;
              keepalive_requests 1000000;
              client_header_timeout 300s;
              server {{
                listen {h.ip}:80 backlog=4096;
                location / {{ return 200 "hello\\n"; }}
              }}
            }}
            """
        )
    )
    return conf


def established(h: Host, port: int) -> int:
    argv = ["ss", "-Htn", "state", "established", f"( sport = :{port} )"]
    out = h.run(argv, check=False, timeout=30).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def wrk(client: Host, url: str, seconds: float) -> dict[str, float | None]:
    res = client.run(["wrk", "-t1", "-c20", f"-d{seconds:g}s", "--latency", url], check=False,
                     timeout=seconds + 30)  # fmt: skip
    return parse_wrk(res.stdout)


def run(rounds: int = 2, *, quick: bool = False, budget: float | None = None) -> dict[str, Any]:
    clock = Budget(budget)
    planned = rounds
    raise_nofile()
    secs = 3.0 if quick else 4.0
    figs: dict[str, dict[str, Any]] = {}
    for n in LEVELS:
        tag = f"{n:,}" if n else "no"
        figs[f"rss{n}"] = figure(f"rss{n}", f"RSS, {tag} idle connections", "MiB", better="lower",
                                 impls=IMPLS)  # fmt: skip
        figs[f"cpu{n}"] = figure(f"cpu{n}", f"CPU, {tag} idle connections", "% of a core", better="lower",
                                 impls=IMPLS, chart=n == LEVELS[-1])  # fmt: skip
        figs[f"p50{n}"] = figure(f"p50{n}", f"wrk p50, {tag} idle connections", "ms", better="lower",
                                 impls=IMPLS, chart=n == LEVELS[-1])  # fmt: skip
        figs[f"p99{n}"] = figure(f"p99{n}", f"wrk p99, {tag} idle connections", "ms", better="lower",
                                 impls=IMPLS, chart=n == LEVELS[-1])  # fmt: skip
        figs[f"rps{n}"] = figure(f"rps{n}", f"wrk requests/s, {tag} idle connections", "req/s",
                                 impls=IMPLS, chart=False)  # fmt: skip
    raw: list[dict[str, Any]] = []
    notes: list[str] = []
    with Lab("bench-scale") as lab:
        sw = lab.switch()
        client = lab.host("client")
        lab.link(client, sw, "192.0.2.50/24")
        lbh = lab.host("lb")
        lab.link(lbh, sw, "192.0.2.21/24")
        backends: list[Host] = []
        for i in (1, 2, 3):
            h = lab.host(f"b{i}")
            lab.link(h, sw, f"192.0.2.{30 + i}/24")
            conf = nginx_conf(h, lab.workdir)
            h.start(["nginx", "-c", str(conf)], name="nginx", ready=functools.partial(listening, h, h.ip, 80))
            backends.append(h)
        servers = [(h.name, h.ip, 80) for h in backends]
        for r in range(planned):
            if not clock.next_round():
                notes.append(f"stopped after {r} of {planned} rounds: the part's time budget")
                rounds = r
                break
            for impl in round_order(IMPLS, r):
                lbs: list[Proc] = []
                holders: list[Proc] = []
                try:
                    for port in PORTS:
                        spec = LBSpec(binds=[(lbh.ip, port)], servers=servers, maxconn=6000,
                                      timeout_idle="10m")  # fmt: skip
                        lbs.append(start_lb(impl, lbh, spec, name=f"{impl}-{port}-r{r}", workdir=lab.workdir))
                    time.sleep(2.0)
                    held = 0
                    for n in LEVELS:
                        if n > held:
                            status = lab.workdir / f"hold-{impl}-r{r}-{n}.json"
                            argv = [PY, "-m", "bench.connload", "hold", "--targets",
                                    ",".join(f"{lbh.ip}:{p}" for p in PORTS), "--count", str(n - held),
                                    "--rate", "3000", "--status", str(status), "--no-greeting",
                                    "--hold", "600"]  # fmt: skip
                            holders.append(client.start(argv, name=f"hold-{impl}-{n}",
                                                        env={"PYTHONPATH": str(ROOT)}))  # fmt: skip
                            want = n - held

                            def opened(status: Path = status, want: int = want) -> bool:
                                try:
                                    st = json.loads(status.read_text())
                                except (OSError, ValueError):
                                    return False
                                if st["failed"]:
                                    raise RuntimeError(f"{st['failed']} idle connections failed")
                                return bool(st["open"] >= want)

                            wait_until(opened, 90, interval=0.2, what=f"{want} idle connections open")
                            held = n

                            def on_backends_ok(held: int = held) -> bool:
                                return sum(established(b, 80) for b in backends) >= held

                            wait_until(on_backends_ok, 60, interval=0.5, what=f"{held} on the backends")
                            time.sleep(1.0)
                        on_backends = sum(established(b, 80) for b in backends)
                        pids = [p for lb in lbs for p in children_pids(lb.pid)]
                        rss = rss_mib(pids)
                        cpu = cpu_percent(pids, secs)
                        w = wrk(client, f"http://{lbh.ip}:{PORTS[0]}/", secs)
                        add(figs[f"rss{n}"], impl, rss)
                        add(figs[f"cpu{n}"], impl, cpu)
                        add(figs[f"p50{n}"], impl, w["p50_ms"])
                        add(figs[f"p99{n}"], impl, w["p99_ms"])
                        add(figs[f"rps{n}"], impl, w["rps"])
                        raw.append({"round": r, "impl": impl, "idle": n, "on_backends": on_backends,
                                    "rss_mib": rss, "cpu_pct": cpu, "wrk": w})  # fmt: skip
                        log(
                            f"scale r{r} {impl} {n} idle ({on_backends} on backends): RSS {rss:.1f} MiB, "
                            f"CPU {cpu:.2f} %, wrk {w['rps']} req/s p50 {w['p50_ms']} p99 {w['p99_ms']} ms"
                        )
                except Exception as exc:
                    notes.append(f"round {r} {impl}: {exc}")
                    log(f"scale r{r} {impl} failed: {exc!r}")
                finally:
                    for p in holders:
                        p.terminate(10)
                    for lb in lbs:
                        lb.terminate(5)
                for f in figs.values():  # a failed round leaves None, not a shifted series
                    while len(f["samples"][impl]) < r + 1:
                        add(f, impl, None)
    for f in figs.values():
        pad_samples(f, rounds)
    order = [f"{k}{n}" for k in ("rss", "cpu", "p50", "p99", "rps") for n in LEVELS]
    notes = [
        "Each implementation runs as two processes (ports 5001/5002, maxconn 6000 each) because a proxied "
        "connection takes two descriptors and the hard RLIMIT_NOFILE here is 20,000; idle connections are "
        "spread evenly and RSS/CPU are summed over both processes.",
        f"CPU over {secs:g} s with 3 servers checked every second by each process; wrk -t1 -c20 -d{secs:g}s "
        "through port 5001 to nginx (6-byte body).",
        *notes,
    ]
    return part_result(
        "scale",
        "Scale: idle connections (two processes per implementation)",
        IMPLS,
        [figs[k] for k in order],
        rounds=rounds,
        subject="tcplb",
        baseline="haproxy",
        notes=notes,
        raw={"samples": raw},
    )
