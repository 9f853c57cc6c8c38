"""tcplb in its own namespace in front of three plain TCP backends; backends killed and restarted under load.

client (192.0.2.50) -> lb (VIP 192.0.2.100, bound with IP_FREEBIND before the address exists) -> s1..s3
(192.0.2.11-13, an echo server each). A load generator in the client namespace opens short connections
continuously; while it runs, backends are SIGKILLed and restarted. No connection may fail to get its answer
except one that was in flight on a backend at the instant it was killed (the reset is propagated as a reset).
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netns import Host, Lab, Proc, dead, wait_until

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[2]

ECHO = textwrap.dedent("""
    import asyncio, sys
    name = sys.argv[2].encode()
    async def h(r, w):
        try:
            while data := await r.read(65536):
                w.write(name + b":" + data)
                await w.drain()
        except OSError:
            pass
        w.close()
    async def main():
        s = await asyncio.start_server(h, sys.argv[1], 5672, reuse_address=True, backlog=1024)
        print("listening", flush=True)
        await s.serve_forever()
    asyncio.run(main())
""")

LOAD = textwrap.dedent("""
    import asyncio, json, os, sys
    host, conc, status, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    res = {"ok": 0, "failed": 0, "reset": 0, "servers": {}, "errors": []}
    async def one():
        r, w = await asyncio.wait_for(asyncio.open_connection(host, 5672), 10)
        try:
            w.write(b"ping")
            data = await asyncio.wait_for(r.read(100), 10)
            if data == b"":
                # the server was killed with this connection established: its kernel sent FIN (RST when
                # data was unread); an L4 balancer cannot replay a connection, as with a reset in flight
                raise ConnectionResetError("closed in flight")
            if not data.endswith(b":ping"):
                raise EOFError(repr(data))
            name = data.split(b":")[0].decode()
            res["servers"][name] = res["servers"].get(name, 0) + 1
            await asyncio.sleep(0.02)
        finally:
            w.close()
    def write_status():
        with open(status + ".tmp", "w") as f:
            json.dump(res, f)
        os.replace(status + ".tmp", status)
    async def reporter():
        while not os.path.exists(stop):
            write_status()
            await asyncio.sleep(0.1)
    async def worker():
        while not os.path.exists(stop):
            try:
                await one()
                res["ok"] += 1
            except ConnectionResetError as e:
                res["reset"] += 1
            except Exception as e:
                res["failed"] += 1
                res["errors"].append(repr(e))
    async def main():
        await asyncio.gather(reporter(), *(worker() for _ in range(conc)))
    asyncio.run(main())
    write_status()
    print(json.dumps(res), flush=True)
""")


def build(lab: Lab) -> tuple[Host, Host, list[Host]]:
    sw = lab.switch()
    client = lab.host("client")
    lab.link(client, sw, "192.0.2.50/24")
    lb = lab.host("lb")
    lab.link(lb, sw, "192.0.2.10/24")
    servers = []
    for i in (1, 2, 3):
        h = lab.host(f"s{i}")
        lab.link(h, sw, f"192.0.2.1{i}/24")
        servers.append(h)
    return client, lb, servers


def start_echo(h: Host, i: int) -> Proc:
    return h.start(
        [sys.executable, "-c", ECHO, f"192.0.2.1{i}", f"s{i}"], name=f"echo-s{i}", ready_log="listening"
    )


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_backends_killed_under_load(lab: Lab, tmp_path: Path, loop: str) -> None:
    client, lb, servers = build(lab)
    echos = [start_echo(h, i) for i, h in enumerate(servers, start=1)]
    cfg = tmp_path / "lb.toml"
    cfg.write_text("""
[global]
maxconn = 2000
hard_stop_after = "3s"
[defaults]
timeout_connect = "1s"
timeout_client = "30s"
timeout_server = "30s"
retries = 3
redispatch = true
[listen.rabbitmq]
bind = ["192.0.2.100:5672"]
balance = "leastconn"
check = { type = "tcp", inter = "500ms", rise = 2, fall = 2 }
server = [
  { name = "s1", address = "192.0.2.11:5672" },
  { name = "s2", address = "192.0.2.12:5672" },
  { name = "s3", address = "192.0.2.13:5672" },
]
[stats]
bind = "192.0.2.10:8404"
""")
    # the VIP is not on the LB yet: tcplb binds it anyway (IP_FREEBIND), as a VRRP backup node must
    proc = lb.start(
        [sys.executable, "-m", "tcplb", "-c", str(cfg), "--loop", loop],
        name="tcplb",
        cwd=str(ROOT),
        ready_log="tcplb started",
    )
    lb.run(["ip", "addr", "add", "192.0.2.100/24", "dev", "eth0"])
    status, stop = tmp_path / "load.json", tmp_path / "load.stop"
    load = client.start(
        [sys.executable, "-c", LOAD, "192.0.2.100", "20", str(status), str(stop)], name="load"
    )

    def counts() -> dict[str, Any]:
        try:
            return dict(json.loads(status.read_text()))
        except (OSError, ValueError):
            return {"ok": 0, "failed": 0, "servers": {}}

    def progress(what: str, cond: Callable[[dict[str, Any]], bool], timeout: float = 60) -> None:
        """Wait (bounded) for ``cond`` on the load's counters; the load or tcplb dying ends it at once."""
        wait_until(lambda: cond(counts()), timeout, interval=0.1, what=what, fail_if=lambda: dead(load, proc))

    def served(name: str) -> int:
        return int(counts()["servers"].get(name, 0))

    def logged(line: str) -> Callable[[dict[str, Any]], bool]:
        return lambda _c: line in proc.output()

    # each phase lasts until what it is about has happened, plus 100 more answered connections
    progress("100 answers from all three", lambda c: c["ok"] >= 100 and len(c["servers"]) == 3)
    echos[0].kill()  # s1 dies (refused from now on)
    progress("s1 DOWN", logged("Server rabbitmq/s1 is DOWN"))
    base = counts()["ok"]
    progress("100 answers without s1", lambda c: c["ok"] >= base + 100)
    echos[1].kill()  # s2 dies too: only s3 left
    progress("s2 DOWN", logged("Server rabbitmq/s2 is DOWN"))
    base = counts()["ok"]
    progress("100 answers from s3 alone", lambda c: c["ok"] >= base + 100)
    before = served("s1")
    echos[0] = start_echo(servers[0], 1)  # s1 comes back
    progress("s1 UP and serving again", lambda c: int(c["servers"].get("s1", 0)) > before + 10)
    before = served("s2")
    echos[1] = start_echo(servers[1], 2)
    progress("s2 UP and serving again", lambda c: int(c["servers"].get("s2", 0)) > before + 10)
    stop.touch()
    assert load.wait(30) == 0, load.output()
    res = json.loads(load.output().strip().splitlines()[-1])
    print(
        f"\n{loop}: {res['ok']} ok, {res['failed']} failed, {res['reset']} reset in flight; "
        f"per server {res['servers']}"
    )
    assert res["failed"] == 0, res["errors"][:5]
    # a reset (or a FIN) reaches only connections established on a backend at the instant it was killed (at
    # most the 20 concurrent ones, per kill); every connection opened afterwards is redispatched and served
    assert res["reset"] <= 2 * 20
    assert res["ok"] >= 500  # the phases above asked for 5 x 100 answers
    assert set(res["servers"]) == {"s1", "s2", "s3"}
    out = proc.output()
    assert "Server rabbitmq/s1 is DOWN" in out and "Server rabbitmq/s2 is DOWN" in out
    assert "Server rabbitmq/s1 is UP" in out and "Server rabbitmq/s2 is UP" in out
    assert "Traceback" not in out
    assert proc.terminate(10) == 0
