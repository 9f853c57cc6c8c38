"""One small HTTP/1.1 server layer on h11, shared by tcplb's stats/admin listener and vrrpd's ``/metrics``.

h11 parses (request line, headers, ``Content-Length`` framing, limits): remote garbage becomes an
:class:`h11.RemoteProtocolError` and a 4xx answer here, never a traceback. This module adds only what both
listeners need around it, as an :class:`asyncio.Protocol` (no streams):

* one request per connection (``Connection: close``), answered by a handler ``Request -> Response`` (or an
  awaitable of one); ``HttpError`` from the handler is an answer too, anything else a logged 500;
* bounded time: the whole request (head and body) must arrive within ``Limits.request_timeout`` of the
  accept, and the answer must leave within ``Limits.write_timeout``;
* bounded room: at most ``Limits.max_clients`` connections, of which at most ``Limits.max_pending`` may be
  still sending their request. A new connection beyond either limit evicts the *oldest pending* one, so a
  pile of idle (unauthenticated: no request, hence no credentials yet) connections cannot lock out a client
  that sends its request at once; connections whose request is complete are never evicted.

Imported lazily by its users (vrrpd only when ``metrics_listen`` is set), h11 included.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import h11

__all__ = ["HttpError", "HttpServer", "Limits", "Request", "Response", "serve"]

log = logging.getLogger("rmqfd.http")

REASONS = {
    200: "OK",
    302: "Found",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Limits:
    max_head: int = 16384  # request line + headers, bytes
    max_body: int = 16384
    request_timeout: float = 2.0  # from the accept to the end of the request (head and body)
    write_timeout: float = 10.0  # to send the answer
    max_clients: int = 64  # connections at once
    max_pending: int = 32  # of which still sending their request (the oldest is evicted beyond)


class HttpError(Exception):
    """An answer raised by a handler: ``status``, a one-line ``text`` and extra headers."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str  # still percent-encoded
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    client: str  # "ip:port" or "[ip]:port"


@dataclass(slots=True)
class Response:
    status: int
    ctype: str
    body: bytes | str
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, head_only: bool = False) -> bytes:
        data = self.body.encode() if isinstance(self.body, str) else self.body
        hdr = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}",
            f"Content-Type: {self.ctype}",
            f"Content-Length: {len(data)}",
            "Connection: close",
        ]
        for k, v in self.headers.items():
            if any(c in k or c in v for c in "\r\n\0"):
                raise ValueError(f"header {k!r}: CR, LF or NUL in a header")
            hdr.append(f"{k}: {v}")
        return ("\r\n".join(hdr) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else data)


Handler = Callable[[Request], "Response | Awaitable[Response]"]
ErrorBody = Callable[[int, str, dict[str, str]], Response]


def _plain_error(status: int, text: str, headers: dict[str, str]) -> Response:
    return Response(status, "text/plain; charset=utf-8", text + "\n", headers)


def peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return "?"


class _Conn(asyncio.Protocol):
    def __init__(self, srv: HttpServer) -> None:
        self.srv = srv
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=srv.limits.max_head)
        self.transport: asyncio.Transport | None = None
        self.client = "?"
        self.req: h11.Request | None = None
        self.body = bytearray()
        self.head: bytearray | None = bytearray()  # the request head until it is complete (size check)
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False  # an answer is (being) written: read and discard the rest
        self.complete = False  # the whole request is in: the answer is being made (maybe asynchronously)
        self.discarded = 0
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.client = peer_text(transport.get_extra_info("peername"))
        if not self.srv._admit(self):
            transport.abort()
            return
        self.timer = self.srv.loop.call_later(self.srv.limits.request_timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        if self.answered or self.complete:
            self.discarded += len(data)
            if self.discarded > (1 << 20) and self.transport is not None:
                self.transport.abort()
            return
        if self.req is None and not self._head_fits(data):
            self._answer(
                self.srv.error_body(431, f"request head over {self.srv.limits.max_head} bytes", {}), False
            )
            return
        self.h.receive_data(data)
        self._events()

    def _head_fits(self, data: bytes) -> bool:
        """The request line and headers stay within ``max_head`` (h11 checks only an incomplete head)."""
        head = self.head
        if head is None:
            return True
        head += data
        lim = self.srv.limits.max_head
        ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
        if ends:
            self.head = None  # complete: h11 takes it from here
            return min(ends) <= lim
        return len(head) <= lim

    def eof_received(self) -> bool | None:
        if not self.answered and not self.complete:
            self.h.receive_data(b"")
            self._events()
        return True  # keep our side open: the answer may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.srv._gone(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # -- request -----------------------------------------------------------------------------------------
    def _events(self) -> None:
        lim = self.srv.limits
        while not self.answered:
            try:
                ev = self.h.next_event()
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint if 400 <= e.error_status_hint < 500 else 400
                self._answer(self.srv.error_body(status, str(e) or "bad request", {}), complete=False)
                return
            if ev is h11.NEED_DATA:
                return
            if isinstance(ev, h11.Request):
                self.req = ev
                cl: bytes | None = None
                for k, v in ev.headers:
                    if k == b"content-length":
                        cl = v
                    elif k == b"transfer-encoding":
                        self._answer(
                            self.srv.error_body(501, "only bodies with a Content-Length are supported", {}),
                            complete=False,
                        )
                        return
                if cl is not None and (len(cl) > 18 or int(cl) > lim.max_body):
                    self._answer(self.srv.error_body(413, f"body over {lim.max_body} bytes", {}), False)
                    return
            elif isinstance(ev, h11.Data):
                self.body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                self._complete()
                return
            elif isinstance(ev, h11.ConnectionClosed):
                self._close()
                return
            else:  # pragma: no cover - h11 has no other client events
                return

    def _complete(self) -> None:
        self.complete = True
        self._cancel_timer()
        self.srv._promote(self)
        ev = self.req
        assert ev is not None
        target = ev.target.decode("latin-1")
        url = urllib.parse.urlsplit(target)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in ev.headers}
        req = Request(
            ev.method.decode("latin-1"), target, url.path, url.query, headers, bytes(self.body), self.client
        )
        head_only = req.method == "HEAD"
        try:
            res = self.srv.handler(req)
        except HttpError as e:
            self._answer(self.srv.error_body(e.status, e.text, e.headers), True, head_only)
            return
        except Exception:
            log.exception("%s: request %s %s failed", self.srv.name, req.method, _clean(req.path))
            self._answer(self.srv.error_body(500, "internal error", {}), True, head_only)
            return
        if inspect.isawaitable(res):
            self.task = self.srv.loop.create_task(self._await(res, req, head_only))
        else:
            self._answer(res, True, head_only)

    async def _await(self, aw: Awaitable[Response], req: Request, head_only: bool) -> None:
        try:
            res = await aw
        except HttpError as e:
            res = self.srv.error_body(e.status, e.text, e.headers)
        except Exception:
            log.exception("%s: request %s %s failed", self.srv.name, req.method, _clean(req.path))
            res = self.srv.error_body(500, "internal error", {})
        self._answer(res, True, head_only)

    # -- answer --------------------------------------------------------------------------------------------
    def _answer(self, res: Response, complete: bool, head_only: bool = False) -> None:
        tr = self.transport
        self.answered = True
        self._cancel_timer()
        self.srv._promote(self)
        if tr is None or tr.is_closing():
            return
        tr.write(res.encode(head_only))
        self.timer = self.srv.loop.call_later(self.srv.limits.write_timeout, self._abort)
        if complete:
            tr.close()  # flushes, then connection_lost
            return
        # refused before the whole request was read: half-close and read (and drop) what the client still
        # sends, bounded, so that closing with unread data (a reset) does not destroy the answer first
        if tr.can_write_eof():
            tr.write_eof()
        self.srv.loop.call_later(1.0, self._close)

    def _expired(self) -> None:
        self.timer = None
        if not self.answered:
            self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _clean(s: str, limit: int = 120) -> str:
    t = "".join(ch if ch.isprintable() else "?" for ch in s[:limit])
    return t + "..." if len(s) > limit else t


class HttpServer:
    """The connections of one listening socket (see the module docstring)."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits | None = None,
        *,
        name: str = "http",
        error_body: ErrorBody = _plain_error,
    ) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.name = name
        self.error_body = error_body
        self.loop = asyncio.get_running_loop()
        self.pending: OrderedDict[_Conn, None] = OrderedDict()  # still sending their request, oldest first
        self.serving: set[_Conn] = set()  # request complete, answer being made or sent
        self.evicted = 0
        self.server: asyncio.Server | None = None

    def protocol(self) -> asyncio.Protocol:
        return _Conn(self)

    @property
    def clients(self) -> int:
        return len(self.pending) + len(self.serving)

    def _admit(self, c: _Conn) -> bool:
        lim = self.limits
        while self.pending and (len(self.pending) >= lim.max_pending or self.clients >= lim.max_clients):
            old, _ = self.pending.popitem(last=False)
            self.evicted += 1
            old._cancel_timer()
            old._abort()
        if self.clients >= lim.max_clients:
            return False  # every slot serves a complete request: refuse this one
        self.pending[c] = None
        return True

    def _promote(self, c: _Conn) -> None:
        """``c``'s request is complete (or answered): it leaves the evictable pending set."""
        if c in self.pending:
            del self.pending[c]
            self.serving.add(c)

    def _gone(self, c: _Conn) -> None:
        self.pending.pop(c, None)
        self.serving.discard(c)

    async def start(self, sock: socket.socket) -> asyncio.Server:
        self.server = await self.loop.create_server(self.protocol, sock=sock)
        return self.server

    def close(self) -> None:
        """Stop listening and drop the connections still sending their request; those being answered
        finish (an admin reload that restarts this very server still gets its answer)."""
        if self.server is not None:
            self.server.close()
        for c in list(self.pending):
            c._abort()


async def serve(
    sock: socket.socket,
    handler: Handler,
    limits: Limits | None = None,
    *,
    name: str = "http",
    error_body: ErrorBody = _plain_error,
) -> HttpServer:
    """Serve ``handler`` on the listening socket ``sock``; returns the running server."""
    srv = HttpServer(handler, limits, name=name, error_body=error_body)
    await srv.start(sock)
    return srv
