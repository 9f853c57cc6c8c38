"""Compatibility re-exports: tcplb's I/O core now lives in several modules.

:mod:`tcplb.lb` (the process: :class:`LoadBalancer`), :mod:`tcplb.frontend` (a listener and its sessions),
:mod:`tcplb.backend` (servers at run time), :mod:`tcplb.listen` (listening sockets, accepting),
:mod:`tcplb.reload`, :mod:`tcplb.admin` and :mod:`tcplb.snapshot` (stats).
"""

from __future__ import annotations

from .backend import RateCounter, ServerState
from .frontend import Frontend, Session, format_session
from .lb import LoadBalancer, iter_servers
from .listen import make_listen_socket

__all__ = [
    "Frontend",
    "LoadBalancer",
    "RateCounter",
    "ServerState",
    "Session",
    "format_session",
    "iter_servers",
    "make_listen_socket",
]
