"""AMQP against the 3-node RabbitMQ cluster: through tcplb, through HAProxy, and direct (issue 5, item 4).

Topology (one lab, one switch)::

    client 192.0.2.50 ── lbt 192.0.2.21 (tcplb) ──┐
                      └─ lbh 192.0.2.22 (HAProxy) ─┼─ rmq1..3 192.0.2.11-13 (RabbitMQ 3.10 cluster)
                      └─ direct ───────────────────┘

Both LBs listen on their own address:5672 with the same listener (leastconn over the three nodes, check inter
1s rise 2 fall 3, retries 3, redispatch). Queues are durable classic queues mirrored to all three nodes
(``ha-mode: all``, the policy of the setup being replaced); messages are 1 KiB and persistent.

Per round, in rotating order of tcplb / HAProxy / direct:

* publish rate without confirms: one connection publishes as fast as the broker takes it for D seconds; a
  passive ``queue.declare`` after every 1,000 messages (at most two outstanding) bounds what waits in socket
  buffers, and the last one's reply ends the measurement (the messages in the queue then are counted);
* the same with transient messages to an unmirrored queue (the broker's fastest path: more load on the LB);
* publish rate with pipelined confirms: at most W unconfirmed messages in flight;
* publish-to-consume latency: a consumer connection and a publisher connection (they land on different nodes
  through either LB with leastconn; direct: publisher on rmq2, consumer on rmq1), 500 msg/s for D seconds,
  p50 and p99 of receive - send.

The generator is :mod:`bench.amqpgen` (raw asyncio AMQP framing). It reports its own CPU use, and each round
also runs two generators at once against one node directly on one queue: if the sum is not higher than one
generator's rate, the generator was not the limit.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from bench.common import (
    PY,
    ROOT,
    Budget,
    add,
    cpu_percent,
    figure,
    finite,
    log,
    pad_samples,
    part_result,
    proc_cpu_seconds,
    ratios,
    round_order,
    summary,
)
from bench.lbs import LBSpec, start_lb
from netns import Host, Lab
from netns.rabbitmq import RabbitCluster, available

IMPLS = ["tcplb", "haproxy", "direct"]
GEN2 = "direct, 2 generators"
WINDOW = 128
SIZE = 1024
LAT_RATE = 500


def gen(client: Host, args: list[str], timeout: float) -> dict[str, Any]:
    argv = [PY, "-m", "bench.amqpgen", *args]
    res = client.run(argv, env={"PYTHONPATH": str(ROOT)}, timeout=timeout, check=False)
    lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"amqpgen {args[0]} failed ({res.returncode}): {res.stderr[-1500:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def quiesce(cluster: RabbitCluster, limit: float = 40.0, timeout: float = 2.5) -> float:
    """Wait (bounded) until the three RabbitMQ VMs together use less than ``limit`` % of a core: the
    previous measurement's queue deletion and mirror traffic must not land in the next one."""
    pids = [n.server.pid for n in cluster.nodes if n.server is not None]
    t0 = time.monotonic()
    busy: float | None = None
    while time.monotonic() - t0 < timeout:
        busy = cpu_percent(pids, 0.5)
        if busy is not None and busy < limit:
            break
    waited = time.monotonic() - t0
    if waited >= timeout:
        log(f"amqp: brokers still busy ({busy or 0:.0f} % of a core) after {timeout:g} s; measuring anyway")
    return waited


def two_generators(
    client: Host, host: str, queue: str, dur: float
) -> tuple[list[dict[str, Any]], BaseException | None]:
    """Two generator processes publishing (no confirms) to one queue, starting at the same instant."""
    start_at = time.time() + 3.0
    out: list[dict[str, Any]] = []
    errs: list[BaseException] = []
    argv = ["publish", "--host", host, "--queue", queue, "--window", "0", "--start-at", str(start_at),
            "--duration", str(dur), "--size", str(SIZE)]  # fmt: skip

    def one() -> None:
        try:
            out.append(gen(client, argv, dur + 60))
        except BaseException as exc:
            errs.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errs:
        return out, errs[0]
    if len(out) != 2:
        return out, RuntimeError("a generator gave no result")
    return out, None


def run(rounds: int = 3, *, quick: bool = False, budget: float | None = None) -> dict[str, Any]:
    clock = Budget(budget)
    planned = rounds
    if not available():
        raise RuntimeError("RabbitMQ (Debian's rabbitmq-server) is not installed")
    dur = 2.0
    f_nc = figure("pub_noconfirm", "publish, no confirms", "msg/s", impls=[*IMPLS, GEN2])
    f_tr = figure("pub_transient", "publish, no confirms, transient, unmirrored", "msg/s", impls=IMPLS)
    f_cf = figure("pub_confirm", f"publish, confirms (window {WINDOW})", "msg/s", impls=IMPLS)
    f_p50 = figure("lat_p50", f"latency p50 at {LAT_RATE} msg/s", "ms", better="lower", impls=IMPLS)
    f_p99 = figure("lat_p99", f"latency p99 at {LAT_RATE} msg/s", "ms", better="lower", impls=IMPLS)
    f_lbcpu = figure("lb_cpu", "LB CPU while publishing (no confirms)", "% of a core", better="lower",
                     impls=["tcplb", "haproxy"], chart=False)  # fmt: skip
    f_gcpu = figure("gen_cpu", "generator CPU (no confirms)", "% of a core", better="info",
                    impls=[*IMPLS, GEN2], chart=False)  # fmt: skip
    figures = [f_nc, f_tr, f_cf, f_p50, f_p99, f_lbcpu, f_gcpu]
    samples: list[dict[str, Any]] = []
    notes: list[str] = []
    with Lab("bench-amqp") as lab:
        sw = lab.switch()
        cluster = RabbitCluster(lab, sw, memory="1GiB")  # the 256 MiB default alarms under this load
        hosts: dict[str, Host] = {}
        for name, ip in (("client", "192.0.2.50"), ("lbt", "192.0.2.21"), ("lbh", "192.0.2.22")):
            hosts[name] = lab.host(name)
            lab.link(hosts[name], sw, f"{ip}/24")
        log("amqp: booting the 3-node RabbitMQ cluster")
        boot = cluster.start()
        cluster.set_ha_policy()
        log(f"amqp: cluster up in {boot:.1f} s")
        servers = [(n.name, n.ip, 5672) for n in cluster.nodes]
        lbs = {}
        for impl, hname in (("tcplb", "lbt"), ("haproxy", "lbh")):
            h = hosts[hname]
            spec = LBSpec(binds=[(h.ip, 5672)], servers=servers, redispatch=True, maxconn=2000)
            lbs[impl] = start_lb(impl, h, spec, name=impl, workdir=lab.workdir)
        time.sleep(2.5)  # rise: both LBs see the three nodes UP (fully-up anyway; checks settle)
        target = {
            "tcplb": (hosts["lbt"].ip, hosts["lbt"].ip),
            "haproxy": (hosts["lbh"].ip, hosts["lbh"].ip),
            "direct": (cluster.nodes[1].ip, cluster.nodes[0].ip),  # (publish, consume)
        }
        client = hosts["client"]
        common = ["--duration", str(dur), "--size", str(SIZE), "--delete"]

        def pub(host: str, queue: str, *extra: str) -> dict[str, Any]:
            quiesce(cluster)
            return gen(client, ["publish", "--host", host, "--queue", queue, *extra, *common], dur + 60)

        def measure(r: int, impl: str) -> None:
            pub_host, cons_host = target[impl]
            q = f"ha.bench-r{r}-{impl}"
            lb = lbs.get(impl)
            quiesce(cluster)
            c0 = proc_cpu_seconds(lb.pid) if lb else None
            nc_args = ["publish", "--host", pub_host, "--queue", q + "-nc", "--window", "0", *common]
            nc = gen(client, nc_args, dur + 60)
            c1 = proc_cpu_seconds(lb.pid) if lb else None
            add(f_nc, impl, nc["rate"])
            add(f_gcpu, impl, nc["cpu_pct"])
            if lb is not None and c0 is not None and c1 is not None:
                add(f_lbcpu, impl, 100.0 * (c1 - c0) / max(nc["elapsed"], 1e-6))
            tr = pub(pub_host, f"bench-r{r}-{impl}-tr", "--window", "0", "--transient")
            add(f_tr, impl, tr["rate"])
            cf = pub(pub_host, q + "-cf", "--window", str(WINDOW))
            add(f_cf, impl, cf["rate"])
            lat_args = ["latency", "--host", pub_host, "--consume-host", cons_host, "--queue", q + "-lat",
                        "--rate", str(LAT_RATE), *common]  # fmt: skip
            quiesce(cluster)
            lat = gen(client, lat_args, dur + 60)
            add(f_p50, impl, lat["p50_ms"])
            add(f_p99, impl, lat["p99_ms"])
            samples.append({"round": r, "impl": impl, "noconfirm": nc, "transient": tr, "confirm": cf,
                            "latency": lat})  # fmt: skip
            log(f"amqp r{r} {impl}: {nc['rate']:.0f} msg/s (gen {nc['cpu_pct']:.1f} % CPU), transient "
                f"{tr['rate']:.0f}, confirms {cf['rate']:.0f} msg/s, latency p50 {lat['p50_ms']:.2f} "
                f"p99 {lat['p99_ms']:.2f} ms")  # fmt: skip

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
                    log(f"amqp r{r} {impl} failed: {exc!r}")
                for f in figures:
                    if impl in f["samples"]:
                        while len(f["samples"][impl]) < r + 1:
                            add(f, impl, None)
            # is the generator the limit? two at once, same queue, same node, same start
            quiesce(cluster)
            two, err = two_generators(client, target["direct"][0], f"ha.bench-r{r}-gen2", dur)
            cluster.delete_queues([f"ha.bench-r{r}-gen2"])
            if err is not None:
                notes.append(f"round {r}: two-generator check failed: {err!r}")
                add(f_nc, GEN2, None)
            else:
                add(f_nc, GEN2, sum(x["rate"] for x in two))
                add(f_gcpu, GEN2, max(x["cpu_pct"] for x in two))
                samples.append({"round": r, "impl": GEN2, "noconfirm": two})
                log(f"amqp r{r} two generators: {[round(x['rate']) for x in two]} msg/s")
        for lb in lbs.values():
            lb.terminate()
    for f in figures:
        pad_samples(f, rounds)
    notes += [
        f"3-node RabbitMQ {_rmq_version()} cluster, durable classic queues mirrored x3 (ha-mode all), "
        f"{SIZE}-byte persistent messages (the 'transient' row: non-persistent messages to an unmirrored "
        f"queue, the broker's fastest path, to load the LB more); {dur:g} s per measurement; generator: "
        "bench/amqpgen.py (raw asyncio AMQP 0-9-1, uvloop).",
        f"'{GEN2}': two generator processes (two connections) publishing to one queue on one node at the "
        f"same time, summed: {_gen2_text(f_nc, f_gcpu)}",
        "Latency: consumer and publisher on separate connections, landing on different nodes (leastconn); "
        "direct: publisher on rmq2, consumer on rmq1 (queue leader).",
        f"Cluster boot {boot:.0f} s (not counted).",
    ]
    return part_result(
        "amqp",
        "AMQP through the LB (3-node RabbitMQ cluster)",
        [*IMPLS, GEN2],
        figures,
        rounds=rounds,
        subject="tcplb",
        baseline="haproxy",
        notes=notes,
        raw={"samples": samples, "window": WINDOW, "size": SIZE, "duration": dur, "latency_rate": LAT_RATE},
    )


def _gen2_text(f_nc: dict[str, Any], f_gcpu: dict[str, Any]) -> str:
    r = summary(ratios(f_nc["samples"].get(GEN2, []), f_nc["samples"].get("direct", [])))["median"]
    cpu = max(finite([x for xs in f_gcpu["samples"].values() for x in xs]), default=None)
    text = f"{r:.2f}x one generator's direct rate (median per round). " if r is not None else ""
    if cpu is not None:
        text += f"Each generator used at most {cpu:.1f} % of a core, so the generator is not the limit; "
    return text + (
        "a second connection can raise the total because RabbitMQ handles each connection's channel in "
        "Erlang processes of its own (one connection is bounded by the broker's per-channel pipeline, on "
        "every path alike)."
    )


def _rmq_version() -> str:
    from bench.common import _dpkg_version

    return (_dpkg_version("rabbitmq-server") or "?").split("-")[0]
