"""The tcplb command: --check, start-up warnings, SIGHUP reload, SIGTERM graceful stop, hard_stop_after.

tcplb runs as a subprocess on loopback, on both loops.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tcplb_helpers import EchoServer, Tcplb, free_port, lb_toml, roundtrip

from netns import wait_until

LOOPS = ["asyncio", "uvloop"]
PY = sys.executable


def write_cfg(
    path: Path,
    port: int,
    servers: list[tuple[str, int, int]],
    *,
    stats: int | None = None,
    hard_stop: str = "10s",
    extra_defaults: str = 'timeout_client = "30s"\ntimeout_server = "30s"',
) -> None:
    path.write_text(lb_toml(port, servers, hard_stop=hard_stop, timeouts=extra_defaults, stats=stats))


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    e = EchoServer()
    yield e
    e.close()


def test_check_valid(tmp_path: Path) -> None:
    cfg = tmp_path / "lb.toml"
    write_cfg(cfg, 5672, [("a", 5673, 1)])
    p = subprocess.run(
        [PY, "-m", "tcplb", "-c", str(cfg), "--check"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 0, p.stderr
    assert "valid" in p.stdout


def test_check_invalid_lists_every_error(tmp_path: Path) -> None:
    cfg = tmp_path / "lb.toml"
    cfg.write_text("""[defaults]
timeout_connect = "5 parsecs"
[listen.x]
bind = ["192.0.2.100:99999"]
balance = "fastest"
server = [{ name = "a", address = "192.0.2.11:5672", weight = -1 }]
bogus = 1
""")
    p = subprocess.run(
        [PY, "-m", "tcplb", "-c", str(cfg), "--check"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) >= 4, p.stderr
    text = p.stderr
    for key in ("timeout_connect", "bind", "balance", "server[0].weight", "bogus"):
        assert key in text, text
    # one line per error: "key.path: rule"
    assert all(": " in ln for ln in lines)


def test_check_missing_file(tmp_path: Path) -> None:
    p = subprocess.run(
        [PY, "-m", "tcplb", "-c", str(tmp_path / "nope.toml"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode != 0 and p.stderr.strip()


def test_startup_warns_about_unset_timeouts(tmp_path: Path, echo: EchoServer) -> None:
    cfg = tmp_path / "lb.toml"
    port = free_port()
    write_cfg(cfg, port, [("a", echo.port, 1)], extra_defaults="")
    lb = Tcplb(cfg, "uvloop", tmp_path / "lb.log")
    try:
        lb.wait_log("tcplb started")
        out = lb.output()
        assert "missing timeouts" in out and "timeout_client" in out and "timeout_server" in out
    finally:
        lb.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_sighup_reload_no_refused_connection(tmp_path: Path, loop: str) -> None:
    e1, e2 = EchoServer(), EchoServer()
    cfg = tmp_path / "lb.toml"
    port = free_port()
    write_cfg(cfg, port, [("a", e1.port, 1)])
    lb = Tcplb(cfg, loop, tmp_path / "lb.log")
    stop = threading.Event()
    failures: list[str] = []
    done = [0]

    def hammer() -> None:
        while not stop.is_set():
            try:
                if not roundtrip(port):
                    failures.append("bad echo")
                done[0] += 1
            except OSError as exc:
                failures.append(repr(exc))

    try:
        lb.wait_log("tcplb started")
        live = socket.create_connection(("127.0.0.1", port), timeout=30)
        live.sendall(b"before")
        assert live.recv(100) == b"before"
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(5):
            # traffic between the reloads (done > 20 at the end), however slowly a busy machine runs it
            n0 = done[0]
            wait_until(lambda n0=n0: done[0] >= n0 + 5 or failures, 30, what="round trips before the reload")
            write_cfg(cfg, port, [("a", e1.port, 1), ("b", e2.port, 1 + i)])
            lb.p.send_signal(signal.SIGHUP)
            # each reload done before the next signal (signals sent faster could coalesce into one)
            wait_until(lambda n=i + 1: lb.output().count("reloaded") == n, 30, what=f"reload {i + 1} logged")
        stop.set()
        for t in threads:
            t.join()
        assert not failures, failures[:5]
        assert done[0] > 20
        assert lb.output().count("reloaded") == 5
        assert e2.accepted > 0  # the new server got traffic
        live.sendall(b"after")  # established connection untouched
        assert live.recv(100) == b"after"
        live.close()
        # an invalid file is refused and the old configuration keeps running
        cfg.write_text("this is not toml = = =")
        lb.p.send_signal(signal.SIGHUP)
        lb.wait_log("reload refused")
        assert roundtrip(port)
    finally:
        stop.set()
        lb.stop()
        e1.close()
        e2.close()


@contextlib.contextmanager
def _serving_one_client(
    tmp_path: Path, loop: str, echo: EchoServer, hard_stop: str
) -> Iterator[tuple[Tcplb, int, socket.socket]]:
    """The daemon (``hard_stop_after`` ``hard_stop``) in front of ``echo``, its port, and one client
    connection through it that has been echoed once. The daemon is stopped on the way out."""
    cfg = tmp_path / "lb.toml"
    port = free_port()
    write_cfg(cfg, port, [("a", echo.port, 1)], hard_stop=hard_stop)
    lb = Tcplb(cfg, loop, tmp_path / "lb.log")
    try:
        lb.wait_log("tcplb started")
        live = socket.create_connection(("127.0.0.1", port), timeout=30)
        live.sendall(b"x")
        assert live.recv(10) == b"x"
        yield lb, port, live
    finally:
        lb.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_sigterm_graceful_stop(tmp_path: Path, loop: str, echo: EchoServer) -> None:
    with _serving_one_client(tmp_path, loop, echo, "20s") as (lb, port, live):
        lb.p.send_signal(signal.SIGTERM)
        lb.wait_log("stopping")
        # no longer accepting
        wait_until(lambda: _refused(port), 30, what="listener closed")
        # the live connection still works
        live.sendall(b"still here")
        assert live.recv(100) == b"still here"
        assert lb.p.poll() is None
        live.close()
        assert lb.p.wait(30) == 0
        assert "stopped" in lb.output()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("loop", LOOPS)
def test_hard_stop_after(tmp_path: Path, loop: str, echo: EchoServer) -> None:
    with _serving_one_client(tmp_path, loop, echo, "500ms") as (lb, _, live):
        t0 = time.monotonic()
        lb.p.send_signal(signal.SIGTERM)
        # hard_stop_after 500 ms (never early), and a busy machine's slack for the exit; without it the idle
        # live connection would end at timeout_client (30 s), and the stop with it (the bound was 5 s)
        assert lb.p.wait(30) == 0
        assert 0.4 < time.monotonic() - t0 < 15
        assert live.recv(10) == b""  # closed by the hard stop
        out = lb.output()
        assert "hard_stop_after reached: 1 connections closed" in out
        assert " KD " in out
        live.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_stats_page_and_admin_api(tmp_path: Path, loop: str, echo: EchoServer) -> None:
    cfg = tmp_path / "lb.toml"
    port, sport = free_port(), free_port()
    write_cfg(cfg, port, [("a", echo.port, 1), ("b", echo.port, 2)], stats=sport)
    lb = Tcplb(cfg, loop, tmp_path / "lb.log")
    base = f"http://127.0.0.1:{sport}"
    auth = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}

    def get(path: str) -> bytes:
        return urllib.request.urlopen(urllib.request.Request(base + path, headers=auth), timeout=30).read()  # type: ignore[no-any-return]

    def post(path: str, body: bytes) -> dict[str, object]:
        req = urllib.request.Request(base + path, data=body, method="POST", headers=auth)
        return json.loads(urllib.request.urlopen(req, timeout=30).read())  # type: ignore[no-any-return]

    try:
        lb.wait_log("tcplb started")
        assert roundtrip(port)
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(base + "/stats", timeout=30)  # auth needed
        assert ei.value.code == 401
        html = get("/stats").decode()
        assert "<table" in html and 'id="srv-t-a"' in html and 'id="btn-drain-t-b"' in html
        csv = get("/stats;csv").decode().splitlines()
        assert csv[0].startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout")
        rows = {ln.split(",")[1]: ln.split(",") for ln in csv[1:]}
        assert set(rows) == {"FRONTEND", "a", "b", "BACKEND"}
        assert get("/stats.csv").decode().splitlines()[0] == csv[0]
        snap = json.loads(get("/stats.json"))
        assert snap["listeners"][0]["stot"] >= 1
        assert b"tcplb_server_sessions_total" in get("/metrics")
        assert post("/api/servers/t/b/weight", b"weight=7")["weight"] == 7
        assert post("/api/servers/t/a/state", b"state=maint")["status"] == "MAINT"
        assert post("/api/servers/t/a/state", b"state=drain")["status"] == "DRAIN"
        servers = json.loads(get("/api/servers"))
        assert {s["name"]: s["weight"] for s in servers} == {"a": 0, "b": 7}
        with pytest.raises(urllib.error.HTTPError) as ei:
            post("/api/servers/t/zz/state", b"state=maint")
        assert ei.value.code == 404
        out = lb.output()
        assert "going DOWN for maintenance" in out
        assert "admin: user admin from 127.0.0.1:" in out and "t/a state drain (was MAINT)" in out
        assert "s3cret" not in out
    finally:
        lb.stop()


def test_loop_flag_and_bad_bind(tmp_path: Path) -> None:
    cfg = tmp_path / "lb.toml"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    write_cfg(cfg, busy.getsockname()[1], [("a", 1, 1)])
    p = subprocess.run(
        [PY, "-m", "tcplb", "-c", str(cfg), "--loop", "asyncio"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    busy.close()
    assert p.returncode == 1
    assert "cannot bind" in p.stderr
