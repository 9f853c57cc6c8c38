"""The data path: a pair of asyncio Protocols that pump bytes between a client and a server socket.

Design (see README.md, "Data path design"):

* ``asyncio.BufferedProtocol`` on both loops: a read goes into one buffer of ``global.bufsize`` bytes shared
  by the process and is copied out at once into a new ``bytes`` object, which is what ``transport.write``
  gets (it either completes at once or keeps a reference to that copy): exactly one copy per chunk, as with
  the loop's own ``bytes``, and nothing we hand to the loop can be overwritten under it. ``bytes`` rather
  than a ``bytearray`` slice: uvloop wraps any other type as ``memoryview(data).cast('b')`` before writing
  (two more objects per write; bench/tcplb_pathcost.py). (Handing the loop a
  ``memoryview`` of a reused buffer is *unsafe* on uvloop: a partially written view stays queued inside
  uvloop and the next read overwrites it; see tests/tcplb/uvloop_repro/.)
  The per-read cost is kept down (it is most of the Python cost of a small request): the shared buffer is
  an anonymous ``mmap``, whose slice *is* the ``bytes`` copy (no memoryview, no ``tobytes`` call), and
  ``get_buffer`` is a C callable (no Python frame for the loop's call before every read).
* Backpressure both ways: ``pause_writing`` on one side (more than ``bufsize`` queued toward it) pauses
  reading on the other, ``resume_writing`` resumes it. With reads of at most ``bufsize``, user space holds
  at most 2 x ``bufsize`` per direction (HAProxy's ``tune.bufsize`` holds 1 per direction).
* Half-close: ``eof_received`` forwards ``write_eof()`` to the peer and returns True; once BOTH directions
  have ended the pair is closed (flushing what is still buffered).
* Resets: when one side dies with an error the other is aborted with SO_LINGER 0, so the peer sees an RST too.
* Inactivity timeouts: no timer per pair. Pairs with the same timeout value share one :class:`_IdleWheel`
  (per loop) whose single timer sweeps them every ``timeout / 16`` and compares byte counters; nothing
  time-related happens per chunk, and setting up or closing a pair costs a dict insert/delete.
* A closed pair breaks its own reference cycle (pipe <-> sides), so it is freed by reference counting at
  once instead of waiting for the cyclic garbage collector (measured: ~5 us per connection under churn).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import mmap
import socket
import struct
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .splice import Splicer

# Termination causes (first letter of HAProxy's termination state)
CLIENT_ABORT = "C"
SERVER_ABORT = "S"
PROXY = "P"
RESOURCE = "R"
INTERNAL = "I"
DOWN = "D"
KILLED = "K"
CLIENT_TIMEOUT = "c"
SERVER_TIMEOUT = "s"
NORMAL = "-"

_LINGER0 = struct.pack("ii", 1, 0)
# ``global.bufsize`` (HAProxy's tune.bufsize): the most one read takes, and the most bytes queued toward a
# socket before the other side stops reading (its write buffer's high-water mark). So user space holds at
# most 2 x bufsize per direction (the queue at the mark plus the read that crossed it): 128 KiB per
# connection with the default, both directions blocked.
BUFSIZE = 32 * 1024
HIGH_WATER = BUFSIZE  # the defaults, for a Pipe built without a bufsize
EARLY_LIMIT = BUFSIZE  # client bytes buffered while the server connection is being set up

# one read buffer per size, shared by every pipe of the process: a read is copied out of it at once
# (get_buffer and buffer_updated run back to back, on the loop's thread). An anonymous mmap: writable for
# the loop's recv, and ``buf[:n]`` is a new ``bytes`` (one object, one copy; a memoryview's
# ``[:n].tobytes()`` makes a view and a method call more). With it, the sides' ``get_buffer``: a C
# callable that returns the buffer whatever the size hint, ``partial(next, repeat(buf))``. The loop calls
# get_buffer before every read; a Python method costs a frame each time.
_READ_BUFS: dict[int, tuple[mmap.mmap, Callable[[int], mmap.mmap]]] = {}  # size -> (buffer, its getter)


def _read_buf(size: int) -> tuple[mmap.mmap, Callable[[int], mmap.mmap]]:
    b = _READ_BUFS.get(size)
    if b is None:
        # private: a forked process gets its own copy on its first read (the default, MAP_SHARED, would
        # have two processes read into one buffer)
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        # next(repeat(buf), sizehint): buf, the size hint being next()'s unused default
        getter: Callable[[int], mmap.mmap] = functools.partial(next, itertools.repeat(buf))
        b = _READ_BUFS[size] = (buf, getter)
    return b


def set_linger0(transport: asyncio.BaseTransport) -> None:
    """Make the next close of ``transport`` send an RST instead of a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)


def set_keepalive(
    transport: asyncio.BaseTransport, idle: int | None, intvl: int | None, cnt: int | None
) -> None:
    """SO_KEEPALIVE plus the per-socket TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT (None: system default)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if idle:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, int(idle))
        if intvl:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, int(intvl))
        if cnt:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, int(cnt))
    except OSError:
        pass


class Side(asyncio.BufferedProtocol):
    """One socket of a relayed pair. All decisions are taken by the owning :class:`Pipe`.

    Reads go into the process's shared buffer of ``bufsize`` bytes and are copied out at once (one copy per
    chunk, as the loop's own ``bytes`` would be; the copy is what is queued, never the shared buffer)."""

    __slots__ = ("eof", "get_buffer", "lost", "nbytes", "peer_write", "pipe", "rbuf", "transport")

    # the protocol's get_buffer(sizehint), an attribute (a C callable, see _READ_BUFS): always ``rbuf``
    get_buffer: Callable[[int], mmap.mmap]  # type: ignore[assignment]

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.rbuf = pipe.rbuf  # the process's shared read buffer (bufsize)
        self.get_buffer = pipe.get_rbuf  # a C callable returning it (see _READ_BUFS)
        self.transport: asyncio.Transport | None = None
        self.peer_write: Callable[[bytes | bytearray], None] | None = None
        self.nbytes = 0  # bytes read from this socket
        self.eof = False  # this socket sent us a FIN
        self.lost = False

    def factory(self) -> Side:
        """This side, as the protocol factory of ``create_connection`` (no closure per attempt)."""
        return self

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        hw = self.pipe.bufsize
        transport.set_write_buffer_limits(hw, hw // 4)  # type: ignore[attr-defined]
        self.pipe._made(self)

    def buffer_updated(self, nbytes: int) -> None:
        self.nbytes += nbytes
        w = self.peer_write
        if w is not None:
            w(self.rbuf[:nbytes])  # the copy (a new bytes: rbuf is an mmap)
        else:
            self.pipe._early(self, self.rbuf[:nbytes])

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        w = self.peer_write
        if w is not None:
            w(data)
        else:
            self.pipe._early(self, data)

    def eof_received(self) -> bool:
        self.eof = True
        self.pipe._eof(self)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pipe._lost(self, exc)

    def pause_writing(self) -> None:
        self.pipe._pause_writing(self)

    def resume_writing(self) -> None:
        self.pipe._resume_writing(self)


class Pipe:
    """A client/server socket pair and its lifecycle.

    The client side is attached first (``client`` protocol); the server side later with :meth:`server_side`
    once a server connection is wanted. ``on_close(pipe)`` is called exactly once, when both sockets are gone.
    """

    __slots__ = (
        "_client_paused_reading",
        "_last",
        "_reads_paused",
        "_seen",
        "_wheel",
        "bufsize",
        "client",
        "client_ready",
        "closed",
        "closing",
        "early",
        "early_size",
        "fin_flag",
        "fin_timeout",
        "get_rbuf",
        "greet",
        "loop",
        "on_client_lost",
        "on_client_made",
        "on_close",
        "phase",
        "rbuf",
        "server",
        "server_early",
        "splicer",
        "term",
        "timeout",
        "timeout_flag",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_close: Callable[[Pipe], None] | None = None,
        bufsize: int = BUFSIZE,
    ) -> None:
        self.loop = loop
        self.bufsize = bufsize
        self.rbuf, self.get_rbuf = _read_buf(bufsize)
        self.on_close = on_close
        self.client = Side(self)
        self.server: Side | None = None
        self.early: list[bytes | bytearray] = []
        self.early_size = 0
        self.server_early: list[bytes | bytearray] = []
        self.closing = False
        self.closed = False
        self.term = ["-", "-"]  # termination cause, phase
        self.phase = "Q"  # Q(ueue: choosing or waiting for a server), C(onnect), D(ata)
        self.client_ready: asyncio.Future[None] | None = None  # created on demand (wait_client)
        self.on_client_lost: Callable[[], None] | None = None  # called once when the client socket is gone
        self.on_client_made: Callable[[], None] | None = None  # called from the client's connection_made
        # protocol-aware connect (amqp listeners): told of what a not-yet-attached side does before
        # attach_server: (side, data) for bytes, (side, None) for its EOF or loss
        self.greet: Callable[[Side, bytes | bytearray | None], None] | None = None
        # inactivity timer (data phase)
        self.timeout: float | None = None  # idle timeout while both directions are open
        self.timeout_flag = CLIENT_TIMEOUT
        self.fin_timeout: float | None = None  # idle timeout once one direction has ended
        self.fin_flag = CLIENT_TIMEOUT
        self._wheel: _IdleWheel | None = None  # the idle sweeper this pipe is registered with
        self._seen = -1
        self._last = 0.0
        self._client_paused_reading = False  # reading paused because the early buffer is full
        self._reads_paused = [False, False]  # [client, server] paused because the peer cannot write
        self.splicer: Splicer | None = None  # the data phase moved to splice(2) (tcplb/splice.py)

    # -- bookkeeping ---------------------------------------------------------------------------------------
    @property
    def bytes_in(self) -> int:
        """Bytes received from the client."""
        return self.client.nbytes

    @property
    def bytes_out(self) -> int:
        """Bytes received from the server (sent to the client)."""
        return self.server.nbytes if self.server is not None else 0

    def set_term(self, cause: str, phase: str | None = None) -> None:
        """Record the termination state (the first one wins). Without ``phase``: the current one, where
        the data phase is ``L`` (last data) once either side has sent its FIN, else ``D``."""
        if self.term[0] == "-":
            if phase is None:
                phase = self.phase
                if phase == "D" and (self.client.eof or (self.server is not None and self.server.eof)):
                    phase = "L"
            self.term[0] = cause
            self.term[1] = phase

    @property
    def termination(self) -> str:
        return self.term[0] + (self.term[1] if self.term[0] != "-" else "-")

    # -- server side ---------------------------------------------------------------------------------------
    def new_server_side(self) -> Side:
        """A fresh protocol for a connection attempt (each retry gets its own)."""
        return Side(self)

    def attach_server(self, side: Side) -> None:
        """The connection ``side`` is established: start relaying."""
        assert side.transport is not None
        self.server = side
        self.phase = "D"
        c = self.client
        if c.transport is None or c.lost:
            # client went away while we were connecting
            side.transport.close()
            return
        ctr = c.transport
        str_ = side.transport
        side.peer_write = ctr.write
        if self.server_early:
            ctr.writelines(self.server_early)
            self.server_early = []
        if self.early:
            str_.writelines(self.early)
            self.early = []
            self.early_size = 0
        c.peer_write = str_.write
        if self._client_paused_reading:
            self._client_paused_reading = False
            if not c.eof:
                ctr.resume_reading()
        if c.eof:
            str_.write_eof()
        if side.eof:
            # the server closed its side before we were ready: forward it now
            if ctr.can_write_eof():
                ctr.write_eof()
            if c.eof:
                self.close()
                return
        self.timeout_changed()

    # -- callbacks from the sides --------------------------------------------------------------------------
    async def wait_client(self) -> None:
        """Until the client side's connection_made ran."""
        if self.client.transport is None:
            self.client_ready = self.loop.create_future()
            await self.client_ready

    def _made(self, side: Side) -> None:
        if side is self.client:
            f = self.client_ready
            if f is not None and not f.done():
                f.set_result(None)
            cb = self.on_client_made
            if cb is not None:
                self.on_client_made = None
                cb()

    def _client_gone(self) -> None:
        cb = self.on_client_lost
        if cb is not None:
            self.on_client_lost = None
            cb()

    def _early(self, side: Side, data: bytes | bytearray) -> None:
        if side is not self.client:
            # the server spoke before attach_server() ran (a banner): keep it for the client
            self.server_early.append(data)
            if self.greet is not None:
                self.greet(side, data)
            return
        # client data before the server is connected: keep it, up to a limit
        self.early.append(data)
        self.early_size += len(data)
        if self.greet is not None:
            self.greet(side, data)
        if self.early_size >= self.bufsize and not self._client_paused_reading:
            self._client_paused_reading = True
            t = self.client.transport
            if t is not None:
                t.pause_reading()

    def _eof(self, side: Side) -> None:
        if self.greet is not None and side is not self.client and side is not self.server:
            self.greet(side, None)
        other = self.server if side is self.client else self.client
        if other is None or other.transport is None or self.phase != "D":
            return  # forwarded when the server side is attached
        if other.eof:
            # both directions have ended: close() flushes what is still queued and then sends the FIN that
            # write_eof() would have sent (all data from ``other`` has been read: it sent its FIN), one
            # shutdown() call less per connection
            self.close()
            return
        if not other.lost:
            try:
                if other.transport.can_write_eof():
                    other.transport.write_eof()
            except (RuntimeError, OSError):
                pass
        if self.fin_timeout is not None and self.fin_timeout != self.timeout:
            self.timeout_changed()  # switch to the half-closed timeout

    def _lost(self, side: Side, exc: Exception | None) -> None:
        if side is self.client:
            if self.on_client_lost is not None:
                self._client_gone()
            if exc is not None or (
                not (side.eof and (self.server is None or self.server.eof)) and not self.closing
            ):
                self.set_term(CLIENT_ABORT)
            other = self.server
        else:
            if side is not self.server:
                if self.greet is not None:
                    self.greet(side, None)
                return  # a failed connection attempt; the connector handles it
            if exc is not None or (not self.closing and not (side.eof and self.client.eof)):
                self.set_term(SERVER_ABORT)
            other = self.client
        if other is None or other.lost or other.transport is None:
            self.finish()
            return
        if exc is not None:
            # reset (or other error): propagate as a reset
            set_linger0(other.transport)
            other.transport.abort()
        else:
            other.transport.close()

    def _pause_writing(self, side: Side) -> None:
        other = self.server if side is self.client else self.client
        if other is not None and other.transport is not None:
            self._reads_paused[other is self.server] = True
            with contextlib.suppress(RuntimeError):
                other.transport.pause_reading()

    def _resume_writing(self, side: Side) -> None:
        other = self.server if side is self.client else self.client
        if other is not None and other.transport is not None:
            self._reads_paused[other is self.server] = False
            if (
                not other.eof
                and not other.lost
                and not (other is self.client and self._client_paused_reading)
            ):
                with contextlib.suppress(RuntimeError):
                    other.transport.resume_reading()

    # -- closing -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close both sockets gracefully (pending data is flushed first). The inactivity timeout keeps
        running while data is still queued: a peer that never reads cannot keep the pair alive (it is then
        aborted, ``cL``/``sL``)."""
        if self.closing:
            return
        self.closing = True
        if self.splicer is not None:
            self._cancel_timer()
            self.splicer.close()
            return
        for s in (self.client, self.server):
            if s is not None and s.transport is not None and not s.lost:
                s.transport.close()
        if self._pending():
            self._watch_flush()
        else:
            self._cancel_timer()
        self._maybe_finish()

    def _pending(self) -> int:
        """Bytes still queued in user space toward either socket."""
        n = 0
        for s in (self.client, self.server):
            if s is not None and s.transport is not None and not s.lost:
                n += s.transport.get_write_buffer_size()
        return n

    def _progress(self) -> int:
        """What the idle wheel compares between sweeps: bytes read, and once closing, bytes flushed."""
        s = self.server
        n = self.client.nbytes + (s.nbytes if s is not None else 0)
        return n - self._pending() if self.closing else n

    def _watch_flush(self) -> None:
        t, _ = self._current_timeout()
        if t is None:
            self._cancel_timer()
            return
        self._seen = self._progress()
        self._last = self.loop.time()
        w = self._wheel
        if w is not None:
            if w.timeout == t:
                return
            w.discard(self)
        self._wheel = w = _idle_wheel(self.loop, t)
        w.add(self)

    def abort(self, cause: str, phase: str | None = None, reset: bool = True) -> None:
        """Tear both sockets down at once (RST when ``reset``), recording the termination state."""
        self.set_term(cause, phase)
        self.closing = True
        self._cancel_timer()
        if self.splicer is not None:
            self.splicer.close(reset_all=reset)
            return
        for s in (self.client, self.server):
            if s is not None and s.transport is not None and not s.lost:
                if reset:
                    set_linger0(s.transport)
                s.transport.abort()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        c, s = self.client, self.server
        if (c.lost or c.transport is None) and (s is None or s.lost or s.transport is None):
            self.finish()

    def finish(self) -> None:
        """Both sockets are gone: the pair ends (``on_close``, once). Called by the relay, or by the
        splicer that took the sockets over."""
        if self.closed:
            return
        c, s = self.client, self.server
        if not ((c.lost or c.transport is None) and (s is None or s.lost or s.transport is None)):
            return
        self.closed = True
        self.closing = True
        if self._wheel is not None:
            self._cancel_timer()
        if self.on_client_lost is not None:
            self._client_gone()
        cb = self.on_close
        self.on_close = None
        if cb is not None:
            cb(self)
        # both sockets are gone (connection_lost was their last callback): break the pipe <-> side cycle so
        # that the pair, its transports and buffers are freed by reference counting now. The pipe keeps its
        # sides (byte counts, termination state stay readable).
        if c.lost:
            c.pipe = _DETACHED
        if s is not None and s.lost:
            s.pipe = _DETACHED

    # -- inactivity timer ----------------------------------------------------------------------------------
    def _current_timeout(self) -> tuple[float | None, str]:
        s = self.server
        if (self.client.eof or (s is not None and s.eof)) and self.fin_timeout is not None:
            return self.fin_timeout, self.fin_flag
        return self.timeout, self.timeout_flag

    def timeout_changed(self) -> None:
        """(Re)start the inactivity timeout for the current state (both directions open, or half-closed).
        The relay calls it itself; the splicer when a side sends its FIN."""
        if self.closing:
            return
        c = self.client
        s = self.server
        # _current_timeout() and bytes_out, inlined (once or twice per connection)
        t = self.fin_timeout
        if t is None or not (c.eof or (s is not None and s.eof)):
            t = self.timeout
        w = self._wheel
        if t is None:
            if w is not None:
                self._wheel = None
                w.discard(self)
            return
        self._seen = c.nbytes + (s.nbytes if s is not None else 0)
        self._last = self.loop.time()
        if w is not None:
            if w.timeout == t:
                return
            w.discard(self)
        self._wheel = w = _idle_wheel(self.loop, t)
        w.add(self)

    def _idle_expired(self) -> None:
        """Called by the wheel: nothing moved for the timeout (``D``, or ``L`` once a side has sent its FIN).
        While closing, nothing could be flushed for the timeout: the peer does not read; reset it."""
        self._cancel_timer()
        if not self.closed:
            self.abort(self._current_timeout()[1], None, reset=self.closing)

    def _cancel_timer(self) -> None:
        w = self._wheel
        if w is not None:
            self._wheel = None
            w.discard(self)

    @property
    def reads_paused(self) -> bool:
        """Reading a side is paused because the other cannot write (bytes queued in user space)."""
        return self._reads_paused[0] or self._reads_paused[1]

    def hand_over(self) -> None:
        """The sockets were taken over (splice, which holds duplicates of them): detach both sides'
        callbacks, so that dropping their transports is not taken for the connection ending, and drop them."""
        for side in (self.client, self.server):
            if side is not None:
                side.pipe = _DETACHED
                if side.transport is not None:
                    side.transport.abort()

    def info(self) -> dict[str, Any]:
        return {"in": self.bytes_in, "out": self.bytes_out, "term": self.termination, "phase": self.phase}


class _DetachedPipe(Pipe):
    """What a side of a finished pipe points to instead of its pipe (to break the reference cycle).

    A side gets no callback after ``connection_lost``; should one come anyway, it is ignored."""

    __slots__ = ()

    def __init__(self) -> None:  # no loop, no state
        pass

    def _made(self, side: Side) -> None:
        pass

    def _early(self, side: Side, data: bytes | bytearray) -> None:
        pass

    def _eof(self, side: Side) -> None:
        pass

    def _lost(self, side: Side, exc: Exception | None) -> None:
        pass

    def _pause_writing(self, side: Side) -> None:
        pass

    def _resume_writing(self, side: Side) -> None:
        pass


_DETACHED = _DetachedPipe()


class _IdleWheel:
    """Every pipe of one loop whose current idle timeout is ``timeout``, swept by one shared timer.

    The sweep runs every ``timeout / 16`` while the wheel has pipes. A pipe whose byte counters moved since
    the previous sweep restarts its idle period at the sweep time; one whose counters have not moved for
    ``timeout`` is closed. So a connection idle for ``timeout`` after its last byte is closed between
    ``timeout`` and ``timeout * 9/8`` after it (the last byte is noticed at most one interval late, the
    expiry at most one interval late). Registering a pipe is a dict insert: no timer object per connection.
    """

    __slots__ = ("interval", "loop", "pipes", "timeout", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        # the loop is held weakly: the wheel lives in a registry keyed (weakly) by that same loop
        self.loop = weakref.ref(loop)
        self.timeout = timeout
        self.interval = max(timeout / 16, 0.005)
        self.pipes: dict[Pipe, None] = {}
        self.timer: asyncio.TimerHandle | None = None

    def add(self, pipe: Pipe) -> None:
        self.pipes[pipe] = None
        if self.timer is None:
            loop = self.loop()
            if loop is not None:
                self.timer = loop.call_later(self.interval, self._sweep)

    def discard(self, pipe: Pipe) -> None:
        self.pipes.pop(pipe, None)

    def _sweep(self) -> None:
        self.timer = None
        pipes = self.pipes
        loop = self.loop()
        if not pipes or loop is None:
            return
        now = loop.time()
        limit = self.timeout - 1e-3
        expired: list[Pipe] = []
        for p in pipes:
            if p.closing:
                seen = p._progress()
            else:
                s = p.server
                seen = p.client.nbytes + (s.nbytes if s is not None else 0)
            if seen != p._seen:
                p._seen = seen
                p._last = now
            elif now - p._last >= limit:
                expired.append(p)
        for p in expired:
            if p._wheel is self:  # still ours (closing one pipe may have closed others)
                p._idle_expired()
        if pipes and self.timer is None:
            self.timer = loop.call_later(self.interval, self._sweep)


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _IdleWheel]] = (
    weakref.WeakKeyDictionary()
)


# the last loop looked up (almost always the only one): a WeakKeyDictionary lookup makes a weak reference
# per call, once or twice per connection
_last_loop: weakref.ReferenceType[asyncio.AbstractEventLoop] | None = None
_last_wheels: dict[float, _IdleWheel] = {}


def _idle_wheel(loop: asyncio.AbstractEventLoop, timeout: float) -> _IdleWheel:
    global _last_loop, _last_wheels
    r = _last_loop
    if r is not None and r() is loop:
        wheels = _last_wheels
    else:
        found = _WHEELS.get(loop)
        if found is None:
            found = _WHEELS[loop] = {}
        wheels = found
        _last_loop, _last_wheels = weakref.ref(loop), wheels
    w = wheels.get(timeout)
    if w is None:
        w = wheels[timeout] = _IdleWheel(loop, timeout)
    return w
