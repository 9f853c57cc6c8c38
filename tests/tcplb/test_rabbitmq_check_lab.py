"""The ``rabbitmq`` check against a real RabbitMQ 3.10.8 (Debian's) with the management plugin, in namespaces.

One node; tcplb (the daemon, ``python -m tcplb``) in its own namespace with a ``rabbitmq`` check (probe
user, management API with a ``monitoring`` user and the node's name). What the lab shows:

* the check passes (L7OK) with the full clean exchange, and the broker logs no warning or error line for
  the probes (RabbitMQ 3.10 logs a header-only probe with a warning);
* a memory alarm (``set_vm_memory_high_watermark`` lowered) appears on the stats JSON and in tcplb's log,
  and the server stays UP; it clears when the watermark is restored;
* ``rabbitmq-upgrade drain``: 3.10 has no HTTP maintenance flag and suspends its listeners, so the check
  sees the refusal and the server is DOWN within a few check intervals; ``revive`` brings it back UP.
"""

from __future__ import annotations

import json
import sys
import time
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


def test_rabbitmq_check_against_rabbitmq_310(lab: Lab) -> None:
    sw = lab.switch()
    cluster = RabbitCluster(lab, sw, n=1)
    node = cluster.nodes[0]
    (node.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
    lbh = lab.host("lb")
    lab.link(lbh, sw, f"{LB_IP}/24")
    cluster.start()
    lab_users(node, mgmt=("mon", "mon-pw", "monitoring"))
    wait_until(lambda: node._listening(15672), 60, 0.5, what="management listener")
    mg = f'management = {{ user = "mon", password = "mon-pw", node = "{node.nodename}", inter = "500ms" }}'
    check = f'{{ type = "rabbitmq", inter = "500ms", rise = 1, fall = 1, {LAB_PROBE}, {mg} }}'
    cfg = lab.workdir / "rmq.lb.toml"
    cfg.write_text(
        f"""
[defaults]
timeout_connect = "2s"
timeout_check = "10s"
timeout_client = "2m"
timeout_server = "2m"
[listen.amqp]
bind = ["{LB_IP}:5672"]
check = {check}
server = [{{ name = "n1", address = "{node.ip}:5672" }}]
[stats]
bind = "127.0.0.1:8404"
auth = ["admin:s3cret"]
"""
    )
    lb = lbh.start([PY, "-m", "tcplb", "-c", str(cfg)], name="tcplb", env={"PYTHONPATH": str(ROOT)})

    def server() -> dict[str, Any] | None:
        out = lbh.run([PY, "-c", LAB_STATS_FETCH], env={"PYTHONPATH": str(ROOT)}, check=False).stdout
        if not out.startswith("{"):
            return None
        srv: dict[str, Any] = json.loads(out)["listeners"][0]["servers"][0]
        return srv

    def has(**want: Any) -> dict[str, Any] | None:
        s = server()
        return s if s is not None and all(s.get(k) == v for k, v in want.items()) else None

    s = wait_until(
        lambda: has(check_status="L7OK", node_state="ready", status="UP"), 60, 0.5, what="n1 UP, ready"
    )
    assert s is not None and s["alarms"] == []
    # several probes, then the broker's log: info lines for them, no warning, no error
    first = s["chkfail"]
    assert node.server is not None
    srv = node.server

    def probes_logged() -> list[str]:
        lines = [ln for ln in srv.output().splitlines() if LB_IP in ln]
        closed = [ln for ln in lines if "closing AMQP connection" in ln]
        return lines if len(closed) >= 6 else []

    lines = wait_until(probes_logged, 30, 0.5, what="six probes in the broker's log")
    assert any("[info]" in ln and "accepting AMQP connection" in ln for ln in lines), lines[-10:]
    bad = [ln for ln in lines if "[warning]" in ln or "[error]" in ln]
    assert not bad, bad[:5]
    assert (has() or {}).get("chkfail") == first

    # memory alarm: shown, logged, not acted on
    node.ctl("set_vm_memory_high_watermark", "0.000001")
    s = wait_until(lambda: has(alarms=["memory"]), 30, 0.5, what="the memory alarm on the stats JSON")
    assert s is not None and s["status"] == "UP" and s["weight"] == 1
    wait_until(
        lambda: "resource alarm raised: memory" in lb.output(), 30, 0.5, what="the alarm in tcplb's log"
    )
    node.ctl("set_vm_memory_high_watermark", "0.4")
    wait_until(lambda: has(alarms=[]), 30, 0.5, what="the alarm cleared")
    wait_until(lambda: "resource alarm cleared: memory" in lb.output(), 30, 0.5, what="the clearing logged")

    # maintenance on 3.10: listeners suspended, the check sees the refusal at once
    node.ctl("drain", tool="rabbitmq-upgrade", check=False)
    # counted from the drain command's end (its Erlang start-up took a few seconds, more on a busy machine):
    # the listeners are suspended then, and the next check (inter 0.5 s) is refused; the rest of the bound
    # is for the stats polls (a Python process each)
    t0 = time.monotonic()
    s = wait_until(lambda: has(status="DOWN"), 30, 0.5, what="n1 DOWN after drain")
    down_after = time.monotonic() - t0
    assert s is not None and s["check_status"] == "L4CON", s
    assert down_after < 15, down_after
    node.ctl("revive", tool="rabbitmq-upgrade", check=False)
    wait_until(lambda: has(status="UP", check_status="L7OK"), 60, 0.5, what="n1 UP after revive")
    lb.terminate()


CLIENT = r"""
import os, socket, sys, time
from tcplb import amqpwire as aw

vip, stop = sys.argv[1], sys.argv[2]

def frame(s, fr, want):
    while True:
        data = s.recv(65536)
        if not data:
            raise RuntimeError("closed")
        got = fr.feed(data)
        if isinstance(got, aw.NotAmqp):
            raise RuntimeError(got.reason)
        for f in got:
            if f.method == want:
                return f

s = socket.create_connection((vip, 5672), 10)
s.settimeout(10)
s.sendall(aw.PROTOCOL_HEADER)
fr = aw.FrameReader()
frame(s, fr, (10, 10))
s.sendall(aw.start_ok("app", "app-pw"))
tune = frame(s, fr, (10, 30))
cmax, fmax = int.from_bytes(tune.payload[4:6], "big"), int.from_bytes(tune.payload[6:10], "big")
s.sendall(aw.tune_ok(cmax, fmax, 0) + aw.connection_open("/"))
frame(s, fr, (10, 41))
print("OPEN", s.getsockname()[1], flush=True)
while not os.path.exists(stop):
    time.sleep(0.05)
s.sendall(aw.close())
frame(s, fr, (10, 51))
s.close()
print("DONE", flush=True)
"""


def test_send_proxy_v2_and_amqp_listener_with_rabbitmq_310(lab: Lab) -> None:
    """``proxy_protocol = true`` on the broker; tcplb with ``protocol = "amqp"``, ``send_proxy = "v2"`` and a
    rabbitmq check (its PROXY header describes the check's own socket, never LOCAL): the check passes, the
    broker shows the client namespace's address for the relayed connection, and logs no crash."""
    sw = lab.switch()
    cluster = RabbitCluster(lab, sw, n=1)
    node = cluster.nodes[0]
    with (node.base / "rabbitmq.conf").open("a") as conf:
        conf.write("proxy_protocol = true\n")
    lbh = lab.host("lb")
    lab.link(lbh, sw, f"{LB_IP}/24")
    cli = lab.host("cli")
    lab.link(cli, sw, "192.0.2.50/24")
    cluster.start()
    lab_users(node, app=True)
    cfg = lab.workdir / "pp.lb.toml"
    cfg.write_text(
        f"""
[defaults]
timeout_connect = "2s"
timeout_check = "10s"
timeout_client = "2m"
timeout_server = "2m"
[listen.amqp]
bind = ["{LB_IP}:5672"]
protocol = "amqp"
send_proxy = "v2"
check = {{ type = "rabbitmq", inter = "500ms", rise = 1, fall = 1, {LAB_PROBE} }}
server = [{{ name = "n1", address = "{node.ip}:5672" }}]
[stats]
bind = "127.0.0.1:8404"
auth = ["admin:s3cret"]
"""
    )
    lb = lbh.start([PY, "-m", "tcplb", "-c", str(cfg)], name="tcplb", env={"PYTHONPATH": str(ROOT)})

    def server() -> dict[str, Any] | None:
        out = lbh.run([PY, "-c", LAB_STATS_FETCH], env={"PYTHONPATH": str(ROOT)}, check=False).stdout
        if not out.startswith("{"):
            return None
        srv: dict[str, Any] = json.loads(out)["listeners"][0]["servers"][0]
        return srv

    s = wait_until(lambda: (x := server()) and x["check_status"] == "L7OK" and x, 60, 0.5, what="check L7OK")
    assert s and s["status"] == "UP", s
    stop = lab.workdir / "stop-client"
    proc = cli.start(
        [PY, "-c", CLIENT, LB_IP, str(stop)],
        name="amqp-client",
        env={"PYTHONPATH": str(ROOT)},
        ready_log="OPEN ",
        ready_timeout=30,
    )
    cport = next(x for x in proc.output().splitlines() if x.startswith("OPEN ")).split()[1]
    rows = node.ctl("list_connections", "peer_host", "peer_port", "host", "port", "--no-table-headers", "-q")
    seen = {tuple(r.split("\t")) for r in rows.strip().splitlines()}
    assert ("192.0.2.50", cport, LB_IP, "5672") in seen, rows
    stop.write_text("")
    wait_until(lambda: "DONE" in proc.output() or not proc.alive(), 30, 0.2, what="client closed")
    assert "DONE" in proc.output(), proc.output()[-2000:]
    assert node.server is not None
    crashes = [ln for ln in node.server.output().splitlines() if "no match of right hand side" in ln]
    assert not crashes, crashes[:3]
    assert (server() or {}).get("check_status") == "L7OK"
    lb.terminate()
