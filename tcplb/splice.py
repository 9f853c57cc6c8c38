"""Zero-copy relaying with ``splice(2)``: the listener option ``splice = true``.

Once a connection is in its data phase and nothing is queued in user space, :func:`start_splice` takes the two
sockets away from their asyncio transports and moves bytes socket -> kernel pipe -> socket with
``os.splice`` (Python >= 3.10, Linux), so the payload never enters the process: the counterpart of HAProxy's
``option splice-request`` / ``splice-response``.

How the take-over works: each socket is ``dup()``-ed, both sides' protocol callbacks are detached, and the
transports are aborted. Closing the transport's descriptor does not close the socket, which the duplicate
keeps open: no FIN, no RST, nothing queued is lost (the take-over only happens with both write buffers empty).
The loop then only watches the two descriptors (``add_reader`` / ``add_writer``, on uvloop and on stock
asyncio alike).

Per direction: read (``splice`` socket -> pipe, up to :data:`CHUNK` bytes), then write (pipe -> socket) until
the pipe is empty. When the destination cannot take more, reading that source stops until it is writable
again (backpressure; at most the pipe's size is in flight per direction). A FIN is forwarded with
``shutdown(SHUT_WR)`` once the pipe is drained (half-close kept); when both directions have ended, both
sockets are closed. An error on one socket resets the other (``SO_LINGER`` 0), as the user-space relay does.
Byte counters, the idle timeout and the termination state stay on the :class:`~tcplb.relay.Pipe`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
from typing import TYPE_CHECKING

from .relay import CLIENT_ABORT, SERVER_ABORT

if TYPE_CHECKING:
    from .relay import Pipe, Side

CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # the default /proc/sys/fs/pipe-max-size; a smaller pipe is used if refused
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_LINGER0 = struct.pack("ii", 1, 0)


class _Dir:
    """One direction: ``src`` socket -> kernel pipe -> ``dst`` socket."""

    __slots__ = ("done", "dst", "eof", "pending", "reading", "rp", "side", "src", "wp", "writing")

    def __init__(self, src: socket.socket, dst: socket.socket, side: Side) -> None:
        self.src = src
        self.dst = dst
        self.side = side  # the source's Side: its byte counter and EOF flag
        self.rp, self.wp = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.wp, F_SETPIPE_SZ, PIPE_SIZE)
        self.pending = 0  # bytes in the pipe
        self.eof = False  # the source sent its FIN
        self.done = False  # ... and it was forwarded
        self.reading = False
        self.writing = False


class Splicer:
    """The two directions of one spliced connection."""

    __slots__ = ("closed", "dirs", "loop", "pipe", "socks")

    def __init__(self, pipe: Pipe, csock: socket.socket, ssock: socket.socket) -> None:
        assert pipe.server is not None
        self.pipe = pipe
        self.loop = pipe.loop
        self.socks = (csock, ssock)
        first = _Dir(csock, ssock, pipe.client)
        try:
            second = _Dir(ssock, csock, pipe.server)
        except OSError:
            os.close(first.rp)
            os.close(first.wp)
            raise
        self.dirs = (first, second)
        self.closed = False

    def start(self) -> None:
        for d in self.dirs:
            self._want_read(d)

    # -- readiness ---------------------------------------------------------------------------------------
    def _want_read(self, d: _Dir) -> None:
        if not d.reading and not d.eof and not self.closed:
            d.reading = True
            self.loop.add_reader(d.src.fileno(), self._readable, d)

    def _stop_read(self, d: _Dir) -> None:
        if d.reading:
            d.reading = False
            self.loop.remove_reader(d.src.fileno())

    def _readable(self, d: _Dir) -> None:
        try:
            n = os.splice(d.src.fileno(), d.wp, CHUNK, flags=_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._failed(d.src, e)
            return
        if n == 0:
            d.eof = True
            d.side.eof = True
            self._stop_read(d)
            if d.pending == 0:
                self._fin(d)
            if not self.closed:
                self.pipe.timeout_changed()  # the half-closed timeout may differ
            return
        d.side.nbytes += n
        d.pending += n
        self._flush(d)

    def _flush(self, d: _Dir) -> None:
        while d.pending:
            try:
                m = os.splice(d.rp, d.dst.fileno(), d.pending, flags=_FLAGS)
            except (BlockingIOError, InterruptedError):
                # the destination is full: stop reading the source until it drains
                self._stop_read(d)
                if not d.writing:
                    d.writing = True
                    self.loop.add_writer(d.dst.fileno(), self._flush, d)
                return
            except OSError as e:
                self._failed(d.dst, e)
                return
            d.pending -= m
        if d.writing:
            d.writing = False
            self.loop.remove_writer(d.dst.fileno())
        if d.eof:
            self._fin(d)
        else:
            self._want_read(d)

    def _fin(self, d: _Dir) -> None:
        if d.done:
            return
        d.done = True
        try:
            d.dst.shutdown(socket.SHUT_WR)
        except OSError as e:
            self._failed(d.dst, e)
            return
        if all(x.done for x in self.dirs):
            self.close()

    def _failed(self, sock: socket.socket, exc: OSError) -> None:
        """``sock`` failed (reset, broken pipe): reset the other one too, as the user-space relay does."""
        client = sock is self.socks[0]
        self.pipe.set_term(CLIENT_ABORT if client else SERVER_ABORT)
        self.close(reset=self.socks[1] if client else self.socks[0])

    # -- the end -----------------------------------------------------------------------------------------
    def close(self, reset: socket.socket | None = None, reset_all: bool = False) -> None:
        """Close everything (``reset``: that socket with an RST; ``reset_all``: both) and finish the pipe."""
        if self.closed:
            return
        self.closed = True
        for d in self.dirs:
            self._stop_read(d)
            if d.writing:
                d.writing = False
                self.loop.remove_writer(d.dst.fileno())
            for fd in (d.rp, d.wp):
                with contextlib.suppress(OSError):
                    os.close(fd)
        for s in self.socks:
            if reset_all or s is reset:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            s.close()
        p = self.pipe
        p.closing = True
        p.client.lost = True
        if p.server is not None:
            p.server.lost = True
        p.finish()


def start_splice(pipe: Pipe) -> bool:
    """Move ``pipe`` to splice(2) if it is in its data phase with nothing queued; True if it was."""
    c, s = pipe.client, pipe.server
    if s is None or pipe.closing or pipe.phase != "D" or pipe.splicer is not None:
        return False
    ct, st = c.transport, s.transport
    if ct is None or st is None or c.lost or s.lost or c.eof or s.eof:
        return False
    if ct.get_write_buffer_size() or st.get_write_buffer_size() or pipe.reads_paused:
        return False  # bytes still queued in user space (early data, a slow peer): stay in user space
    cs, ss = ct.get_extra_info("socket"), st.get_extra_info("socket")
    if cs is None or ss is None:
        return False
    try:
        csock = socket.socket(fileno=os.dup(cs.fileno()))
    except OSError:
        return False
    try:
        ssock = socket.socket(fileno=os.dup(ss.fileno()))
    except OSError:
        csock.close()
        return False
    csock.setblocking(False)
    ssock.setblocking(False)
    try:
        sp = Splicer(pipe, csock, ssock)
    except OSError:  # out of descriptors for the pipes
        csock.close()
        ssock.close()
        return False
    # the transports go; their sockets stay open through the duplicates
    pipe.hand_over()
    pipe.splicer = sp
    sp.start()
    return True
