"""Graceful rebalancing against a real RabbitMQ 3.10.8 cluster (two nodes, management plugin) in namespaces.

tcplb (the daemon) with ``balance = "leastconn"``, a ``rabbitmq`` check with ``management`` (a user tagged
``administrator``) on both nodes and ``[listen.amqp.rebalance] enabled = true, tolerance = 0``. Node n2 starts
in maintenance (``disabled = true``), so eight long-lived publishers (four pika, four aio-pika, started
alternately so that the oldest are of both kinds) all sit on n1, each publishing numbered persistent messages
with publisher confirms. ``tcplb ctl set server amqp/n2 state ready``: tcplb closes the four oldest through
n1's management API (``DELETE /api/connections/{name}`` with ``X-Reason``); each client gets
``connection.close`` 320 ``CONNECTION_FORCED - tcplb rebalance: ...``:

* pika (1.x, no automatic recovery) with its documented reconnect loop, catching the exception and
  reconnecting (``ConnectionClosedByBroker`` included: pika's own example breaks out on it);
* aio-pika's ``connect_robust``, which reconnects after any close it did not initiate and restores the
  channel.

Checked: the spread goes from 8/0 to 4/4, the four closes are logged and counted, every client saw 320 with
tcplb's reason and no other connection error, no connection attempt failed, and every confirmed message is
in the queue afterwards (lost 0). ``tcplb ctl rebalance amqp`` then finds nothing to move.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from tcplb_helpers import LAB_PROBE, LAB_STATS_FETCH, lab_users

from netns.lab import Lab, wait_until
from netns.rabbitmq import RabbitCluster

pytestmark = [pytest.mark.netns, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
LB_IP = "192.0.2.60"
CLI_IP = "192.0.2.50"

PIKA = r"""
import json, os, sys, time
import pika

vip, name, stop, out = sys.argv[1:5]
params = pika.ConnectionParameters(
    host=vip, port=5672, credentials=pika.PlainCredentials("app", "app-pw"), heartbeat=10,
    blocked_connection_timeout=30,
)
confirmed, closes, errors, opens = [], [], [], 0
i = 0
while not os.path.exists(stop):
    # pika's documented recovery loop, except that a broker-initiated close (320 CONNECTION_FORCED: a
    # rebalance, a drain, a node stop) reconnects too instead of breaking out
    try:
        conn = pika.BlockingConnection(params)
        opens += 1
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue="rb-lab", durable=True)
        print("OPEN", name, opens, flush=True)
        while not os.path.exists(stop):
            mid = f"{name}-{i}"
            props = pika.BasicProperties(delivery_mode=2)
            ch.basic_publish("", "rb-lab", mid.encode(), props, mandatory=True)
            confirmed.append(mid)  # confirmed: basic_publish returned with confirm_delivery on
            i += 1
            if i % 10 == 0:
                print("PUB", name, i, flush=True)
            conn.sleep(0.05)
        conn.close()
    except pika.exceptions.ConnectionClosedByBroker as e:
        closes.append(f"{e.reply_code} {e.reply_text}")
        print("CLOSED", name, e.reply_code, flush=True)
        continue  # the same message id again: at-least-once
    except pika.exceptions.AMQPConnectionError as e:
        errors.append(repr(e))
        time.sleep(0.5)
        continue
with open(out, "w") as f:
    json.dump({"confirmed": confirmed, "closes": closes, "errors": errors, "opens": opens}, f)
print("DONE", name, flush=True)
"""

AIOPIKA = r"""
import asyncio, json, os, sys
import aio_pika

vip, name, stop, out = sys.argv[1:5]

async def main():
    confirmed, closes, retries = [], [], []
    state = {"reconnects": 0}
    conn = await aio_pika.connect_robust(
        f"amqp://app:app-pw@{vip}:5672/", reconnect_interval=0.5, heartbeat=10
    )
    conn.close_callbacks.add(lambda *a: closes.append(repr(a[-1]) if a else ""))
    conn.reconnect_callbacks.add(lambda *a: state.__setitem__("reconnects", state["reconnects"] + 1))
    ch = await conn.channel(publisher_confirms=True)
    await ch.declare_queue("rb-lab", durable=True)
    print("OPEN", name, flush=True)
    i = 0
    while not os.path.exists(stop):
        mid = f"{name}-{i}"
        try:
            await asyncio.wait_for(
                ch.default_exchange.publish(
                    aio_pika.Message(mid.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="rb-lab",
                ),
                10,
            )
            confirmed.append(mid)
            i += 1
            if i % 10 == 0:
                print("PUB", name, i, flush=True)
        except Exception as e:  # the connection is being restored: the same id again
            retries.append(repr(e))
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.05)
    await conn.close()
    with open(out, "w") as f:
        json.dump({"confirmed": confirmed, "closes": closes, "retries": retries,
                   "reconnects": state["reconnects"]}, f)
    print("DONE", name, flush=True)

asyncio.run(main())
"""

DRAIN = r"""
import json, sys
import pika

host, out = sys.argv[1:3]
conn = pika.BlockingConnection(
    pika.ConnectionParameters(host=host, credentials=pika.PlainCredentials("app", "app-pw"))
)
ch = conn.channel()
got = []
while True:
    m, _props, body = ch.basic_get("rb-lab", auto_ack=True)
    if m is None:
        break
    got.append(body.decode())
conn.close()
with open(out, "w") as f:
    json.dump(got, f)
"""


def test_rebalance_with_pika_and_aio_pika_against_rabbitmq_310(lab: Lab) -> None:
    sw = lab.switch()
    cluster = RabbitCluster(lab, sw, n=2)
    for node in cluster.nodes:
        (node.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
    lbh = lab.host("lb")
    lab.link(lbh, sw, f"{LB_IP}/24")
    cli = lab.host("cli")
    lab.link(cli, sw, f"{CLI_IP}/24")
    cluster.start()
    n1, n2 = cluster.nodes
    lab_users(n1, mgmt=("rbadmin", "rbadmin-pw", "administrator"), app=True)
    for node in cluster.nodes:
        wait_until(functools.partial(node._listening, 15672), 60, 0.5, what=f"{node.name} management")
    mg = 'management = { user = "rbadmin", password = "rbadmin-pw", inter = "2s" }'
    check = f'{{ type = "rabbitmq", inter = "500ms", rise = 1, fall = 1, {LAB_PROBE}, {mg} }}'
    # timeout_check 10 s: without it inter (500 ms) bounds the whole probe, and with fall 1 a slow broker
    # answer on a busy machine took a node out, moving clients outside the rebalancing under test
    cfg = lab.workdir / "rb.lb.toml"
    cfg.write_text(
        f"""
[defaults]
timeout_connect = "2s"
timeout_check = "10s"
timeout_client = "2m"
timeout_server = "2m"
[listen.amqp]
bind = ["{LB_IP}:5672"]
balance = "leastconn"
protocol = "amqp"
check = {check}
server = [{{ name = "n1", address = "{n1.ip}:5672" }},
          {{ name = "n2", address = "{n2.ip}:5672", disabled = true }}]
[listen.amqp.rebalance]
enabled = true
tolerance = 0.0
rate = 2
delay_after_up = "0s"
settle = "5s"
[stats]
bind = "127.0.0.1:8404"
auth = ["admin:s3cret"]
admin = true
"""
    )
    env = {"PYTHONPATH": str(ROOT)}
    lb = lbh.start([PY, "-m", "tcplb", "-c", str(cfg)], name="tcplb", env=env)

    def servers() -> dict[str, dict[str, Any]] | None:
        out = lbh.run([PY, "-c", LAB_STATS_FETCH], env=env, check=False).stdout
        if not out.startswith("{"):
            return None
        return {s["name"]: s for s in json.loads(out)["listeners"][0]["servers"]}

    def ctl(*words: str) -> Any:
        base = [PY, "-m", "tcplb", "ctl", "--url", "http://127.0.0.1:8404", "--user", "admin:s3cret"]
        return lbh.run([*base, *words], env=env, check=False)

    wait_until(lambda: (s := servers()) and s["n1"]["check_status"] == "L7OK", 60, 0.5, what="n1 L7OK")
    stop = lab.workdir / "stop-clients"
    procs = []
    for i in range(4):
        for kind, script in (("pika", PIKA), ("aio", AIOPIKA)):
            name = f"{kind}{i}"
            out = lab.workdir / f"{name}.json"
            p = cli.start(
                [PY, "-c", script, LB_IP, name, str(stop), str(out)],
                name=name,
                env=env,
                ready_log=f"OPEN {name}",
                ready_timeout=30,
            )
            procs.append((name, p, out))
    before = servers()
    assert before is not None and before["n1"]["scur"] == 8 and before["n2"]["scur"] == 0, before

    res = ctl("set", "server", "amqp/n2", "state", "ready")
    assert res.returncode == 0, res.stderr

    def spread_even() -> dict[str, dict[str, Any]] | None:
        x = servers()
        return x if x is not None and x["n1"]["scur"] == 4 and x["n2"]["scur"] == 4 else None

    after = wait_until(spread_even, 60, 0.5, what="4/4 after rebalancing")
    assert after is not None
    s = after
    fails = [ln for ln in lb.output().splitlines() if "could not close" in ln]
    assert s["n1"]["rebalance_closes"] == 4 and s["n1"]["close_failures"] == 0, fails
    wait_until(lambda: "Rebalancing amqp: done" in lb.output(), 30, 0.5, what="run done")
    lines = [ln for ln in lb.output().splitlines() if "closed by the broker (rebalance)" in ln]
    assert len(lines) == 4, lines
    res = ctl("rebalance", "amqp")
    assert res.returncode == 0 and "0 closing now" in res.stdout, (res.stdout, res.stderr)

    def published(p: Any) -> int:
        nums = [int(ln.split()[2]) for ln in p.output().splitlines() if ln.startswith("PUB ")]
        return nums[-1] if nums else 0

    # every client goes on publishing on its (new) connection: 20 more confirmed messages each
    base = {name: published(p) for name, p, _ in procs}
    wait_until(
        lambda: all(published(p) >= base[name] + 20 for name, p, _ in procs), 60, 0.3, what="20 more each"
    )
    stop.write_text("")
    for name, _p, out in procs:
        wait_until(out.exists, 30, 0.2, what=f"{name} done")
    results = {name: json.loads(out.read_text()) for name, _, out in procs}
    drained = lab.workdir / "drained.json"
    cli.run([PY, "-c", DRAIN, n1.ip, str(drained)], env=env)
    received = set(json.loads(drained.read_text()))
    confirmed = {m for r in results.values() for m in r["confirmed"]}
    lost = confirmed - received
    # aio-pika's close callbacks also run for the client's own close at the end: count the broker's (320)
    closed = {n: r for n, r in results.items() if any("320" in c for c in r["closes"])}
    summary = {
        n: {k: (len(v) if isinstance(v, list) else v) for k, v in r.items()} for n, r in results.items()
    }
    print("REBALANCE-LAB", json.dumps({"confirmed": len(confirmed), "lost": len(lost), "clients": summary}))
    assert not lost, sorted(lost)[:10]
    assert len(confirmed) > 8 * 20
    # the four closed: both kinds (the oldest, started alternately), each told why with 320
    pika_closed = [n for n in closed if n.startswith("pika")]
    aio_closed = [n for n in closed if n.startswith("aio")]
    assert len(pika_closed) == 2 and len(aio_closed) == 2, summary
    for n in pika_closed:
        assert results[n]["closes"] == [results[n]["closes"][0]] and results[n]["opens"] == 2
        assert results[n]["closes"][0].startswith(
            "320 CONNECTION_FORCED - tcplb rebalance: n1 above its limit"
        )
    for n in aio_closed:
        assert results[n]["reconnects"] == 1, results[n]
        first = results[n]["closes"][0]
        assert "320" in first and "tcplb rebalance: n1 above its limit" in first, first
    for n in set(results) - set(closed):
        assert results[n].get("reconnects", 0) == 0 and results[n].get("opens", 1) == 1, (n, results[n])
    for n, r in results.items():
        assert r.get("errors", []) == [], (n, r.get("errors"))  # no failed connect, no reset
        assert len(r["confirmed"]) > 20, n
    lb.terminate()
