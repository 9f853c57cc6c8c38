"""Helpers shared by test modules across tests/ (not a test module itself).

``tests/`` is on ``sys.path`` (pytest's rootdir conftest), so any test module can ``from helpers import ...``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


# free_port hands out ports below the kernel's ephemeral range (32768-60999 by default), so a port just
# returned cannot be taken meanwhile by an outgoing connection's source port, and from a slice of its own for
# each pytest-xdist worker (gw0, gw1, ...; slice 0 for a run without xdist), so two workers never race for
# one port. A random start in the slice keeps concurrent pytest processes apart; a port is handed out again
# only after the whole slice has been used.
PORT_BASE = 20000
PORT_SLICE = 2000
PORT_SLICES = 6  # 20000-31999
_port_next: int | None = None


def port_slice(worker: str | None = None) -> range:
    """The ports :func:`free_port` hands out in this process (``worker``: the xdist worker id)."""
    wid = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    n = int(wid[2:]) + 1 if wid.startswith("gw") and wid[2:].isdigit() else 0
    start = PORT_BASE + (n % PORT_SLICES) * PORT_SLICE
    return range(start, start + PORT_SLICE)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now, from this worker's slice (:func:`port_slice`)."""
    global _port_next
    ports = port_slice()
    if _port_next is None or _port_next not in ports:
        _port_next = ports.start + secrets.randbelow(len(ports))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(len(ports)):
        port = _port_next
        _port_next = port + 1 if port + 1 < ports.stop else ports.start
        with socket.socket(family) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue  # in use (or in TIME_WAIT): the next one
            return port
    raise OSError(f"no free port in {ports.start}-{ports.stop - 1} on {host}")


async def wait_for(pred: Callable[[], object], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``pred`` on the running loop until it is truthy (returned); AssertionError after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------------------- unprivileged runs
# A checkout may live where only root can read it (a clone under /root or in `mktemp -d`, mode 0700, and its
# venv with it). A test that runs project code as an unprivileged user therefore runs a world-readable COPY
# of the packages it needs, with an interpreter that user can execute, never the checkout itself.


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"package {name!r} is not importable here")
    return Path(next(iter(spec.submodule_search_locations)))


def public_packages(dest: Path, packages: Iterable[str]) -> Path:
    """Copy the importable ``packages`` (the project's or installed ones) into ``dest``, readable by all.

    Returns ``dest``, ready to be the unprivileged process's ``PYTHONPATH``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in packages:
        shutil.copytree(
            _package_dir(name), dest / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
        )
    for d in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        d.chmod(0o755)
    for f in (p for p in dest.rglob("*") if p.is_file()):
        f.chmod(0o755 if os.access(f, os.X_OK) else 0o644)
    # every directory above dest must be traversable too
    for parent in dest.parents:
        if parent.stat().st_mode & 0o001 == 0:
            raise AssertionError(f"{parent} is not traversable by others: choose a public place for {dest}")
    return dest


def unprivileged_python() -> str:
    """An interpreter of this Python version that the unprivileged user (``SETPRIV``) can execute.

    This venv's own ``python`` when the checkout is public, else the base interpreter (the venv's link
    target, or ``pythonX.Y`` on PATH). AssertionError naming the candidates when none works."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    base = getattr(sys, "_base_executable", "") or ""
    candidates = [
        sys.executable,
        os.path.realpath(sys.executable),
        base,
        os.path.realpath(base) if base else "",
        shutil.which(f"python{want}") or "",
        f"/usr/bin/python{want}",
        f"/usr/local/bin/python{want}",
    ]
    tried: list[str] = []
    for py in dict.fromkeys(c for c in candidates if c):
        tried.append(py)
        try:
            res = subprocess.run(
                [*SETPRIV, py, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                cwd="/",
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if res.returncode == 0 and res.stdout.strip() == want:
            return py
    raise AssertionError(f"no Python {want} that uid {NOBODY} can execute among {tried}")
