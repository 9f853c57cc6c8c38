"""Admin operations of the stats API (HAProxy's ``set server``, ``enable/disable health``, ``shutdown
sessions server``), on a running :class:`~tcplb.lb.LoadBalancer`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import config as cfgmod
from .backend import ServerState
from .balance import count_usable
from .health import CheckStatus
from .tcplog import format_maintenance

if TYPE_CHECKING:
    from .lb import LoadBalancer


def set_weight(lb: LoadBalancer, fe_name: str, srv_name: str, weight: int) -> ServerState:
    st = find(lb, fe_name, srv_name)
    if not 0 <= weight <= cfgmod.MAX_WEIGHT:
        raise ValueError(f"weight must be 0..{cfgmod.MAX_WEIGHT}")
    st.admin_weight = weight
    lb._event(f"{fe_name}/{srv_name} weight set to {weight} (admin)")
    if weight == 0:
        st.flush_queue()  # out of rotation: its queued connections go elsewhere (as HAProxy's)
    return st


def set_state(lb: LoadBalancer, fe_name: str, srv_name: str, state: str) -> ServerState:
    """``ready`` | ``drain`` | ``maint`` (HAProxy's ``set server be/srv state``)."""
    st = find(lb, fe_name, srv_name)
    if state == "maint":
        if not st.maint:
            st.maint = True
            lb.stop_checker(st)
            n = st.flush_queue()
            act, bck = count_usable(st.fe.servers)
            lb._event(
                format_maintenance(
                    fe_name,
                    srv_name,
                    True,
                    active=act,
                    backup=bck,
                    is_backup=st.backup,
                    sessions=st.cur,
                    requeued=n,
                    queued=0,
                    by="admin API",
                ),
                logging.WARNING,
            )
            lb._availability(st.fe)
    elif state == "drain":
        st.drain = True
        st.flush_queue()  # out of rotation: its queued connections go elsewhere (as HAProxy's)
        if st.maint:
            st.maint = False
            lb.start_checker(st)
        lb._event(f"Server {fe_name}/{srv_name} is DRAIN (admin): no new connections.")
    elif state == "ready":
        was = st.maint
        st.maint = False
        st.drain = False
        lb.start_checker(st)
        if was:
            st.start_slowstart()  # out of maintenance: ramped as after a failure (HAProxy)
            act, bck = count_usable(st.fe.servers)
            lb._event(
                format_maintenance(
                    fe_name, srv_name, False, active=act, backup=bck, is_backup=st.backup, by="admin API"
                )
            )
            st.fe.was_available = act + bck > 0
        else:
            lb._event(f"Server {fe_name}/{srv_name} is READY (admin API).")
    else:
        raise ValueError("state must be ready, drain or maint")
    return st


def set_health(lb: LoadBalancer, fe_name: str, srv_name: str, enable: bool) -> ServerState:
    """HAProxy's ``enable|disable health``: start/stop the active checks. While they are disabled the
    last result is ignored and the server counts as UP ("no check"), as in HAProxy; enabling them
    again starts from that state and the checks decide."""
    st = find(lb, fe_name, srv_name)
    if not st.cfg.check.enabled:
        raise ValueError(f"server {fe_name}/{srv_name} has no health check (check = false)")
    if enable and st.health_off:
        st.health_off = False
        lb.start_checker(st)
        lb._event(f"Health checks of server {fe_name}/{srv_name} enabled (admin API).")
    elif not enable and not st.health_off:
        st.health_off = True
        lb.stop_checker(st)
        lb._event(
            f"Health checks of server {fe_name}/{srv_name} disabled (admin API): it counts as UP.",
            logging.WARNING,
        )
        tr = st.health.force_up(CheckStatus.UNK, lb.loop.time(), "health checks disabled")
        if tr is not None:
            lb.on_transition(st, tr)
    return st


def shutdown_sessions(lb: LoadBalancer, fe_name: str, srv_name: str) -> tuple[ServerState, int]:
    """HAProxy's ``shutdown sessions server``: close every connection on that server (logged with K).
    With ``workers``, every worker does the same with its own (the count is this process's)."""
    st = find(lb, fe_name, srv_name)
    return st, kill_sessions(lb, st, "admin API")


def kill_sessions(lb: LoadBalancer, st: ServerState, why: str) -> int:
    """Close every connection on ``st`` (logged with K; the workers too, with ``workers``): the admin
    API's ``shutdown sessions server``, and ``on_marked_down = "shutdown-sessions"``."""
    fe_name, srv_name = st.fe.name, st.name
    lb.acct.tell_others({"op": "shutdown-sessions", "listener": fe_name, "server": srv_name})  # workers
    n = 0
    for sess in list(lb.sessions):
        if sess.srv is st and sess.slot and not sess.pipe.closing:
            n += 1
            sess.fe.kill(sess)
    lb._event(
        f"Server {fe_name}/{srv_name}: {n} sessions killed ({why}).",
        logging.WARNING if n else logging.INFO,
    )
    return n


def find(lb: LoadBalancer, fe_name: str, srv_name: str) -> ServerState:
    fe = lb.frontends.get(fe_name)
    st = fe.server(srv_name) if fe is not None else None
    if st is None:
        raise KeyError(f"no server {fe_name}/{srv_name}")
    return st
