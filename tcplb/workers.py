"""Several relay processes sharing the listeners (``global.workers = N``), with shared accounting.

One Python process relays on one core. With ``workers = N`` the main process (the one systemd starts, the
one that gets SIGHUP/SIGTERM) starts ``N - 1`` relay workers: fresh interpreters running
``python -m tcplb.workers``. Every process opens its own listening sockets with ``SO_REUSEPORT``, so the
kernel spreads new connections over them; each process accepts, balances and relays its own connections.

What is shared, through a table in a ``memfd`` mapped by every process (:class:`SharedTable`):

* **Connection counts per server**, written by each process into its own column at every connect/close,
  read by everyone's ``leastconn``: the balance is global, as with HAProxy's threads.
* **Health and admin state**, decided by the main process alone (it runs every active check, the stats page
  and the admin API) and published in each server's row header every :data:`TICK` seconds; workers apply
  it (so a server marked DOWN or drained reaches the workers within one tick).
* **Passive health**: a worker whose connect to a server fails counts it in its column; the main process
  feeds those failures to the server's health machine at its next tick. The worker itself retries and
  redispatches at once, as a single process does.
* **Counters** for the stats page (sessions, bytes, errors, retries, queues): each worker copies its own
  into its column every tick (bytes of open connections every second); the main process adds them up.

What is divided instead: ``global.maxconn``, a listener's ``maxconn`` and a server's ``maxconn`` /
``maxqueue`` are split evenly (rounded up) among the processes; each process queues its own clients.

Control: one ``socketpair`` per worker carries JSON lines from the main process (``config``, ``reload``,
``stop``, ``shutdown-sessions``, ``rebalance``). A worker that loses its main process (the control socket
reaches EOF) stops gracefully; a worker that dies is started again by the main process, its counters kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from . import config as cfgmod
from .accounting import EMPTY, NO_COUNTS, Counts
from .backend import ServerState
from .config import Config
from .frontend import Frontend
from .health import CheckStatus
from .lb import LoadBalancer
from .procstart import new_loop, read_first, setup_logging, spawn_worker, worker_spec
from .reload_plan import ReloadError

log = logging.getLogger("tcplb")

TICK = 0.1  # seconds between two publications of health state and counters
MAX_PENDING_CONTROL = 64 << 20  # bytes of control lines queued for one worker before new ones are dropped
BYTES_EVERY = 10  # ticks between two sums of the bytes of open connections

# a row: a header written by the main process, then one column of counters per process
HDR = 4
H_FLAGS, H_WEIGHT = 0, 1
F_VALID, F_UP, F_MAINT, F_DRAIN = 1, 2, 4, 8
FIELDS = (
    "cur",
    "qcur",
    "stot",
    "lbtot",
    "smax",
    "qmax",
    "bin",
    "bout",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "pfail",
    "denied",
)
C = {name: i for i, name in enumerate(FIELDS)}
NC = 16  # counters per column (room to grow)
CUR, PFAIL = C["cur"], C["pfail"]
ROWS = 4096
_CUMULATIVE = ("stot", "lbtot", "bin", "bout", "econ", "eresp", "wretr", "wredis", "pfail", "denied")


class SharedTable:
    """``rows`` rows of int64: ``HDR`` header fields, then ``NC`` counters for each of ``nprocs``
    processes."""

    def __init__(self, nprocs: int, rows: int = ROWS, fd: int | None = None) -> None:
        self.nprocs = nprocs
        self.rows = rows
        self.stride = HDR + nprocs * NC
        size = 8 * rows * self.stride
        if fd is None:
            fd = os.memfd_create("tcplb-shared")
            os.ftruncate(fd, size)
        self.fd = fd
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.a = memoryview(self.mm).cast("q")

    def hdr(self, row: int, field: int) -> int:
        return row * self.stride + field

    def idx(self, row: int, proc: int, field: int) -> int:
        return row * self.stride + HDR + proc * NC + field

    def get(self, row: int, proc: int, field: int) -> int:
        return int(self.a[self.idx(row, proc, field)])

    def total(self, row: int, field: int, procs: Iterable[int]) -> int:
        a, base = self.a, row * self.stride + HDR + field
        return sum(int(a[base + p * NC]) for p in procs)

    def zero_column(self, proc: int) -> None:
        a = self.a
        for row in range(self.rows):
            base = self.idx(row, proc, 0)
            for i in range(NC):
                a[base + i] = 0


class Share:
    """One process's view: which column is its own, which row each listener and server has."""

    def __init__(self, table: SharedTable, proc: int, rows: dict[str, int]) -> None:
        self.table = table
        self.proc = proc
        self.nprocs = table.nprocs
        self.rows = rows
        self.peers = tuple(p for p in range(table.nprocs) if p != proc)

    @staticmethod
    def key(fe: str, srv: str | None = None) -> str:
        return f"{fe}/{srv}" if srv is not None else f"{fe}/"

    def attach(self, lb: LoadBalancer) -> None:
        """Give every listener and server of ``lb`` its row (after a start or a reload)."""
        t = self.table
        for fe in lb.frontends.values():
            fe.sh_row = self.rows.get(self.key(fe.name), -1)
            for st in fe.servers:
                row = self.rows.get(self.key(fe.name, st.name), -1)
                if row < 0 or row == st.sh_row:
                    continue
                st.sh_row = row
                st.sh = t.a
                st.sh_cur = t.idx(row, self.proc, CUR)
                st.sh_peer_cur = tuple(t.idx(row, p, CUR) for p in self.peers)
                t.a[st.sh_cur] = st.cur

    def publish_counters(self, lb: LoadBalancer, with_bytes: bool) -> None:
        """Copy this process's counters into its column (bytes of open connections too, ``with_bytes``)."""
        t, a, proc = self.table, self.table.a, self.proc
        live: dict[int, list[int]] = {}
        if with_bytes:
            for sess in lb.sessions:
                p = sess.pipe
                bi, bo = p.bytes_in, p.bytes_out
                for row in (sess.fe.sh_row, sess.srv.sh_row if sess.srv is not None else -1):
                    if row >= 0:
                        acc = live.setdefault(row, [0, 0])
                        acc[0] += bi
                        acc[1] += bo
        for fe in lb.frontends.values():
            rows: list[tuple[int, Frontend | ServerState]] = [(fe.sh_row, fe)]
            rows += [(st.sh_row, st) for st in fe.servers]
            for row, obj in rows:
                if row < 0:
                    continue
                base = t.idx(row, proc, 0)
                vals = _counters(obj)
                for name, v in vals.items():
                    a[base + C[name]] = v
                if with_bytes:
                    extra = live.get(row, (0, 0))
                    a[base + C["bin"]] = vals["bin"] + extra[0]
                    a[base + C["bout"]] = vals["bout"] + extra[1]


def _counters(obj: Frontend | ServerState) -> dict[str, int]:
    if isinstance(obj, ServerState):
        return {
            "cur": obj.cur,
            "qcur": len(obj.queue),
            "stot": obj.stot,
            "lbtot": obj.lbtot,
            "smax": obj.smax,
            "qmax": obj.qmax,
            "bin": obj.bin,
            "bout": obj.bout,
            "econ": obj.econ,
            "eresp": obj.eresp,
            "wretr": obj.wretr,
            "wredis": obj.wredis,
            "pfail": obj.sh_pfail,
        }
    return {
        "cur": obj.cur,
        "stot": obj.stot,
        "smax": obj.smax,
        "bin": obj.bin,
        "bout": obj.bout,
        "econ": obj.econ,
        "denied": obj.denied,
    }


# ------------------------------------------------------------------------ the accounting seam (shared)


class _RowCounts:
    """The workers' counters summed per row (:meth:`WorkerPool.peer_counts`), looked up by object."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[int, dict[str, int]]) -> None:
        self.rows = rows

    def of(self, obj: Frontend | ServerState) -> Mapping[str, int]:
        return self.rows.get(obj.sh_row, EMPTY)


class MainAccounting:
    """:class:`~tcplb.accounting.Accounting` of the main process: it runs the checks and owns health; the
    workers' counters come from the table; admin session kills are broadcast to the workers."""

    __slots__ = ("pool",)

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    @property
    def nprocs(self) -> int:
        return self.pool.nprocs

    @property
    def runs_checks(self) -> bool:
        return True

    def connect_failed(self, srv: ServerState, timeout: bool) -> bool:
        return False

    def others(self) -> Counts:
        return _RowCounts(self.pool.peer_counts())

    def tell_others(self, msg: dict[str, Any]) -> None:
        self.pool.broadcast(msg)


class WorkerAccounting:
    """:class:`~tcplb.accounting.Accounting` of a relay worker: no checks; its connect failures go to the
    main process through its column (``pfail``); the stats page is the main process's."""

    __slots__ = ("share",)

    def __init__(self, share: Share) -> None:
        self.share = share

    @property
    def nprocs(self) -> int:
        return self.share.nprocs

    @property
    def runs_checks(self) -> bool:
        return False

    def connect_failed(self, srv: ServerState, timeout: bool) -> bool:
        srv.sh_pfail += not timeout  # the main process owns health; a timeout is no proof (issue 10, 6)
        return True

    def others(self) -> Counts:
        return NO_COUNTS

    def tell_others(self, msg: dict[str, Any]) -> None:
        return None  # only the main process has the admin API


# ----------------------------------------------------------------------------------------- main process


class _Worker:
    def __init__(self, proc: int, popen: subprocess.Popen[bytes], ctl: socket.socket) -> None:
        self.proc = proc
        self.popen = popen
        self.ctl = ctl
        self.started = time.monotonic()
        self.out = bytearray()  # control lines not yet taken by the socket (sent when it is writable)
        self.writing = False  # a writer callback is installed for ``out``


class WorkerPool:
    """The main process's side: starts the workers, publishes health, collects counters and failures."""

    def __init__(self, nprocs: int, loop_kind: str, log_level: int = logging.INFO) -> None:
        self.table = SharedTable(nprocs)
        self.nprocs = nprocs
        self.loop_kind = loop_kind
        self.log_level = log_level
        self.rows: dict[str, int] = {}
        self.share = Share(self.table, 0, self.rows)
        self.accounting = MainAccounting(self)  # the main process's LoadBalancer.acct
        self.workers: dict[int, _Worker] = {}
        self.retired: dict[tuple[int, int], int] = {}  # (row, field) -> counts of workers that died
        self.pfail_seen: dict[int, int] = {}
        self.text = ""
        self.source = ""
        self.lb: LoadBalancer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self._tick: asyncio.TimerHandle | None = None

    # -- rows ------------------------------------------------------------------------------------------
    def assign_rows(self, cfg: Config) -> None:
        """Rows for every listener and server of ``cfg`` (kept by name across reloads, never reused)."""
        for li in cfg.listeners:
            for key in [Share.key(li.name)] + [Share.key(li.name, s.name) for s in li.servers]:
                if key not in self.rows:
                    if len(self.rows) >= self.table.rows:
                        raise RuntimeError(f"more than {self.table.rows} listeners and servers over reloads")
                    self.rows[key] = len(self.rows)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, lb: LoadBalancer, text: str, source: str) -> None:
        self.lb = lb
        self.loop = lb.loop
        self.text, self.source = text, source
        self.share.attach(lb)
        self.publish_state()
        for proc in range(1, self.nprocs):
            self._spawn(proc)
        self._tick = self.loop.call_later(TICK, self._on_tick)

    def _spawn(self, proc: int) -> None:
        assert self.loop is not None
        popen, mine = spawn_worker(proc, self.nprocs, self.table.fd)
        w = _Worker(proc, popen, mine)
        self.workers[proc] = w
        self._send(w, self._config_msg("config"))
        self.loop.add_reader(mine.fileno(), self._on_ctl, w)
        log.info("worker %d started: pid %d", proc, popen.pid)

    def _config_msg(self, op: str) -> dict[str, Any]:
        return {
            "op": op,
            "toml": self.text,
            "source": self.source,
            "rows": self.rows,
            "loop": self.loop_kind,
            "log_level": self.log_level,
        }

    def _send(self, w: _Worker, msg: dict[str, Any]) -> None:
        """Queue one control line for ``w``, never blocking the loop: what the socket does not take now is
        sent from a writer callback when the worker reads again (a busy worker used to stall the main
        process's loop for up to 2 s here). Lines stay in order; a worker that goes away drops them."""
        if w.ctl.fileno() < 0:
            return
        w.out += json.dumps(msg).encode() + b"\n"
        if len(w.out) > MAX_PENDING_CONTROL:
            log.warning("worker %d: %d bytes of control messages not read: dropping %s", w.proc, len(w.out),
                        msg.get("op"))  # fmt: skip
            del w.out[-(len(json.dumps(msg)) + 1) :]
            return
        if not w.writing:
            self._flush(w)

    def _flush(self, w: _Worker) -> None:
        try:
            while w.out:
                n = w.ctl.send(w.out)
                del w.out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            log.warning("worker %d: cannot send control messages: %s", w.proc, e)
            w.out.clear()
        loop = self.loop
        if w.out and not w.writing and loop is not None:
            loop.add_writer(w.ctl.fileno(), self._flush, w)
            w.writing = True
        elif not w.out and w.writing and loop is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(w.ctl.fileno())
            w.writing = False

    def _on_ctl(self, w: _Worker) -> None:
        try:
            data = w.ctl.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            return  # workers send nothing yet
        self._gone(w)

    def _gone(self, w: _Worker) -> None:
        """A worker's control socket closed: it exited. Keep its counters; start a new one unless stopping."""
        assert self.loop is not None
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(w.ctl.fileno())
        if w.writing:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_writer(w.ctl.fileno())
            w.writing = False
        w.ctl.close()
        self.workers.pop(w.proc, None)
        rc = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            rc = w.popen.wait(timeout=2.0)
        for row in self.rows.values():
            for name in _CUMULATIVE:
                f = C[name]
                self.retired[(row, f)] = self.retired.get((row, f), 0) + self.table.get(row, w.proc, f)
        self.table.zero_column(w.proc)
        if self.stopping:
            log.info("worker %d (pid %d) exited: %s", w.proc, w.popen.pid, rc)
            return
        if rc == 0:  # stopped on purpose (SIGTERM to the whole group, e.g. systemd): we are probably next
            log.info("worker %d (pid %d) stopped; restarting it in 1s unless we stop", w.proc, w.popen.pid)
            delay = 1.0
        else:
            log.error("worker %d (pid %d) died (exit %s); starting it again", w.proc, w.popen.pid, rc)
            delay = 0.0 if time.monotonic() - w.started > 5.0 else 1.0
        self.loop.call_later(delay, self._respawn, w.proc)

    def _respawn(self, proc: int) -> None:
        if not self.stopping and proc not in self.workers:
            self._spawn(proc)

    # -- the tick --------------------------------------------------------------------------------------
    def _on_tick(self) -> None:
        assert self.loop is not None
        try:
            self.consume_failures()
            self.publish_state()
        finally:
            if not self.stopping:
                self._tick = self.loop.call_later(TICK, self._on_tick)

    def publish_state(self) -> None:
        """Write every server's health and admin state into its row header."""
        lb, t = self.lb, self.table
        if lb is None:
            return
        a = t.a
        for fe in lb.frontends.values():
            for st in fe.servers:
                if st.sh_row < 0:
                    continue
                flags = F_VALID
                if st.health.up and not st.removed:
                    flags |= F_UP
                if st.maint:
                    flags |= F_MAINT
                if st.drain or st.node_drain:  # node_drain: RabbitMQ maintenance (tcplb/nodestate.py)
                    flags |= F_DRAIN
                a[t.hdr(st.sh_row, H_FLAGS)] = flags
                a[t.hdr(st.sh_row, H_WEIGHT)] = st.admin_weight

    def consume_failures(self) -> None:
        """Connect failures the workers counted since the last tick go into the servers' health machines."""
        lb = self.lb
        if lb is None:
            return
        for fe in lb.frontends.values():
            for st in fe.servers:
                row = st.sh_row
                if row < 0:
                    continue
                n = self.peer(row, "pfail")
                seen = self.pfail_seen.get(row, 0)
                if n <= seen:
                    continue
                self.pfail_seen[row] = n
                if not st.checks_enabled or st.maint:
                    continue
                for _ in range(min(n - seen, st.health.fall + 1)):
                    tr = st.health.passive_failure(
                        status=CheckStatus.HANA, now=lb.loop.time(), info="connect failed in a worker"
                    )
                    if tr is not None:
                        lb.on_transition(st, tr)
                if st.health.hurry and st.checker is not None:  # the next check at fastinter from now
                    st.checker.rearm(st.cfg.check.fastinter)

    # -- counters for the stats page ------------------------------------------------------------------
    def peer(self, row: int, name: str) -> int:
        """The sum of a counter over the workers (live and dead), without the main process's own."""
        f = C[name]
        return self.table.total(row, f, range(1, self.nprocs)) + self.retired.get((row, f), 0)

    def peer_counts(self) -> dict[int, dict[str, int]]:
        """Every row's counters summed over the workers: gauges over the live ones, totals over all."""
        live = list(self.workers)
        out: dict[int, dict[str, int]] = {}
        for row in self.rows.values():
            d = {name: self.peer(row, name) for name in _CUMULATIVE}
            for name in ("cur", "qcur", "smax", "qmax"):
                d[name] = self.table.total(row, C[name], live)
            out[row] = d
        return out

    # -- control ---------------------------------------------------------------------------------------
    def reload(self, text: str, source: str) -> None:
        """After the main process applied a reload: the same text to every worker."""
        assert self.lb is not None
        self.text, self.source = text, source
        self.share.attach(self.lb)
        self.publish_state()
        for w in list(self.workers.values()):
            self._send(w, self._config_msg("reload"))

    def broadcast(self, msg: dict[str, Any]) -> None:
        for w in list(self.workers.values()):
            self._send(w, msg)

    def kill(self) -> None:
        """Hard stop (a second SIGTERM): every worker closes its connections now (SIGTERM again to a
        worker that is already stopping)."""
        for w in list(self.workers.values()):
            with contextlib.suppress(OSError):
                w.popen.send_signal(signal.SIGTERM)

    async def stop(self, timeout: float | None) -> None:
        """Ask every worker to stop gracefully; wait for them (SIGKILL after ``timeout`` + 5 s)."""
        self.stopping = True
        if self._tick is not None:
            self._tick.cancel()
        self.broadcast({"op": "stop"})
        deadline = time.monotonic() + (timeout if timeout is not None else 86400.0) + 5.0
        while self.workers and time.monotonic() < deadline:
            for w in list(self.workers.values()):
                if w.popen.poll() is not None:
                    self._gone(w)
            await asyncio.sleep(0.05)
        for w in list(self.workers.values()):
            log.warning("worker %d (pid %d) did not stop: killed", w.proc, w.popen.pid)
            with contextlib.suppress(OSError):
                w.popen.kill()
            self._gone(w)


# ---------------------------------------------------------------------------------------------- workers


class WorkerProcess:
    """A relay worker: accepts, balances and relays; health and admin state come from the main process."""

    def __init__(self, proc: int, table: SharedTable, ctl: socket.socket) -> None:
        self.proc = proc
        self.table = table
        self.ctl = ctl
        self.buf = b""
        self.lb: LoadBalancer | None = None
        self.share: Share | None = None
        self.stop_event: asyncio.Event | None = None
        self.ticks = 0
        self.hard_stop_after: float | None = None
        self.hard = False  # hard stop requested

    async def serve(self, cfg: Config, rows: dict[str, int]) -> int:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        self.share = Share(self.table, self.proc, dict(rows))
        self.hard_stop_after = cfg.global_.hard_stop_after
        lb = self.lb = LoadBalancer(cfg, loop, acct=WorkerAccounting(self.share))
        self.apply_state()
        try:
            lb.start()
        except OSError as e:
            log.error("worker %d: cannot bind a listener: %s", self.proc, e.strerror or e)
            return 1
        self.share.attach(lb)
        self.ctl.setblocking(False)
        loop.add_reader(self.ctl.fileno(), self._on_ctl)
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        self._lines()  # what arrived with the configuration
        tick = loop.call_later(TICK, self._on_tick)
        try:
            await self.stop_event.wait()
        finally:
            tick.cancel()
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(self.ctl.fileno())
        await self._graceful_stop()
        return 0

    def _on_term(self) -> None:
        """SIGTERM: stop gracefully; a second one (or one while stopping): close every connection now."""
        assert self.stop_event is not None
        if not self.stop_event.is_set():
            self.stop_event.set()
        elif self.lb is not None:
            self.hard = True
            self.lb.kill_all()

    def _on_tick(self) -> None:
        assert self.lb is not None and self.share is not None
        self.ticks += 1
        try:
            self.apply_state()
            self.share.publish_counters(self.lb, with_bytes=self.ticks % BYTES_EVERY == 0)
        finally:
            if self.stop_event is not None and not self.stop_event.is_set():
                self.lb.loop.call_later(TICK, self._on_tick)

    def apply_state(self) -> None:
        """The main process's view of every server (health, maint, drain, weight) becomes ours."""
        lb, t = self.lb, self.table
        if lb is None:
            return
        a = t.a
        now = lb.loop.time()
        changed = False
        for fe in lb.frontends.values():
            for st in fe.servers:
                if st.sh_row < 0:
                    continue
                flags = int(a[t.hdr(st.sh_row, H_FLAGS)])
                if not flags & F_VALID:
                    continue
                # the main process's checks decided: take the result through our own health machine
                if flags & F_UP:
                    if st.health.force_up(CheckStatus.UNK, now, "main process") is not None:
                        changed = True
                        st.start_slowstart()  # the main's ramp, started here within one tick
                elif st.health.force_down(CheckStatus.UNK, now, "main process") is not None:
                    changed = True
                    st.flush_queue()
                st.maint = bool(flags & F_MAINT)
                st.drain = bool(flags & F_DRAIN)
                st.admin_weight = int(a[t.hdr(st.sh_row, H_WEIGHT)])
                if st.queue and (st.drain or st.admin_weight == 0):
                    st.flush_queue()  # out of rotation: queued connections go elsewhere
        if changed and not lb.stopping:
            lb.resume_if_room(force=True)

    def _on_ctl(self) -> None:
        try:
            data = self.ctl.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            log.warning("worker %d: the main process is gone: stopping", self.proc)
            if self.stop_event is not None:
                self.stop_event.set()
            return
        self.buf += data
        self._lines()

    def _lines(self) -> None:
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.handle(json.loads(line))

    def handle(self, msg: dict[str, Any]) -> None:
        lb, share = self.lb, self.share
        assert lb is not None and share is not None and self.stop_event is not None
        op = msg.get("op")
        if op == "stop":
            self.stop_event.set()
        elif op == "reload":
            cfg = cfgmod.loads(msg["toml"], msg.get("source", "lb.toml"))
            share.rows.update(msg["rows"])
            self.hard_stop_after = cfg.global_.hard_stop_after
            try:
                lb.reload(cfg)
            except ReloadError as e:  # all or nothing: this worker keeps its running configuration
                log.error("worker %d: reload refused, running configuration unchanged: %s", self.proc, e)
            share.attach(lb)
            self.apply_state()
        elif op == "shutdown-sessions":
            with contextlib.suppress(KeyError, ValueError):
                lb.shutdown_sessions(msg["listener"], msg["server"])
        elif op == "rebalance":  # tcplb ctl rebalance (the main process's admin API): our own share
            with contextlib.suppress(KeyError, ValueError):
                lb.rebalance.request(msg["listener"], forward=False)

    async def _graceful_stop(self) -> None:
        lb = self.lb
        assert lb is not None
        lb.stop_accepting()
        if lb.actconn:
            try:
                async with asyncio.timeout(self.hard_stop_after):
                    await lb.wait_idle()
            except TimeoutError:
                lb.kill_all()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await lb.wait_idle()
        if self.share is not None:
            self.share.publish_counters(lb, with_bytes=True)


def worker_main() -> int:
    """``python -m tcplb.workers``: started by the main process only (``TCPLB_WORKER`` names the fds)."""
    spec = worker_spec()
    if spec is None:
        print("tcplb.workers: started by tcplb itself (global.workers > 1), not by hand", file=sys.stderr)
        return 2
    proc, nprocs, memfd, ctl_fd = spec
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides (a terminal's ^C reaches all)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the main process, with the text
    table = SharedTable(nprocs, fd=memfd)
    ctl = socket.socket(fileno=ctl_fd)
    msg, rest = read_first(ctl)
    cfg = cfgmod.loads(msg["toml"], msg.get("source", "lb.toml"))
    setup_logging(cfg, int(msg.get("log_level", logging.INFO)))
    w = WorkerProcess(proc, table, ctl)
    w.buf = rest
    loop_kind = str(msg.get("loop", "uvloop"))
    with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind)) as r:
        rc = r.run(w.serve(cfg, msg["rows"]))
    log.info("worker %d stopped", proc)
    return rc


if __name__ == "__main__":
    sys.exit(worker_main())
