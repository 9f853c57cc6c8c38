"""The stats server: HTML page, HAProxy CSV, JSON, Prometheus metrics and the admin API over HTTP.

An HTTP/1.1 server on :mod:`rmqfd.http` (h11 parsing, one request per connection, bounded request time and
room: idle connections cannot lock users out), started by the daemon when the configuration has a
``[stats]`` section. It stays up during a graceful stop, until the process exits:

GET  ``<uri>`` (default ``/stats``)     HTML page, a table per listener (``<uri>;norefresh``: no auto-refresh)
GET  ``<uri>;csv`` / ``/stats.csv``     HAProxy's CSV (``# pxname,svname,...``)
GET  ``<uri>;json`` / ``/stats.json``   everything as JSON
GET  ``/metrics``                       Prometheus text format 0.0.4 (``tcplb_*``)
GET  ``/api/servers[/<listener>/<server>]``  servers and their state, JSON
POST ``/api/servers/<listener>/<server>/state``  ``state=ready|drain|maint``              (admin)
POST ``/api/servers/<listener>/<server>/weight`` ``weight=0..256``                        (admin)
POST ``/api/servers/<listener>/<server>/shutdown-sessions``                               (admin)
POST ``/api/servers/<listener>/<server>/health`` ``health=enable|disable``                 (admin)
POST ``/api/rebalance/<listener>``  graceful rebalancing run now; 409 without check.management   (admin)
POST ``/api/reload``   reload the configuration file, as SIGHUP; 409 when refused (old one kept)  (admin)

With ``auth`` every request needs HTTP basic auth; the admin API always does (and ``admin = true``).
Admin actions and refused admin attempts are logged with the user and the client address, never a password.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import html
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from rmqfd.http import HttpError, HttpServer, Limits, Request, Response

from .config import StatsConfig
from .health import describe
from .lb import LoadBalancer

log = logging.getLogger("tcplb.stats")


ADMIN_ACTIONS = ("state", "weight", "shutdown-sessions", "health")
# older spellings, kept for scripts: POST .../ready|drain|maint (state) and .../enable|disable (ready|maint)
SHORTCUTS = {"ready": "ready", "drain": "drain", "maint": "maint", "enable": "ready", "disable": "maint"}

CSV_FIELDS = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    # tcplb's own, after HAProxy's (rabbitmq check with management): node state, resource alarms
    "rmq_node",
    "rmq_alarms",
    # graceful closes through RabbitMQ's management API (tcplb/rebalancer.py)
    "rebalance_closes",
    "lifetime_closes",
    "close_failures",
]


def _v(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "Y" if x else ""
    return str(x)


def human(sec: float | None) -> str:
    """``3m12s``, ``2h5m``, ``1d3h`` (HAProxy's style for durations on the page); "" for None."""
    if sec is None:
        return ""
    s = max(0, int(sec))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


# ------------------------------------------------------------------------------------------------ CSV


def csv_rows(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """HAProxy's ``show stat`` rows: per listener FRONTEND, one per server, BACKEND."""
    rows: list[dict[str, Any]] = []
    pid = snap["pid"]
    for iid, fe in enumerate(snap["listeners"], start=1):
        base = {"pxname": fe["name"], "pid": pid, "iid": iid, "mode": "tcp"}
        rows.append(
            {
                **base,
                "svname": "FRONTEND",
                **{k: fe[k] for k in ("scur", "smax", "slim", "stot", "bin", "bout", "status")},
                "rate": fe["rate"],
                "rate_max": fe["rate_max"],
                "sid": 0,
                "type": 0,
            }
        )
        for sid, s in enumerate(fe["servers"], start=1):
            row = {**base, "svname": s["name"], "sid": sid, "type": 2}
            for k in (
                "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout", "econ", "eresp", "wretr",
                "wredis", "status", "weight", "act", "bck", "chkfail", "chkdown", "lastchg", "downtime",
                "qlimit", "lbtot", "rate", "rate_max", "check_status", "check_code", "check_duration",
                "lastsess", "last_chk", "check_rise", "check_fall", "check_health", "addr", "throttle",
            ):  # fmt: skip
                row[k] = s[k]
            row["rmq_node"] = s.get("node_state")
            row["rmq_alarms"] = " ".join(s.get("alarms") or ()) or None
            for k in ("rebalance_closes", "lifetime_closes", "close_failures"):
                row[k] = s.get(k, 0)
            if s["check_status"]:
                row["check_desc"] = describe(s["check_status"])
            else:  # HAProxy leaves the check columns empty for a server without checks
                for k in ("chkfail", "chkdown", "check_rise", "check_fall", "check_health"):
                    row[k] = None
            rows.append(row)
        be = fe["backend"]
        rows.append({**base, **be, "svname": "BACKEND", "sid": 0, "type": 1, "algo": fe["balance"]})
    return rows


def render_csv(snap: dict[str, Any]) -> str:
    import csv
    import io

    buf = io.StringIO()
    buf.write("# " + ",".join(CSV_FIELDS) + ",\n")
    w = csv.writer(buf, lineterminator="\n")
    for r in csv_rows(snap):
        w.writerow([_v(r.get(f)) for f in CSV_FIELDS] + [""])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- HTML

_STYLE = """body{font-family:Arial,Helvetica,sans-serif;font-size:12px}table{border-collapse:collapse;
margin-bottom:1.5em}th,td{border:1px solid #999;padding:2px 4px;text-align:right;white-space:nowrap}
th{background:#20a0ff;color:#fff;text-align:center}td.n{text-align:left;font-weight:bold}tr.UP{background:#c0ffc0}
tr.DOWN{background:#ff9090}tr.MAINT{background:#c07820}tr.DRAIN{background:#20a0ff}tr.trans{background:#ffffa0}
tr.nocheck{background:#e0e0e0}tr.fe,tr.be{background:#eee}caption{text-align:left;font-weight:bold;
font-size:14px}form{display:inline;margin:0 1px}td.admin{text-align:left}input.w{width:4em}
.off{color:#a00}"""

_GROUPS = [
    ("Queue", ["Cur", "Max", "Limit"]),
    ("Session rate", ["Cur", "Max"]),
    ("Sessions", ["Cur", "Max", "Limit", "Total", "LbTot", "Last"]),
    ("Bytes", ["In", "Out"]),
    ("Errors", ["Conn", "Resp"]),
    ("Warnings", ["Retr", "Redis"]),
    ("Server", ["Status", "LastChk", "Wght", "Act", "Bck", "Chk", "Dwn", "Dwntme", "LastChg"]),
]
_NCOLS = sum(len(c) for _, c in _GROUPS)


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _lastchk(s: dict[str, Any]) -> tuple[str, str]:
    """(cell text, tooltip): ``L4OK in 1ms``, ``L7STS/503 in 4ms``."""
    if s["health"] == "none":
        return "", ""
    if s["health"] == "disabled":
        return "checks off", "active checks disabled by the admin API"
    st = s["check_status"] or ""
    if s["check_code"] is not None:
        st += f"/{s['check_code']}"
    if s["check_duration"] is not None:
        st += f" in {s['check_duration']}ms"
    tip = describe(s["check_status"]) if s["check_status"] else ""
    if s["check_info"]:
        tip += f": {s['check_info']}"
    return st, tip


def _admin_cell(li: str, s: dict[str, Any]) -> str:
    e = html.escape
    sv = s["name"]
    ids = f"{e(li)}-{e(sv)}"
    act = f"/api/servers/{e(_q(li))}/{e(_q(sv))}/"
    red = '<input type="hidden" name="redirect" value="1">'

    def form(path: str, field_: str, value: str, bid: str, label: str, disabled: bool = False) -> str:
        hidden = f'<input type="hidden" name="{field_}" value="{value}">' if field_ else ""
        dis = " disabled" if disabled else ""
        return (
            f'<form method="post" action="{act}{path}">{hidden}{red}'
            f'<button type="submit" id="btn-{bid}-{ids}"{dis}>{label}</button></form>'
        )

    nochk = s["health"] == "none"
    return (
        '<td class="admin">'
        + form("state", "state", "ready", "ready", "Ready")
        + form("state", "state", "drain", "drain", "Drain")
        + form("state", "state", "maint", "maint", "Maint")
        + form("shutdown-sessions", "", "", "shutdown", "Kill sessions")
        + form("health", "health", "enable", "health-on", "Checks on", nochk)
        + form("health", "health", "disable", "health-off", "Checks off", nochk)
        + f'<form method="post" action="{act}weight">{red}'
        f'<input class="w" type="number" name="weight" min="0" max="256" value="{s["weight"]}" '
        f'id="weight-{ids}" aria-label="weight of {e(sv)}">'
        f'<button type="submit" id="btn-weight-{ids}">Set</button></form></td>'
    )


def render_html(
    snap: dict[str, Any],
    refresh: float | None = None,
    *,
    uri: str = "/stats",
    admin: bool = False,
    norefresh: bool = False,
) -> str:
    e = html.escape
    head1 = '<tr><th rowspan="2">Name</th>' + "".join(
        f'<th colspan="{len(cols)}">{g}</th>' for g, cols in _GROUPS
    )
    if admin:
        head1 += '<th rowspan="2">Admin</th>'
    head2 = "<tr>" + "".join(f"<th>{c}</th>" for _, cols in _GROUPS for c in cols) + "</tr>"
    out = ['<!DOCTYPE html><html><head><meta charset="utf-8"><title>tcplb statistics</title>']
    if refresh and not norefresh:
        out.append(f'<meta http-equiv="refresh" content="{max(1, round(refresh))}">')
    out.append(f"<style>{_STYLE}</style></head><body><h1>tcplb statistics</h1>")
    links = f'<a href="{e(uri)};csv">CSV</a> <a href="{e(uri)};json">JSON</a> <a href="/metrics">metrics</a>'
    if refresh:
        links += (
            f' <a href="{e(uri)}">refresh every {human(refresh)}</a>'
            if norefresh
            else f' <a href="{e(uri)};norefresh">stop refreshing</a>'
        )
    out.append(
        f"<p>pid {snap['pid']}, uptime {human(snap['uptime'])}, {snap['actconn']} connections "
        f"(maxconn {snap['maxconn']}), {snap['reloads']} reloads. {links}</p>"
    )

    def cells(vals: list[Any], status_at: int = 17) -> str:
        parts = []
        for i, v in enumerate(vals):
            if isinstance(v, tuple):  # (text, title)
                t = f' title="{e(v[1])}"' if v[1] else ""
                cls = ' class="status"' if i == status_at else ""
                parts.append(f"<td{cls}{t}>{e(v[0])}</td>")
            else:
                cls = ' class="status"' if i == status_at else ""
                parts.append(f"<td{cls}>{e(_v(v))}</td>")
        return "".join(parts)

    for fe in snap["listeners"]:
        li = fe["name"]
        be = fe["backend"]
        out.append(
            f'<table id="px-{e(li)}"><caption>{e(li)} ({e(", ".join(fe["bind"]))}, {e(fe["balance"])})'
            f"</caption>{head1}</tr>{head2}"
        )
        fe_vals: list[Any] = ["", "", "", fe["rate"], fe["rate_max"], fe["scur"], fe["smax"], fe["slim"]]
        fe_vals += [fe["stot"], "", "", fe["bin"], fe["bout"], "", "", "", "", fe["status"]] + [""] * 8
        out.append(
            f'<tr class="fe" id="fe-{e(li)}"><td class="n">Frontend</td>{cells(fe_vals)}'
            + ("<td></td>" if admin else "")
            + "</tr>"
        )
        for s in fe["servers"]:
            st = s["status"]
            cls = st.split()[0] if st.split()[0] in ("UP", "DOWN", "MAINT", "DRAIN") else "nocheck"
            if " " in st and cls != "nocheck":
                cls = "trans"
            chk = s["health"] != "none"
            vals: list[Any] = [s["qcur"], s["qmax"], s["qlimit"], s["rate"], s["rate_max"]]
            vals += [s["scur"], s["smax"], s["slim"], s["stot"], s["lbtot"], human(s["lastsess"])]
            vals += [s["bin"], s["bout"], s["econ"], s["eresp"], s["wretr"], s["wredis"]]
            shown, tip = st, s["check_info"] if chk else ""
            if s.get("alarms"):  # shown, never acted on (docs/operations.md)
                shown += f" ({'+'.join(s['alarms'])} alarm)"
            if s.get("node_state") not in (None, "ready", "unknown") or s.get("alarms"):
                rmq = f"RabbitMQ: {s.get('node_info', '')}"
                tip = f"{tip}; {rmq}" if tip else rmq
            vals += [(shown, tip), _lastchk(s), s["weight"]]
            vals += ["" if s["backup"] else "Y", "Y" if s["backup"] else ""]
            vals += [s["chkfail"] if chk else "", s["chkdown"] if chk else "", human(s["downtime"])]
            vals += [human(s["lastchg"])]
            out.append(
                f'<tr class="{cls}" id="srv-{e(li)}-{e(s["name"])}">'
                f'<td class="n" title="{e(s["address"])}">{e(s["name"])}</td>{cells(vals)}'
                + (_admin_cell(li, s) if admin else "")
                + "</tr>"
            )
        be_vals: list[Any] = [be["qcur"], be["qmax"], "", be["rate"], be["rate_max"], be["scur"], be["smax"]]
        be_vals += [be["slim"], be["stot"], be["lbtot"], human(be["lastsess"]), be["bin"], be["bout"]]
        be_vals += [be["econ"], be["eresp"], be["wretr"], be["wredis"], be["status"], "", be["weight"]]
        be_vals += [be["act"], be["bck"], "", "", "", ""]
        out.append(
            f'<tr class="be" id="be-{e(li)}"><td class="n">Backend</td>{cells(be_vals)}'
            + ("<td></td>" if admin else "")
            + "</tr></table>"
        )
    out.append("</body></html>")
    return "".join(out)


# ------------------------------------------------------------------------------------------ metrics

_SERVER_STATES = ("UP", "DOWN", "MAINT", "DRAIN", "NOLB")


def _metric_state(status: str) -> str:
    """Our status word -> one of HAProxy's exporter states ("UP 1/3" is still UP, "no check" is UP)."""
    w = status.split()[0]
    return w if w in _SERVER_STATES else "UP"


def _lv(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def render_metrics(snap: dict[str, Any]) -> str:
    """Prometheus text exposition format 0.0.4, in the style of HAProxy's built-in exporter."""
    out: list[str] = []

    def fam(name: str, typ: str, help_: str, samples: list[tuple[dict[str, str], Any]]) -> None:
        samples = [(lab, v) for lab, v in samples if v is not None]
        if not samples:
            return
        out.append(f"# HELP tcplb_{name} {help_}")
        out.append(f"# TYPE tcplb_{name} {typ}")
        for lab, v in samples:
            labels = ",".join(f'{k}="{_lv(x)}"' for k, x in lab.items())
            out.append(f"tcplb_{name}{{{labels}}} {_num(v)}" if labels else f"tcplb_{name} {_num(v)}")

    g, c = "gauge", "counter"
    fam("process_start_time_seconds", g, "Start time of the process (seconds since the epoch).",
        [({}, snap["started"])])  # fmt: skip
    fam("process_current_connections", g, "Current client connections.", [({}, snap["actconn"])])
    fam("process_max_connections", g, "Global maxconn.", [({}, snap["maxconn"])])
    fam("process_reloads_total", c, "Configuration reloads.", [({}, snap["reloads"])])
    fes = snap["listeners"]
    px = [({"proxy": fe["name"]}, fe) for fe in fes]
    for key, name, typ, help_ in (
        ("scur", "current_sessions", g, "Current sessions."),
        ("smax", "max_sessions", g, "Highest number of concurrent sessions."),
        ("slim", "limit_sessions", g, "Configured session limit (maxconn)."),
        ("stot", "sessions_total", c, "Sessions accepted."),
        ("rate", "current_session_rate", g, "Sessions per second over the last second."),
        ("rate_max", "max_session_rate", g, "Highest sessions per second."),
        ("bin", "bytes_in_total", c, "Bytes received from clients (open connections included)."),
        ("bout", "bytes_out_total", c, "Bytes sent to clients (open connections included)."),
    ):
        fam(f"frontend_{name}", typ, help_, [(lab, fe[key]) for lab, fe in px])
    fam(
        "frontend_status", g, "Frontend state (OPEN, FULL, STOP), one-hot.",
        [({**lab, "state": w}, int(fe["status"] == w)) for lab, fe in px for w in ("OPEN", "FULL", "STOP")],
    )  # fmt: skip
    bes = [(lab, fe["backend"]) for lab, fe in px]
    fam(
        "backend_status", g, "Backend state (UP when a server is usable), one-hot.",
        [({**lab, "state": w}, int(be["status"] == w)) for lab, be in bes for w in ("UP", "DOWN")],
    )  # fmt: skip
    for key, name, typ, help_ in (
        ("act", "active_servers", g, "Usable active servers."),
        ("bck", "backup_servers", g, "Usable backup servers."),
        ("weight", "weight", g, "Total weight of the usable active servers."),
        ("qcur", "current_queue", g, "Connections waiting in the servers' queues."),
        ("qmax", "max_queue", g, "Highest total queue seen."),
        ("scur", "current_sessions", g, "Current sessions."),
        ("smax", "max_sessions", g, "Highest number of concurrent sessions."),
        ("stot", "sessions_total", c, "Sessions."),
        ("lbtot", "loadbalanced_total", c, "Times a server was selected."),
        ("rate", "current_session_rate", g, "Sessions per second over the last second."),
        ("rate_max", "max_session_rate", g, "Highest sessions per second."),
        ("lastsess", "last_session_seconds", g, "Seconds since a server last got a session."),
        ("bin", "bytes_in_total", c, "Bytes received from clients (open connections included)."),
        ("bout", "bytes_out_total", c, "Bytes sent to clients (open connections included)."),
        ("econ", "connection_errors_total", c, "Failed connection attempts to servers."),
        ("eresp", "response_errors_total", c, "Response errors."),
        ("wretr", "retry_warnings_total", c, "Connection retries."),
        ("wredis", "redispatch_warnings_total", c, "Redispatches to another server."),
    ):
        fam(f"backend_{name}", typ, help_, [(lab, be[key]) for lab, be in bes])
    srv = [({"proxy": fe["name"], "server": s["name"]}, s) for fe in fes for s in fe["servers"]]
    rmq = [(lab, s) for lab, s in srv if s.get("node_state") is not None]
    fam(
        "server_rabbitmq_node_state", g,
        "RabbitMQ node state from the management API (ready, draining, down, unknown), one-hot.",
        [({**lab, "state": w}, int(s["node_state"] == w)) for lab, s in rmq
         for w in ("ready", "draining", "down", "unknown")],
    )  # fmt: skip
    fam(
        "server_rabbitmq_alarm", g,
        "RabbitMQ resource alarm on the node (1 raised); alarms never take a server out.",
        [({**lab, "resource": r}, int(r in s["alarms"])) for lab, s in rmq
         for r in sorted({"memory", "disk", *s["alarms"]})],
    )  # fmt: skip
    fam(
        "server_connection_closes_total", c,
        "Connections closed gracefully through the management API, by reason (rebalance, max-lifetime).",
        [({**lab, "reason": r}, s.get(k, 0)) for lab, s in srv
         for r, k in (("rebalance", "rebalance_closes"), ("max-lifetime", "lifetime_closes"))],
    )  # fmt: skip
    fam(
        "server_connection_close_failures_total", c,
        "Graceful closes (rebalance, max-lifetime) the management API did not do; the connection stayed.",
        [(lab, s.get("close_failures", 0)) for lab, s in srv],
    )  # fmt: skip
    fam(
        "server_status", g, "Server state (UP, DOWN, MAINT, DRAIN, NOLB), one-hot.",
        [({**lab, "state": w}, int(_metric_state(s["status"]) == w)) for lab, s in srv
         for w in _SERVER_STATES],
    )  # fmt: skip
    for key, name, typ, help_ in (
        ("scur", "current_sessions", g, "Current sessions."),
        ("smax", "max_sessions", g, "Highest number of concurrent sessions."),
        ("slim", "limit_sessions", g, "Configured session limit (maxconn)."),
        ("stot", "sessions_total", c, "Sessions."),
        ("lbtot", "loadbalanced_total", c, "Times the server was selected."),
        ("rate", "current_session_rate", g, "Sessions per second over the last second."),
        ("rate_max", "max_session_rate", g, "Highest sessions per second."),
        ("lastsess", "last_session_seconds", g, "Seconds since the server last got a session."),
        ("bin", "bytes_in_total", c, "Bytes received from clients (open connections included)."),
        ("bout", "bytes_out_total", c, "Bytes sent to clients (open connections included)."),
        ("econ", "connection_errors_total", c, "Failed connection attempts."),
        ("eresp", "response_errors_total", c, "Response errors."),
        ("wretr", "retry_warnings_total", c, "Connection retries."),
        ("wredis", "redispatch_warnings_total", c, "Redispatches away from this server."),
        ("weight", "weight", g, "Current (effective) weight."),
        ("qcur", "current_queue", g, "Connections waiting in the server's queue."),
        ("qmax", "max_queue", g, "Highest queue length."),
        ("qlimit", "queue_limit", g, "Configured queue limit (maxqueue)."),
        ("chkfail", "check_failures_total", c, "Failed health checks."),
        ("chkdown", "check_up_down_total", c, "UP to DOWN transitions."),
        ("downtime", "downtime_seconds_total", c, "Seconds spent DOWN."),
        ("lastchg", "check_last_change_seconds", g, "Seconds since the last UP/DOWN transition."),
    ):
        fam(f"server_{name}", typ, help_, [(lab, s[key]) for lab, s in srv])
    fam(
        "server_check_duration_seconds", g, "Duration of the last health check.",
        [(lab, s["check_duration"] / 1000 if s["check_duration"] is not None else None) for lab, s in srv],
    )  # fmt: skip
    fam(
        "server_check_enabled", g, "Active health checks running (0: none, or disabled by the admin API).",
        [(lab, int(s["health"] == "enabled")) for lab, s in srv],
    )  # fmt: skip
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- HTTP

# the connection handling (h11 parsing, time and room limits) is rmqfd.http's; these are our limits
LIMITS = Limits(
    max_head=16384,  # request line + headers
    max_body=16384,
    request_timeout=2.0,  # from the accept to the end of the request: idle connections leave quickly
    write_timeout=10.0,
    max_clients=64,
    max_pending=32,  # connections still sending their request (no credentials seen yet); oldest evicted
)

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


def _reply(status: int, ctype: str, body: str, headers: dict[str, str] | None = None) -> Response:
    """An answer with the stats listener's security headers."""
    hdr = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if ctype.startswith("text/html"):
        hdr.update(
            {"X-Frame-Options": "DENY", "Content-Security-Policy": _CSP, "Referrer-Policy": "same-origin"}
        )
    hdr.update(headers or {})
    return Response(status, ctype, body, hdr)


def _error_reply(status: int, text: str, headers: dict[str, str]) -> Response:
    return _reply(status, "text/plain; charset=utf-8", text + "\n", headers)


def _clean(s: str, limit: int = 120) -> str:
    """Printable for a log line (no CR/LF injection), truncated."""
    t = "".join(ch if ch.isprintable() else "?" for ch in s[:limit])
    return t + "..." if len(s) > limit else t


def _json(obj: Any) -> Response:
    return _reply(200, "application/json", json.dumps(obj, indent=1) + "\n")


class StatsServer:
    def __init__(
        self,
        lb: LoadBalancer,
        cfg: StatsConfig,
        *,
        reload: Callable[[], Awaitable[tuple[bool, str]]] | None = None,
    ) -> None:
        self.lb = lb
        self.cfg = cfg
        self.http: HttpServer | None = None
        self.server: asyncio.Server | None = None
        # POST /api/reload (admin): the daemon's reload, (applied, message)
        self.reload = reload
        self._users = [(u.user.encode(), u.password.encode()) for u in cfg.auth]

    async def start(self) -> None:
        host, port = self.cfg.bind
        self.http = HttpServer(self._dispatch, LIMITS, name="stats", error_body=_error_reply)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.http.protocol, host, port, reuse_address=True)
        self.http.server = self.server
        self.lb.start_sampling()
        where = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        log.info(
            "stats page on http://%s%s (auth %s, admin API %s)",
            where,
            self.cfg.uri,
            f"{len(self._users)} user{'s' if len(self._users) != 1 else ''}" if self._users else "off",
            "on" if self.cfg.admin else "off",
        )

    async def close(self) -> None:
        self.lb.stop_sampling()
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.server is not None:
            self.server.close()
            try:
                async with asyncio.timeout(1):
                    await self.server.wait_closed()
            except TimeoutError:
                pass
            self.server = None

    @property
    def clients(self) -> int:
        return self.http.clients if self.http is not None else 0

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    # -- routing ---------------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> Response | Awaitable[Response]:
        if req.method not in ("GET", "HEAD", "POST"):
            raise HttpError(405, "GET, HEAD or POST only", {"Allow": "GET, HEAD, POST"})
        segs = req.path.split("/")
        action_path = len(segs) == 6 and segs[:3] == ["", "api", "servers"]
        admin_attempt = action_path or req.method == "POST" or segs[:3] == ["", "api", "rebalance"]
        user, claimed = self._authenticate(req.headers)
        if self._users and user is None:
            if admin_attempt or "authorization" in req.headers:
                who = "no credentials"
                if claimed is not None:
                    who = f"user {_clean(claimed, 64)!r} (bad credentials)"
                self._log_refusal(req, who, 401, "authentication required", admin_attempt)
            raise HttpError(401, "authentication required", {"WWW-Authenticate": 'Basic realm="tcplb"'})
        if action_path:
            return self._admin(req, user, *(urllib.parse.unquote(x) for x in segs[3:6]))
        if segs == ["", "api", "reload"]:
            return self._reload(req, user)
        if len(segs) == 4 and segs[:3] == ["", "api", "rebalance"]:
            return self._rebalance(req, user, urllib.parse.unquote(segs[3]))
        if req.method == "POST":
            why = "POST goes to /api/servers/<listener>/<server>/<action>"
            self._refuse(req, user, 405, why, "GET, HEAD")
        return self._get(req, segs)

    def _authenticate(self, headers: dict[str, str]) -> tuple[str | None, str | None]:
        """(the authenticated user, the user name the client sent). Every configured pair is compared, in
        constant time, whatever matched before."""
        if not self._users:
            return None, None
        scheme, _, cred = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None, None
        try:
            raw = base64.b64decode(cred.strip(), validate=True)
        except ValueError:
            return None, "?"
        u, sep, p = raw.partition(b":")
        claimed = u.decode("utf-8", "replace")
        if not sep:
            return None, claimed
        ok = False
        who = b""
        for cu, cp in self._users:
            m = hmac.compare_digest(u, cu) & hmac.compare_digest(p, cp)
            who = cu if m else who
            ok |= m
        return (who.decode() if ok else None), claimed

    def _get(self, req: Request, segs: list[str]) -> Response:
        path = urllib.parse.unquote(req.path)
        uri = self.cfg.uri
        if path == uri or path.startswith(uri + ";"):
            return self._page(set(path[len(uri) :].split(";")[1:]))
        if path == "/stats.csv":
            return self._page({"csv"})
        if path == "/stats.json":
            return self._page({"json"})
        if path == "/metrics":
            return _reply(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(self.lb.snapshot()))
        if path == "/":
            return _reply(302, "text/plain; charset=utf-8", f"see {uri}\n", {"Location": uri})
        if len(segs) in (3, 5) and segs[:3] == ["", "api", "servers"]:
            snap = self.lb.snapshot()
            rows = [{"listener": fe["name"], **s} for fe in snap["listeners"] for s in fe["servers"]]
            if len(segs) == 3:
                return _json(rows)
            fe_name, srv_name = (urllib.parse.unquote(x) for x in segs[3:5])
            for row in rows:
                if row["listener"] == fe_name and row["name"] == srv_name:
                    return _json(row)
            raise HttpError(404, f"no server {fe_name}/{srv_name}")
        raise HttpError(404, "not found")

    def _page(self, opts: set[str]) -> Response:
        snap = self.lb.snapshot()
        if "csv" in opts:
            return _reply(200, "text/csv; charset=utf-8", render_csv(snap))
        if "json" in opts:
            snap["time"] = time.time()
            return _json(snap)
        body = render_html(
            snap, self.cfg.refresh, uri=self.cfg.uri, admin=self.cfg.admin, norefresh="norefresh" in opts
        )
        return _reply(200, "text/html; charset=utf-8", body)

    # -- admin -----------------------------------------------------------------------------------------
    def _log_refusal(self, req: Request, who: str, status: int, why: str, admin: bool) -> None:
        msg = (
            f"{'admin' if admin else 'stats'}: {who} from {req.client}: refused {_clean(req.method, 8)} "
            f"{_clean(req.path)}: {status} {why}"
        )
        self.lb.event(msg, logging.WARNING)

    def _refuse(self, req: Request, user: str | None, status: int, why: str, allow: str = "") -> None:
        who = f"user {user}" if user is not None else "no user"
        self._log_refusal(req, who, status, why, True)
        raise HttpError(status, why, {"Allow": allow} if allow else None)

    def _cross_origin(self, headers: dict[str, str]) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site", "") == "cross-site"
        host = headers.get("host", "").lower()
        return origin == "null" or urllib.parse.urlsplit(origin).netloc.lower() != host

    @staticmethod
    def _params(req: Request) -> dict[str, str]:
        params = dict(urllib.parse.parse_qsl(req.query, keep_blank_values=True))
        text = req.body.decode("utf-8", "replace").strip()
        if req.headers.get("content-type", "").split(";")[0].strip() == "application/json" and text:
            try:
                obj = json.loads(text)
            except ValueError:
                raise HttpError(400, "body is not JSON") from None
            if not isinstance(obj, dict):
                raise HttpError(400, "JSON body must be an object")
            params.update({str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in obj.items()})
        elif "=" in text:
            params.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
        elif text:
            params["value"] = text
        return params

    def _admin_allowed(self, req: Request, user: str | None) -> None:
        """The checks every admin action passes (raise the refusal, logged)."""
        if req.method != "POST":
            self._refuse(req, user, 405, "the admin API takes POST only", "POST")
        if not self.cfg.admin:
            self._refuse(req, user, 403, "admin API disabled (stats.admin = false)")
        if user is None:
            self._refuse(req, user, 403, "the admin API needs stats.auth")
        if self._cross_origin(req.headers):
            self._refuse(req, user, 403, "cross-origin request refused")

    async def _reload(self, req: Request, user: str | None) -> Response:
        """POST /api/reload: the same reload as SIGHUP; 200 when applied, 409 (with the reason) when the
        running configuration was kept."""
        self._admin_allowed(req, user)
        if self.reload is None:
            self._refuse(req, user, 501, "reload is not available here (no configuration file)")
        assert self.reload is not None
        self.lb.event(f"admin: user {user} from {req.client}: reload requested")
        ok, msg = await self.reload()
        if not ok:
            return _reply(409, "application/json", json.dumps({"reloaded": False, "error": msg}) + "\n")
        return _json({"reloaded": True, "message": msg})

    def _rebalance(self, req: Request, user: str | None, fe_name: str) -> Response:
        """POST /api/rebalance/<listener>: a graceful rebalancing run now (tcplb/rebalancer.py); 404 for an
        unknown listener, 409 (with the key to set) when a server has no management API."""
        self._admin_allowed(req, user)
        try:
            ans = self.lb.rebalance.request(fe_name)
        except KeyError:
            self._refuse(req, user, 404, f"no listener {_clean(fe_name, 64)}")
            raise
        except ValueError as e:  # MissingManagement
            self._log_refusal(req, f"user {user}", 409, str(e), True)
            return _reply(409, "application/json", json.dumps({"error": str(e)}) + "\n")
        self.lb.event(
            f"admin: user {user} from {req.client}: rebalance {fe_name} ({ans['closing_now']} closing now)"
        )
        return _json(ans)

    def _admin(self, req: Request, user: str | None, fe_name: str, srv_name: str, action: str) -> Response:
        if action not in ADMIN_ACTIONS and action not in SHORTCUTS:
            self._refuse(req, user, 404, f"unknown action {_clean(action, 40)!r} (state, weight, "
                         "shutdown-sessions, health)")  # fmt: skip
        self._admin_allowed(req, user)
        fe = self.lb.frontends.get(fe_name)
        st = fe.server(srv_name) if fe is not None else None
        if st is None:
            self._refuse(req, user, 404, f"no server {_clean(fe_name, 64)}/{_clean(srv_name, 64)}")
        assert st is not None
        params = self._params(req)
        ref = f"{fe_name}/{srv_name}"
        extra: dict[str, Any] = {}
        try:
            if action == "state" or action in SHORTCUTS:
                state = SHORTCUTS.get(action) or params.get("state", params.get("value", ""))
                if state not in ("ready", "drain", "maint"):
                    raise ValueError("state must be ready, drain or maint")
                was = st.status()
                self.lb.set_state(fe_name, srv_name, state)
                what = f"state {state} (was {was})"
            elif action == "weight":
                raw = params.get("weight", params.get("value", "")).strip()
                if not raw.isdigit() or not 0 <= int(raw) <= 256:
                    raise ValueError("weight must be an integer 0..256")
                was_w = st.admin_weight
                self.lb.set_weight(fe_name, srv_name, int(raw))
                what = f"weight {int(raw)} (was {was_w})"
            elif action == "shutdown-sessions":
                _, n = self.lb.shutdown_sessions(fe_name, srv_name)
                extra["sessions_closed"] = n
                what = f"shutdown-sessions ({n} closed)"
            else:  # health
                h = params.get("health", params.get("value", ""))
                if h not in ("enable", "disable"):
                    raise ValueError("health must be enable or disable")
                was_h = "disabled" if st.health_off else "enabled"
                self.lb.set_health(fe_name, srv_name, h == "enable")
                what = f"health {h} (was {was_h})"
        except ValueError as e:
            self._refuse(req, user, 400, str(e))
        self.lb.event(f"admin: user {user} from {req.client}: {ref} {what}")
        if params.get("redirect") == "1":
            uri = self.cfg.uri
            return _reply(303, "text/plain; charset=utf-8", f"see {uri}\n", {"Location": uri})
        health = "disabled" if st.health_off else "enabled" if st.cfg.check.enabled else "none"
        return _json(
            {
                "listener": fe_name,
                "server": srv_name,
                "action": action,
                "status": st.status(),
                "weight": st.shown_weight,
                "health": health,
                **extra,
            }
        )
