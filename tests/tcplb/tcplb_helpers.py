"""Helpers shared by the tcplb test modules that run the real daemon (not a test module itself)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from netns import wait_until
from tcplb.daemon import new_loop

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    """A threaded TCP server on a fixed loopback port: greets with ``name\\n`` (unless ``greet`` is False),
    then echoes.

    ``served`` counts the connections that sent data (health checks only connect). ``stop()`` closes the
    listener and every connection; ``start()`` listens again on the same port."""

    def __init__(self, name: str, greet: bool = True) -> None:
        self.name = name
        self.greet = greet
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
            if self.greet:
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


class EchoServer:
    """A threaded blocking echo server (independent of any event loop)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c: socket.socket) -> None:
        try:
            while data := c.recv(65536):
                c.sendall(data)
        except OSError:
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


class Tcplb:
    def __init__(self, cfg: Path, loop: str, log: Path) -> None:
        self.log = log
        self.fh = log.open("w")
        self.p = subprocess.Popen(
            [PY, "-m", "tcplb", "-c", str(cfg), "--loop", loop],
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[2]),
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_log(self, text: str, timeout: float = 10) -> None:
        wait_until(lambda: text in self.output() or self.p.poll() is not None, timeout, what=text)
        assert text in self.output(), self.output()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)
        self.fh.close()


def roundtrip(port: int, msg: bytes = b"ping") -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got == msg


def run(kind: str, fn: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    """Run the coroutine function ``fn`` on a new loop of ``kind`` (uvloop or asyncio), bounded in time."""

    async def main() -> Any:
        return await asyncio.wait_for(fn(), timeout)

    with asyncio.Runner(loop_factory=lambda: new_loop(kind)) as r:
        return r.run(main())


async def wait_for(pred: Callable[[], object], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``pred`` on the running loop until it is truthy (returned); AssertionError after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.01)


async def wait_stalled(count: Callable[[], int], step: float = 0.3, timeout: float = 30.0) -> int:
    """Sample ``count()`` every ``step`` s until two samples agree (the sender stopped moving); return it.

    AssertionError if it never stalls within ``timeout``."""
    last = -1
    for _ in range(max(2, int(timeout / step))):
        now = count()
        if now == last:
            return now
        last = now
        await asyncio.sleep(step)
    raise AssertionError(f"never stalled in {timeout:g} s: {count()}")
