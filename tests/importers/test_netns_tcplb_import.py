"""Behaviour, not syntax: tcplb running a configuration imported from an haproxy.cfg balances and checks as
HAProxy running the original does, on the same backends.

client (192.0.2.50) -> lbh (192.0.2.9, HAProxy with haproxy.cfg) and lbt (192.0.2.10, tcplb with the import)
-> s1..s3 (192.0.2.11-13, a named echo server each on 5672 and 5673). Both LBs check the same servers.

* roundrobin: the same servers, picked in the same order with equal weights (:5672); with weights 3/2/1
  (:5673) the same share in every window of sum(weights) picks (the order inside a window differs);
* checks: after s2 is killed both mark it DOWN after the same number of failed checks (`fall`), and UP again
  after `rise` good ones, read from each one's stats CSV (HAProxy's format, which tcplb serves too).
"""

from __future__ import annotations

import csv
import io
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netns import Host, Lab, Proc, wait_until
from rmqfd import haconf
from tcplb import importer

pytestmark = [pytest.mark.netns, pytest.mark.haproxy, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

HAPROXY_CFG = """\
# the shape of the corpus: defaults, unit-less timeouts, a stats listener
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2000
    timeout client 30s
    timeout server 30s
    retries 2
listen amqp
    bind :5672
    balance roundrobin
    server s1 192.0.2.11:5672 check inter 400 fastinter 400 downinter 400 rise 2 fall 3
    server s2 192.0.2.12:5672 check inter 400 fastinter 400 downinter 400 rise 2 fall 3
    server s3 192.0.2.13:5672 check inter 400 fastinter 400 downinter 400 rise 2 fall 3
listen weighted
    bind :5673
    balance roundrobin
    server s1 192.0.2.11:5673 weight 3
    server s2 192.0.2.12:5673 weight 2
    server s3 192.0.2.13:5673 weight 1
listen stats
    bind 127.0.0.1:8404
    mode http
    stats enable
    stats uri /stats
"""

ECHO = textwrap.dedent("""
    import asyncio, sys
    name = sys.argv[2].encode()
    async def h(r, w):
        try:
            data = await r.read(100)
            w.write(name + b":" + data)
            await w.drain()
        except OSError:
            pass
        w.close()
    async def main():
        a = await asyncio.start_server(h, sys.argv[1], 5672, reuse_address=True)
        b = await asyncio.start_server(h, sys.argv[1], 5673, reuse_address=True)
        print("listening", flush=True)
        await asyncio.gather(a.serve_forever(), b.serve_forever())
    asyncio.run(main())
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    out = []
    for _ in range(int(sys.argv[3])):
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
        s.sendall(b"ping")
        s.settimeout(5)
        out.append(s.recv(100).split(b":")[0].decode())
        s.close()
    print(" ".join(out))
""")

FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"

# The amqp proxy's server states, fetched every 50 ms by one process in the LB's namespace and logged with the
# time of each answer (CLOCK_MONOTONIC, the test's clock too): "<t> s1=UP s2=DOWN s3=UP". The check timings
# are read from these logs: polling by a new Python process per fetch (0.1-1 s each on a busy machine, two
# per round) made the measured DOWN/UP times late and their difference between the two LBs noisy by seconds.
POLL = textwrap.dedent("""
    import csv, io, sys, time, urllib.request
    while True:
        try:
            text = urllib.request.urlopen(sys.argv[1], timeout=3).read().decode()
        except OSError as exc:
            print(f"{time.monotonic():.4f} error={type(exc).__name__}", flush=True)
        else:
            t = time.monotonic()
            rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
            st = {r["svname"]: r["status"] for r in rows
                  if r.get("pxname") == "amqp" and r.get("svname") not in ("FRONTEND", "BACKEND")}
            line = " ".join(f"{k}={v.replace(' ', '_')}" for k, v in sorted(st.items()))
            print(f"{t:.4f}", line, flush=True)
        time.sleep(0.05)
""")


def samples(poller: Proc) -> list[tuple[float, dict[str, str]]]:
    """(time, {server: status}) of each answer the poller logged, in order."""
    out = []
    for line in poller.output().splitlines():
        try:
            t, *fields = line.split()
            out.append((float(t), dict(f.split("=", 1) for f in fields)))
        except ValueError:
            continue  # a line being written right now
    return out


def first_after(poller: Proc, t0: float, state: Callable[[str], bool]) -> float | None:
    """Seconds from ``t0`` to the first answer after ``t0`` whose s2 status satisfies ``state``."""
    for t, st in samples(poller):
        if t >= t0 and state(st.get("s2", "").replace("_", " ")):
            return t - t0
    return None


def is_down(status: str) -> bool:
    return status.startswith("DOWN")


def is_up(status: str) -> bool:
    return status == "UP"


def listening(host: Host, port: int) -> bool:
    out = host.run(["ss", "-Hltn"], check=False).stdout
    return f":{port} " in out


def status(host: Host, url: str) -> dict[str, str]:
    """Server -> status (UP/DOWN...) of the amqp proxy, from the stats CSV."""
    r = host.run([PY, "-c", FETCH, url], check=False, timeout=10)
    if r.returncode != 0:
        return {}
    rows = csv.DictReader(io.StringIO(r.stdout.lstrip("# ")))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("pxname") == "amqp" and row.get("svname") not in ("FRONTEND", "BACKEND")
    }


def picks(client: Host, ip: str, port: int, n: int) -> list[str]:
    return client.run([PY, "-c", CLIENT, ip, str(port), str(n)], timeout=60).stdout.split()


def test_imported_tcplb_balances_and_checks_as_haproxy(lab: Lab) -> None:
    sw = lab.switch()
    client = lab.host("client")
    lab.link(client, sw, "192.0.2.50/24")
    lbh, lbt = lab.host("lbh"), lab.host("lbt")
    lab.link(lbh, sw, "192.0.2.9/24")
    lab.link(lbt, sw, "192.0.2.10/24")
    servers: list[Host] = []
    echo: dict[str, Proc] = {}
    for i in (1, 2, 3):
        h = lab.host(f"s{i}")
        lab.link(h, sw, f"192.0.2.1{i}/24")
        servers.append(h)

    def start_echo(i: int) -> None:
        h = servers[i - 1]
        echo[f"s{i}"] = h.start(
            [PY, "-c", ECHO, f"192.0.2.1{i}", f"s{i}"],
            name=f"echo{i}",
            ready=lambda: listening(h, 5673),
            ready_timeout=30,
        )

    for i in (1, 2, 3):
        start_echo(i)

    cfg_path = lab.workdir / "haproxy.cfg"
    cfg_path.write_text(HAPROXY_CFG)
    text, rep = importer.convert_haproxy(haconf.parse_text(HAPROXY_CFG, str(cfg_path)))
    assert text is not None and not rep.blocking, rep.lines()
    toml_path = lab.workdir / "lb.toml"
    toml_path.write_text(text)

    lbh.start(
        ["haproxy", "-db", "-f", str(cfg_path)],
        name="haproxy",
        ready=lambda: listening(lbh, 5673) and listening(lbh, 8404),
        ready_timeout=30,
    )
    lbt.start(
        [PY, "-m", "tcplb", "-c", str(toml_path)],
        name="tcplb",
        env={"PYTHONPATH": str(ROOT)},
        ready=lambda: listening(lbt, 5673) and listening(lbt, 8404),
        ready_timeout=30,
    )
    urls = {
        "haproxy": (lbh, "http://127.0.0.1:8404/stats;csv"),
        "tcplb": (lbt, "http://127.0.0.1:8404/stats;csv"),
    }

    def all_up() -> bool:
        return all(status(h, u) == {"s1": "UP", "s2": "UP", "s3": "UP"} for h, u in urls.values())

    wait_until(all_up, 30, interval=0.2, what="every server UP on both")
    pollers = {name: h.start([PY, "-c", POLL, u], name=f"poll-{name}") for name, (h, u) in urls.items()}

    def polling() -> bool:  # each poller has answered (s2 UP) before s2 is killed: it sees the change
        return all((ss := samples(p)) and is_up(ss[-1][1].get("s2", "")) for p in pollers.values())

    wait_until(polling, 30, interval=0.1, what="both pollers reporting s2 UP")

    def on_both(since: float, state: Callable[[str], bool]) -> dict[str, float]:
        """LB -> seconds from ``since`` to s2 in ``state`` on it; {} until both are."""
        at = {}
        for name, p in pollers.items():
            t = first_after(p, since, state)
            if t is None:
                return {}
            at[name] = t
        return at

    # roundrobin with equal weights: the same servers in the same order
    ref = picks(client, "192.0.2.9", 5672, 9)
    assert picks(client, "192.0.2.10", 5672, 9) == ref, ref
    # weights 3/2/1: in every window of 6 picks each server gets its weight's share on both. (The order inside
    # a window differs: tcplb spreads picks smoothly, nginx-style; HAProxy's tree gives s1 s2 s1 s3 s1 s2.
    # docs/migration.md lists it.)
    ref = picks(client, "192.0.2.9", 5673, 12)
    got = picks(client, "192.0.2.10", 5673, 12)
    for w in (ref[:6], ref[6:], got[:6], got[6:]):
        assert sorted(w) == ["s1", "s1", "s1", "s2", "s2", "s3"], (ref, got)

    # checks: s2 dies; both count `fall` failed checks (3 x 400 ms) before DOWN
    t0 = time.monotonic()
    echo["s2"].kill()

    down_at = wait_until(lambda: on_both(t0, is_down), 30, interval=0.1, what="s2 DOWN on both")
    for name, t in down_at.items():
        assert 0.75 <= t <= 3.5, (
            name,
            down_at,
        )  # 3 failures at 400 ms intervals, the first at most 400 ms in
    assert abs(down_at["haproxy"] - down_at["tcplb"]) <= 1.0, down_at
    # while s2 is down, both send everything to s1 and s3 in the same order
    assert picks(client, "192.0.2.10", 5672, 6) == picks(client, "192.0.2.9", 5672, 6)

    # s2 comes back: UP again after `rise` good checks on both
    t1 = time.monotonic()
    start_echo(2)

    up_at = wait_until(lambda: on_both(t1, is_up), 30, interval=0.1, what="s2 UP on both")
    assert abs(up_at["haproxy"] - up_at["tcplb"]) <= 1.0, up_at
    print(f"s2 DOWN after {down_at}, UP after {up_at} (seconds)")
