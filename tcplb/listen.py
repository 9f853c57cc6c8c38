"""Listening sockets and accepting: the part of a :class:`~tcplb.frontend.Frontend` that owns its binds.

uvloop accepts in C through ``create_server`` on a dup of each listening socket (pausing closes the dup, never
the socket); stock asyncio gets our own accept loop (``add_reader``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
from typing import TYPE_CHECKING

from . import config as cfgmod

if TYPE_CHECKING:
    from .config import Config, Listener
    from .lb import LoadBalancer

log = logging.getLogger("tcplb")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


class Listening:
    """Mixin of :class:`~tcplb.frontend.Frontend`: its listening sockets and how they are served."""

    lb: LoadBalancer
    cfg: Listener
    name: str
    stopped: bool
    sockets: dict[tuple[str, int], socket.socket]
    aservers: dict[tuple[str, int], asyncio.Server]
    starting: set[tuple[str, int]]
    want_accept: bool
    reading: set[int]
    cur: int

    @property
    def maxconn(self) -> int:
        raise NotImplementedError

    def _factory(self, peer: tuple[str, int] | None = None) -> asyncio.BaseProtocol:
        raise NotImplementedError

    def open_sockets(self, old: dict[tuple[str, int], socket.socket] | None = None) -> None:
        """Open (or take over from ``old``) one listening socket per bind address."""
        old = old or {}
        backlog = self.cfg.backlog or self.maxconn
        for addr in self.cfg.bind:
            if addr in old:
                self.sockets[addr] = old.pop(addr)
                continue
            self.sockets[addr] = make_listen_socket(addr, backlog, reuseport=self.lb.nprocs > 1)

    def start_accepting(self) -> None:
        """Serve every listening socket (through a dup of it: pausing closes the dup, never the socket)."""
        self.want_accept = True
        if self.stopped:
            return
        if not self.lb.native_accept:
            # stock asyncio: our own accept loop (closing an asyncio Server while it has accepted connections
            # in flight drops them with a reset, so asyncio's servers cannot be paused safely)
            loop = self.lb.loop
            for sock in self.sockets.values():
                fd = sock.fileno()
                if fd not in self.reading:
                    loop.add_reader(fd, self._accept, sock)
                    self.reading.add(fd)
            return
        for addr in self.sockets:
            if addr not in self.aservers and addr not in self.starting:
                self.starting.add(addr)
                t = self.lb.loop.create_task(self._serve(addr))
                self.lb.bg.add(t)
                t.add_done_callback(self.lb.bg.discard)

    async def _serve(self, addr: tuple[str, int]) -> None:
        try:
            sock = self.sockets.get(addr)
            if sock is None or not self.want_accept or self.stopped:
                return
            dup = sock.dup()
            try:
                srv = await self.lb.loop.create_server(
                    self._factory, sock=dup, backlog=self.cfg.backlog or self.maxconn
                )
            except BaseException:
                dup.close()
                raise
            if not self.want_accept or self.stopped or self.sockets.get(addr) is not sock:
                srv.close()
                return
            self.aservers[addr] = srv
        finally:
            self.starting.discard(addr)

    def pause_accepting(self) -> None:
        """Stop accepting: new connections wait in the kernel's backlog (closes only our dup's)."""
        self.want_accept = False
        for srv in self.aservers.values():
            srv.close()
        self.aservers.clear()
        loop = self.lb.loop
        for fd in self.reading:
            loop.remove_reader(fd)
        self.reading.clear()

    @property
    def accepting(self) -> bool:
        return bool(self.aservers or self.reading)

    def _accept(self, lsock: socket.socket) -> None:
        """Accept loop for stock asyncio (uvloop accepts in C through create_server)."""
        lb = self.lb
        for _ in range(64):
            if lb.actconn >= lb.maxconn or self.cur >= self.maxconn:
                lb.pause_full()
                return
            try:
                csock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning(
                        "listen %s: accept failed (%s); pausing accepts for 100 ms", self.name, e.strerror
                    )
                    self.pause_accepting()
                    lb.loop.call_later(0.1, self.start_accepting)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPERM, errno.EPROTO):
                    continue
                raise
            csock.setblocking(False)
            proto = self._factory((addr[0], addr[1]))  # the address even if the client reset meanwhile
            t = lb.loop.create_task(self._wrap(csock, proto))
            lb.bg.add(t)
            t.add_done_callback(lb.bg.discard)

    async def _wrap(self, csock: socket.socket, proto: asyncio.BaseProtocol) -> None:
        try:
            await self.lb.loop.connect_accepted_socket(lambda: proto, csock)
        except (OSError, RuntimeError):
            csock.close()

    def close_sockets(self) -> None:
        self.pause_accepting()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


def make_listen_socket(addr: tuple[str, int], backlog: int, reuseport: bool = False) -> socket.socket:
    host, port = addr
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:  # global.workers > 1: every process has its own socket, the kernel spreads connections
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):
            # bind to an address that is not (yet) local, e.g. a VRRP VIP on the backup node
            sock.setsockopt(
                socket.IPPROTO_IP if fam == socket.AF_INET else socket.IPPROTO_IPV6, IP_FREEBIND, 1
            )
        sock.bind((host, port))
        sock.listen(max(1, backlog))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def derived_maxconn(cfg: Config) -> int:
    """global.maxconn, or what RLIMIT_NOFILE allows: 2 descriptors per connection, 6 with splice (two
    kernel pipes more)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    per_conn = 6 if any(li.splice for li in cfg.listeners) else 2
    return cfgmod.effective_maxconn(cfg.global_.maxconn, nofile, fds_per_conn=per_conn)
