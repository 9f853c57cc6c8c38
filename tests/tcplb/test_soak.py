"""Churn soak: 100,000+ connections through tcplb on each loop; file descriptors and RSS back to baseline.

tcplb runs as a subprocess in front of nginx (or a tiny Python HTTP backend when nginx is missing); a lean
asyncio client (tests/tcplb/uvloop_repro/churn_client.py) drives it with 200 concurrent connections, a third
of them reset right after the request, a third half-closed first, a third clean. Run alone: ``-m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port

from netns import wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLIENT = HERE / "uvloop_repro" / "churn_client.py"
TOTAL = 100_200  # divisible by the concurrency
CONC = 200

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    d = tmp_path_factory.mktemp("backend")
    port = free_port()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx:
        (d / "nginx.conf").write_text(f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server {{ listen 127.0.0.2:{port} backlog=4096; location / {{ return 200 "hello\\n"; }} }}
}}
""")
        p = subprocess.Popen(
            [nginx, "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    else:
        p = subprocess.Popen([sys.executable, str(HERE / "uvloop_repro" / "backend.py"), str(port)])
    wait_until(lambda: _connectable("127.0.0.2" if nginx else "127.0.0.1", port), 30, what="backend")
    yield port if nginx else -port
    p.terminate()
    p.wait(5)


def _connectable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _stats(port: int) -> dict[str, object]:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=30).read())  # type: ignore[no-any-return]


def _churn(port: int, total: int, conc: int, mix: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(CLIENT), "127.0.0.1", str(port), str(total), str(conc), mix],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_churn_soak(tmp_path: Path, backend: int, loop: str) -> None:
    bhost = "127.0.0.2" if backend > 0 else "127.0.0.1"
    bport = abs(backend)
    port, sport = free_port(), free_port()
    cfg = tmp_path / "lb.toml"
    cfg.write_text(f"""[global]
maxconn = 4000
hard_stop_after = "5s"
log = "stdout"
[defaults]
timeout_connect = "2s"
timeout_client = "30s"
timeout_server = "30s"
[listen.web]
bind = ["127.0.0.1:{port}"]
backlog = 4096
balance = "roundrobin"
check = {{ type = "tcp", inter = "1s" }}
server = [ {{ name = "b1", address = "{bhost}:{bport}" }}, {{ name = "b2", address = "{bhost}:{bport}" }} ]
[stats]
bind = "127.0.0.1:{sport}"
""")
    log = tmp_path / "lb.log"
    with log.open("w") as fh:
        p = subprocess.Popen(
            [sys.executable, "-m", "tcplb", "-c", str(cfg), "--loop", loop],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
    try:
        wait_until(lambda: _connectable("127.0.0.1", port), 30, what="tcplb listening")
        warm = _churn(port, 4000, CONC, "nasty")
        assert warm["failed"] == 0, warm
        wait_until(lambda: _stats(sport)["actconn"] == 0, 30, what="warm-up connections closed")
        base_fds, base_rss = _fds(p.pid), _rss_kib(p.pid)
        t0 = time.monotonic()
        res = _churn(port, TOTAL, CONC, "nasty")
        dt = time.monotonic() - t0
        assert res["failed"] == 0, res
        # every connection accounted for; only the ones that read and checked their answer count as ok
        resets = sum(1 for w in range(CONC) for i in range(TOTAL // CONC) if (i + w) % 3 == 0)
        assert (res["ok"], res["reset"]) == (TOTAL - resets, resets), res
        wait_until(lambda: _stats(sport)["actconn"] == 0, 30, what="all connections closed")
        fds, rss = _fds(p.pid), _rss_kib(p.pid)
        print(
            f"\n{loop}: {TOTAL} connections in {dt:.1f}s ({TOTAL / dt:.0f}/s); fds {base_fds}->{fds}; "
            f"RSS {base_rss}->{rss} KiB"
        )
        assert fds <= base_fds + 2, (base_fds, fds)
        assert rss <= base_rss + 12 * 1024, (base_rss, rss)
        assert p.poll() is None, "tcplb died"
        out = log.read_text()
        assert "Traceback" not in out, out[-3000:]
        lines = [ln for ln in out.splitlines() if " web web/" in ln]
        assert len(lines) >= TOTAL + 4000 - 10  # one tcplog line per connection
    finally:
        p.terminate()
        p.wait(10)
