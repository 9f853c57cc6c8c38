"""tcplb.proxyproto and tcplb.amqpwire against a real RabbitMQ 3.10.8 with ``proxy_protocol = true``.

One node in a namespace. A client namespace opens AMQP connections (the handshake done with amqpwire's
encoders) preceded by PROXY headers from proxyproto, in the same write as the AMQP protocol header (ranch
re-queues the bytes after the header: ``gen_tcp:unrecv``):

* v1 and v2 PROXY headers claiming 198.51.100.7 → 192.0.2.100: ``rabbitmqctl list_connections`` shows those
  addresses as peer and host;
* a check header (``for_check``: the socket's own endpoints) is accepted;
* v2 LOCAL and v1 UNKNOWN are not: 3.10's connection process dies before Connection.Start (the reason checks
  toward 3.10 must never send LOCAL);
* ``mgmt.close_connection`` with the name ``mgmt.connection_name`` computes from the header's addresses
  closes exactly that connection with Connection.Close 320 and the reason (rebalancing's graceful close).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from netns.lab import Lab, wait_until
from netns.rabbitmq import RabbitCluster
from tcplb import mgmt

pytestmark = [pytest.mark.netns, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, os, socket, sys, time
from tcplb import amqpwire as aw, proxyproto as pp

node, stop = sys.argv[1], sys.argv[2]

def frames(sock, reader, want):
    while True:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("closed")
        got = reader.feed(data)
        if isinstance(got, aw.NotAmqp):
            raise RuntimeError(got.reason)
        for f in got:
            if f.method == want:
                return f

def read_start(s):
    sr = aw.StartReader()
    while True:
        try:
            data = s.recv(65536)
        except OSError as e:  # a reset counts as a close
            return aw.NotAmqp(f"closed by reset: {e}")
        r = sr.feed(data) if data else sr.feed_eof()
        if not isinstance(r, aw.NeedMore):
            return r

def open_conn(header):
    s = socket.create_connection((node, 5672), 5)
    s.settimeout(10)
    s.sendall(header + aw.PROTOCOL_HEADER)  # one write: the PROXY header, then the client's first bytes
    r = read_start(s)
    if not isinstance(r, aw.Start):
        s.close()
        return None, r.reason
    s.sendall(aw.start_ok("guest", "guest"))
    fr = aw.FrameReader()
    tune = frames(s, fr, (10, 30))
    cmax, fmax = int.from_bytes(tune.payload[4:6], "big"), int.from_bytes(tune.payload[6:10], "big")
    s.sendall(aw.tune_ok(cmax, fmax, 0) + aw.connection_open("/"))
    frames(s, fr, (10, 41))
    return (s, fr), "open"

out = {}
held = []
for name, header in (
    ("v1", pp.v1(("198.51.100.7", 40001), ("192.0.2.100", 5672))),
    ("v2", pp.v2(("198.51.100.7", 40002), ("192.0.2.100", 5672))),
):
    conn, why = open_conn(header)
    out[name] = why
    if conn:
        held.append(conn)
probe = socket.create_connection((node, 5672), 5)
probe.settimeout(10)
probe.sendall(pp.for_check("v2", probe.getsockname(), probe.getpeername()) + aw.PROTOCOL_HEADER)
r = read_start(probe)
out["check"] = "start" if isinstance(r, aw.Start) else r.reason
probe.close()
for name, header in (("local", pp.v2_local()), ("unknown", pp.v1_unknown())):
    conn, why = open_conn(header)
    out[name] = why
    if conn:
        held.append(conn)
print("READY " + json.dumps(out), flush=True)
while not os.path.exists(stop):
    time.sleep(0.05)
closed_by_broker = []
for s, fr in held:
    # 3 s (was 0.5 s): the broker's Close from the management API is sent asynchronously; a busy machine's
    # broker could send it after a short window, and the connection was then counted as untouched
    s.settimeout(3)
    try:
        got = fr.feed(s.recv(65536))
    except TimeoutError:
        got = []
    close = [f for f in got if f.method == (10, 50)] if isinstance(got, list) else []
    s.settimeout(10)
    if close:  # the broker closed it (management API): answer Close-Ok, the polite end
        p = close[0].payload
        closed_by_broker.append([int.from_bytes(p[4:6], "big"), p[7 : 7 + p[6]].decode()])
        s.sendall(aw.close_ok())
    else:
        s.sendall(aw.close())
        frames(s, fr, (10, 51))
    s.close()
print("DONE " + json.dumps(closed_by_broker), flush=True)
"""


def test_proxy_headers_accepted_by_rabbitmq_310(lab: Lab) -> None:
    sw = lab.switch()
    cluster = RabbitCluster(lab, sw, n=1)
    node = cluster.nodes[0]
    with (node.base / "rabbitmq.conf").open("a") as conf:
        conf.write("proxy_protocol = true\n")
    (node.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
    client = lab.host("cli")
    lab.link(client, sw, "192.0.2.50/24")
    cluster.start()
    node.ctl("add_user", "admin", "admin-pw")
    node.ctl("set_user_tags", "admin", "administrator")
    # the DELETE below looks the name up in the management plugin's connection stats; a first version of
    # this test opened the connections while the plugin was still starting and got 404 for a live one:
    # start the connections once the plugin listens, and wait until the name is listed
    wait_until(lambda: node._listening(15672), 60, what="management listener")
    stop = lab.workdir / "stop-proxy-worker"
    proc = client.start(
        [sys.executable, "-c", WORKER, node.ip, str(stop)],
        name="proxy-worker",
        env={"PYTHONPATH": str(ROOT)},
        ready_log="READY ",
        ready_timeout=60,
    )
    line = next(x for x in proc.output().splitlines() if x.startswith("READY "))
    result = json.loads(line[len("READY ") :])
    assert result["v1"] == "open" and result["v2"] == "open", result
    assert result["check"] == "start", result
    # 3.10: LOCAL and UNKNOWN kill the connection process before Connection.Start
    assert result["local"] != "open" and "closed" in result["local"], result
    assert result["unknown"] != "open" and "closed" in result["unknown"], result
    rows = node.ctl("list_connections", "peer_host", "peer_port", "host", "port", "--no-table-headers", "-q")
    seen = {tuple(r.split("\t")) for r in rows.strip().splitlines()}
    assert ("198.51.100.7", "40001", "192.0.2.100", "5672") in seen, rows
    assert ("198.51.100.7", "40002", "192.0.2.100", "5672") in seen, rows
    # the graceful close of rebalancing: the v2 connection, named from its PROXY header's addresses
    name = mgmt.connection_name(("198.51.100.7", 40002), ("192.0.2.100", 5672))
    lister = (
        "import asyncio, sys; from tcplb import mgmt; "
        "r = asyncio.run(mgmt.fetch(sys.argv[1], 15672, '/api/connections?columns=name', "
        "user='admin', password='admin-pw')); print(getattr(r, 'body', r))"
    )

    def listed() -> str:
        out = client.run([sys.executable, "-c", lister, node.ip], env={"PYTHONPATH": str(ROOT)}).stdout
        return out if name in out else ""

    wait_until(listed, 60, what=f"{name} in /api/connections")
    closer = (
        "import asyncio, sys; from tcplb import mgmt; "
        "r = asyncio.run(mgmt.close_connection(sys.argv[1], 15672, sys.argv[2], 'rebalance test', "
        "user='admin', password='admin-pw')); print(r.closed, r.reason)"
    )
    res = client.run([sys.executable, "-c", closer, node.ip, name], env={"PYTHONPATH": str(ROOT)})
    assert res.stdout.startswith("True closed by the broker"), res.stdout + res.stderr
    stop.write_text("")
    wait_until(lambda: "DONE" in proc.output() or not proc.alive(), 60, what="worker closed its connections")
    done = next((x for x in proc.output().splitlines() if x.startswith("DONE ")), None)
    assert done is not None, proc.output()[-2000:]
    # exactly the v2 connection got Connection.Close 320 with the reason; the v1 one was untouched
    assert json.loads(done[len("DONE ") :]) == [[320, "CONNECTION_FORCED - rebalance test"]]
