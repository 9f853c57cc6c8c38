"""PROXY protocol v1 and v2 headers toward the servers: pure encoders, no I/O.

The format is HAProxy's ``doc/proxy-protocol.txt`` (§2.1 version 1, §2.2 version 2). A header is written
once, **in one call, right after connect**, before any byte of the client: the spec says "the sender must
ensure that all the protocol header is sent at once", and RabbitMQ reads it with *one* ``recv`` (3 s
timeout, ``ranch:recv_proxy_header``), rejecting a header split over two segments.

What is encoded:

* v1 (``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n``, at most 107 bytes) and the short
  ``PROXY UNKNOWN\\r\\n``;
* v2: the 12-byte signature, version 2 with command PROXY (``0x21``) or LOCAL (``0x20``), family/transport
  ``0x11`` (TCP over IPv4) or ``0x21`` (TCP over IPv6) with the 12/36-byte address block; LOCAL carries
  family ``0x00`` and length 0. No TLVs.

Which header to send where (``rabbitmq-aware.md`` §4):

* **Live connections**: the PROXY command with the client's address (source: the client socket's peer) and
  the address the client dialled (destination: the client socket's local address, e.g. the VIP).
* **Health checks toward RabbitMQ 3.10 must not use the v2 LOCAL command**: RabbitMQ before 3.11.19 / 3.12.1
  (every 3.10.x, the lab's 3.10.8 included) requires a source address in ``rabbit_net:socket_ends/2``; a LOCAL
  header parses to ``#{command => local, version => 2}`` and the connection process dies with an
  error-level crash report on every probe (rabbitmq/rabbitmq-server#8654, fixed by #8664 in 3.11.19, 3.12.1,
  3.13.0). Every version also crashes the same way on a PROXY command without addresses (v1 ``UNKNOWN``,
  v2 family ``0x00``). So a check either sends no header or :func:`for_check`: a real PROXY command that
  describes the check socket's own two endpoints (what the spec recommends for health checks, §2.1:
  "build a valid PROXY line which it will fill with a getsockname()/getpeername() pair"). HAProxy >= 2.2
  sends LOCAL on ``send-proxy-v2`` checks, which is exactly what breaks 3.10; :func:`v2_local` exists for
  newer brokers and for tests, never as the default of a check.

Addresses are given as ``(host, port)`` with ``host`` an IP string or an :mod:`ipaddress` object, as
``socket.getpeername()`` / ``getsockname()`` return them (extra tuple members of IPv6 sockaddrs are
ignored). IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, from a dual-stack listener) are written as
IPv4, as RabbitMQ itself prints them; an IPv6 scope (``%eth0``) is dropped. Bad local input (not an IP
address, a port outside 0..65535, source and destination of different families) raises
:class:`ProxyProtocolError`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyProtocolError",
    "Version",
    "for_check",
    "header",
    "v1",
    "v1_unknown",
    "v2",
    "v2_local",
]

Version = Literal["v1", "v2"]
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
SockAddr = Sequence[object]  # (host, port[, flowinfo, scope_id]); host: str or an ipaddress object

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
V1_MAX_LENGTH = 107  # the spec's worst case, CRLF included

_V2_LOCAL = 0x20  # version 2, command LOCAL
_V2_PROXY = 0x21  # version 2, command PROXY
_AF_UNSPEC = 0x00
_TCP4 = 0x11  # AF_INET, STREAM
_TCP6 = 0x21  # AF_INET6, STREAM


class ProxyProtocolError(ValueError):
    """Bad local input for a PROXY header (never raised for anything a peer sent)."""


def _ip(host: object) -> IP:
    if isinstance(host, ipaddress.IPv6Address):
        ip: IP = ipaddress.IPv6Address(host.packed)  # drops a scope id
    elif isinstance(host, ipaddress.IPv4Address):
        ip = host
    elif isinstance(host, str):
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise ProxyProtocolError(f"not an IP address: {host!r}") from None
    else:
        raise ProxyProtocolError(f"not an IP address: {host!r}")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _endpoint(addr: SockAddr, what: str) -> tuple[IP, int]:
    if isinstance(addr, (str, bytes)) or len(addr) < 2:
        raise ProxyProtocolError(f"{what}: expected (host, port), got {addr!r}")
    host, port = addr[0], addr[1]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ProxyProtocolError(f"{what}: port must be an integer 0..65535, got {port!r}")
    return _ip(host), port


def _pair(src: SockAddr, dst: SockAddr) -> tuple[tuple[IP, int], tuple[IP, int]]:
    s, d = _endpoint(src, "source"), _endpoint(dst, "destination")
    if s[0].version != d[0].version:
        raise ProxyProtocolError(f"source {s[0]} and destination {d[0]} are of different address families")
    return s, d


def v1(src: SockAddr, dst: SockAddr) -> bytes:
    """The v1 line ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` for a TCP connection."""
    (sip, sport), (dip, dport) = _pair(src, dst)
    proto = "TCP4" if sip.version == 4 else "TCP6"
    # str() of an IPv4Address is dotted decimal without leading zeroes; of an IPv6Address the compressed
    # lower-case form with one "::" for the longest zero run (RFC 5952), both canonical for the spec
    return f"PROXY {proto} {sip} {dip} {sport} {dport}\r\n".encode("ascii")


def v1_unknown() -> bytes:
    """``PROXY UNKNOWN\\r\\n`` (short form): receivers use the real endpoints. RabbitMQ's connection process
    crashes on it (see the module docstring): for other servers only."""
    return b"PROXY UNKNOWN\r\n"


def v2(src: SockAddr, dst: SockAddr) -> bytes:
    """The v2 binary header, command PROXY, TCP over IPv4 (28 bytes) or IPv6 (52 bytes)."""
    (sip, sport), (dip, dport) = _pair(src, dst)
    fam = _TCP4 if sip.version == 4 else _TCP6
    block = sip.packed + dip.packed + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, fam, len(block)) + block


def v2_local() -> bytes:
    """The 16-byte v2 LOCAL header (family UNSPEC, no address). Not for checks toward RabbitMQ < 3.11.19 /
    3.12.1: see the module docstring."""
    return V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, _AF_UNSPEC, 0)


def header(version: Version, src: SockAddr, dst: SockAddr) -> bytes:
    """The PROXY-command header of ``version`` for a connection from ``src`` to ``dst``."""
    if version == "v1":
        return v1(src, dst)
    if version == "v2":
        return v2(src, dst)
    raise ProxyProtocolError(f"unknown PROXY protocol version {version!r} (expected 'v1' or 'v2')")


def for_check(version: Version, sockname: SockAddr, peername: SockAddr) -> bytes:
    """The header a health check sends on its own socket: a PROXY command whose source is the check socket's
    local address (``getsockname()``) and whose destination is the server (``getpeername()``). Never LOCAL,
    never UNKNOWN, so RabbitMQ 3.10 accepts it (module docstring)."""
    return header(version, sockname, peername)
