"""Capture real answers from the lab's RabbitMQ 3.10.8 (management plugin on) into this directory.

Heavy (two RabbitMQ nodes in namespaces): run alone, serialized with the other heavy runs::

    flock /tmp/rmqfd-heavy.lock .venv/bin/python tests/tcplb/mgmt_fixtures/capture_lab310.py

What it records (``lab310.json`` plus one ``<name>.lab310.body`` file per HTTP answer):

* ``/api/nodes``, ``/api/nodes/{node}``, the alarm checks and the 4.1.1 endpoints (404 on 3.10), normal;
* the same with a memory alarm on rmq2 (``set_vm_memory_high_watermark absolute`` lowered);
* after ``rabbitmq-upgrade drain`` of rmq2: ``/api/nodes`` from rmq1 and what rmq2's own ports do;
* after ``rabbitmqctl stop_app`` on rmq2: ``/api/nodes`` from rmq1;
* the AMQP side: the raw Connection.Start bytes, and the broker log lines produced by the clean probe
  (tcplb.amqpwire.Probe with credentials) and by a header-only probe.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from netns.lab import Lab, wait_until  # noqa: E402
from netns.rabbitmq import RabbitCluster, RabbitNode  # noqa: E402

WORKER = r"""
import asyncio, json, socket, sys
from tcplb import amqpwire, mgmt

async def fetch_all(jobs):
    out = []
    for name, host, path, auth in jobs:
        got = await mgmt.fetch(host, 15672, path, user="mon" if auth else None,
                               password="mon-pw" if auth else None, timeout=10)
        if isinstance(got, mgmt.FetchFailed):
            out.append({"name": name, "host": host, "path": path, "failed": got.reason})
        else:
            out.append({"name": name, "host": host, "path": path, "status": got.status,
                        "body": got.body.decode("latin-1")})
    return out

def probe(host, creds):
    p = amqpwire.Probe(amqpwire.Credentials("probe", "probe-pw") if creds else None)
    s = socket.create_connection((host, 5672), 5)
    s.settimeout(5)
    s.sendall(p.start())
    raw = b""
    outcome = None
    while outcome is None:
        data = s.recv(65536)
        if not data:
            outcome = p.feed_eof()
            break
        raw += data
        step = p.feed(data)
        if step.send:
            s.sendall(step.send)
        outcome = step.outcome
    s.close()
    return {"raw_hex": raw.hex(), "ok": outcome.ok, "clean": outcome.clean, "reason": outcome.reason}

def amqp_refused(host):
    try:
        socket.create_connection((host, 5672), 3).close()
        return "accepted"
    except OSError as e:
        return e.strerror or str(e)

cmd = json.loads(sys.argv[1])
if cmd["op"] == "fetch":
    print(json.dumps(asyncio.run(fetch_all(cmd["jobs"]))))
elif cmd["op"] == "probe":
    print(json.dumps(probe(cmd["host"], cmd["creds"])))
elif cmd["op"] == "connect":
    print(json.dumps(amqp_refused(cmd["host"])))
"""


def mgmt_up(node: RabbitNode) -> Callable[[], bool]:
    return lambda: node._listening(15672)


def alarm_set(node: RabbitNode) -> bool:
    return "memory" in node.ctl("eval", "rabbit_alarm:get_alarms().")


def main() -> None:

    lab = Lab("mgmt-capture")
    manifest: list[dict[str, object]] = []
    try:
        sw = lab.switch()
        cluster = RabbitCluster(lab, sw, n=2)
        for node in cluster.nodes:
            (node.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        client = lab.host("cli")
        lab.link(client, sw, "192.0.2.50/24")
        cluster.start()
        rmq1, rmq2 = cluster.nodes
        for node in cluster.nodes:
            wait_until(mgmt_up(node), 60, what=f"15672 on {node.name}")
        rmq1.ctl("add_user", "probe", "probe-pw")
        rmq1.ctl("set_permissions", "-p", "/", "probe", "^$", "^$", "^$")
        rmq1.ctl("add_user", "mon", "mon-pw")
        rmq1.ctl("set_user_tags", "mon", "monitoring")

        env = {"PYTHONPATH": str(ROOT)}

        def worker(cmd: dict[str, object]) -> object:
            res = client.run([sys.executable, "-c", WORKER, json.dumps(cmd)], env=env, timeout=60)
            return json.loads(res.stdout)

        def fetch(tag: str, jobs: list[tuple[str, str, str, bool]]) -> None:
            got = worker({"op": "fetch", "jobs": [[f"{tag}_{n}", h, p, a] for n, h, p, a in jobs]})
            assert isinstance(got, list)
            for entry in got:
                if "body" in entry:
                    (HERE / f"{entry['name']}.lab310.body").write_bytes(entry.pop("body").encode("latin-1"))
                manifest.append(entry)

        n1, n2 = rmq1.ip, rmq2.ip
        q1, q2 = "/api/nodes/rabbit%40rmq1", "/api/nodes/rabbit%40rmq2"
        fetch(
            "normal",
            [
                ("nodes", n1, "/api/nodes", True),
                ("node_rmq1", n1, q1, True),
                ("alarms", n1, "/api/health/checks/alarms", True),
                ("local_alarms", n1, "/api/health/checks/local-alarms", True),
                ("is_in_service", n1, "/api/health/checks/is-in-service", False),
                ("ready_to_serve_clients", n1, "/api/health/checks/ready-to-serve-clients", True),
                ("no_auth_node", n1, q1, False),
            ],
        )

        # the AMQP probes and what the broker logs for each
        assert rmq1.server is not None
        for label, creds in (("clean", True), ("header_only", False)):
            before = len(rmq1.server.output().splitlines())
            result = worker({"op": "probe", "host": n1, "creds": creds})
            assert isinstance(result, dict)
            time.sleep(0.1)  # the log line of a FIN-ended connection follows the close

            def logged(before: int = before) -> list[str]:
                return rmq1.server.output().splitlines()[before:] if rmq1.server else []

            wait_until(lambda: len(logged()) >= 2, 10, what="probe log lines")
            time.sleep(1.0)  # a late warning would come within this second
            result["log"] = [line for line in logged() if "connection" in line.lower()]
            manifest.append({"name": f"probe_{label}", **result})

        # a memory alarm on rmq2
        rmq2.ctl("set_vm_memory_high_watermark", "absolute", "1000000")
        wait_until(lambda: alarm_set(rmq1), 30, what="memory alarm")
        fetch(
            "memalarm",
            [
                ("nodes", n1, "/api/nodes", True),
                ("node_rmq2", n1, q2, True),
                ("alarms", n1, "/api/health/checks/alarms", True),
                ("local_alarms_rmq1", n1, "/api/health/checks/local-alarms", True),
                ("local_alarms_rmq2", n2, "/api/health/checks/local-alarms", True),
            ],
        )
        rmq2.ctl("set_vm_memory_high_watermark", "absolute", "268435456")
        wait_until(lambda: not alarm_set(rmq1), 30, what="no alarm")

        # maintenance mode on rmq2
        rmq2.ctl("drain", tool="rabbitmq-upgrade", timeout=120, check=False)
        fetch(
            "drained",
            [("nodes", n1, "/api/nodes", True), ("node_rmq2", n1, q2, True), ("self", n2, q2, True)],
        )
        manifest.append({"name": "drained_amqp_connect", "result": worker({"op": "connect", "host": n2})})
        rmq2.ctl("revive", tool="rabbitmq-upgrade", timeout=120, check=False)

        # rmq2 stopped
        # stop_app, not a VM stop: with two nodes and pause_minority, losing rmq2's VM would pause rmq1 too
        rmq2.ctl("stop_app")

        def rmq2_down() -> bool:
            got = worker({"op": "fetch", "jobs": [["poll", n1, "/api/nodes", True]]})
            assert isinstance(got, list)
            try:
                nodes = json.loads(got[0].get("body", ""))
            except ValueError:
                return False
            return any(n.get("name") == "rabbit@rmq2" and n.get("running") is False for n in nodes)

        wait_until(rmq2_down, 60, what="rmq2 seen stopped")
        fetch("stopped", [("nodes", n1, "/api/nodes", True), ("node_rmq2", n1, q2, True)])
    finally:
        (HERE / "lab310.json").write_text(json.dumps(manifest, indent=1) + "\n")
        lab.teardown()


if __name__ == "__main__":
    main()
