"""Prometheus metrics: text exposition format 0.0.4 from ``Daemon.status()``, and a minimal HTTP listener.

Imported only when used (the control socket's ``metrics`` command, or ``global.metrics_listen``), so that an
idle daemon without metrics does not pay for it. The per-instance label is ``vrrp_instance``, not
``instance``: Prometheus sets ``instance`` on every scraped series (the target) and would rename ours to
``exported_instance``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["CONTENT_TYPE", "STATE_VALUES", "render", "serve_metrics"]

log = logging.getLogger("vrrpd")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATE_VALUES = {"INIT": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3}
MAX_REQUEST = 8192  # bytes of request line + headers
REQUEST_TIMEOUT = 5.0  # seconds to receive the request and to send the answer
MAX_CLIENTS = 16  # concurrent connections; half of them may still be sending their request


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, object]) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def family(self, name: str, kind: str, help_: str) -> None:
        if name not in self.seen:
            self.seen.add(name)
            self.lines.append(f"# HELP {name} {help_}")
            self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, object], value: float | int | bool) -> None:
        v = float(value)
        text = repr(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)
        self.lines.append(f"{name}{_labels(labels)} {text}")


# (name, type, help, key in the instance's status, or a function of it)
_INSTANCE: list[tuple[str, str, str, Callable[[dict[str, Any]], float | int | bool]]] = [
    (
        "vrrpd_instance_state",
        "gauge",
        "State of the VRRP instance: 0 INIT (stopped), 1 BACKUP, 2 MASTER, 3 FAULT.",
        lambda i: STATE_VALUES.get(str(i["state"]), 0),
    ),
    ("vrrpd_instance_priority", "gauge", "Configured priority.", lambda i: i["priority"]),
    (
        "vrrpd_instance_effective_priority",
        "gauge",
        "Effective priority (override or configured, plus track weights), the one advertised.",
        lambda i: i["effective_priority"],
    ),
    (
        "vrrpd_instance_priority_override",
        "gauge",
        "Runtime priority set by vrrpd ctl (priority or maint); 0 = none, the configured one applies.",
        lambda i: i.get("override_priority") or 0,
    ),
    (
        "vrrpd_instance_maintenance",
        "gauge",
        "1 while in maintenance (vrrpd ctl maint): lowered priority, no preemption.",
        lambda i: bool(i.get("maintenance")),
    ),
    (
        "vrrpd_instance_master_transitions_total",
        "counter",
        "Times the instance became MASTER.",
        lambda i: i["counters"]["became_master"],
    ),
    (
        "vrrpd_instance_master_releases_total",
        "counter",
        "Times the instance left MASTER.",
        lambda i: i["counters"]["released_master"],
    ),
    ("vrrpd_adverts_sent_total", "counter", "Adverts sent.", lambda i: i["counters"]["adverts_sent"]),
    (
        "vrrpd_adverts_received_total",
        "counter",
        "Adverts received and accepted by the checks.",
        lambda i: i["counters"]["adverts_received"],
    ),
    (
        "vrrpd_priority_zero_sent_total",
        "counter",
        "Priority-0 adverts sent (a master stepping down: shutdown, fault, maintenance).",
        lambda i: i["counters"]["priority_zero_sent"],
    ),
    (
        "vrrpd_priority_zero_received_total",
        "counter",
        "Priority-0 adverts received.",
        lambda i: i["counters"]["priority_zero_received"],
    ),
    (
        "vrrpd_vips_configured",
        "gauge",
        "Virtual IP addresses configured on the instance.",
        lambda i: len(i.get("vips", ())),
    ),
    (
        "vrrpd_vips_installed",
        "gauge",
        "Virtual IP addresses currently installed on this host by the instance.",
        lambda i: len(i.get("vips_installed", ())),
    ),
    (
        "vrrpd_advert_send_errors_total",
        "counter",
        "Adverts the kernel refused to send.",
        lambda i: i.get("send_errors", 0),
    ),
]


def render(st: dict[str, Any]) -> str:
    """The Prometheus text (format 0.0.4) for one ``Daemon.status()`` document."""
    out = _Out()
    out.family("vrrpd_up", "gauge", "1: the vrrpd process answers.")
    out.sample("vrrpd_up", {}, 1)
    if "start_time" in st:
        out.family("vrrpd_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.")
        out.sample("vrrpd_start_time_seconds", {}, round(float(st["start_time"]), 3))
    out.family("vrrpd_reloads_total", "counter", "Successful configuration reloads (SIGHUP).")
    out.sample("vrrpd_reloads_total", {}, int(st.get("reloads", 0)))
    if "notify_executed" in st:
        out.family("vrrpd_notify_scripts_executed_total", "counter", "Notify scripts started.")
        out.sample("vrrpd_notify_scripts_executed_total", {}, int(st["notify_executed"]))
    instances: list[dict[str, Any]] = list(st.get("instances", []))

    def key(i: dict[str, Any]) -> dict[str, object]:
        return {"vrrp_instance": i["name"], "vrid": i["vrid"], "interface": i.get("interface", "")}

    for name, kind, help_, get in _INSTANCE:
        if instances:
            out.family(name, kind, help_)
        for i in instances:
            out.sample(name, key(i), get(i))
        if name == "vrrpd_instance_state" and instances:
            sname = "vrrpd_instance_state_info"
            out.family(sname, "gauge", "One-hot state of the VRRP instance: 1 for the current state, else 0.")
            for i in instances:
                for s in STATE_VALUES:
                    out.sample(sname, {**key(i), "state": s}, i["state"] == s)
    if instances:
        out.family(
            "vrrpd_instance_info",
            "gauge",
            "Always 1; the labels say the VRRP version (2 or 3), the address family (4 or 6) and the mode.",
        )
    for i in instances:
        info = {
            **key(i),
            "version": i.get("version", 2),
            "family": i.get("family", 4),
            "mode": i.get("mode", "multicast"),
        }
        out.sample("vrrpd_instance_info", info, 1)
    if instances:
        out.family(
            "vrrpd_advert_interval_seconds",
            "gauge",
            "Configured advertisement interval (VRRPv3: fractional, 10 ms steps).",
        )
    for i in instances:
        out.sample("vrrpd_advert_interval_seconds", key(i), float(i["advert_int"]))
    if instances:
        out.family(
            "vrrpd_master_advert_interval_seconds",
            "gauge",
            "Master_Adver_Interval in use: VRRPv3 backups learn it from the master's adverts (RFC 5798 "
            "6.4.2); VRRPv2 and masters use their own.",
        )
    for i in instances:
        out.sample(
            "vrrpd_master_advert_interval_seconds", key(i), float(i.get("master_adver_int", i["advert_int"]))
        )
    v3 = [i for i in instances if i.get("version") == 3]
    if v3:
        out.family(
            "vrrpd_checksum_as_v2_received_total",
            "counter",
            "VRRPv3 IPv4 adverts accepted with the message-only checksum (RFC 9568; keepalived's "
            "v3_checksum_as_v2) rather than the pseudo-header form.",
        )
    for i in v3:
        out.sample(
            "vrrpd_checksum_as_v2_received_total",
            key(i),
            int(i["counters"].get("checksum_as_v2_received", 0)),
        )
    if instances:
        out.family("vrrpd_discards_total", "counter", "Received packets discarded, by reason.")
    for i in instances:
        for reason, n in i["counters"]["discards"].items():
            out.sample("vrrpd_discards_total", {**key(i), "reason": reason}, n)
    tracks = [(i, t) for i in instances for t in i.get("track_scripts", [])]
    if tracks:
        out.family("vrrpd_track_script_up", "gauge", "Tracked script state: 1 OK, 0 failing (or unknown).")
    for i, t in tracks:
        out.sample("vrrpd_track_script_up", {**key(i), "script": t["name"]}, t.get("state") == "OK")
    ifaces = [(i, t) for i in instances for t in i.get("track_interfaces", [])]
    if ifaces:
        out.family("vrrpd_track_interface_up", "gauge", "Tracked interface state: 1 up, 0 down.")
    for i, t in ifaces:
        out.sample("vrrpd_track_interface_up", {**key(i), "tracked_interface": t["name"]}, t["state"] == "UP")
    return "\n".join(out.lines) + "\n"


# ------------------------------------------------------------------------------------------- HTTP listener


def listen_socket(host: str | None, port: int) -> socket.socket:
    """A listening TCP socket on an address literal (None: all addresses, dual-stack when IPv6 is there).
    Bound here rather than by ``start_server(host, port)``, whose name resolution imports the IDNA codec and
    unicodedata: 0.4 MiB of RSS for nothing, the address is a literal."""
    family = socket.AF_INET6 if host is None or ":" in host else socket.AF_INET
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        if host is not None:
            raise
        family = socket.AF_INET  # no IPv6 on this host
        s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host is None else 1)
        s.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        s.listen(64)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


async def serve_metrics(host: str | None, port: int, status: Callable[[], dict[str, Any]]) -> asyncio.Server:
    """``GET /metrics`` (and HEAD): the Prometheus text; 404 elsewhere, 405 for other methods, 400 for
    garbage, 431 for requests over MAX_REQUEST bytes; one request per connection, REQUEST_TIMEOUT each.

    The HTTP side is rmqfd.http (h11), imported here: only a daemon with ``metrics_listen`` pays for it."""
    from rmqfd.http import HttpError, Limits, Request, Response, serve

    def handle(req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            raise HttpError(405, "method not allowed", {"Allow": "GET, HEAD"})
        if req.path != "/metrics":
            raise HttpError(404, "not found: try /metrics")
        return Response(200, CONTENT_TYPE, render(status()))

    limits = Limits(
        max_head=MAX_REQUEST,
        max_body=0,
        request_timeout=REQUEST_TIMEOUT,
        write_timeout=REQUEST_TIMEOUT,
        max_clients=MAX_CLIENTS,
        max_pending=max(1, MAX_CLIENTS // 2),
    )
    srv = await serve(listen_socket(host, port), handle, limits, name="metrics")
    assert srv.server is not None
    return srv.server
