"""Log lines in HAProxy's formats: the per-connection ``tcplog`` line and health state changes. Pure.

``option tcplog`` is exactly::

    %ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq

e.g. ``192.0.2.50:33313 [21/Nov/2026:23:12:51.443] rabbitmq rabbitmq/rmq1 0/1/5007 212 -- 3/3/3/1/0 0/0``

* ``Tw`` ms waiting in queues (-1: gave up before leaving the queue), ``Tc`` ms to connect to the server
  (-1: never connected), ``Tt`` total ms (prefixed with ``+`` in a ``logasap`` line: the time so far).
* ``B`` bytes sent from the server to the client (``+`` prefix with logasap).
* ``ts`` the two-letter termination state (``TERMINATION_STATES``).
* ``actconn`` (process), ``feconn`` (listener), ``beconn`` (backend, incl. queued), ``srv_conn`` (server),
  ``retries`` (prefixed with ``+`` when the connection was redispatched to another server).
* ``srv_queue``/``backend_queue``: queue lengths when this connection left them.

``<NOSRV>`` replaces the server when none was reached. The syslog/stream prefix (``tcplb[pid]:``) is the
logger's business, not part of the line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from tcplb.health import CheckStatus, describe

__all__ = [
    "CAUSES",
    "NOSRV",
    "PHASES",
    "TERMINATION_STATES",
    "TcpLogRecord",
    "accept_date",
    "describe_termination",
    "format_health_change",
    "format_json",
    "format_maintenance",
    "format_no_server",
    "format_record",
    "format_tcplog",
    "termination_state",
]

NOSRV = "<NOSRV>"

# first character: why the connection ended (HAProxy configuration.txt §8.5)
CAUSES: dict[str, str] = {
    "-": "normal: both sides closed (or are still open in a logasap line)",
    "C": "the client aborted (reset or error)",
    "S": "the server aborted or refused the connection (reset, ICMP, refused)",
    "P": "the proxy stopped it (a limit, a policy, a hard stop)",
    "R": "a local resource ran out (file descriptors, memory, source ports)",
    "I": "internal error",
    "D": "the server was marked DOWN and its sessions shut down",
    "U": "a backup server's session shut down when an active server came back",
    "K": "killed by an administrator (shutdown session(s)) or by hard_stop_after",
    "c": "the client-side timeout expired (timeout_client, timeout_tunnel or timeout_client_fin)",
    "s": "the server-side timeout expired (timeout_connect or timeout_server/tunnel/server_fin)",
}
# second character: the phase the connection was in
PHASES: dict[str, str] = {
    "-": "normal: the data phase ended normally",
    "Q": "waiting in a queue for a server slot",
    "C": "connecting to the server",
    "D": "data phase (both directions open)",
    "L": "last data: one side had already closed, the rest was still being sent",
}

TERMINATION_STATES: dict[str, str] = {
    "--": "normal termination: both sides closed",
    "CC": "the client closed or reset while tcplb was connecting to the server",
    "CQ": "the client closed while waiting in the queue",
    "CD": "the client reset the connection during the data phase",
    "CL": "the client reset while the last data was being sent to it",
    "SC": "the server refused the connection, it was unreachable, or no server was usable (<NOSRV>)",
    "SD": "the server reset the connection during the data phase",
    "SL": "the server reset while the last data was being sent",
    "sC": "timeout_connect expired connecting to the server (after the retries)",
    "sQ": "timeout_queue expired waiting for a server slot",
    "sD": "the server-side inactivity timeout expired (timeout_server / timeout_tunnel)",
    "sL": "a server-side timeout expired once one direction had ended (half-closed: timeout_server_fin)",
    "cD": "the client-side inactivity timeout expired (timeout_client / timeout_tunnel)",
    "cL": "a client-side timeout expired once one direction had ended (half-closed: timeout_client_fin; "
    "or the client did not read the last data)",
    "PC": "tcplb refused to connect to the server (a limit: maxqueue full, maxconn)",
    "PD": "tcplb closed the connection during the data phase (hard stop)",
    "RC": "a local resource ran out while connecting (file descriptors, source ports)",
    "IC": "internal error while connecting",
    "ID": "internal error during the data phase",
    "DD": "the server was marked DOWN and its connections were shut down",
    "UD": "a backup server's connection shut down when an active server came back",
    "KC": "killed by an administrator while connecting",
    "KQ": "killed by an administrator while queued",
    "KD": "killed by an administrator (or hard_stop_after) during the data phase",
}


def termination_state(cause: str = "-", phase: str = "-") -> str:
    """The two-letter state from a cause (``CAUSES``) and a phase (``PHASES``); ValueError otherwise."""
    if cause not in CAUSES or phase not in PHASES:
        raise ValueError(f"bad termination state {cause!r}{phase!r}")
    if (cause == "-") != (phase == "-"):
        raise ValueError("'-' goes with '-': a normal end has no phase, an abnormal end has one")
    return cause + phase


def describe_termination(state: str) -> str:
    if state in TERMINATION_STATES:
        return TERMINATION_STATES[state]
    if len(state) == 2 and state[0] in CAUSES and state[1] in PHASES:
        return f"{CAUSES[state[0]]}; phase: {PHASES[state[1]]}"
    raise ValueError(f"bad termination state {state!r}")


@dataclass(frozen=True, slots=True)
class TcpLogRecord:
    """Everything one tcplog line says. Times in milliseconds (int), ``accept_time`` in epoch seconds."""

    client: tuple[str, int]
    accept_time: float
    frontend: str
    backend: str
    server: str | None  # None: no server was reached -> <NOSRV>
    tw: int = -1  # queue wait; -1 = left before the end of the queue
    tc: int = -1  # connect; -1 = never connected
    tt: int = 0  # total (or so far, with logasap)
    bytes_read: int = 0  # server -> client
    bytes_uploaded: int = 0  # client -> server (json only; tcplog has no field for it)
    termination: str = "--"
    actconn: int = 0
    feconn: int = 0
    beconn: int = 0
    srv_conn: int = 0
    retries: int = 0
    redispatched: bool = False
    srv_queue: int = 0
    backend_queue: int = 0
    logasap: bool = False  # a line written at connect time: "+" on Tt and bytes


def accept_date(ts: float, tz: tzinfo | None = None) -> str:
    """HAProxy's ``%t``: ``21/Nov/2026:23:12:51.443`` (local time unless ``tz`` is given)."""
    dt = datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts).astimezone()
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return (
        f"{dt.day:02d}/{months[dt.month - 1]}/{dt.year:04d}:"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}"
    )


def _addr(host: str, port: int) -> str:
    if not host:
        return "-:-"  # unknown (HAProxy's %ci:%cp for a connection without addresses)
    return f"{host}:{port}"  # HAProxy writes IPv6 unbracketed too ("::1:5672")


def format_tcplog(r: TcpLogRecord, tz: tzinfo | None = None) -> str:
    """One line in HAProxy's ``option tcplog`` layout (no trailing newline)."""
    return tcplog_line(
        r.client, r.accept_time, r.frontend, r.server, r.tw, r.tc, r.tt, r.bytes_read, r.termination,
        r.actconn, r.feconn, r.srv_conn, r.retries, r.redispatched, r.srv_queue, r.backend_queue, r.logasap,
        backend=r.backend, beconn=r.beconn, tz=tz,
    )  # fmt: skip


def tcplog_line(
    client: tuple[str, int],
    accept_time: float,
    frontend: str,
    server: str | None,
    tw: int,
    tc: int,
    tt: int,
    bytes_read: int,
    termination: str,
    actconn: int,
    feconn: int,
    srv_conn: int,
    retries: int,
    redispatched: bool,
    srv_queue: int,
    backend_queue: int,
    logasap: bool = False,
    *,
    backend: str | None = None,
    beconn: int | None = None,
    tz: tzinfo | None = None,
) -> str:
    """The tcplog line from plain values (the daemon's hot path: no record object; in local time the date up
    to the second is formatted once per second). ``backend`` defaults to the frontend, ``beconn`` to
    ``feconn`` (a ``listen`` section is both)."""
    plus = "+" if logasap else ""
    date = accept_date_cached(accept_time) if tz is None else accept_date(accept_time, tz)
    return (
        f"{_addr(*client)} [{date}] {frontend} "
        f"{backend if backend is not None else frontend}/{server if server is not None else NOSRV} "
        f"{tw}/{tc}/{plus}{tt} {plus}{bytes_read} {termination} "
        f"{actconn}/{feconn}/{beconn if beconn is not None else feconn}/{srv_conn}/"
        f"{'+' if redispatched else ''}{retries} {srv_queue}/{backend_queue}"
    )


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache: list[Any] = [None, ""]  # [epoch second, "22/Nov/2026:00:00:18."]


def accept_date_cached(ts: float) -> str:
    """``tcplog.accept_date(ts)`` (local time): ``21/Nov/2026:23:12:51.443``, the part up to the second
    computed once per second. The split into second and microsecond is the one ``datetime.fromtimestamp``
    makes (round half to even on the microsecond, carried into the second)."""
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    sec = int(whole)
    if us >= 1_000_000:
        us -= 1_000_000
        sec += 1
    elif us < 0:
        us += 1_000_000
        sec -= 1
    cache = _date_cache
    if cache[0] != sec:
        dt = datetime.fromtimestamp(sec)
        cache[1] = (
            f"{dt.day:02d}/{_MONTHS[dt.month - 1]}/{dt.year:04d}:"
            f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}."
        )
        cache[0] = sec
    return f"{cache[1]}{us // 1000:03d}"


def format_json(r: TcpLogRecord, tz: tzinfo | None = None) -> str:
    """The same fields as one JSON object (``log_format = "json"``); dates in ISO 8601 with the offset."""
    dt = datetime.fromtimestamp(r.accept_time, tz or UTC)
    return json.dumps(
        {
            "client_ip": r.client[0],
            "client_port": r.client[1],
            "accept_date": dt.isoformat(timespec="milliseconds"),
            "frontend": r.frontend,
            "backend": r.backend,
            "server": r.server,
            "Tw": r.tw,
            "Tc": r.tc,
            "Tt": r.tt,
            "bytes_read": r.bytes_read,
            "bytes_uploaded": r.bytes_uploaded,
            "termination_state": r.termination,
            "actconn": r.actconn,
            "feconn": r.feconn,
            "beconn": r.beconn,
            "srv_conn": r.srv_conn,
            "retries": r.retries,
            "redispatched": r.redispatched,
            "srv_queue": r.srv_queue,
            "backend_queue": r.backend_queue,
            "logasap": r.logasap,
        },
        separators=(",", ":"),
    )


def format_record(r: TcpLogRecord, log_format: str = "tcplog", tz: tzinfo | None = None) -> str:
    """``format_tcplog`` or ``format_json`` by the listener's ``log_format``."""
    if log_format == "json":
        return format_json(r, tz)
    if log_format == "tcplog":
        return format_tcplog(r, tz)
    raise ValueError(f"unknown log_format {log_format!r}")


def _tail(
    up: bool, active: int, backup: int, sessions: int | None, requeued: int | None, queued: int | None
) -> str:
    if up:
        s = f"{active} active and {backup} backup servers online."
        if requeued is not None or queued is not None:
            s += f" {requeued or 0} sessions requeued, {queued or 0} total in queue."
        return s
    s = f"{active} active and {backup} backup servers left."
    if sessions is not None or requeued is not None or queued is not None:
        s += f" {sessions or 0} sessions active, {requeued or 0} requeued, {queued or 0} remaining in queue."
    return s


def format_health_change(
    backend: str,
    server: str,
    up: bool,
    status: CheckStatus | str,
    *,
    info: str = "",
    duration_ms: int | None = None,
    code: int | None = None,
    active: int = 0,
    backup: int = 0,
    is_backup: bool = False,
    sessions: int | None = None,
    requeued: int | None = None,
    queued: int | None = None,
) -> str:
    """HAProxy's state change line, e.g.

    ``Server rabbitmq/rmq1 is DOWN, reason: Layer4 connection problem, info: "Connection refused",
    check duration: 0ms. 2 active and 0 backup servers left.``

    ``active``/``backup``: usable servers after the change. ``duration_ms`` None (a passive or admin change)
    leaves the check duration out; ``code`` is the HTTP status for L7STS/L7OK. The session counts are
    appended when given (``sessions`` only on DOWN).
    """
    st = CheckStatus(status)
    who = "Backup Server" if is_backup else "Server"
    parts = [f"{who} {backend}/{server} is {'UP' if up else 'DOWN'}, reason: {describe(st)}"]
    if code is not None:
        parts.append(f"code: {code}")
    if info:
        parts.append(f'info: "{_clean(info)}"')
    if duration_ms is not None:
        parts.append(f"check duration: {duration_ms}ms")
    return ", ".join(parts) + ". " + _tail(up, active, backup, sessions, requeued, queued)


def format_maintenance(
    backend: str,
    server: str,
    entering: bool,
    *,
    active: int = 0,
    backup: int = 0,
    is_backup: bool = False,
    sessions: int | None = None,
    requeued: int | None = None,
    queued: int | None = None,
    by: str = "",
) -> str:
    """``Server rabbitmq/rmq1 is going DOWN for maintenance. 2 active and 0 backup servers left.`` and
    ``Server rabbitmq/rmq1 is UP (leaving forced maintenance). 3 active and 0 backup servers online.``
    (``by``: who asked, e.g. "admin API", appended in parentheses.)"""
    who = "Backup Server" if is_backup else "Server"
    src = f" (by {by})" if by else ""
    if entering:
        head = f"{who} {backend}/{server} is going DOWN for maintenance{src}."
    else:
        head = f"{who} {backend}/{server} is UP (leaving forced maintenance){src}."
    return head + " " + _tail(not entering, active, backup, sessions, requeued, queued)


def format_no_server(backend: str) -> str:
    """HAProxy's emergency line when the last usable server of a listener goes away."""
    return f"proxy {backend} has no server available!"


def _clean(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")
