"""``global.workers = N``: relay processes on SO_REUSEPORT listeners with shared accounting.

The real daemon runs as a subprocess on loopback, on both loops: leastconn balances over every process's
connections, health and admin state decided by the main process reach the workers, reloads and stops go
to every process, a worker that dies is started again, workers do not outlive their main process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tcplb_helpers import Backend, EchoServer, Tcplb, free_port, lb_toml, roundtrip

from netns import wait_until
from tcplb import config as cfgmod
from tcplb.accounting import SingleProcess
from tcplb.config import per_process as split
from tcplb.server import Frontend, LoadBalancer
from tcplb.session import Passive
from tcplb.workers import (
    CUR,
    F_UP,
    F_VALID,
    H_FLAGS,
    PFAIL,
    MainAccounting,
    Share,
    SharedTable,
    WorkerAccounting,
    WorkerPool,
    WorkerProcess,
)

LOOPS = ["asyncio", "uvloop"]
AUTH = "Basic " + base64.b64encode(b"admin:s3cret").decode()


def test_split_rounds_up() -> None:
    assert [split(n, 2) for n in (1, 2, 3, 10, 9999)] == [1, 1, 2, 5, 5000]
    assert split(5, 3) == 2 and split(1, 64) == 1


def test_shared_table_is_shared_between_mappings() -> None:
    t = SharedTable(3, rows=8)
    other = SharedTable(3, rows=8, fd=t.fd)  # what a worker maps from the inherited memfd
    other.a[other.idx(5, 2, CUR)] = 7
    other.a[other.idx(5, 1, CUR)] = 4
    assert t.get(5, 2, CUR) == 7
    assert t.total(5, CUR, range(3)) == 11
    assert t.total(5, CUR, [0, 1]) == 4
    t.a[t.hdr(5, H_FLAGS)] = F_VALID | F_UP
    assert other.a[other.hdr(5, H_FLAGS)] == F_VALID | F_UP
    t.zero_column(2)
    assert other.get(5, 2, CUR) == 0 and other.get(5, 1, CUR) == 4


def test_limits_are_divided_and_leastconn_reads_every_column() -> None:
    cfg = cfgmod.loads(
        """
[global]
maxconn = 101
workers = 2
[listen.t]
bind = ["127.0.0.1:1"]
maxconn = 11
balance = "leastconn"
check = false
server = [{ name = "a", address = "127.0.0.1:2", maxconn = 5 }, { name = "b", address = "127.0.0.1:3" }]
"""
    )
    table = SharedTable(2, rows=8)
    rows = {Share.key("t"): 0, Share.key("t", "a"): 1, Share.key("t", "b"): 2}
    loop = asyncio.new_event_loop()
    try:
        share = Share(table, 1, rows)  # a worker: its own column is 1, the main process's 0
        lb = LoadBalancer(cfg, loop, acct=WorkerAccounting(share))
        lb.frontends["t"] = fe = Frontend(lb, cfg.listeners[0])
        share.attach(lb)
        a, b = fe.servers
        assert lb.maxconn == 51 and fe.maxconn == 6  # 101 / 2 and 11 / 2, rounded up
        for _ in range(2):
            a.take()
        assert not a.full
        a.take()
        assert a.full  # maxconn 5 over 2 processes: 3 here
        # the other process holds 4 connections on b: leastconn counts them
        table.a[table.idx(2, 0, CUR)] = 4
        assert b.active_conns == 4 and a.active_conns == 3
        assert table.get(1, 1, CUR) == 3  # our own count is published at every change
        a.release()
        assert table.get(1, 1, CUR) == 2
    finally:
        loop.close()


_SEAM_CFG = """
[listen.t]
bind = ["127.0.0.1:1"]
server = [{ name = "a", address = "127.0.0.1:2", check = { type = "tcp", fall = 1 } }]
"""


def test_connect_failures_go_through_the_accounting_seam() -> None:
    """The core has no worker branch: a refused connect marks the server down in a single process; in a
    relay worker the same call hands it to the main process's column (pfail) and leaves health alone, and a
    timeout is handed over as no proof at all. Checks run only where the seam says so."""
    cfg = cfgmod.loads(_SEAM_CFG)
    loop = asyncio.new_event_loop()
    try:
        alone = LoadBalancer(cfg, loop, acct=SingleProcess())
        fe = alone.frontends["t"] = Frontend(alone, cfg.listeners[0])
        (a,) = fe.servers
        assert alone.nprocs == 1 and alone.acct.runs_checks
        fe._passive(Passive(a, False, info="Connection refused"))
        assert not a.health.up and a.econ == 1 and a.sh_pfail == 0

        table = SharedTable(2, rows=8)
        share = Share(table, 1, {Share.key("t"): 0, Share.key("t", "a"): 1})
        worker = LoadBalancer(cfg, loop, acct=WorkerAccounting(share))
        fe = worker.frontends["t"] = Frontend(worker, cfg.listeners[0])
        share.attach(worker)
        (a,) = fe.servers
        assert worker.nprocs == 2 and not worker.acct.runs_checks
        fe._passive(Passive(a, False, info="Connection refused"))
        fe._passive(Passive(a, False, timeout=True, info="connect timeout"))
        assert a.health.up and a.econ == 2 and a.sh_pfail == 1
        worker.start_checker(a)
        assert a.checker is None  # only the main process checks
        share.publish_counters(worker, with_bytes=False)
        assert table.get(1, 1, PFAIL) == 1
    finally:
        loop.close()


def test_admin_operations_reach_the_workers_through_the_seam() -> None:
    """tell_others: the main process broadcasts to its workers (a no-op alone and in a worker); a worker
    applies 'rebalance' to its own share, without forwarding it again, and ignores an unknown listener."""
    SingleProcess().tell_others({"op": "rebalance", "listener": "t"})  # nobody to tell: nothing happens
    pool = WorkerPool(2, "asyncio")
    sent: list[dict[str, Any]] = []
    pool.broadcast = sent.append  # type: ignore[method-assign]
    MainAccounting(pool).tell_others({"op": "rebalance", "listener": "t"})
    assert sent == [{"op": "rebalance", "listener": "t"}]

    cfg = cfgmod.loads(_SEAM_CFG)
    loop = asyncio.new_event_loop()
    a, b = socket.socketpair()
    try:
        table = SharedTable(2, rows=8)
        share = Share(table, 1, {})
        wp = WorkerProcess(1, table, a)
        wp.share = share
        wp.stop_event = asyncio.Event()
        lb = wp.lb = LoadBalancer(cfg, loop, acct=WorkerAccounting(share))
        calls: list[tuple[str, bool]] = []

        def request(name: str, forward: bool = True) -> dict[str, Any]:
            calls.append((name, forward))
            if name != "t":
                raise KeyError(name)
            return {}

        lb.rebalance.request = request  # type: ignore[method-assign]
        wp.handle({"op": "rebalance", "listener": "t"})
        wp.handle({"op": "rebalance", "listener": "nope"})  # unknown here: ignored, the worker goes on
        assert calls == [("t", False), ("nope", False)]
    finally:
        a.close()
        b.close()
        loop.close()


# ------------------------------------------------------------------------------------- the real daemon


def write_cfg(
    path: Path,
    port: int,
    servers: list[tuple[str, int]],
    *,
    balance: str = "leastconn",
    stats: int | None = None,
    workers: int = 2,
    hard_stop: str = "5s",
    check: bool = True,
) -> None:
    path.write_text(
        lb_toml(
            port,
            servers,
            balance=balance,
            workers=workers,
            hard_stop=hard_stop,
            inter="100ms",
            check="tcp" if check else None,
            stats=stats,
        )
    )


def worker_pids(lb: Tcplb) -> list[int]:
    return [int(x) for x in re.findall(r"worker \d+ started: pid (\d+)", lb.output())]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is gone for our purposes
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


@pytest.fixture
def daemons() -> Iterator[list[Tcplb]]:
    """Every Tcplb a test starts; its workers (children of the process we started) go with it."""
    started: list[Tcplb] = []
    yield started
    for lb in started:
        pids = worker_pids(lb)
        lb.stop()
        for pid in pids:
            with contextlib.suppress(AssertionError):
                wait_until(lambda pid=pid: not alive(pid), 30, what=f"worker {pid} gone")  # type: ignore[misc]
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start(tmp_path: Path, loop: str, daemons: list[Tcplb], workers: int = 2) -> Tcplb:
    lb = Tcplb(tmp_path / "lb.toml", loop, tmp_path / "lb.log")
    daemons.append(lb)
    lb.wait_log("tcplb started")
    wait_until(lambda: len(worker_pids(lb)) >= workers - 1, 30, what="workers started")
    for pid in worker_pids(lb):
        wait_up(lb, pid)
    return lb


def wait_up(lb: Tcplb, pid: int) -> None:
    wait_until(lambda: f"tcplb[{pid}]: [INFO] Proxy t started" in lb.output(), 30, what=f"worker {pid} up")


def api(sport: int, path: str, body: bytes | None = None) -> dict[str, object]:
    url = f"http://127.0.0.1:{sport}{path}"
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    req.add_header("Authorization", AUTH)
    data = json.loads(urllib.request.urlopen(req, timeout=30).read())
    assert isinstance(data, dict | list)
    return data  # type: ignore[return-value]


def served_by_pid(lb: Tcplb) -> dict[int, int]:
    """Traffic log lines (one per closed connection) per process."""
    out: dict[int, int] = {}
    for m in re.finditer(r"tcplb\[(\d+)\]: \[INFO\] 127\.0\.0\.1:\d+ \[", lb.output()):
        out[int(m.group(1))] = out.get(int(m.group(1)), 0) + 1
    return out


def hold(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"hi")
    assert s.recv(16) == b"hi"
    return s


@pytest.mark.parametrize("loop", LOOPS)
def test_leastconn_counts_every_process(tmp_path: Path, loop: str, daemons: list[Tcplb]) -> None:
    a, b = EchoServer(), EchoServer()
    port, sport = free_port(), free_port()
    # no checks: the backends' accept counts are then exactly the relayed connections
    write_cfg(tmp_path / "lb.toml", port, [("a", a.port), ("b", b.port)], stats=sport, check=False)
    held: list[socket.socket] = []
    try:
        lb = start(tmp_path, loop, daemons)
        for _ in range(40):
            held.append(hold(port))
            # established at the backend before the next one starts: the shared counts are exact
            assert abs(a.accepted - b.accepted) <= 1, (a.accepted, b.accepted)
        # the workers publish their counters every 0.1 s: the main process's page sums them

        def fe_stats() -> dict[str, object]:
            return api(sport, "/stats;json")["listeners"][0]  # type: ignore[index,no-any-return]

        fe = wait_until(lambda: (f := fe_stats())["stot"] == 40 and f, 30, what="stot 40")
        assert fe["scur"] == 40, fe
        assert {s["name"]: s["scur"] for s in fe["servers"]} == {"a": 20, "b": 20}  # type: ignore[attr-defined]
        for s in held:
            s.close()
        wait_until(lambda: sum(served_by_pid(lb).values()) == 40, 30, what="40 traffic lines")
        per = served_by_pid(lb)
        assert len(per) == 2 and min(per.values()) > 0, per  # the kernel spread them over both processes
        wait_until(lambda: api(sport, "/stats;json")["listeners"][0]["scur"] == 0, 30, what="scur 0")  # type: ignore[index]
    finally:
        for s in held:
            s.close()
        a.close()
        b.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_health_and_admin_reach_the_workers(tmp_path: Path, loop: str, daemons: list[Tcplb]) -> None:
    a, b = Backend("a", greet=False), Backend("b", greet=False)
    port, sport = free_port(), free_port()
    write_cfg(tmp_path / "lb.toml", port, [("a", a.port), ("b", b.port)], balance="roundrobin", stats=sport)
    try:
        lb = start(tmp_path, loop, daemons)
        assert all(roundtrip(port) for _ in range(10))
        assert a.served > 0 and b.served > 0
        api(sport, "/api/servers/t/a/state", b"state=drain")

        def none_to_a() -> bool:
            n = a.served
            return all(roundtrip(port) for _ in range(10)) and a.served == n

        # the drain reaches the workers at their next tick (0.1 s)
        wait_until(none_to_a, 30, what="no new connection to the drained server")
        t0 = a.served
        assert all(roundtrip(port) for _ in range(30))
        assert a.served == t0, "a drained server got new connections from some process"
        # back to ready; then b's backend goes away: the main process's checks see it, every process avoids it
        api(sport, "/api/servers/t/a/state", b"state=ready")
        b.stop()
        lb.wait_log("t/b is DOWN", 30)
        wait_until(lambda: all(roundtrip(port) for _ in range(5)), 30, what="a takes the traffic")
        n = a.served
        assert all(roundtrip(port) for _ in range(30)), "a connection failed while b was down"
        assert a.served == n + 30
    finally:
        a.stop()
        b.stop()


def test_reload_and_graceful_stop_reach_every_process(tmp_path: Path, daemons: list[Tcplb]) -> None:
    a, c = EchoServer(), EchoServer()
    port = free_port()
    cfg = tmp_path / "lb.toml"
    write_cfg(cfg, port, [("a", a.port)], balance="roundrobin")
    held: list[socket.socket] = []
    try:
        lb = start(tmp_path, "uvloop", daemons)
        wpid = worker_pids(lb)[0]
        held = [hold(port) for _ in range(10)]
        write_cfg(cfg, port, [("a", a.port), ("c", c.port)], balance="roundrobin")
        lb.p.send_signal(signal.SIGHUP)
        lb.wait_log("reloaded")
        for s in held:  # established connections untouched
            s.sendall(b"hi")
            assert s.recv(16) == b"hi"
        wait_until(lambda: roundtrip(port) and c.accepted >= 10, 30, what="c gets traffic")
        per_before = served_by_pid(lb)
        assert wpid in per_before and lb.p.pid in per_before, per_before
        lb.p.send_signal(signal.SIGTERM)
        lb.wait_log("stopping: listeners closed")
        for s in held:  # still served while the processes drain
            s.sendall(b"ok")
            assert s.recv(16) == b"ok"
        with pytest.raises(OSError):
            roundtrip(port)
        for s in held:
            s.close()
        assert lb.p.wait(30) == 0
        wait_until(lambda: not alive(wpid), 30, what="worker exited")
        assert f"worker 1 (pid {wpid}) exited: 0" in lb.output()
    finally:
        for s in held:
            s.close()
        a.close()
        c.close()


def test_dead_worker_replaced_and_workers_follow_main(tmp_path: Path, daemons: list[Tcplb]) -> None:
    a = EchoServer()
    port, sport = free_port(), free_port()
    write_cfg(tmp_path / "lb.toml", port, [("a", a.port)], stats=sport, workers=3, hard_stop="2s")
    try:
        lb = start(tmp_path, "uvloop", daemons, workers=3)
        assert all(roundtrip(port) for _ in range(30))
        wait_until(lambda: api(sport, "/stats;json")["listeners"][0]["stot"] == 30, 30, what="stot 30")  # type: ignore[index]
        first = worker_pids(lb)
        os.kill(first[0], signal.SIGKILL)
        lb.wait_log("died", 30)
        wait_until(lambda: len(worker_pids(lb)) == 3, 30, what="worker started again")
        new = worker_pids(lb)[-1]
        wait_up(lb, new)
        assert all(roundtrip(port) for _ in range(30)), "connections failed after a worker died"
        # the dead worker's counts are kept
        wait_until(lambda: api(sport, "/stats;json")["listeners"][0]["stot"] == 60, 30, what="stot 60")  # type: ignore[index]
        # the main process is SIGKILLed: its workers notice (control socket EOF) and stop by themselves
        workers = [p for p in worker_pids(lb) if alive(p)]
        lb.p.kill()
        lb.p.wait(5)
        for pid in workers:
            wait_until(lambda pid=pid: not alive(pid), 30, what=f"worker {pid} stopped")  # type: ignore[misc]
        assert "the main process is gone" in lb.output()
    finally:
        a.close()
