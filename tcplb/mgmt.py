"""RabbitMQ's management HTTP API as node state: pure interpretation of answers, plus a minimal fetcher.

What each endpoint tells (``rabbitmq-aware.md`` §1-2; field names read in rabbitmq/rabbitmq-server at
v3.10.8, v3.11.19, v3.12.1 and v4.1.1):

``GET /api/nodes/{node}`` and ``GET /api/nodes`` (every version; user tag ``monitoring`` or above)
    ``name``, ``running``, ``type`` and, for a running node, its stats including ``mem_alarm`` and
    ``disk_free_alarm`` (booleans). ``being_drained`` (maintenance mode) only from **3.11.19 / 3.12.1**.
    The stats part is a periodic snapshot (``collect_statistics_interval``, 5 s by default): captured in the
    lab right after a memory alarm was raised, ``mem_alarm`` was still false (and ``mem_limit`` the old
    one), so alarms are better read from the alarm checks below, which answer at once.
    ``running: false`` → :attr:`Health.DOWN`; ``being_drained: true`` → :attr:`Health.DRAINING`; otherwise
    :attr:`Health.READY`. On 3.10 a drained node still shows ``running: true`` and there is no flag: the
    drain is only visible as refused connections (the AMQP listener *and* the drained node's own
    management port are suspended), so ask **another** node's ``/api/nodes`` and let the connect-level
    check see the refusal.
``GET /api/health/checks/is-in-service`` and ``…/ready-to-serve-clients`` (**4.1.1+**, no authentication)
    200 ``{"status":"ok"}`` → READY; 503 ``{"status":"failed","reason":…}`` → DRAINING: the node is not
    serving (being drained, or booting), its AMQP listeners are gone, or its connection limit is reached.
    Each means "no new connections here"; existing ones are left to the broker. 404 → the endpoint does not
    exist on this broker (``supported=False``): fall back to ``/api/nodes``. 3.10.8 answers these paths
    with **406** and an empty body (captured in the lab), so 406 means the same.
``GET /api/health/checks/alarms`` (cluster) and ``…/local-alarms`` (this node)
    200 → no alarm; 503 with ``alarms: [{"resource": "memory" | "disk space" | "file descriptors", "node":
    …}]``. These say nothing about readiness (health UNKNOWN): **alarms never take a server out** (they are
    cluster-wide; moving publishers does not unblock them); they are for stats, metrics and logs.

Alarm names are normalised to ``memory``, ``disk`` and ``file_descriptors`` (others pass through).

Interpretation never raises: garbage, truncated JSON, an HTML error page, an unexpected status all give
:attr:`Health.UNKNOWN` with the reason. UNKNOWN means "the API did not say": the caller keeps its previous
view and relies on its AMQP/TCP check (a failed management API is not a failed broker).

:func:`fetch` is a deliberately small HTTP/1.1 GET on asyncio streams (Basic auth, ``Connection: close``,
Content-Length, chunked or read-to-EOF bodies, a size cap, one overall timeout), which returns a value for
every outcome. :func:`close_connection` is the graceful close for rebalancing (``DELETE
/api/connections/{name}`` with ``X-Reason``), with :func:`connection_name` naming a connection the way the
broker does; both used by :mod:`tcplb.rebalancer` (the node-state part by the ``rabbitmq`` check).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final
from urllib.parse import quote

__all__ = [
    "ALARMS",
    "IS_IN_SERVICE",
    "LOCAL_ALARMS",
    "NODES",
    "READY_TO_SERVE_CLIENTS",
    "CloseResult",
    "FetchFailed",
    "Health",
    "HttpAnswer",
    "NodeState",
    "close_connection",
    "close_result",
    "connection_name",
    "connection_path",
    "fetch",
    "from_alarms",
    "from_failure",
    "from_node",
    "from_service_check",
    "merge",
    "node_path",
    "request",
]

NODES: Final = "/api/nodes"
IS_IN_SERVICE: Final = "/api/health/checks/is-in-service"
READY_TO_SERVE_CLIENTS: Final = "/api/health/checks/ready-to-serve-clients"
ALARMS: Final = "/api/health/checks/alarms"
LOCAL_ALARMS: Final = "/api/health/checks/local-alarms"

_ALARM_NAMES: Final = {"memory": "memory", "disk space": "disk", "file descriptors": "file_descriptors"}


def node_path(node: str) -> str:
    """``/api/nodes/<node>`` with the node name URL-encoded (``rabbit@rmq1`` → ``rabbit%40rmq1``)."""
    return f"{NODES}/{quote(node, safe='')}"


class Health(Enum):
    READY = "ready"  # takes new connections
    DRAINING = "draining"  # no new connections; existing ones are left to the broker
    DOWN = "down"  # the node is not running
    UNKNOWN = "unknown"  # this answer does not say


_SEVERITY: Final = {Health.READY: 0, Health.DRAINING: 1, Health.DOWN: 2}


@dataclass(frozen=True, slots=True)
class NodeState:
    health: Health
    alarms: frozenset[str] | None  # None: this answer says nothing about alarms
    reason: str
    supported: bool = True  # False: the endpoint does not exist on this broker version (404)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class FetchFailed:
    reason: str


def _unknown(reason: str, supported: bool = True) -> NodeState:
    return NodeState(Health.UNKNOWN, None, reason, supported)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _NOT_JSON


_NOT_JSON: Final = object()


def _text(v: object, limit: int = 200) -> str:
    s = v if isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[:limit] + "…"


def _http_problem(status: int, what: str) -> NodeState:
    if status in (401, 403):
        return _unknown(
            f"{what}: HTTP {status}: the management API refused the credentials (the user needs the "
            "monitoring, management or administrator tag)"
        )
    if 300 <= status < 400:
        return _unknown(f"{what}: HTTP {status} redirect (not followed)")
    return _unknown(f"{what}: unexpected HTTP status {status}")


def _node_alarms(obj: Mapping[str, object]) -> frozenset[str] | None:
    found: set[str] = set()
    seen = False
    for key, name in (("mem_alarm", "memory"), ("disk_free_alarm", "disk")):
        v = obj.get(key)
        if isinstance(v, bool):
            seen = True
            if v:
                found.add(name)
    return frozenset(found) if seen else None


def from_node(status: int, body: bytes, node: str | None = None) -> NodeState:
    """The state of ``node`` from ``GET /api/nodes/{node}`` (an object) or ``GET /api/nodes`` (a list: the
    entry named ``node``)."""
    what = f"/api/nodes ({node})" if node else "/api/nodes"
    if status == 404:
        return _unknown(f"{what}: HTTP 404: no such node")
    if status != 200:
        return _http_problem(status, what)
    doc = _json(body)
    if isinstance(doc, list):
        if node is None:
            return _unknown(f"{what}: a node list, but no node name to look for")
        entries = [e for e in doc if isinstance(e, dict) and e.get("name") == node]
        if not entries:
            names = [e.get("name") for e in doc if isinstance(e, dict)]
            return _unknown(f"{what}: {node} is not in the cluster's node list {_text(names)}")
        doc = entries[0]
    if not isinstance(doc, dict):
        return _unknown(f"{what}: not a JSON object: {_text(body[:80])}")
    if node is not None and doc.get("name") not in (None, node):
        return _unknown(f"{what}: the answer is about {_text(doc.get('name'))}, not {node}")
    running = doc.get("running")
    if not isinstance(running, bool):
        return _unknown(f"{what}: no boolean 'running' field")
    alarms = _node_alarms(doc)
    drained = doc.get("being_drained")
    if not running:
        return NodeState(Health.DOWN, alarms, f"{what}: node not running")
    if drained is True:
        return NodeState(Health.DRAINING, alarms, f"{what}: node in maintenance mode (being_drained)")
    if drained is None:
        # RabbitMQ < 3.11.19 / 3.12.1: no maintenance flag in the API
        return NodeState(Health.READY, alarms, f"{what}: running (this version shows no maintenance flag)")
    return NodeState(Health.READY, alarms, f"{what}: running")


def from_service_check(status: int, body: bytes, endpoint: str = IS_IN_SERVICE) -> NodeState:
    """``is-in-service`` or ``ready-to-serve-clients`` (RabbitMQ 4.1.1+)."""
    what = endpoint.rsplit("/", 1)[-1]
    if status in (404, 406):
        # the lab's 3.10.8 answers these unknown paths with 406 (empty body) to an Accept: application/json
        # request, not 404 (captured in tests/tcplb/mgmt_fixtures)
        return _unknown(
            f"{what}: HTTP {status}: not available on this broker (RabbitMQ < 4.1.1)", supported=False
        )
    if status not in (200, 503):
        return _http_problem(status, what)
    doc = _json(body)
    if not isinstance(doc, dict) or doc.get("status") not in ("ok", "failed"):
        return _unknown(f"{what}: HTTP {status} without a health-check body: {_text(body[:80])}")
    if status == 200 and doc["status"] == "ok":
        return NodeState(Health.READY, None, f"{what}: ok")
    if status == 503 and doc["status"] == "failed":
        reason = doc.get("reason")
        return NodeState(Health.DRAINING, None, f"{what}: {_text(reason) if reason else 'failed'}")
    return _unknown(f"{what}: HTTP {status} with status {_text(doc['status'])}")


def from_alarms(status: int, body: bytes, node: str | None = None, endpoint: str = ALARMS) -> NodeState:
    """``alarms`` (cluster-wide) or ``local-alarms``: the alarms of ``node`` (all listed ones when ``node``
    is None); health stays UNKNOWN, on purpose (module docstring)."""
    what = endpoint.rsplit("/", 1)[-1]
    if status not in (200, 503):
        return _http_problem(status, what)
    doc = _json(body)
    if not isinstance(doc, dict) or doc.get("status") not in ("ok", "failed"):
        return _unknown(f"{what}: HTTP {status} without a health-check body: {_text(body[:80])}")
    if status == 200:
        return NodeState(Health.UNKNOWN, frozenset(), f"{what}: no alarm")
    listed = doc.get("alarms")
    if not isinstance(listed, list):
        return _unknown(f"{what}: HTTP 503 without an alarm list")
    mine: set[str] = set()
    others: set[str] = set()
    for a in listed:
        if not isinstance(a, dict) or not isinstance(a.get("resource"), str):
            continue
        resource = str(a["resource"])
        name = _ALARM_NAMES.get(resource, resource)
        if node is None or a.get("node") == node:
            mine.add(name)
        else:
            others.add(f"{name} on {_text(a.get('node'), 60)}")
    text = ", ".join(sorted(mine)) or "none on this node"
    if others:
        text += f" (cluster: {', '.join(sorted(others))})"
    return NodeState(Health.UNKNOWN, frozenset(mine), f"{what}: alarms: {text}")


def from_failure(f: FetchFailed, what: str = "management API") -> NodeState:
    """An unreachable API is UNKNOWN, not DOWN: on 3.10 a drained node refuses its management port too, and
    the connect-level check sees that refusal on the AMQP port."""
    return _unknown(f"{what}: {f.reason}")


def merge(states: Iterable[NodeState]) -> NodeState:
    """One view from several answers: the most severe known health (DOWN > DRAINING > READY, UNKNOWN only
    if nobody knew), the union of the reported alarms, the reasons of the answers that decided."""
    ss = list(states)
    known = [s for s in ss if s.health is not Health.UNKNOWN]
    reported = [s.alarms for s in ss if s.alarms is not None]
    alarms = frozenset().union(*reported) if reported else None
    if not known:
        return NodeState(Health.UNKNOWN, alarms, "; ".join(s.reason for s in ss) or "no answer")
    worst = max(known, key=lambda s: _SEVERITY[s.health])
    reasons = [s.reason for s in known if s.health is worst.health]
    return NodeState(worst.health, alarms, "; ".join(reasons))


# --- the fetcher ------------------------------------------------------------------------------------------


async def _read_chunked(r: asyncio.StreamReader, max_body: int) -> bytes | FetchFailed:
    body = bytearray()
    while True:
        line = await r.readline()
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return FetchFailed(f"bad chunk size line {line[:40]!r}")
        if size < 0 or len(body) + size > max_body:
            return FetchFailed(f"body larger than {max_body} bytes")
        if size == 0:
            return bytes(body)
        body += await r.readexactly(size)
        if await r.readexactly(2) != b"\r\n":
            return FetchFailed("chunk not followed by CRLF")


async def _exchange(host: str, port: int, request: bytes, max_body: int) -> HttpAnswer | FetchFailed:
    reader, writer = await asyncio.open_connection(host, port, limit=max(65536, max_body))
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if (
            len(parts) < 2
            or not parts[0].startswith("HTTP/1.")
            or not (parts[1].isdigit() and len(parts[1]) == 3)
        ):
            return FetchFailed(f"not an HTTP answer: {lines[0][:60]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader, max_body)
            return body if isinstance(body, FetchFailed) else HttpAnswer(status, body)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return FetchFailed(f"bad Content-Length {length[:20]!r}")
            if int(length) > max_body:
                return FetchFailed(f"body of {length} bytes is larger than {max_body}")
            return HttpAnswer(status, await reader.readexactly(int(length)))
        data = await reader.read(max_body + 1)
        rest = bytearray()
        while data:
            rest += data
            if len(rest) > max_body:
                return FetchFailed(f"body larger than {max_body} bytes")
            data = await reader.read(max_body + 1 - len(rest))
        return HttpAnswer(status, bytes(rest))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def fetch(
    host: str,
    port: int,
    path: str,
    *,
    user: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
    max_body: int = 1 << 20,
) -> HttpAnswer | FetchFailed:
    """``GET path`` on ``host:port`` with optional Basic auth, the whole exchange bounded by ``timeout``
    seconds. Every failure (refused, reset, timeout, not HTTP, too big) is a :class:`FetchFailed` value."""
    return await request(
        host, port, "GET", path, user=user, password=password, timeout=timeout, max_body=max_body
    )


async def request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    user: str | None = None,
    password: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    max_body: int = 1 << 20,
) -> HttpAnswer | FetchFailed:
    """One request without a body (GET, DELETE); see :func:`fetch`. Header values must not contain CR/LF
    (local misuse: ValueError)."""
    hosthdr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {hosthdr}",
        "User-Agent: tcplb-mgmt",
        "Accept: application/json",
        "Connection: close",
    ]
    for name, value in (headers or {}).items():
        if any(c in name + value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"bad HTTP header {name!r}")
        lines.append(f"{name}: {value}")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(host, port, raw, max_body)
    except TimeoutError:
        return FetchFailed(f"no complete answer from {hosthdr} within {timeout:g} s")
    except asyncio.IncompleteReadError as e:
        return FetchFailed(f"connection closed after {len(e.partial)} bytes of an incomplete answer")
    except asyncio.LimitOverrunError:
        return FetchFailed("HTTP header section too large")
    except OSError as e:
        return FetchFailed(f"{hosthdr}: {os.strerror(e.errno) if e.errno else e}")
    except ValueError as e:
        return FetchFailed(f"{hosthdr}: {e}")


# --- closing a connection through the API (graceful rebalancing) -------------------------------------------


def _ntoab(host: object) -> str:
    ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # rabbit_misc:ntoa prints IPv4-mapped addresses as IPv4
    return f"[{ip}]" if ip.version == 6 else str(ip)


def connection_name(peer: Sequence[object], local: Sequence[object]) -> str:
    """The name RabbitMQ gives a connection: ``<peer ip>:<port> -> <local ip>:<port>`` as the broker sees
    the socket (``rabbit_reader`` / ``rabbit_misc:ntoab``: IPv6 in brackets, IPv4-mapped as IPv4). Without
    PROXY, ``peer`` is tcplb's upstream socket's local address and ``local`` its peer (the broker); with
    PROXY, the source and destination written into the header. Assumes ``reverse_dns_lookups = false``."""
    return f"{_ntoab(peer[0])}:{peer[1]} -> {_ntoab(local[0])}:{local[1]}"


def connection_path(name: str) -> str:
    """``/api/connections/<name>`` with the name URL-encoded."""
    return f"/api/connections/{quote(name, safe='')}"


@dataclass(frozen=True, slots=True)
class CloseResult:
    closed: bool  # the broker closed it (204)
    reason: str


async def close_connection(
    host: str,
    port: int,
    name: str,
    reason: str,
    *,
    user: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
) -> CloseResult:
    """``DELETE /api/connections/{name}`` with ``X-Reason``: the broker sends the client Connection.Close
    320 ``CONNECTION_FORCED - <reason>`` (a graceful close the client is told about, not a reset). Needs the
    ``administrator`` tag (or the connection's own user). The reason is sent as printable ASCII."""
    text = "".join(c if " " <= c <= "~" else "?" for c in reason)[:200]
    got = await request(
        host,
        port,
        "DELETE",
        connection_path(name),
        user=user,
        password=password,
        headers={"X-Reason": text},
        timeout=timeout,
    )
    return close_result(got)


def close_result(got: HttpAnswer | FetchFailed) -> CloseResult:
    if isinstance(got, FetchFailed):
        return CloseResult(False, f"management API: {got.reason}")
    if got.status == 204:
        return CloseResult(True, "closed by the broker")
    if got.status == 404:
        # already gone, or not (yet) in the plugin's stats: seen in the lab for a live connection opened
        # while the plugin was starting; the caller, who holds the connection, knows which
        return CloseResult(False, "HTTP 404: the management API does not know this connection")
    if got.status in (401, 403):
        return CloseResult(False, f"HTTP {got.status}: the user needs the administrator tag")
    return CloseResult(False, f"unexpected HTTP status {got.status}")
