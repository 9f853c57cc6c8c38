"""Helpers shared by the tcplb test modules that run the real daemon (not a test module itself).

``free_port`` comes from tests/helpers.py (re-exported here for the tcplb modules)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from helpers import free_port as free_port  # re-exported
from helpers import wait_for as wait_for  # re-exported

from netns import wait_until
from tcplb import config
from tcplb.config import Config
from tcplb.lb import LoadBalancer
from tcplb.procstart import new_loop

if TYPE_CHECKING:
    from netns.rabbitmq import RabbitNode

PY = sys.executable


STATS_AUTH = "admin:s3cret"


def stats_toml(port: int, *, auth: Iterable[str] = (STATS_AUTH,), admin: bool = True, extra: str = "") -> str:
    """The ``[stats]`` block the daemon tests use: loopback ``port``, basic ``auth``, admin actions on."""
    users = ", ".join(f'"{a}"' for a in auth)
    text = f'\n[stats]\nbind = "127.0.0.1:{port}"\nauth = [{users}]\nadmin = {"true" if admin else "false"}\n'
    return text + (extra.strip() + "\n" if extra.strip() else "")


def lb_toml(
    port: int,
    servers: Iterable[tuple[str, int] | tuple[str, int, int]],
    *,
    balance: str = "roundrobin",
    check: str | None = "tcp",
    inter: str = "1s",
    hard_stop: str | None = "10s",
    workers: int | None = None,
    timeouts: str = 'timeout_client = "30s"\ntimeout_server = "30s"',
    retries: int | None = 3,
    stats: int | None = None,
    stats_auth: Iterable[str] = (STATS_AUTH,),
    stats_extra: str = "",
    admin: bool = True,
) -> str:
    """One loopback listener ``t`` on ``port`` in front of ``servers`` (name, port[, weight]) on 127.0.0.1.

    ``check``: a check type (rise 1, fall 1 every ``inter``) or None for ``check = false``; ``stats``: the
    port of a ``[stats]`` block (:func:`stats_toml`), none when None. ``inter`` is 1 s by default (was
    200 ms): a check's connect is bounded by inter, and with fall 1 a stall of the daemon past it (a busy
    machine, a reload) took a healthy server out."""
    rows = []
    for srv in servers:
        weight = f", weight = {srv[2]}" if len(srv) > 2 else ""  # type: ignore[misc]
        rows.append(f'  {{ name = "{srv[0]}", address = "127.0.0.1:{srv[1]}"{weight} }}')
    glob = "".join(
        [
            f'hard_stop_after = "{hard_stop}"\n' if hard_stop else "",
            f"workers = {workers}\n" if workers else "",
        ]
    )
    check_line = f'{{ type = "{check}", inter = "{inter}", rise = 1, fall = 1 }}' if check else "false"
    retry = f"retries = {retries}\nredispatch = true\n" if retries is not None else ""
    text = (
        (f"[global]\n{glob}\n" if glob else "")
        + f'[defaults]\ntimeout_connect = "1s"\n{timeouts}\n{retry}\n'
        + f'[listen.t]\nbind = ["127.0.0.1:{port}"]\nbalance = "{balance}"\ncheck = {check_line}\n'
        + "server = [\n"
        + ",\n".join(rows)
        + "\n]\n"
    )
    if stats:
        text += stats_toml(stats, auth=stats_auth, admin=admin, extra=stats_extra)
    return text


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


class AsyncBackend:
    """A loopback TCP server on the running loop, with a chosen behaviour (``mode``):

    ``echo`` (default; after ``banner`` if any), ``silent`` (``banner``, then reads to EOF, answers
    nothing), ``reset`` (SO_LINGER 0 and abort at once). ``received`` has every chunk read, ``firsts`` the
    first chunk of each connection that sent any. ``stop()`` aborts the connections (``graceful``: closes
    them and waits)."""

    def __init__(self, mode: str = "echo", banner: bytes = b"", *, graceful: bool = False) -> None:
        self.mode = mode
        self.banner = banner
        self.graceful = graceful
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.accepted = 0
        self.received: list[bytes] = []
        self.firsts: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> AsyncBackend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(w)
        try:
            if self.mode == "reset":
                w.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                w.transport.abort()
                return
            if self.banner:
                w.write(self.banner)
            if self.mode == "silent":
                data = await r.read(-1)
                self.received.append(data)
                if self.banner == b"":
                    w.close()
                return
            first = True
            while data := await r.read(65536):
                if first:
                    self.firsts.append(data)
                    first = False
                self.received.append(data)
                w.write(data)
                await w.drain()
            w.close()
        except OSError:
            pass
        finally:
            if self.graceful:
                w.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in self.writers:
                if self.graceful:
                    w.close()
                else:
                    w.transport.abort()
            if self.graceful:
                await self.server.wait_closed()
            self.server = None


class FakeServer:
    """Base of the tests' fake servers: a loopback asyncio server on ``port`` (default: a free one; ``port``
    once :meth:`start`-ed); a subclass answers each connection in :meth:`handle`. ``close()`` stops
    listening."""

    port = 0
    server: asyncio.AbstractServer | None = None

    async def start(self, port: int = 0) -> Self:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def serve_echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """An ``asyncio.start_server`` handler that echoes until EOF, then closes."""
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except OSError:
        pass
    finally:
        w.close()


def listen_t(lport: int, body: str, *, timeout: str = "30s", defaults: str = "") -> Config:
    """The configuration of one listener ``t`` on 127.0.0.1:``lport`` (its other keys: the TOML ``body``),
    after a ``[defaults]`` of timeout_connect 1 s, timeout_client = timeout_server = ``timeout`` and the
    lines ``defaults``."""
    return config.loads(
        f'[defaults]\ntimeout_connect = "1s"\ntimeout_client = "{timeout}"\ntimeout_server = "{timeout}"\n'
        f'{defaults.strip()}\n[listen.t]\nbind = ["127.0.0.1:{lport}"]\n{body.strip()}\n'
    )


def start_lb(cfg: Config) -> tuple[LoadBalancer, list[str]]:
    """A started in-process :class:`tcplb.lb.LoadBalancer` for ``cfg`` and the list its events go to."""
    lb = LoadBalancer(cfg)
    events: list[str] = []
    lb.on_event = events.append
    lb.start()
    return lb, events


def stop_lb(lb: LoadBalancer) -> None:
    """Stop ``lb``'s listeners and checks (what every in-process test does at its end)."""
    lb.stop_accepting()
    lb.stop_checks()


class Blackhole:
    """A listening socket whose accept queue is full: connects to it hang (SYNs dropped)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", self.port))
            self.fillers.append(c)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


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

    def wait_log(self, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in self.output() or self.p.poll() is not None, timeout, what=text)
        assert text in self.output(), self.output()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)
        self.fh.close()


def roundtrip(port: int, msg: bytes = b"ping") -> bool:
    # 30 s: only a bound on a stuck exchange (a busy machine's stall is no failed connection)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
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


# --- the RabbitMQ labs (test_rabbitmq_check_lab.py, test_rebalance_lab.py) ---------------------------------

LAB_STATS_FETCH = (
    "import asyncio, sys; from tcplb import mgmt; "
    "r = asyncio.run(mgmt.fetch('127.0.0.1', 8404, '/stats;json', user='admin', password='s3cret', "
    "timeout=5)); "
    "sys.stdout.write(r.body.decode() if isinstance(r, mgmt.HttpAnswer) else 'FAILED ' + r.reason)"
)
"""``python -c`` on a lab's LB host: its tcplb's ``/stats;json`` at 127.0.0.1:8404 (``admin:s3cret``), or
``FAILED <reason>``."""

LAB_PROBE = 'user = "probe", password = "probe-pw"'
"""The rabbitmq check's probe keys for the user :func:`lab_users` adds."""


def lab_users(node: RabbitNode, *, mgmt: tuple[str, str, str] | None = None, app: bool = False) -> None:
    """On ``node``: the check's ``probe`` user (no permissions), ``mgmt`` = (user, password, tag) for the
    management API, and with ``app`` an ``app`` user (``app-pw``) with all permissions on ``/``."""
    node.ctl("add_user", "probe", "probe-pw")
    node.ctl("set_permissions", "-p", "/", "probe", "^$", "^$", "^$")
    if mgmt is not None:
        user, password, tag = mgmt
        node.ctl("add_user", user, password)
        node.ctl("set_user_tags", user, tag)
    if app:
        node.ctl("add_user", "app", "app-pw")
        node.ctl("set_permissions", "-p", "/", "app", ".*", ".*", ".*")
