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
import time
from pathlib import Path

import pytest

from netns import Host, Lab, Proc, wait_until

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
    import asyncio, json, sys, time
    host, secs, conc = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
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
    async def worker(end):
        while time.monotonic() < end:
            try:
                await one()
                res["ok"] += 1
            except ConnectionResetError as e:
                res["reset"] += 1
            except Exception as e:
                res["failed"] += 1
                res["errors"].append(repr(e))
    async def main():
        end = time.monotonic() + secs
        await asyncio.gather(*(worker(end) for _ in range(conc)))
    asyncio.run(main())
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
    load = client.start([sys.executable, "-c", LOAD, "192.0.2.100", "14", "20"], name="load")
    time.sleep(2.0)
    echos[0].kill()  # s1 dies (refused from now on)
    time.sleep(2.0)
    echos[1].kill()  # s2 dies too: only s3 left
    time.sleep(2.0)
    echos[0] = start_echo(servers[0], 1)  # s1 comes back
    time.sleep(2.5)
    echos[1] = start_echo(servers[1], 2)
    assert load.wait(20) == 0, load.output()
    res = json.loads(load.output().strip().splitlines()[-1])
    print(
        f"\n{loop}: {res['ok']} ok, {res['failed']} failed, {res['reset']} reset in flight; "
        f"per server {res['servers']}"
    )
    assert res["failed"] == 0, res["errors"][:5]
    # a reset (or a FIN) reaches only connections established on a backend at the instant it was killed (at
    # most the 20 concurrent ones, per kill); every connection opened afterwards is redispatched and served
    assert res["reset"] <= 2 * 20
    assert res["ok"] > 500
    assert set(res["servers"]) == {"s1", "s2", "s3"}
    out = proc.output()
    assert "Server rabbitmq/s1 is DOWN" in out and "Server rabbitmq/s2 is DOWN" in out
    assert "Server rabbitmq/s1 is UP" in out
    assert "Traceback" not in out
    wait_until(lambda: "Server rabbitmq/s2 is UP" in proc.output(), 5, what="s2 back UP")
    assert proc.terminate(10) == 0
