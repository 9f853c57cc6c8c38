"""PROXY protocol toward the servers (``send_proxy = "v1" | "v2"``): the I/O glue around
:mod:`tcplb.proxyproto`'s encoders.

* Live connections: right after the server connection is established and before any byte of the client
  (the early data the client sent while tcplb was connecting comes after it), one ``write`` of the PROXY
  command with the client's address as source and the address the client dialled (the listener's local
  address, e.g. the VIP) as destination. RabbitMQ with ``proxy_protocol = true`` then shows the client's
  own address as ``peer_host`` in ``rabbitmqctl list_connections``, its logs and its management UI.
* Checks: HAProxy's rule, the header goes with a check when the server has ``send_proxy`` and the check has
  no ``port`` / ``addr`` of its own (a check on another port reaches a listener that does not expect it).
  A check sends :func:`tcplb.proxyproto.for_check` (a PROXY command describing the check socket's own two
  endpoints), **never the v2 LOCAL command**: RabbitMQ before 3.11.19 / 3.12.1 (every 3.10.x) crashes the
  connection process with an error-level report on every LOCAL header (rabbitmq/rabbitmq-server#8654).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from . import proxyproto
from .config import CheckConfig
from .proxyproto import ProxyProtocolError, Version

log = logging.getLogger("tcplb.proxy")


def live_header(version: str, client: asyncio.BaseTransport | None) -> bytes | None:
    """The header for a relayed connection from the client socket's two ends, or None (logged) if they are
    not TCP addresses (never for a TCP listener)."""
    if client is None:
        return None
    peer = client.get_extra_info("peername")
    local = client.get_extra_info("sockname")
    try:
        return proxyproto.header(cast(Version, version), peer, local)
    except (ProxyProtocolError, TypeError, ValueError) as e:
        log.warning("no PROXY header for client %r -> %r: %s", peer, local, e)
        return None


def send_live(server: asyncio.BaseTransport, version: str, client: asyncio.BaseTransport | None) -> None:
    """Write the header to the just-connected server transport (one write, before the client's bytes)."""
    hdr = live_header(version, client)
    if hdr is not None:
        cast(asyncio.WriteTransport, server).write(hdr)


def check_header(send_proxy: str, check: CheckConfig, sock: socket.socket) -> bytes:
    """What a check writes first on ``sock``: :func:`proxyproto.for_check` when the server sends PROXY and
    the check goes to the traffic port (no ``port`` / ``addr`` of its own), else nothing."""
    if send_proxy == "none" or check.port is not None or check.addr is not None:
        return b""
    try:
        return proxyproto.for_check(cast(Version, send_proxy), sock.getsockname(), sock.getpeername())
    except (ProxyProtocolError, ValueError) as e:  # never for a TCP socket; a check must not raise
        log.warning("no PROXY header for a check: %s", e)
        return b""
