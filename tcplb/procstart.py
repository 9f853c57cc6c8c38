"""Process start-up helpers, shared by the main process (:mod:`tcplb.daemon`) and the relay workers
(:mod:`tcplb.workers`): the event loop, logging, the file descriptor limit, starting a worker process and
reading its first control line. Nothing here knows the core (:mod:`tcplb.lb`)."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

from . import config as cfgmod
from .config import Config

log = logging.getLogger("tcplb")

WORKER_ENV = "TCPLB_WORKER"  # proc:nprocs:memfd:control fd, for ``python -m tcplb.workers``
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")  # systemd talks to the main process


def new_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """A new event loop: ``uvloop`` (default) or stock ``asyncio``."""
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    if kind == "asyncio":
        return asyncio.new_event_loop()
    raise ValueError(f"unknown loop {kind!r} (uvloop or asyncio)")


class _Formatter(logging.Formatter):
    """``logging.Formatter`` whose default ``asctime`` (``2026-11-22 00:00:18,269``) is formatted once per
    second: with one traffic line per connection, strftime() per line was a visible part of the cost."""

    _sec = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        sec = int(record.created)  # localtime() of the float floors it the same way
        if sec != self._sec:
            self._text = time.strftime(self.default_time_format, self.converter(sec))
            self._sec = sec
        msec = self.default_msec_format
        return msec % (self._text, record.msecs) if msec else self._text


def setup_logging(cfg: Config, level: int = logging.INFO) -> None:
    """Send tcplb's log (events and traffic lines) where ``global.log`` says."""
    # our formats use the PID only: no thread/process names and no caller lookup (sys._getframe walk) for
    # every record (the logging HOWTO's "Optimization" switches); with a traffic line per connection the
    # logging module is a large part of the per-connection cost
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    root = logging.getLogger("tcplb")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    root.propagate = False
    g = cfg.global_
    handler: logging.Handler
    if g.log == "none":
        handler = logging.NullHandler()
    elif g.log == "syslog":
        addr: str | tuple[str, int] = g.syslog_address
        if not g.syslog_address.startswith("/"):
            host, _, port = g.syslog_address.rpartition(":")
            addr = (host, int(port))
        handler = logging.handlers.SysLogHandler(
            address=addr, facility=logging.handlers.SysLogHandler.LOG_LOCAL0
        )
        handler.setFormatter(_Formatter(f"{g.log_tag}[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stdout if g.log == "stdout" else sys.stderr)
        handler.setFormatter(_Formatter(f"%(asctime)s {g.log_tag}[%(process)d]: [%(levelname)s] %(message)s"))
    root.addHandler(handler)


def raise_nofile(cfg: Config, nprocs: int = 1) -> str | None:
    """Raise this process's soft RLIMIT_NOFILE for ``global.maxconn`` (per process with workers), towards
    the hard limit (HAProxy does the same); a message if that fails. When even the hard limit is too low,
    ``config.warnings`` says so (at start and in ``--check``). Without ``global.maxconn`` the limit decides
    maxconn instead."""
    if cfg.global_.maxconn is None:
        return None
    per_conn = 6 if any(li.splice for li in cfg.listeners) else 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want, _ = cfgmod.nofile_plan(cfgmod.per_process(cfg.global_.maxconn, nprocs), per_conn, soft, hard)
    if want != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError) as e:
            return f"cannot raise RLIMIT_NOFILE from {soft} to {want}: {e}"
        log.info("RLIMIT_NOFILE raised from %d to %d for global.maxconn", soft, want)
    return None


def spawn_worker(proc: int, nprocs: int, memfd: int) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start relay worker ``proc`` of ``nprocs`` (``python -m tcplb.workers``) with the shared table's
    ``memfd``; returns the process and our end of its control socket (non-blocking)."""
    mine, theirs = socket.socketpair()
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env[WORKER_ENV] = f"{proc}:{nprocs}:{memfd}:{theirs.fileno()}"
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tcplb.workers"],
            pass_fds=(memfd, theirs.fileno()),
            env=env,
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    mine.setblocking(False)
    return popen, mine


def worker_spec() -> tuple[int, int, int, int] | None:
    """In a worker: (proc, nprocs, memfd, control fd) from the environment; None if not started by tcplb."""
    spec = os.environ.get(WORKER_ENV)
    if not spec:
        return None
    proc_s, nprocs_s, memfd_s, ctl_s = spec.split(":")
    return int(proc_s), int(nprocs_s), int(memfd_s), int(ctl_s)


def read_first(ctl: socket.socket) -> tuple[dict[str, Any], bytes]:
    """In a worker: the first control line (the configuration) and what came after it."""
    buf = b""
    ctl.settimeout(30.0)
    while b"\n" not in buf:
        chunk = ctl.recv(1 << 20)
        if not chunk:
            raise SystemExit(0)
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    msg: dict[str, Any] = json.loads(line)
    return msg, rest
