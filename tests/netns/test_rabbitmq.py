"""The shared 3-node RabbitMQ cluster: clustered, quorum queues, the ha-mode policy, a node restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from netns import WaitAborted, wait_until
from netns.amqp import CLASSIC, QUORUM, AmqpLoad, Ledger
from netns.plugin import SessionLab
from netns.rabbitmq import RabbitCluster

pytestmark = [pytest.mark.netns, pytest.mark.rabbitmq]


def test_three_running_nodes(rabbit: RabbitCluster, session_lab: SessionLab) -> None:
    assert rabbit.running_nodes() == ["rabbit@rmq1", "rabbit@rmq2", "rabbit@rmq3"]
    assert session_lab.boot_seconds < 180  # the three nodes boot in parallel (generous: a busy machine)
    for node in rabbit.nodes:
        # our epmd and our VM, by PID, in the node's own namespace
        assert node.epmd is not None and node.epmd.alive()
        assert node.server is not None and node.server.alive()
        assert Path(f"/proc/{node.server.pid}/comm").read_text().strip() == "beam.smp"


@pytest.mark.parametrize("queue_type", [QUORUM, CLASSIC])
def test_publish_on_one_node_consume_on_another(
    rabbit: RabbitCluster, session_lab: SessionLab, queue_type: str
) -> None:
    client = session_lab.stack().client
    queue = f"{'ha.' if queue_type == CLASSIC else ''}direct-{queue_type}-{time.monotonic_ns() % 10**6}"
    if queue_type == CLASSIC:
        rabbit.set_ha_policy()
    try:
        pub = AmqpLoad(
            client, rabbit.nodes[0].ip, queue, consumers=0, rate=0, queue_type=queue_type, tag=f"{queue}-pub"
        ).start()
        cons = AmqpLoad(
            client, rabbit.nodes[2].ip, queue, publishers=0, queue_type=queue_type, tag=f"{queue}-cons"
        ).start()
        wait_until(
            lambda: pub.confirmed() >= 300 and cons.consumed() >= 300, 60, what="300 through the cluster"
        )
        pub.stop()
        cons.stop()
        ledger = Ledger.from_files([*pub.outputs, *cons.outputs])
        assert ledger.summary()["confirmed"] >= 300
        assert ledger.lost == []
        info = {str(q["name"]): q for q in rabbit.queues()}[queue]
        assert info["type"] == queue_type
        if queue_type == CLASSIC:
            assert info["policy"] == "ha-all"
            out = rabbit.nodes[0].ctl("list_queues", "name", "slave_pids", "--quiet")
            line = next(ln for ln in out.splitlines() if ln.startswith(queue))
            assert line.count("rabbit@") == 2  # mirrored on the two other nodes
    finally:
        rabbit.delete_queues([queue])
        rabbit.clear_ha_policy()


def test_killed_node_restarts_and_rejoins(rabbit: RabbitCluster) -> None:
    node = rabbit["rmq3"]
    node.kill()
    assert not node.alive()
    rabbit.wait_running(2, timeout=60)  # each poll is a rabbitmqctl run: seconds on a busy machine
    node.start()
    rabbit.wait_running(3, timeout=120)  # a generous bound (Erlang boot on a busy machine), no timing claim


def test_a_dead_publisher_fails_the_wait_at_once(rabbit: RabbitCluster, session_lab: SessionLab) -> None:
    """wait_flowing gives up as soon as a publisher dies (with its output), not after its 30 s timeout."""
    client = session_lab.stack().client
    queue = f"dead-pub-{time.monotonic_ns() % 10**6}"
    load = AmqpLoad(client, rabbit.nodes[0].ip, queue, consumers=1, rate=50, tag=queue).start()
    try:
        load.wait_flowing(20)
        load.publishers[0].kill()
        t0 = time.monotonic()
        with pytest.raises(WaitAborted, match=rf"{queue}-pub0 exited with -9"):
            load.wait_flowing(10**6, timeout=300)
        assert time.monotonic() - t0 < 60  # the death ended it, not the 300 s bound
    finally:
        for p in [*load.publishers, *load.consumers]:
            p.terminate(5)
        rabbit.delete_queues([queue])
