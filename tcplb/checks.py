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
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import CheckConfig

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


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def _connect(
    loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float, source: str | None = None
) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source:
            sock.bind((source, 0))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


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


async def probe(check: CheckConfig, host: str, port: int, source: str | None = None) -> CheckResult:
    """Run one check of type ``check.type`` against ``host:port``."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    try:
        sock = await _connect(loop, host, port, check.connect_timeout, source)
    except (OSError, TimeoutError) as e:
        st, detail = _l4_error(e)
        return CheckResult(False, st, detail, time.monotonic() - t0)
    try:
        if check.type == "tcp":
            # connect only: RabbitMQ does not log connections that never send a byte
            return CheckResult(True, "L4OK", "", time.monotonic() - t0)
        async with asyncio.timeout(check.timeout):
            if check.type == "amqp":
                return await _amqp(loop, sock, t0)
            return await _http(loop, sock, check, host, port, t0)
    except TimeoutError:
        return CheckResult(False, "L7TOUT", "no answer in time", time.monotonic() - t0)
    except OSError as e:
        return CheckResult(
            False, "L7RSP" if check.type != "tcp" else "L4CON", e.strerror or str(e), time.monotonic() - t0
        )
    finally:
        sock.close()


async def _amqp(loop: asyncio.AbstractEventLoop, sock: socket.socket, t0: float) -> CheckResult:
    await loop.sock_sendall(sock, AMQP_HEADER)
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


async def _http(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, check: CheckConfig, host: str, port: int, t0: float
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
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
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
    health state machine); ``report(result)`` hands each result back. With ``only_while_down`` the loop stops
    by itself once ``is_down()`` turns false: that is how servers without active checks recover from a
    passive failure.
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

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def _jitter(self, d: float) -> float:
        if self.spread:
            r = self.spread / 100.0
            return d * (1 + random.uniform(-r, r))
        return d

    async def _run(self) -> None:
        delay = self.first_delay if self.first_delay is not None else random.uniform(0, self.interval())
        while True:
            await asyncio.sleep(delay)
            res = await probe(self.check, self.host, self.port, self.source)
            self.last = res
            try:
                self.report(res)
            except Exception:
                log.exception("check report failed for %s:%d", self.host, self.port)
            delay = self._jitter(self.interval())
