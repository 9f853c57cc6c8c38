"""A backend dies under connection load: failed client connections and how long they hung (issue 5, item 7).

Topology: ``client`` 192.0.2.50, ``lb`` 192.0.2.21 (the LB under test on :5000), backends ``b1..b3``
192.0.2.31-33 (a plain TCP server on :9000 that greets each connection with ``hi\\n``).

Every variant gets the same listener: ``balance roundrobin``, ``check inter 1s rise 2 fall 3``, ``retries 3``,
``timeout connect 5s``; with and without redispatch:

* ``haproxy``: HAProxy 2.6 without ``option redispatch`` (lab-facts: a third of new connections failed for
  2.3 s, each after hanging 3 s);
* ``haproxy-redispatch``: with ``option redispatch`` (the last retry goes to another server);
* ``tcplb``: tcplb with ``redispatch = false``; its defaults otherwise (a refused live connect marks the
  server DOWN at once: ``on_error = "mark-down"``, HAProxy's ``observe layer4``, off by default there);
* ``tcplb-redispatch``: ``redispatch = true``.

A round of a variant: start the LB, wait 1.5 s, then the client opens 100 connections per second for 7 s
(``bench.connload burst``: a connection succeeds when the greeting arrives through the LB); 1 s in, ``b1`` is
SIGKILLed (its port closes, the host stays: connects are refused). Measured from the kill: failed
connections, how long each failed one hung, the slowest connection, the window in which connections failed.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from bench.common import (
    PY,
    ROOT,
    Budget,
    add,
    figure,
    log,
    pad_samples,
    part_result,
    rel,
    results_dir,
    round_order,
)
from bench.lbs import LBSpec, listening, start_lb
from bench.report import timeline_chart
from netns import Host, Lab, Proc, wait_until

VARIANTS = ["tcplb", "tcplb-redispatch", "haproxy", "haproxy-redispatch"]
RATE = 100.0
BEFORE = 1.0  # seconds of load before the kill
AFTER = 6.0  # seconds of load after it
BACKEND_PORT = 9000
LB_PORT = 5000


def start_backend(h: Host) -> Proc:
    argv = [PY, "-m", "bench.connload", "backend", "--host", h.ip, "--port", str(BACKEND_PORT)]
    return h.start(argv, name="backend", env={"PYTHONPATH": str(ROOT)},
                   ready=lambda: listening(h, h.ip, BACKEND_PORT), ready_timeout=15)  # fmt: skip


def analyse(conns: list[list[Any]], t_kill: float) -> dict[str, Any]:
    after = [c for c in conns if c[0] + c[1] >= t_kill]  # still open or started after the kill
    failed = [c for c in after if not c[2]]
    slow = [c for c in after if c[2] and c[1] > 0.5]
    return {
        "total": len(conns),
        "failed": len(failed),
        "failed_errors": sorted({str(c[3]) for c in failed}),
        "failed_hang_median": statistics.median([c[1] for c in failed]) if failed else None,
        "failed_hang_max": max(c[1] for c in failed) if failed else None,
        "slow_ok": len(slow),
        "slowest": max((c[1] for c in after), default=None),
        "fail_window": (max(c[0] for c in failed) - min(c[0] for c in failed)) if failed else 0.0,
        "last_failed_start": (max(c[0] for c in failed) - t_kill) if failed else None,
    }


def run(rounds: int = 3, *, quick: bool = False, budget: float | None = None) -> dict[str, Any]:
    clock = Budget(budget)
    planned = rounds
    f_failed = figure("failed", "failed connections", "count", better="lower", impls=VARIANTS)
    f_hang = figure("hang", "a failed connection hung (median)", "s", better="lower", impls=VARIANTS)
    f_slow = figure("slowest", "slowest connection after the kill", "s", better="lower", impls=VARIANTS)
    f_window = figure("window", "connections failed during", "s", better="lower", impls=VARIANTS)
    f_delayed = figure("delayed", "connections delayed > 0.5 s (succeeded)", "count", better="lower",
                       impls=VARIANTS, chart=False)  # fmt: skip
    figures = [f_failed, f_hang, f_slow, f_window, f_delayed]
    raw: list[dict[str, Any]] = []
    notes: list[str] = []
    timelines: dict[str, list[dict[str, Any]]] = {}
    with Lab("bench-backend-death") as lab:
        sw = lab.switch()
        client = lab.host("client")
        lab.link(client, sw, "192.0.2.50/24")
        lbh = lab.host("lb")
        lab.link(lbh, sw, "192.0.2.21/24")
        backends: dict[str, Host] = {}
        procs: dict[str, Proc] = {}
        for i in (1, 2, 3):
            h = lab.host(f"b{i}")
            lab.link(h, sw, f"192.0.2.{30 + i}/24")
            backends[h.name] = h
            procs[h.name] = start_backend(h)
        servers = [(n, h.ip, BACKEND_PORT) for n, h in backends.items()]

        def one(r: int, variant: str) -> None:
            if not procs["b1"].alive():
                procs["b1"] = start_backend(backends["b1"])
            spec = LBSpec(binds=[(lbh.ip, LB_PORT)], servers=servers, balance="roundrobin",
                          redispatch=variant.endswith("-redispatch"), maxconn=4000)  # fmt: skip
            lb = start_lb(variant, lbh, spec, name=f"{variant}-r{r}", workdir=lab.workdir)
            time.sleep(1.5)
            start_at = time.time() + 0.5
            argv = [PY, "-m", "bench.connload", "burst", "--host", lbh.ip, "--port", str(LB_PORT),
                    "--rate", str(RATE), "--duration", str(BEFORE + AFTER), "--timeout", "10",
                    "--start-at", str(start_at)]  # fmt: skip
            load = client.start(argv, name=f"load-{variant}-r{r}", env={"PYTHONPATH": str(ROOT)})
            time.sleep(max(0.0, start_at + BEFORE - time.time()))
            t_kill = time.time()
            procs["b1"].kill()
            rc = load.wait(BEFORE + AFTER + 20)
            lb.terminate(3)
            lines = [x for x in load.output().splitlines() if x.startswith("{")]
            if rc != 0 or not lines:
                log(f"backend-death {variant} r{r}: load failed ({rc}): {load.output()[-500:]}")
                for f in figures:
                    add(f, variant, None)
                return
            conns: list[list[Any]] = json.loads(lines[-1])["conns"]
            a = analyse(conns, t_kill)
            add(f_failed, variant, a["failed"])
            add(f_hang, variant, a["failed_hang_median"] if a["failed"] else 0.0)
            add(f_slow, variant, a["slowest"])
            add(f_window, variant, a["fail_window"])
            add(f_delayed, variant, a["slow_ok"])
            raw.append({"round": r, "variant": variant, **a})
            timelines[variant] = [
                {"t": round(c[0] - t_kill, 3), "dur": c[1], "ok": c[2]} for c in conns
            ]  # the last round's timeline is drawn
            log(f"backend-death r{r} {variant}: {a['failed']} failed of {a['total']} "
                f"(hung {a['failed_hang_median']} s), slowest {a['slowest']:.2f} s")  # fmt: skip
            wait_until(lambda: not listening(lbh, lbh.ip, LB_PORT), 10, what="LB port closed")

        for r in range(planned):
            if not clock.next_round():
                notes.append(f"stopped after {r} of {planned} rounds: the part's time budget")
                rounds = r
                break
            for variant in round_order(VARIANTS, r):
                try:
                    one(r, variant)
                except Exception as exc:  # a failed run leaves None, the part goes on
                    notes.append(f"round {r} {variant}: {exc}"[:300])
                    log(f"backend-death r{r} {variant} failed: {exc!r}")
                    for lb in lab.running():
                        if lb.name.startswith(variant):
                            lb.terminate(3)
                for f in figures:
                    while len(f["samples"][variant]) < r + 1:
                        add(f, variant, None)
    for f in figures:
        pad_samples(f, rounds)
    charts: list[str] = []
    p = timeline_chart(timelines, results_dir() / "backend-death-timeline.png",
                       title="A backend is SIGKILLed under 100 new connections/s (last round)")  # fmt: skip
    if p is not None:
        charts.append(rel(p))
    res = part_result(
        "backend-death",
        "A backend dies under connection load (100 new connections/s, check inter 1s rise 2 fall 3)",
        VARIANTS,
        figures,
        rounds=rounds,
        subject="tcplb",
        baseline="haproxy",
        notes=[
            "Same listener for all: balance roundrobin over 3 plain TCP backends, check inter 1s rise 2 "
            "fall 3, retries 3, timeout connect 5s. One backend is SIGKILLed (port closed, connects refused) "
            "1 s into "
            f"{BEFORE + AFTER:g} s of load at {RATE:g} new connections/s; a connection succeeds when the "
            "backend's greeting arrives through the LB.",
            "tcplb's default on_error = mark-down takes a server out at its first refused live connect; "
            "HAProxy's equivalent (observe layer4) is off by default and not enabled here.",
            "'failed connections' counts connections open at or started after the kill that never got the "
            "greeting (closed by the LB or timed out after 10 s); 'hung' is how long each of them waited.",
            *notes,
        ],
        raw={"runs": raw, "timelines_last_round": timelines},
    )
    res["charts"] = charts
    return res
