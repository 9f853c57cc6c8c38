"""What a RabbitMQ node's own state (``rabbitmq`` check with ``management``) does to a server.

The management poll (:meth:`tcplb.checks.Checker._run_node`) hands a :class:`tcplb.mgmt.NodeState` here:

* **draining** (maintenance mode: ``being_drained`` from 3.11.19/3.12.1, ``is-in-service`` 503 from 4.1.1) or
  **down** (``running: false``): the server goes DRAIN on its own: no new connections, its queue goes
  elsewhere, and the connections it has are left alone (the broker closes them itself with 320
  CONNECTION_FORCED when it drains; tcplb never cuts them). **ready**: it comes back (the admin drain,
  ``set server … state drain``, is a separate flag: one does not undo the other). On 3.10 there is no HTTP
  maintenance flag and the drained node suspends its management port as well as 5672: the AMQP check
  sees the refusal and marks it DOWN at once (passive health does so at the first refused live connect).
* **unknown** (the API did not answer, or said nothing about readiness): the previous view stays; a failed
  management API is not a failed broker.
* **alarms** (memory, disk, file descriptors) are shown on the stats page, CSV/JSON and metrics and logged
  when raised and cleared, but never take the server out: RabbitMQ's alarms are cluster-wide, and moving
  new connections does not unblock a blocked publisher (it blocks on every node).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .mgmt import Health, NodeState

if TYPE_CHECKING:
    from .backend import ServerState
    from .lb import LoadBalancer


def on_node_state(lb: LoadBalancer, st: ServerState, ns: NodeState) -> None:
    fe_name = st.fe.name
    if ns.health is not Health.UNKNOWN:
        drain = ns.health in (Health.DRAINING, Health.DOWN)
        st.node_health = ns.health.value
        if drain != st.node_drain:
            st.node_drain = drain
            if drain:
                n = st.flush_queue()
                lb.event(
                    f"Server {fe_name}/{st.name} is DRAIN (RabbitMQ node {ns.health.value}: {ns.reason}): "
                    f"no new connections, {st.cur} sessions left to the broker, {n} requeued.",
                    logging.WARNING,
                )
            else:
                st.start_slowstart()  # back from maintenance (e.g. `rabbitmq-upgrade revive`): ramped
                lb.event(f"Server {fe_name}/{st.name} is READY (RabbitMQ node ready: {ns.reason}).")
            lb._availability(st.fe)
    elif st.node_health is None:
        st.node_health = Health.UNKNOWN.value
    st.node_info = ns.reason
    if ns.alarms is not None and ns.alarms != st.alarms:
        raised, cleared = ns.alarms - st.alarms, st.alarms - ns.alarms
        st.alarms = ns.alarms
        if raised:
            lb.event(
                f"Server {fe_name}/{st.name}: RabbitMQ resource alarm raised: {', '.join(sorted(raised))} "
                "(publishers are blocked cluster-wide; the server stays in rotation).",
                logging.WARNING,
            )
        if cleared:
            names = ", ".join(sorted(cleared))
            lb.event(f"Server {fe_name}/{st.name}: RabbitMQ resource alarm cleared: {names}.")
