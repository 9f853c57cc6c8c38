"""systemd's readiness protocol (``sd_notify(3)``) by hand: one datagram to the socket in ``$NOTIFY_SOCKET``.

The protocol: newline-separated ``KEY=VALUE`` lines in one ``AF_UNIX``/``SOCK_DGRAM`` datagram to the path
in ``$NOTIFY_SOCKET`` (a leading ``@`` names a socket in the abstract namespace). systemd identifies the
sender by the credentials the kernel attaches, so nothing else is needed. Without ``$NOTIFY_SOCKET`` every
call is a no-op returning False; no call ever raises into the daemon (a socket that is gone, a full queue:
False).

* :func:`sd_notify` is the libsystemd call: one message, socket opened and closed per call.
* :func:`from_environment` is what the daemons use: it takes ``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC`` /
  ``WATCHDOG_PID``) out of the environment, as ``sd_notify``'s ``unset_environment`` does, so that the scripts
  a daemon starts do not inherit them, and returns a :class:`Notifier` holding the address and one socket.

The daemons import this module only when ``$NOTIFY_SOCKET`` is set (vrrpd's idle RSS budget is tight).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

__all__ = ["Notifier", "address", "from_environment", "monotonic_usec", "sd_notify"]


def address(value: str | None) -> str | None:
    """The ``sendto()`` address for a ``$NOTIFY_SOCKET`` value: a path, or ``\\0name`` for ``@name``.
    None when unset, empty, or a form this implementation does not speak (``vsock:``)."""
    if not value:
        return None
    if value[0] == "@":
        return "\0" + value[1:] if len(value) > 1 else None
    if value[0] == "/":
        return value
    return None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds (what ``RELOADING=1`` carries as ``MONOTONIC_USEC``)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _send(sock: socket.socket, addr: str, state: str) -> bool:
    try:
        return sock.sendto(state.encode("utf-8", "replace"), addr) > 0
    except OSError:
        return False


def sd_notify(state: str, unset_environment: bool = False) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``. True if the datagram was sent."""
    try:
        addr = address(os.environ.get("NOTIFY_SOCKET"))
        if unset_environment:
            for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(k, None)
        if addr is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)
            return _send(s, addr, state)
    except Exception:
        return False


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


class Notifier:
    """The daemon side: one cached non-blocking socket to one address; every method returns True if sent."""

    def __init__(self, addr: str, watchdog_usec: int | None = None) -> None:
        self.addr = addr
        self.watchdog_usec = watchdog_usec  # systemd WatchdogSec= in microseconds, None: no watchdog
        self.last_status: str | None = None
        self.sent = 0
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None

    def notify(self, state: str) -> bool:
        try:
            if self._sock is None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                s.setblocking(False)
                self._sock = s
            if _send(self._sock, self.addr, state):
                self.sent += 1
                return True
        except Exception:
            pass
        self._close_socket()  # the next call opens a fresh socket
        return False

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (start-up done, or a reload done: also after a reload that failed)."""
        if status is None:
            return self.notify("READY=1")
        self.last_status = status = _one_line(status)
        return self.notify(f"READY=1\nSTATUS={status}")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (systemd >= 253 ``Type=notify-reload`` wants it; older
        versions ignore the extra field)."""
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}")

    def stopping(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify("STOPPING=1")
        self.last_status = status = _one_line(status)
        return self.notify(f"STOPPING=1\nSTATUS={status}")

    def status(self, text: str, force: bool = False) -> bool:
        """``STATUS=text`` (shown by ``systemctl status``); not re-sent when unchanged unless ``force``."""
        text = _one_line(text)
        if text == self.last_status and not force:
            return True
        self.last_status = text
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def periodic(
        self,
        loop: asyncio.AbstractEventLoop,
        tick: Callable[[], None] | None = None,
        interval: float = 5.0,
    ) -> Callable[[], None]:
        """Every ``interval`` seconds (at most half the watchdog timeout) send ``WATCHDOG=1`` (when systemd
        asked for it) and call ``tick`` (e.g. to refresh ``STATUS``). Runs on ``loop``, so a stuck event loop
        stops the pings: that is what the watchdog detects. One at a time: a second call replaces the first.
        Returns a function that cancels it (so does :meth:`close`)."""
        self.cancel_periodic()
        every = interval
        if self.watchdog_usec:
            every = min(every, self.watchdog_usec / 2e6)

        def run() -> None:
            if self.watchdog_usec:
                self.watchdog()
            if tick is not None:
                with contextlib.suppress(Exception):
                    tick()
            self._timer = loop.call_later(every, run)

        self._timer = loop.call_later(0 if self.watchdog_usec else every, run)
        return self.cancel_periodic

    def cancel_periodic(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Cancel :meth:`periodic` and close the socket (a later message opens a new one)."""
        self.cancel_periodic()
        self._close_socket()

    def _close_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def from_environment(unset_environment: bool = True) -> Notifier | None:
    """A :class:`Notifier` for ``$NOTIFY_SOCKET`` (None when unset or unusable). ``WATCHDOG_USEC`` is
    honoured when ``WATCHDOG_PID`` is unset or this process. With ``unset_environment`` (the default) the
    three variables are removed, so that child processes (notify and track scripts) do not see them."""
    env = os.environ
    addr = address(env.get("NOTIFY_SOCKET"))
    wd: int | None = None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = env.get("WATCHDOG_PID")
        if usec > 0 and (pid is None or int(pid) == os.getpid()):
            wd = usec
    except ValueError:
        wd = None
    if unset_environment:
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(k, None)
    if addr is None:
        return None
    return Notifier(addr, wd)
