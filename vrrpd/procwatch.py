"""``vrrp_track_process``: find processes by a ``/proc`` scan, learn of their exit at once through pidfds.

keepalived learns of process starts and exits from the kernel's process-event connector (netlink
``NETLINK_CONNECTOR``/``CN_IDX_PROC``), which the kernel refuses outside the initial network namespace: its
track_process does not work in a container or a namespaced lab. Here:

* every process found is watched through a pidfd (``pidfd_open(2)``, Linux 5.3+) registered with the event
  loop: it becomes readable the moment the process exits, so an exit is seen within one loop iteration,
  with no polling of its state;
* new processes are found by a scan of ``/proc`` every ``scan_interval`` seconds (the smallest of the
  tracked processes' intervals), and once at start (about 10 us per process on the host);
* where ``pidfd_open(2)`` is refused (a kernel before 5.3, a seccomp filter), the scan also notices exits
  (logged once as an error): within ``scan_interval`` instead of at once.

The counts feed :class:`vrrpd.track.ProcessQuorum` (quorum, quorum_max, fork/terminate delays);
:class:`ProcessTracker` calls ``on_change(name, up)`` when a tracked process's verdict changes (its first
scan included, as a track script's first result). Matching follows keepalived: the kernel's process name
(``/proc/PID/comm``) or, with ``full_command``/parameters, ``argv[0]`` of ``/proc/PID/cmdline`` and
:func:`vrrpd.track.param_match` for the rest; zombies do not count.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from vrrpd import track
from vrrpd.config import ProcessConfig

__all__ = ["ProcInfo", "ProcessTracker", "ProcessWatcher", "matches", "read_proc"]

log = logging.getLogger("vrrpd")


@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    comm: str
    argv: tuple[str, ...] | None  # None: not read (no spec needs it) or unreadable


def matches(spec: ProcessConfig, info: ProcInfo) -> bool:
    """Whether one process counts for ``spec`` (keepalived ``check_process`` rules)."""
    if not spec.full_command:
        return info.comm == spec.process
    if not info.argv or info.argv[0] != spec.process:
        return False
    if spec.params is None:
        return True
    return track.param_match(info.argv[1:], spec.params, spec.param_match)


def read_proc(pid: int, want_argv: bool, root: str = "/proc") -> ProcInfo | None:
    """comm (and argv) of one process; None if it is gone, a zombie or a kernel thread without argv."""
    try:
        with open(f"{root}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    lpar, rpar = stat.find(b"("), stat.rfind(b")")
    if lpar < 0 or rpar < 0:
        return None
    if stat[rpar + 2 : rpar + 3] in (b"Z", b"X"):
        return None  # zombie or dead: not running (keepalived ignores them too)
    comm = stat[lpar + 1 : rpar].decode("utf-8", "replace")
    argv: tuple[str, ...] | None = None
    if want_argv:
        try:
            with open(f"{root}/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return None
        if not raw:
            return None  # a kernel thread or an exiting process
        argv = tuple(a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0"))
    return ProcInfo(pid, comm, argv)


def _pids(root: str) -> list[int]:
    try:
        return [int(n) for n in os.listdir(root) if n.isdigit()]
    except OSError as e:
        log.error("track_process: cannot list %s: %s", root, e)
        return []


def _exited(fd: int) -> bool:
    """A pidfd is readable once its process has exited (zombie included)."""
    r, _, _ = select.select([fd], [], [], 0)
    return bool(r)


class ProcessWatcher:
    """The processes matching each spec: a pidfd per process, a /proc scan every ``scan_interval`` seconds.

    ``on_counts(counts)`` is called with ``{spec name: number of matching processes}`` after the first scan
    and whenever a count changes (an exit, a process found by a scan)."""

    def __init__(
        self,
        specs: Sequence[ProcessConfig],
        on_counts: Callable[[dict[str, int]], None],
        *,
        root: str = "/proc",
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self.on_counts = on_counts
        self.root = root
        self.watched: dict[int, tuple[int, frozenset[str]]] = {}  # pid -> (pidfd, spec names)
        self.scans = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._self_pid = os.getpid()
        self.pidfds = root == "/proc"  # False: pidfd_open unavailable, exits are seen by the scan only

    @property
    def scan_interval(self) -> float:
        return min((s.scan_interval for s in self.specs.values()), default=1.0)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.specs, 0)
        for _fd, names in self.watched.values():
            for n in names:
                if n in out:
                    out[n] += 1
        return out

    def pids(self, name: str) -> list[int]:
        return sorted(pid for pid, (_fd, names) in self.watched.items() if name in names)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.scan()
        self.on_counts(self.counts())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for pid in list(self.watched):
            self._unwatch(pid)
        self._loop = None

    def reconfigure(self, specs: Sequence[ProcessConfig]) -> None:
        """New specs (SIGHUP): processes are re-matched by the next scan, which runs now."""
        self.specs = {s.name: s for s in specs}
        for pid in list(self.watched):
            self._unwatch(pid)
        if self._loop is not None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.scan()
            self.on_counts(self.counts())

    def scan(self) -> bool:
        """Look for new matching processes (and forget ones whose match ended); True if a count changed."""
        self.scans += 1
        before = self.counts()
        want_argv = any(s.full_command for s in self.specs.values())
        seen: set[int] = set()
        for pid in _pids(self.root):
            seen.add(pid)
            if pid in self.watched:
                fd, names = self.watched[pid]
                if fd < 0:  # no pidfd: the scan is how an exit (or a pid reuse) is seen
                    info = read_proc(pid, want_argv, self.root)
                    if info is None or not any(
                        matches(self.specs[n], info) for n in names if n in self.specs
                    ):
                        self._unwatch(pid)
                continue
            if pid == self._self_pid:
                continue
            info = read_proc(pid, want_argv, self.root)
            if info is None:
                continue
            names = frozenset(n for n, s in self.specs.items() if matches(s, info))
            if names:
                self._watch(pid, names)
        for pid in [p for p in self.watched if p not in seen]:
            self._unwatch(pid)  # gone without its pidfd firing (a foreign /proc root, in tests)
        if self._loop is not None and self.specs:
            self._timer = self._loop.call_later(self.scan_interval, self._rescan)
        return self.counts() != before

    def _rescan(self) -> None:
        self._timer = None
        if self.scan():
            self.on_counts(self.counts())

    def _watch(self, pid: int, names: frozenset[str]) -> None:
        fd = -1
        if self.pidfds:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return  # exited between the listing and now
            except OSError as e:
                self.pidfds = False
                log.error(
                    "track_process: pidfd_open(2) unavailable (%s): process exits are seen by the /proc scan "
                    "only, every %gs",
                    e,
                    self.scan_interval,
                )
            else:
                if _exited(fd) or read_proc(pid, False, self.root) is None:
                    os.close(fd)  # exited (or pid reused) while we looked: do not count it
                    return
        self.watched[pid] = (fd, names)
        if fd >= 0 and self._loop is not None:
            self._loop.add_reader(fd, self._on_exit, pid)

    def _unwatch(self, pid: int) -> None:
        fd, _names = self.watched.pop(pid, (-1, frozenset()))
        if fd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)

    def _on_exit(self, pid: int) -> None:
        if pid not in self.watched:
            return
        names = self.watched[pid][1]
        self._unwatch(pid)
        log.info("track_process %s: pid %d exited", ", ".join(sorted(names)), pid)
        self.on_counts(self.counts())


class ProcessTracker:
    """The verdict (UP/DOWN, None before the first scan) of every ``vrrp_track_process``: a
    :class:`ProcessWatcher` feeding one :class:`vrrpd.track.ProcessQuorum` per process, with the delays'
    timers on the loop. ``on_change(name, up)`` runs when a verdict changes."""

    def __init__(
        self, specs: Iterable[ProcessConfig], on_change: Callable[[str, bool], None], *, root: str = "/proc"
    ) -> None:
        self.on_change = on_change
        self.specs: dict[str, ProcessConfig] = {}
        self.quorum: dict[str, track.ProcessQuorum] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._set_specs(list(specs))
        self.watcher = ProcessWatcher(list(self.specs.values()), self._on_counts, root=root)

    def _set_specs(self, specs: list[ProcessConfig]) -> None:
        old = self.quorum
        self.specs = {s.name: s for s in specs}
        self.quorum = {}
        for s in specs:
            q = track.ProcessQuorum(s.quorum, s.quorum_max, s.fork_delay, s.terminate_delay)
            prev = old.get(s.name)
            if prev is not None and prev.up is not None:
                q.up, q.count = prev.up, prev.count  # a reload keeps the verdict; the rescan confirms it
            self.quorum[s.name] = q

    def verdict(self, name: str) -> bool | None:
        q = self.quorum.get(name)
        return None if q is None else q.up

    def start(self) -> None:
        if self.specs:
            self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()

    def reconfigure(self, specs: Iterable[ProcessConfig]) -> None:
        specs = list(specs)
        if specs == list(self.specs.values()):
            return
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        self._set_specs(specs)
        if self.specs and self.watcher._loop is None:
            self.watcher.specs = dict(self.specs)
            self.watcher.start()
        else:
            self.watcher.reconfigure(list(self.specs.values()))

    def status(self, name: str) -> dict[str, object]:
        q = self.quorum.get(name)
        spec = self.specs.get(name)
        up = None if q is None else q.up
        return {
            "name": name,
            "state": "INIT" if up is None else "UP" if up else "DOWN",
            "processes": q.count if q is not None else 0,
            "pids": self.watcher.pids(name),
            "quorum": None if spec is None else [spec.quorum, spec.quorum_max],
            "weight": None if spec is None else spec.weight,
        }

    def _on_counts(self, counts: dict[str, int]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for name, n in counts.items():
            q = self.quorum.get(name)
            if q is None:
                continue
            self._report(name, q.update(n, now))
            self._arm(name, q, loop)

    def _arm(self, name: str, q: track.ProcessQuorum, loop: asyncio.AbstractEventLoop) -> None:
        t = self._timers.pop(name, None)
        if t is not None:
            t.cancel()
        d = q.next_deadline()
        if d is not None:
            self._timers[name] = loop.call_at(d, self._expire, name)

    def _expire(self, name: str) -> None:
        self._timers.pop(name, None)
        q = self.quorum.get(name)
        if q is None:
            return
        loop = asyncio.get_running_loop()
        self._report(name, q.expire(loop.time()))
        self._arm(name, q, loop)

    def _report(self, name: str, new: bool | None) -> None:
        if new is None:
            return
        q = self.quorum[name]
        log.info(
            "track_process %s: quorum %s (%d running, quorum %d..%s)",
            name,
            "gained" if new else "lost",
            q.count,
            q.quorum,
            "" if q.quorum_max is None else q.quorum_max,
        )
        self.on_change(name, new)
