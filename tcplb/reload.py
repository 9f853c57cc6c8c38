"""Reload (SIGHUP): a new configuration applied in place to the running listeners and servers.

Connections are untouched; listening sockets move between listeners by address; servers keep their state
and counters by name. All or nothing: the pure planner (:mod:`tcplb.reload_plan`) says which binds are new,
they are opened first, and a failure there leaves everything as it was.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from . import config as cfgmod
from .backend import ServerState, _limited
from .balance import make_balancer
from .config import Config, Listener
from .frontend import Frontend
from .listen import derived_maxconn, make_listen_socket
from .reload_plan import Plan, ReloadError, plan

if TYPE_CHECKING:
    from .lb import LoadBalancer


def prepare_sockets(
    cfg: Config, wanted: list[tuple[str, tuple[str, int]]], maxconn: int, nprocs: int
) -> dict[tuple[str, int], socket.socket]:
    """Bind every (listener, address) of ``wanted``; on the first failure close the ones already bound and
    raise :class:`ReloadError` naming the listener and the address."""
    out: dict[tuple[str, int], socket.socket] = {}
    try:
        for name, addr in wanted:
            li = cfg.listener(name)
            fe_max = maxconn if li.maxconn is None else min(cfgmod.per_process(li.maxconn, nprocs), maxconn)
            try:
                out[addr] = make_listen_socket(addr, li.backlog or fe_max, reuseport=nprocs > 1)
            except OSError as e:
                raise ReloadError(name, addr, e.strerror or str(e)) from None
    except BaseException:
        for sock in out.values():
            sock.close()
        raise
    return out


def reload_lb(lb: LoadBalancer, cfg: Config) -> Plan:
    """Apply a new configuration in place (SIGHUP), all or nothing: every new bind is opened first (the
    planner says which, :mod:`tcplb.reload_plan`); if one fails, :class:`ReloadError` and nothing changed:
    the running listeners keep accepting with their old configuration."""
    p = plan(lb.cfg, cfg)
    maxconn = cfgmod.per_process(derived_maxconn(cfg), lb.nprocs)
    held = {a for fe in lb.frontends.values() for a in fe.sockets}
    wanted = list(p.open) + [(new, a) for a, (_old, new) in p.keep.items() if a not in held]
    prepared = prepare_sockets(cfg, wanted, maxconn, lb.nprocs)
    # from here on nothing can fail: sockets are only handed over, closed, or served
    lb.cfg = cfg
    lb.maxconn = maxconn
    names = {li.name for li in cfg.listeners}
    for name in list(lb.frontends):
        if name not in names:
            fe = lb.frontends.pop(name)
            fe.close_sockets()
            fe.stopped = True
            for st in fe.servers:
                lb.stop_checker(st)
            lb._event(f"Proxy {name} stopped (removed by reload).")
    # listeners removed by this reload or an earlier one: their open sessions end under the running
    # globals (global.log), as the kept listeners' do
    for fe in {sess.fe for sess in lb.sessions if sess.fe.stopped}:
        fe._apply_timeouts()
    # binds may move between listeners: hand sockets over by address
    pool: dict[tuple[str, int], socket.socket] = prepared
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
    return p


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
            if ck.type != "rabbitmq" or ck.management is None:  # nobody reports the node's state any more
                st.node_drain, st.node_health, st.node_info, st.alarms = False, None, "", frozenset()
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
