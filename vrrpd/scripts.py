"""Track scripts and notify scripts: argv lists (never a shell), a run-as user, timeouts, script security.

* :class:`TrackScript` runs one ``[vrrp_script.NAME]`` every ``interval`` seconds, kills it after ``timeout``
  (a timeout is a failure), and feeds exit status 0 / non-0 through :class:`vrrpd.track.ScriptState`
  (``rise`` / ``fall``); it calls back only when the state flips.
* :class:`NotifyQueue` runs notify scripts one after another, in the order the state changes happened
  (keepalived's notify scripts are fire-and-forget and can overtake each other; here they cannot).
* :func:`insecure` implements keepalived's ``enable_script_security`` rule: a script (or a directory above
  it) that a non-root user can write is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import signal
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vrrpd import track
from vrrpd.config import ScriptConfig

__all__ = ["NotifyQueue", "RunAs", "TrackScript", "insecure", "resolve_argv", "resolve_user", "run_argv"]

log = logging.getLogger("vrrpd")


@dataclass(frozen=True, slots=True)
class RunAs:
    uid: int
    gid: int
    name: str

    def preexec(self) -> Callable[[], None] | None:
        if self.uid == os.getuid() and self.gid == os.getgid():
            return None
        uid, gid = self.uid, self.gid

        def demote() -> None:
            os.setgid(gid)
            os.setgroups([gid])
            os.setuid(uid)

        return demote


def resolve_user(spec: str | None) -> RunAs:
    """``user`` or ``user:group`` (None: the daemon's own user, as keepalived without ``script_user``)."""
    if spec is None:
        uid, gid = os.getuid(), os.getgid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return RunAs(uid, gid, name)
    user, _, group = spec.partition(":")
    pw = pwd.getpwnam(user)  # KeyError when unknown
    gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    return RunAs(pw.pw_uid, gid, spec)


def resolve_argv(argv: Sequence[str]) -> list[str]:
    """argv with ``argv[0]`` made absolute via PATH (as execvp would find it); unchanged if not found."""
    prog = argv[0]
    if "/" not in prog:
        # shutil.which without importing shutil (which drags in bz2/lzma: RSS matters here)
        for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
            cand = os.path.join(d or ".", prog)
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return [cand, *argv[1:]]
    return list(argv)


def insecure(path: str, run_as: RunAs) -> str | None:
    """Why running ``path`` as ``run_as`` is unsafe (keepalived ``enable_script_security``), or None.

    Unsafe: the file or any directory above it is writable by a user other than root and ``run_as`` (owner
    with write permission, group-writable by a non-root group, or world-writable except sticky directories).
    """
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError as e:
        return f"cannot stat {path}: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{real} is not a regular file"
    trusted_uids = {0, run_as.uid}
    p = real
    while True:
        st = os.stat(p)
        is_dir = stat.S_ISDIR(st.st_mode)
        if st.st_uid not in trusted_uids and st.st_mode & stat.S_IWUSR:
            return f"{p} is owned by uid {st.st_uid} and writable by it"
        if st.st_mode & stat.S_IWGRP and st.st_gid != 0 and not (is_dir and st.st_mode & stat.S_ISVTX):
            return f"{p} is writable by group {st.st_gid}"
        if st.st_mode & stat.S_IWOTH and not (is_dir and st.st_mode & stat.S_ISVTX):
            return f"{p} is world-writable"
        if p == "/":
            return None
        p = os.path.dirname(p)


async def _spawn(argv: Sequence[str], run_as: RunAs, what: str) -> asyncio.subprocess.Process | None:
    """Start ``argv`` (no shell) as ``run_as`` in its own session (so that a kill reaches its children)."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=run_as.preexec(),
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
    except (OSError, subprocess_error()) as e:
        log.error("%s: cannot run %s: %s", what, argv[0], e)
        return None


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the process group, SIGKILL 0.2 s later if it is still there; reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 0.2)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 1.0)


def _kill_now(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_argv(argv: Sequence[str], run_as: RunAs, timeout: float, what: str) -> int | None:
    """Run ``argv`` (no shell) as ``run_as``; the exit status, or None on timeout/spawn failure.

    The child gets its own session so that a timeout kills the whole process group (SIGTERM, then SIGKILL).
    """
    proc = await _spawn(argv, run_as, what)
    if proc is None:
        return None
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        log.warning("%s: %s timed out after %gs, killed", what, argv[0], timeout)
        await _kill(proc)
        return None
    except asyncio.CancelledError:
        _kill_now(proc)
        raise


def subprocess_error() -> type[Exception]:
    import subprocess

    return subprocess.SubprocessError


# exit statuses of a command that never ran (sh(1), execvp conventions): failures, logged as such
_NOT_RUN = {
    126: "cannot be executed (exit 126: permission denied or not an executable)",
    127: "was not found (exit 127)",
}


class TrackScript:
    """One periodically run check. ``on_change(name, ok)`` is called when its verdict changes, including its
    first result (INIT -> OK or FAILED; see :mod:`vrrpd.track`)."""

    def __init__(
        self,
        cfg: ScriptConfig,
        run_as: RunAs,
        on_change: Callable[[str, bool], None],
        *,
        security: bool,
    ) -> None:
        self.cfg = cfg
        self.run_as = run_as
        self.on_change = on_change
        self.security = security
        self.state = track.ScriptState(cfg.rise, cfg.fall, cfg.init_fail)
        self.runs = 0
        self.last_status: int | None = None
        self.argv: list[str] = []
        self.refused: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._vet()

    def _vet(self) -> None:
        self.argv = resolve_argv(self.cfg.script)
        self.refused = None
        if self.security:
            self.refused = insecure(self.argv[0], self.run_as)
        if self.refused is None and not os.path.isabs(self.argv[0]):
            self.refused = f"{self.argv[0]} not found in PATH"

    @property
    def ok(self) -> bool | None:
        """The verdict: True (OK), False (FAILED) or None (INIT: no result yet)."""
        return self.state.verdict

    @property
    def initialised(self) -> bool:
        return self.state.initialised

    def start(self) -> None:
        if self.refused is not None:
            log.error("vrrp_script %s: refused: %s (counts as a failure)", self.cfg.name, self.refused)
            self._feed(False)
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"track-{self.cfg.name}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def reconfigure(self, cfg: ScriptConfig, run_as: RunAs, *, security: bool) -> None:
        """A new definition of this script (SIGHUP). The state is kept; a changed command (argv, user or
        script security) goes back to INIT, holding its last verdict until its first result (never
        straight to OK). No-op when nothing changed."""
        if cfg == self.cfg and run_as == self.run_as and security == self.security:
            return
        command_changed = cfg.script != self.cfg.script or run_as != self.run_as or security != self.security
        self.stop()
        self.state = self.state.reloaded(cfg.rise, cfg.fall, command_changed=command_changed)
        if cfg.init_fail and not self.state.initialised:
            self.state.observe(False)  # init_fail: an unknown script counts as failed
        self.cfg, self.run_as, self.security = cfg, run_as, security
        self._vet()
        log.info(
            "vrrp_script %s: %s, state %s",
            cfg.name,
            "command changed: re-evaluated from INIT" if command_changed else "definition changed",
            self._word(),
        )
        self.start()

    def _word(self) -> str:
        v = self.state.verdict
        if self.state.ok is None:
            return "INIT" if v is None else f"INIT (holding {'OK' if v else 'FAIL'})"
        return "OK" if v else "FAIL"

    def status(self) -> dict[str, object]:
        v = self.state.verdict
        return {
            "name": self.cfg.name,
            "state": "INIT" if v is None else "OK" if v else "FAIL",
            "weight": self.cfg.weight,
            "runs": self.runs,
            "last_exit": self.last_status,
            "refused": self.refused,
            "first_result_pending": self.state.ok is None,
        }

    def _feed(self, ok: bool) -> None:
        new = self.state.observe(ok)
        if new is not None:
            log.info("vrrp_script %s: now %s", self.cfg.name, "OK" if new else "FAILING")
            self.on_change(self.cfg.name, new)

    def observe(self, status: int | None) -> None:
        """One run's exit status (None: timed out or could not be started)."""
        if status != self.last_status and status in _NOT_RUN:
            log.error(
                "vrrp_script %s: %s %s: counts as a failure", self.cfg.name, self.argv[0], _NOT_RUN[status]
            )
        self.runs += 1
        self.last_status = status
        self._feed(status == 0)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.observe(
                await run_argv(self.argv, self.run_as, self.cfg.timeout, f"vrrp_script {self.cfg.name}")
            )
            next_at = max(next_at + self.cfg.interval, loop.time())
            await asyncio.sleep(max(0.0, next_at - loop.time()))


HANDOFF = 2.0  # seconds a running notify script keeps once a later one waits (notify_timeout still applies)
STOP_TIMEOUT = 2.0  # seconds each notify_stop / "notify STOP" script may run at shutdown


class NotifyQueue:
    """One worker running notify scripts strictly in order, each with a timeout.

    * A script may run for ``timeout`` (``notify_timeout``) seconds while nothing else waits; once a later
      notify is queued it keeps at most ``handoff`` more seconds (then it is killed), so a hung script cannot
      hold back the next state change's scripts by a whole ``notify_timeout``. The order never changes.
    * :meth:`close` (shutdown) waits up to a budget for what is queued; then it kills what still runs and
      skips what waits, except the *final* entries (``notify_stop`` and ``notify ... STOP``), which always
      run, in order, each with its own timeout ``min(timeout, stop_timeout)``.
    """

    def __init__(
        self,
        run_as: RunAs,
        timeout: float,
        *,
        security: bool,
        handoff: float = HANDOFF,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.run_as = run_as
        self.timeout = timeout
        self.security = security
        self.handoff = handoff
        self.stop_timeout = stop_timeout
        self._q: asyncio.Queue[tuple[list[str], str, bool]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._waiting_since: float | None = None  # when the oldest still-waiting entry was queued
        self._closing = False
        self._budget_over = False
        self.executed = 0
        self.killed = 0
        self.skipped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="notify")

    def put(self, argv: Sequence[str], what: str, *, final: bool = False) -> None:
        """Queue one script. ``final``: a stop notify, which :meth:`close` always runs."""
        full = resolve_argv(argv)
        if self.security:
            why = insecure(full[0], self.run_as)
            if why is not None:
                log.error("%s: refused: %s", what, why)
                return
        if self._waiting_since is None:
            self._waiting_since = asyncio.get_running_loop().time()
        self._q.put_nowait((full, what, final or self._closing))
        self._wake.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty and idle (True) or ``timeout`` passes (False)."""
        try:
            await asyncio.wait_for(self._q.join(), timeout)
        except TimeoutError:
            return False
        return True

    def begin_close(self) -> None:
        """Shutdown begins: from now on every entry is a final one (the stop notifies)."""
        self._closing = True

    async def close(self, budget: float) -> None:
        """Shutdown: wait up to ``budget`` for the queue; then kill what runs and skip what waits, except
        the final (stop) entries, which run in order, each within ``min(timeout, stop_timeout)``."""
        self._closing = True
        if not await self.drain(max(0.0, budget)):
            self._budget_over = True
            self._wake.set()
            finals = self._q.qsize() + 1
            await self.drain(finals * (min(self.timeout, self.stop_timeout) + 1.5))
        self.stop()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _deadline(self, started: float, final: bool) -> float:
        if self._budget_over and not final:
            return started  # shutdown budget spent: only stop notifies still run
        limit = min(self.timeout, self.stop_timeout) if final and self._closing else self.timeout
        d = started + limit
        if self._waiting_since is not None:
            d = min(d, max(started, self._waiting_since) + self.handoff)
        return d

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            argv, what, final = await self._q.get()
            self._waiting_since = loop.time() if not self._q.empty() else None
            try:
                if self._budget_over and not final:
                    log.warning("%s: skipped at shutdown (stop budget spent)", what)
                    self.skipped += 1
                    continue
                log.info("%s: running %s", what, " ".join(argv))
                status = await self._run(argv, what, final, loop)
                self.executed += 1
                if status:
                    log.warning("%s: %s exited with status %s", what, argv[0], status)
            finally:
                self._q.task_done()

    async def _run(
        self, argv: list[str], what: str, final: bool, loop: asyncio.AbstractEventLoop
    ) -> int | None:
        proc = await _spawn(argv, self.run_as, what)
        if proc is None:
            return None
        started = loop.time()
        waiter = loop.create_task(proc.wait())
        try:
            while True:
                remaining = self._deadline(started, final) - loop.time()
                if remaining <= 0:
                    if self._budget_over and not final:
                        why = "shutdown: stop budget spent"
                    elif self._waiting_since is not None and loop.time() - started < self.timeout:
                        why = "a later notify is waiting"
                    else:
                        why = "timed out"
                    log.warning("%s: %s killed after %.3gs (%s)", what, argv[0], loop.time() - started, why)
                    self.killed += 1
                    await _kill(proc)
                    return None
                self._wake.clear()
                wake = loop.create_task(self._wake.wait())
                done, _ = await asyncio.wait(
                    {waiter, wake}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
                if waiter in done:
                    return waiter.result()
        except asyncio.CancelledError:
            _kill_now(proc)
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
