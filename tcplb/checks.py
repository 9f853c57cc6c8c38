"""Active health checks: the probes (tcp / amqp / http) and the per-server scheduling loop.

A probe is one connection to the server's check address; its result carries HAProxy's check status codes
(L4OK, L4CON, L4TOUT, L6RSP, L7OK, L7RSP, L7STS, L7TOUT, SOCKERR) so the stats page and the logs read like
HAProxy's. Only asyncio is used: ``loop.sock_connect`` / ``sock_sendall`` / ``sock_recv`` on a non-blocking
socket, no transports, no extra dependencies.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import mgmt, proxysend
from .amqpwire import Credentials, Probe, ProbeOutcome
from .config import CheckConfig, Management

log = logging.getLogger("tcplb.checks")
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    status: str  # L4OK, L4CON, L4TOUT, L6RSP, L7OK, L7RSP, L7STS, L7TOUT, SOCKERR
    detail: str
    duration: float  # seconds
    code: int | None = None  # HTTP status

    @property
    def reason(self) -> str:
        """``"L4CON (Connection refused)"``-style text for logs and the stats page."""
        return f"{self.status} ({self.detail})" if self.detail else self.status


def _literal(host: str) -> socket.AddressFamily | None:
    """The family of an IP address literal, None for a host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def _addresses(
    loop: asyncio.AbstractEventLoop, host: str, port: int, source: str | None
) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]]:
    """Where to connect: the literal itself, or every address of a host name in the resolver's order
    (IPv6-only names included: the traffic path's ``create_connection`` does the same)."""
    fam = _literal(host)
    if fam is not None:
        return [(fam, (host, port))]
    want = _literal(source) if source else None  # a source address fixes the family
    infos = await loop.getaddrinfo(host, port, family=want or socket.AF_UNSPEC, type=socket.SOCK_STREAM)
    out: list[tuple[socket.AddressFamily, tuple[Any, ...]]] = []
    for family, _type, _proto, _canon, addr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, addr) not in out:
            out.append((socket.AddressFamily(family), addr))
    if not out:
        raise OSError(errno.EADDRNOTAVAIL, f"{host}: no IPv4 or IPv6 address")
    return out


async def _connect(
    loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float, source: str | None = None
) -> socket.socket:
    """A connected non-blocking socket; every address of ``host`` in turn, all within ``timeout``."""
    async with asyncio.timeout(timeout):
        addrs = await _addresses(loop, host, port, source)
        last: OSError | None = None
        for family, addr in addrs:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                if source:
                    sock.bind((source, 0))
                await loop.sock_connect(sock, addr)
            except OSError as e:
                sock.close()
                last = e
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        assert last is not None
        raise last


async def _recv_at_least(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    n: int,
    *,
    until: bytes | None = None,
    limit: int = 65536,
) -> bytes:
    buf = b""
    while len(buf) < n or (until is not None and until not in buf):
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) >= limit:
            break
    return buf


def _l4_error(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, TimeoutError):
        return "L4TOUT", "connect timeout"
    if isinstance(exc, socket.gaierror):
        return "SOCKERR", f"cannot resolve: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        if exc.errno in (
            errno.ECONNREFUSED,
            errno.ECONNRESET,
            errno.EHOSTUNREACH,
            errno.ENETUNREACH,
            errno.ECONNABORTED,
            errno.ETIMEDOUT,
        ):
            return "L4CON", os.strerror(exc.errno)
        return "SOCKERR", os.strerror(exc.errno) if exc.errno else str(exc)
    return "SOCKERR", repr(exc)


async def probe(
    check: CheckConfig, host: str, port: int, source: str | None = None, send_proxy: str = "none"
) -> CheckResult:
    """Run one check of type ``check.type`` against ``host:port``. With ``send_proxy`` (the server's), the
    check's first write starts with a PROXY header describing its own socket (:mod:`tcplb.proxysend`)."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    # without timeout_check HAProxy bounds the *whole* check (connect + answer) by inter: not inter each
    budget = check.budget
    try:
        ct = check.connect_timeout if budget is None else min(check.connect_timeout, budget)
        sock = await _connect(loop, host, port, ct, source)
    except (OSError, TimeoutError) as e:
        st, detail = _l4_error(e)
        return CheckResult(False, st, detail, time.monotonic() - t0)
    try:
        prefix = proxysend.check_header(send_proxy, check, sock)
        if check.type == "tcp":
            # connect only: RabbitMQ does not log connections that never send a byte
            if prefix:  # the server expects a PROXY header first (HAProxy sends it on tcp checks too)
                await loop.sock_sendall(sock, prefix)
            return CheckResult(True, "L4OK", "", time.monotonic() - t0)
        rt = check.timeout
        if budget is not None:
            rt = max(0.0, min(rt, budget - (time.monotonic() - t0)))
        async with asyncio.timeout(rt):
            if check.type == "amqp":
                return await _amqp(loop, sock, t0, prefix)
            if check.type == "rabbitmq":
                return await _rabbitmq(loop, sock, check, t0, prefix)
            return await _http(loop, sock, check, host, port, t0, prefix)
    except TimeoutError:
        return CheckResult(False, "L7TOUT", "no answer in time", time.monotonic() - t0)
    except OSError as e:
        return CheckResult(
            False, "L7RSP" if check.type != "tcp" else "L4CON", e.strerror or str(e), time.monotonic() - t0
        )
    finally:
        sock.close()


async def _amqp(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, t0: float, prefix: bytes = b""
) -> CheckResult:
    await loop.sock_sendall(sock, prefix + AMQP_HEADER)
    data = await _recv_at_least(loop, sock, 11)
    dt = time.monotonic() - t0
    if len(data) < 11:
        if data.startswith(b"AMQP"):
            return CheckResult(False, "L7RSP", f"protocol version refused: {data[:8]!r}", dt)
        return CheckResult(False, "L7RSP", f"short answer ({len(data)} bytes)", dt)
    ftype, channel, _size, cls, meth = struct.unpack("!BHIHH", data[:11])
    if ftype == 1 and channel == 0 and cls == 10 and meth == 10:
        return CheckResult(True, "L7OK", "Connection.Start", dt)
    return CheckResult(False, "L7RSP", f"not Connection.Start: {data[:11].hex()}", dt)


def _credentials(check: CheckConfig) -> Credentials | None:
    if check.amqp_user is None:
        return None
    return Credentials(check.amqp_user, check.amqp_password or "", check.vhost)


def rabbitmq_result(out: ProbeOutcome, dt: float) -> CheckResult:
    """A finished :class:`~tcplb.amqpwire.Probe` as a check result.

    The broker answered AMQP → L7OK. If it closed the probe itself (403 bad credentials, 530 vhost), it
    is alive and speaks AMQP but refuses the probe: L7OKC ("conditionally passed"), so a wrong probe
    password shows on the stats page and in the log without taking every node out. Anything else (garbage,
    a closed connection, a version refusal) → L7RSP; silence ends in the caller's timeout (L7TOUT)."""
    if out.close_code is not None:
        return CheckResult(True, "L7OKC", f"broker refused the probe: {out.close_code} {out.close_text}", dt)
    if out.ok:
        return CheckResult(True, "L7OK", out.reason if out.clean else f"{out.reason} (header only)", dt)
    return CheckResult(False, "L7RSP", out.reason, dt)


async def _rabbitmq(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, check: CheckConfig, t0: float, prefix: bytes = b""
) -> CheckResult:
    """The clean AMQP probe (:class:`tcplb.amqpwire.Probe`): with credentials, the full handshake and a
    Connection.Close, which leaves nothing above info in RabbitMQ's log; without, header → Start."""
    p = Probe(_credentials(check))
    await loop.sock_sendall(sock, prefix + p.start())  # one write: RabbitMQ reads PROXY in one recv
    while True:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            return rabbitmq_result(p.feed_eof(), time.monotonic() - t0)
        step = p.feed(data)
        if step.send:
            await loop.sock_sendall(sock, step.send)
        if step.outcome is not None:
            return rabbitmq_result(step.outcome, time.monotonic() - t0)


async def node_state(m: Management, host: str, *, skip_service: bool = False) -> tuple[mgmt.NodeState, bool]:
    """One look at a node through the management API: (its state, whether ``is-in-service`` exists).

    * ``is-in-service`` (RabbitMQ 4.1.1+, no authentication): READY, or DRAINING when the node is being
      drained (or booting); skipped once the broker said it does not have it (``skip_service``);
    * ``/api/nodes/{node}`` when ``node`` is set: ``running`` false → DOWN, ``being_drained`` (3.11.19 /
      3.12.1+) → DRAINING; asked of any node, so ``url`` can name another node (a 3.10 node in maintenance
      suspends its own management port);
    * the alarm check: ``alarms`` filtered to ``node`` when set, else ``local-alarms`` of the node asked.

    Alarms come from the alarm check when it answered (it is current; ``/api/nodes`` lags by a stats
    interval), else from ``/api/nodes``. A failed request is UNKNOWN (keep the previous view)."""
    h = m.host if m.host is not None else host
    kw: dict[str, Any] = {"user": m.user, "password": m.password, "timeout": m.timeout}
    states: list[mgmt.NodeState] = []
    service_ok = not skip_service
    if not skip_service:
        got = await mgmt.fetch(h, m.port, mgmt.IS_IN_SERVICE, timeout=m.timeout)
        st = (
            mgmt.from_failure(got, "is-in-service")
            if isinstance(got, mgmt.FetchFailed)
            else mgmt.from_service_check(got.status, got.body)
        )
        service_ok = st.supported
        states.append(st)
    node_alarms: frozenset[str] | None = None
    if m.node is not None:
        got = await mgmt.fetch(h, m.port, mgmt.node_path(m.node), **kw)
        st = (
            mgmt.from_failure(got, "/api/nodes")
            if isinstance(got, mgmt.FetchFailed)
            else mgmt.from_node(got.status, got.body, m.node)
        )
        node_alarms = st.alarms
        states.append(mgmt.NodeState(st.health, None, st.reason, st.supported))
    path = mgmt.ALARMS if m.node is not None else mgmt.LOCAL_ALARMS
    got = await mgmt.fetch(h, m.port, path, **kw)
    al = (
        mgmt.from_failure(got, path.rsplit("/", 1)[-1])
        if isinstance(got, mgmt.FetchFailed)
        else mgmt.from_alarms(got.status, got.body, m.node, path)
    )
    if al.alarms is None and node_alarms is not None:
        al = mgmt.NodeState(al.health, node_alarms, al.reason + " (alarms from /api/nodes)")
    states.append(al)
    return mgmt.merge(states), service_ok


async def _http(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    check: CheckConfig,
    host: str,
    port: int,
    t0: float,
    prefix: bytes = b"",
) -> CheckResult:
    h = check.http
    hosthdr = h.host or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    lines = [
        f"{h.method} {h.path} HTTP/1.1",
        f"Host: {hosthdr}",
        "User-Agent: tcplb-check",
        "Accept: */*",
        "Connection: close",
    ]
    if h.user is not None:
        token = base64.b64encode(f"{h.user}:{h.password or ''}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    await loop.sock_sendall(sock, prefix + ("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await _recv_at_least(loop, sock, 12, until=b"\r\n", limit=8192)
    dt = time.monotonic() - t0
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return CheckResult(False, "L7RSP", f"not an HTTP answer: {line[:40]!r}", dt)
    code = int(parts[1])
    text = f"HTTP status check returned code <{code}>"
    if h.status_ok(code):
        return CheckResult(True, "L7OK", text, dt, code)
    return CheckResult(False, "L7STS", text, dt, code)


class Checker:
    """Runs the checks of one server forever (until :meth:`stop`).

    ``interval()`` gives the delay before the next check (inter / fastinter / downinter, as chosen by the
    health state machine); ``report(result)`` hands each result back. The next check's time is a deadline
    (loop time) that :meth:`rearm` can bring forward: after a passive failure the check is due
    ``fastinter`` from now, not at the end of the old ``inter`` (HAProxy's ``health_adjust``).
    """

    def __init__(
        self,
        check: CheckConfig,
        host: str,
        port: int,
        *,
        interval: Callable[[], float],
        report: Callable[[CheckResult], None],
        spread: int = 0,
        source: str | None = None,
        first_delay: float | None = None,
        node_report: Callable[[mgmt.NodeState], None] | None = None,
        send_proxy: str = "none",
    ) -> None:
        self.check = check
        self.host = host
        self.port = port
        self.interval = interval
        self.report = report
        self.spread = spread
        self.source = source
        self.first_delay = first_delay
        self.task: asyncio.Task[None] | None = None
        self.last: CheckResult | None = None
        self.due: float | None = None  # loop time of the next check (None while one runs)
        self._wake: asyncio.Event | None = None
        # rabbitmq + management: the node-state poll (its own task, every management.inter)
        self.node_report = node_report
        self.send_proxy = send_proxy
        self.node_task: asyncio.Task[None] | None = None
        self.node: mgmt.NodeState | None = None

    def start(self) -> None:
        if self.task is None:
            self._wake = asyncio.Event()
            loop = asyncio.get_running_loop()
            self.task = loop.create_task(self._run())
            m = self.check.management
            if self.check.type == "rabbitmq" and m is not None and self.node_report is not None:
                self.node_task = loop.create_task(self._run_node(m))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.node_task is not None:
            self.node_task.cancel()
            self.node_task = None

    async def _run_node(self, m: Management) -> None:
        skip_service = False
        rounds = 0
        await asyncio.sleep(random.uniform(0, min(m.inter, 1.0)))
        while True:
            # a broker without is-in-service (< 4.1.1) is asked again only every 12th round (an upgrade)
            skip = skip_service and rounds % 12 != 0
            try:
                st, supported = await node_state(m, self.host, skip_service=skip)
            except Exception as e:  # never let the poll die: report it as "the API did not say"
                log.exception("management poll failed for %s", self.host)
                st, supported = mgmt.from_failure(mgmt.FetchFailed(repr(e))), True
            if not skip:
                skip_service = not supported
            rounds += 1
            self.node = st
            assert self.node_report is not None
            try:
                self.node_report(st)
            except Exception:
                log.exception("node report failed for %s", self.host)
            await asyncio.sleep(self._jitter(m.inter))

    def rearm(self, delay: float) -> None:
        """Run the next check at most ``delay`` seconds from now (a check in progress is left alone)."""
        if self.task is None or self.due is None or self._wake is None:
            return
        at = asyncio.get_running_loop().time() + delay
        if at < self.due:
            self.due = at
            self._wake.set()

    def _jitter(self, d: float) -> float:
        if self.spread:
            r = self.spread / 100.0
            return d * (1 + random.uniform(-r, r))
        return d

    async def _sleep_until_due(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        while self.due is not None and (left := self.due - loop.time()) > 0:
            wake.clear()
            try:
                async with asyncio.timeout(left):
                    await wake.wait()
            except TimeoutError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.first_delay if self.first_delay is not None else random.uniform(0, self.interval())
        while True:
            self.due = loop.time() + delay
            await self._sleep_until_due()
            self.due = None
            res = await probe(self.check, self.host, self.port, self.source, self.send_proxy)
            self.last = res
            try:
                self.report(res)
            except Exception:
                log.exception("check report failed for %s:%d", self.host, self.port)
            delay = self._jitter(self.interval())
