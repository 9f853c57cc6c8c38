"""Reload (SIGHUP): a new configuration applied in place to the running listeners and servers.

Connections are untouched; listening sockets move between listeners by address; servers keep their state
and counters by name.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from . import config as cfgmod
from .backend import ServerState, _limited
from .balance import make_balancer
from .config import Config, Listener
from .frontend import Frontend
from .listen import derived_maxconn

if TYPE_CHECKING:
    from .lb import LoadBalancer


def reload_lb(lb: LoadBalancer, cfg: Config) -> None:
    """Apply a new configuration in place (SIGHUP). Raises OSError if a new bind fails (nothing changed
    for the listeners opened before; the caller logs it)."""
    lb.cfg = cfg
    lb.maxconn = cfgmod.per_process(derived_maxconn(cfg), lb.nprocs)
    names = {li.name for li in cfg.listeners}
    for name in list(lb.frontends):
        if name not in names:
            fe = lb.frontends.pop(name)
            fe.close_sockets()
            fe.stopped = True
            for st in fe.servers:
                lb.stop_checker(st)
            lb._event(f"Proxy {name} stopped (removed by reload).")
    # binds may move between listeners: hand sockets over by address
    pool: dict[tuple[str, int], socket.socket] = {}
    for fe in lb.frontends.values():
        for addr in [a for a in fe.sockets if a not in set(cfg.listener(fe.name).bind)]:
            pool[addr] = fe.sockets.pop(addr)
    for li in cfg.listeners:
        fe2 = lb.frontends.get(li.name)
        if fe2 is None:
            fe2 = Frontend(lb, li)
            own = {a: pool.pop(a) for a in li.bind if a in pool}
            fe2.open_sockets(own)
            lb.frontends[li.name] = fe2
            for st in fe2.servers:
                lb.start_checker(st)
            lb._event(f"Proxy {li.name} started.")
        else:
            own = {a: pool.pop(a) for a in li.bind if a in pool}
            own.update(fe2.sockets)
            fe2.sockets = own
            update_frontend(fe2, li)
    for sock in pool.values():
        sock.close()
    lb.reloads += 1
    if not lb.stopping:
        lb.resume_if_room(force=True)


def update_frontend(fe: Frontend, cfg: Listener) -> None:
    """Apply a reloaded section: binds, servers, weights, checks, timeouts. Connections untouched."""
    old_socks = fe.sockets
    fe.sockets = {}
    fe.pause_accepting()
    fe.cfg = cfg
    try:
        fe.open_sockets(old_socks)
    finally:
        for sock in old_socks.values():  # binds that went away
            sock.close()
    if cfg.balance != fe.balancer.kind:
        fe.balancer = make_balancer(cfg.balance)
    fe._apply_timeouts()
    by_name = {s.name: s for s in fe.servers}
    new: list[ServerState] = []
    for scfg in cfg.servers:
        st = by_name.pop(scfg.name, None)
        if st is None:
            st = ServerState(scfg, fe)
            new.append(st)
            continue
        old = st.cfg
        st.cfg = scfg
        if scfg.weight != old.weight:
            st.admin_weight = scfg.weight
        st.cfg_weight = scfg.weight
        if scfg.disabled != old.disabled:
            st.maint = scfg.disabled
        if scfg.check != old.check or (scfg.host, scfg.port) != (old.host, old.port):
            ck = scfg.check
            h = st.health
            h.rise, h.fall, h.on_error, h.error_limit = ck.rise, ck.fall, ck.on_error, ck.error_limit
            fe.lb.stop_checker(st)
        new.append(st)
    for gone in by_name.values():
        gone.removed = True
        fe.lb.stop_checker(gone)
        gone.flush_queue()
        fe.balancer.forget(gone.name)
    fe.servers = new
    fe.limited = _limited(new)
    for st in fe.servers:
        fe.lb.start_checker(st)
