"""The stats snapshot: everything the stats page, CSV, JSON and metrics show, from a running
:class:`~tcplb.lb.LoadBalancer` (and its relay workers' counters)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .balance import count_usable

if TYPE_CHECKING:
    from .lb import LoadBalancer


def _ms(x: float) -> int:
    return int(x * 1000)


def snapshot(lb: LoadBalancer) -> dict[str, Any]:
    """Everything the stats page shows, JSON-able. Keys shared with HAProxy's CSV use its field names.

    Bytes include the connections still open (their counts so far on top of the closed ones' totals);
    rates come from the stats timer (:meth:`start_sampling`). Nothing here costs per-connection work
    outside this call.
    """
    now = lnow = lb.loop.time()
    others = lb.acct.others()  # the other processes' counters, if any (global.workers)
    live: dict[object, list[int]] = {}  # Frontend / ServerState -> [bin, bout] of open sessions
    for sess in lb.sessions:
        p = sess.pipe
        bi, bo = p.bytes_in, p.bytes_out
        if not (bi or bo):
            continue
        for key in (sess.fe, sess.srv):
            if key is not None:
                acc = live.get(key)
                if acc is None:
                    live[key] = [bi, bo]
                else:
                    acc[0] += bi
                    acc[1] += bo
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "started": lb.started,
        "uptime": time.time() - lb.started,
        "actconn": lb.total_actconn(others),
        "maxconn": lb.maxconn * lb.nprocs,
        "processes": lb.nprocs,
        "reloads": lb.reloads,
        "listeners": [],
    }
    for fe in lb.frontends.values():
        act, bck = count_usable(fe.servers)
        servers: list[dict[str, Any]] = []
        for st in fe.servers:
            lc = st.last_check
            checked = st.checks_enabled
            sb = live.get(st, (0, 0))
            sp = others.of(st)
            stot = st.stot + sp.get("stot", 0)
            rate, rate_max, since = st.rate.read(stot, lnow)
            health = "disabled" if st.health_off else "enabled" if st.cfg.check.enabled else "none"
            servers.append(
                {
                    "name": st.name,
                    "address": st.cfg.address,
                    "addr": st.cfg.address,
                    "status": st.status(),
                    "weight": st.shown_weight,
                    "throttle": st.throttle,
                    "cfg_weight": st.cfg_weight,
                    "backup": st.backup,
                    "act": 0 if st.backup else 1,
                    "bck": 1 if st.backup else 0,
                    "scur": st.cur + sp.get("cur", 0),
                    "smax": st.smax + sp.get("smax", 0),
                    "slim": st.cfg.maxconn,
                    "stot": stot,
                    "lbtot": st.lbtot + sp.get("lbtot", 0),
                    "rate": rate,
                    "rate_max": rate_max,
                    "lastsess": int(since) if since is not None else None,
                    "qcur": len(st.queue) + sp.get("qcur", 0),
                    "qmax": st.qmax + sp.get("qmax", 0),
                    "qlimit": st.cfg.maxqueue,
                    "bin": st.bin + sb[0] + sp.get("bin", 0),
                    "bout": st.bout + sb[1] + sp.get("bout", 0),
                    "econ": st.econ + sp.get("econ", 0),
                    "eresp": st.eresp + sp.get("eresp", 0),
                    "wretr": st.wretr + sp.get("wretr", 0),
                    "wredis": st.wredis + sp.get("wredis", 0),
                    "chkfail": st.chkfail,
                    "chkdown": st.chkdown,
                    "lastchg": int(now - st.lastchg),
                    "downtime": int(st.downtime + (now - st.down_since if st.down_since else 0)),
                    "check": st.cfg.check.type if st.cfg.check.enabled else None,
                    "health": health,
                    "check_status": str(st.health.status) if checked else None,
                    "check_code": lc.code if lc and checked else None,
                    "check_duration": _ms(lc.duration) if lc and checked else None,
                    "check_duration_ms": _ms(lc.duration) if lc else None,
                    "check_info": lc.detail if lc else "",
                    "last_chk": lc.detail if lc and checked else None,
                    "check_rise": st.health.rise,
                    "check_fall": st.health.fall,
                    "check_health": st.health.health,
                    "maint": st.maint,
                    "drain": st.drain,
                    # rabbitmq check with management (None / [] otherwise)
                    "node_state": st.node_health,
                    "node_drain": st.node_drain,
                    "node_info": st.node_info,
                    "alarms": sorted(st.alarms),
                    # graceful closes through the management API (tcplb/rebalancer.py), this process's
                    **lb.rebalance.snapshot(fe.name, st.name),
                }
            )
        fb = live.get(fe, (0, 0))
        fp = others.of(fe)
        fb = (fb[0] + fp.get("bin", 0), fb[1] + fp.get("bout", 0))
        fcur, fsmax = fe.cur + fp.get("cur", 0), fe.smax + fp.get("smax", 0)
        fstot, fecon = fe.stot + fp.get("stot", 0), fe.econ + fp.get("econ", 0)
        fslim = fe.maxconn * lb.nprocs
        rate, rate_max, _ = fe.rate.read(fstot, lnow)
        qcur = sum(s["qcur"] for s in servers)
        if qcur > fe.be_qmax:
            fe.be_qmax = qcur
        last = [s["lastsess"] for s in servers if s["lastsess"] is not None]
        out["listeners"].append(
            {
                "name": fe.name,
                "bind": [f"{h}:{p}" for h, p in fe.cfg.bind],
                "balance": fe.cfg.balance,
                "scur": fcur,
                "smax": fsmax,
                "slim": fslim,
                "stot": fstot,
                "rate": rate,
                "rate_max": rate_max,
                "bin": fe.bin + fb[0],
                "bout": fe.bout + fb[1],
                "active_servers": act,
                "backup_servers": bck,
                "status": "OPEN" if fe.accepting else ("FULL" if not fe.stopped else "STOP"),
                "servers": servers,
                "backend": {
                    "status": "UP" if act + bck else "DOWN",
                    "act": act,
                    "bck": bck,
                    "weight": sum(s.shown_weight for s in fe.servers if not s.backup and s.usable),
                    "qcur": qcur,
                    "qmax": fe.be_qmax,
                    "scur": fcur,
                    "smax": fsmax,
                    "slim": fslim,
                    "stot": fstot,
                    "lbtot": sum(s["lbtot"] for s in servers),
                    "rate": rate,
                    "rate_max": rate_max,
                    "lastsess": min(last) if last else None,
                    "bin": fe.bin + fb[0],
                    "bout": fe.bout + fb[1],
                    "econ": fecon,
                    "eresp": sum(s["eresp"] for s in servers),
                    "wretr": sum(s["wretr"] for s in servers),
                    "wredis": sum(s["wredis"] for s in servers),
                },
            }
        )
    return out
