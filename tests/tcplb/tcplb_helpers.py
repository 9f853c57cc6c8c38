"""Helpers shared by the tcplb test modules that run the real daemon (not a test module itself)."""

from __future__ import annotations

import contextlib
import socket
import threading


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    """A threaded TCP server on a fixed loopback port: greets with ``name\\n``, then echoes.

    ``served`` counts the connections that sent data (health checks only connect). ``stop()`` closes the
    listener and every connection; ``start()`` listens again on the same port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.served = 0
        self.conns: list[socket.socket] = []
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.start()

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        self.sock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        counted = False
        try:
            c.sendall(self.name.encode() + b"\n")
            while data := c.recv(65536):
                if not counted:
                    counted = True
                    with self.lock:
                        self.served += 1
                c.sendall(data)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
