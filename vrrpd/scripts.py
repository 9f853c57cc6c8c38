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


async def run_argv(argv: Sequence[str], run_as: RunAs, timeout: float, what: str) -> int | None:
    """Run ``argv`` (no shell) as ``run_as``; the exit status, or None on timeout/spawn failure.

    The child gets its own session so that a timeout kills the whole process group (SIGTERM, then SIGKILL).
    """
    try:
        proc = await asyncio.create_subprocess_exec(
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
        log.warning("%s: cannot run %s: %s", what, argv[0], e)
        return None
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        log.warning("%s: %s timed out after %gs, killed", what, argv[0], timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 0.2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 1.0)
        return None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise


def subprocess_error() -> type[Exception]:
    import subprocess

    return subprocess.SubprocessError


class TrackScript:
    """One periodically run check. ``on_change(name, ok)`` is called when its rise/fall state flips."""

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
        self.argv = resolve_argv(cfg.script)
        self.state = track.ScriptState(cfg.rise, cfg.fall, cfg.init_fail)
        self.ok: bool = not cfg.init_fail
        self.runs = 0
        self.last_status: int | None = None
        self.refused: str | None = None
        if security:
            self.refused = insecure(self.argv[0], run_as)
        if self.refused is None and not os.path.isabs(self.argv[0]):
            self.refused = f"{self.argv[0]} not found in PATH"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.refused is not None:
            log.error("vrrp_script %s: refused: %s (treated as failing)", self.cfg.name, self.refused)
            if self.ok:
                self.ok = False
                self.on_change(self.cfg.name, False)
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"track-{self.cfg.name}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def status(self) -> dict[str, object]:
        return {
            "name": self.cfg.name,
            "state": "OK" if self.ok else "FAIL",
            "weight": self.cfg.weight,
            "runs": self.runs,
            "last_exit": self.last_status,
            "refused": self.refused,
        }

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            status = await run_argv(self.argv, self.run_as, self.cfg.timeout, f"vrrp_script {self.cfg.name}")
            self.runs += 1
            self.last_status = status
            new = self.state.observe(status == 0)
            if new is not None and new != self.ok:
                self.ok = new
                log.info("vrrp_script %s: now %s", self.cfg.name, "OK" if new else "FAILING")
                self.on_change(self.cfg.name, new)
            next_at = max(next_at + self.cfg.interval, loop.time())
            await asyncio.sleep(max(0.0, next_at - loop.time()))


class NotifyQueue:
    """One worker running notify scripts strictly in order, each with a timeout."""

    def __init__(self, run_as: RunAs, timeout: float, *, security: bool) -> None:
        self.run_as = run_as
        self.timeout = timeout
        self.security = security
        self._q: asyncio.Queue[tuple[list[str], str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.executed = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="notify")

    def put(self, argv: Sequence[str], what: str) -> None:
        full = resolve_argv(argv)
        if self.security:
            why = insecure(full[0], self.run_as)
            if why is not None:
                log.error("%s: refused: %s", what, why)
                return
        self._q.put_nowait((full, what))

    async def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty and idle (True) or ``timeout`` passes (False)."""
        try:
            await asyncio.wait_for(self._q.join(), timeout)
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _worker(self) -> None:
        while True:
            argv, what = await self._q.get()
            try:
                log.info("%s: running %s", what, " ".join(argv))
                status = await run_argv(argv, self.run_as, self.timeout, what)
                self.executed += 1
                if status:
                    log.warning("%s: %s exited with status %s", what, argv[0], status)
            finally:
                self._q.task_done()
