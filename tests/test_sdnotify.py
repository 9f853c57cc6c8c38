"""rmqfd.sdnotify: the sd_notify(3) datagram protocol against real AF_UNIX sockets (path and abstract)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmqfd import sdnotify
from rmqfd.sdnotify import Notifier, from_environment, sd_notify

ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ENV_KEYS:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2.0)
    yield s, path
    s.close()


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[socket.socket, str]]:
    name = f"rmqfd-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2.0)
    yield s, "@" + name
    s.close()


def recv(s: socket.socket) -> str:
    return s.recv(4096).decode()


def test_unset_is_a_noop() -> None:
    assert sd_notify("READY=1") is False
    assert from_environment() is None


def test_unsupported_or_empty_address(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("", "@", "vsock:2:1234", "relative/path"):
        monkeypatch.setenv("NOTIFY_SOCKET", value)
        assert sd_notify("READY=1") is False
        assert from_environment(unset_environment=False) is None
    assert sdnotify.address("@x") == "\0x"
    assert sdnotify.address("/run/systemd/notify") == "/run/systemd/notify"


def test_path_socket(monkeypatch: pytest.MonkeyPatch, receiver: tuple[socket.socket, str]) -> None:
    s, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sd_notify("READY=1\nSTATUS=up") is True
    assert recv(s) == "READY=1\nSTATUS=up"
    assert os.environ["NOTIFY_SOCKET"] == path  # kept unless asked


def test_abstract_socket(
    monkeypatch: pytest.MonkeyPatch, abstract_receiver: tuple[socket.socket, str]
) -> None:
    s, name = abstract_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sd_notify("STOPPING=1") is True
    assert recv(s) == "STOPPING=1"
    n = from_environment()
    assert n is not None
    assert n.reloading() is True
    assert recv(s).startswith("RELOADING=1\nMONOTONIC_USEC=")


def test_unset_environment(monkeypatch: pytest.MonkeyPatch, receiver: tuple[socket.socket, str]) -> None:
    s, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert sd_notify("READY=1", unset_environment=True) is True
    assert recv(s) == "READY=1"
    assert not any(k in os.environ for k in ENV_KEYS)
    assert sd_notify("READY=1") is False  # as libsystemd: gone for this process and its children


def test_socket_gone_returns_false(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = str(tmp_path / "gone.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = from_environment()
    assert n is not None and n.ready() is True
    s.close()  # bound path still there, nobody listening: ECONNREFUSED
    assert sd_notify("READY=1") is False
    assert n.status("x") is False
    os.unlink(path)  # and now the path is gone too: ENOENT
    assert sd_notify("READY=1") is False
    assert n.stopping() is False
    assert sd_notify("READY=1") is False
    # a receiver coming back at the same path is reached again (the notifier reopens its socket)
    s2 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s2.bind(path)
    s2.settimeout(2.0)
    try:
        assert n.watchdog() is True
        assert recv(s2) == "WATCHDOG=1"
    finally:
        s2.close()


def test_never_blocks_on_a_full_queue(receiver: tuple[socket.socket, str]) -> None:
    _s, path = receiver  # never read
    n = Notifier(path)
    t0 = time.monotonic()
    results = [n.notify(f"STATUS={i}") for i in range(5000)]
    assert time.monotonic() - t0 < 5.0
    assert results[0] is True
    assert results.count(False) > 0  # EAGAIN once the receiver's queue is full: dropped, not blocking


def test_notifier_messages(monkeypatch: pytest.MonkeyPatch, receiver: tuple[socket.socket, str]) -> None:
    s, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = from_environment()
    assert n is not None
    assert "NOTIFY_SOCKET" not in os.environ  # taken out for the children by default
    assert n.watchdog_usec is None
    assert n.ready("VI_1 MASTER") is True
    assert recv(s) == "READY=1\nSTATUS=VI_1 MASTER"
    before = time.monotonic_ns() // 1000
    assert n.reloading() is True
    msg = recv(s)
    after = time.monotonic_ns() // 1000
    fields = dict(line.split("=", 1) for line in msg.split("\n"))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    assert n.status("two\nlines") is True
    assert recv(s) == "STATUS=two lines"
    assert n.status("two\nlines") is True  # unchanged: not re-sent
    assert n.status("two\nlines", force=True) is True
    assert recv(s) == "STATUS=two lines"
    assert n.stopping("bye") is True
    assert recv(s) == "STOPPING=1\nSTATUS=bye"
    assert n.sent == 5
    n.close()


def test_watchdog_environment(monkeypatch: pytest.MonkeyPatch, receiver: tuple[socket.socket, str]) -> None:
    _s, path = receiver
    for pid, expect in ((None, 2_000_000), (str(os.getpid()), 2_000_000), ("1", None), ("x", None)):
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        if pid is None:
            monkeypatch.delenv("WATCHDOG_PID", raising=False)
        else:
            monkeypatch.setenv("WATCHDOG_PID", pid)
        n = from_environment()
        assert n is not None and n.watchdog_usec == expect, pid
        assert not any(k in os.environ for k in ENV_KEYS)


def test_periodic_watchdog_and_tick(receiver: tuple[socket.socket, str]) -> None:
    s, path = receiver
    n = Notifier(path, watchdog_usec=100_000)  # 0.1 s: pings every 50 ms
    ticks: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cancel = n.periodic(loop, lambda: ticks.append(1), interval=60.0)
        while len(ticks) < 4:
            await asyncio.sleep(0.01)
        cancel()
        seen = len(ticks)
        await asyncio.sleep(0.2)
        assert len(ticks) == seen  # cancelled

    asyncio.run(asyncio.wait_for(main(), 5.0))
    msgs = []
    s.settimeout(0.5)
    while True:
        try:
            msgs.append(recv(s))
        except TimeoutError:
            break
    assert msgs and set(msgs) == {"WATCHDOG=1"}
    assert len(msgs) == len(ticks)


def test_periodic_without_watchdog_only_ticks(receiver: tuple[socket.socket, str]) -> None:
    s, path = receiver
    n = Notifier(path)
    ticks: list[int] = []

    async def main() -> None:
        cancel = n.periodic(asyncio.get_running_loop(), lambda: ticks.append(1), interval=0.02)
        while len(ticks) < 3:
            await asyncio.sleep(0.01)
        cancel()

    asyncio.run(asyncio.wait_for(main(), 5.0))
    s.settimeout(0.1)
    with pytest.raises(TimeoutError):
        s.recv(4096)
