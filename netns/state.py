"""Lab state files and the cleanup that works from them alone.

Every :class:`netns.Lab` records what it created (namespaces, ``/etc/netns`` directories, processes with
their start times, its work directory) in a JSON file under :data:`STATE_DIR`. The same file drives three
cleanups that must not depend on the Python object still existing:

* the reaper process (``netns._reaper``) when the owning process dies without tearing down (SIGKILL,
  ``os._exit`` from a watchdog),
* ``python -m netns down`` for a lab started by ``python -m netns up``,
* :meth:`netns.Lab.teardown` itself, which calls :func:`cleanup` after the graceful steps.

This module imports nothing heavy (no pyroute2) so the reaper starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ.get("NETNS_LAB_STATE_DIR", "/run/netns-lab"))
ETC_NETNS = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")


def state_path(uid: str) -> Path:
    return STATE_DIR / f"{uid}.json"


def write_state(uid: str, data: dict[str, Any]) -> Path:
    """Atomically (re)write the state file of lab ``uid``."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = state_path(uid)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def all_states() -> list[tuple[Path, dict[str, Any]]]:
    out: list[tuple[Path, dict[str, Any]]] = []
    if not STATE_DIR.is_dir():
        return out
    for path in sorted(STATE_DIR.glob("*.json")):
        data = read_state(path)
        if data is not None:
            out.append((path, data))
    return out


def proc_starttime(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process(pid: int, starttime: int | None) -> bool:
    """True if ``pid`` still names the process recorded with ``starttime`` (guards against PID reuse)."""
    now = proc_starttime(pid)
    return now is not None and (starttime is None or now == starttime)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); it is dead for our purposes
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rfind(")") + 2 :].split()[0:1] != ["Z"]


def netns_inode(ns: str) -> int | None:
    try:
        return os.stat(NETNS_RUN / ns).st_ino
    except OSError:
        return None


def pids_in_netns(ns: str) -> list[int]:
    """PIDs of every process whose network namespace is ``ns`` (what ``ip netns pids`` prints)."""
    ino = netns_inode(ns)
    if ino is None:
        return []
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino == ino:
                found.append(int(entry.name))
        except OSError:
            continue
    return [p for p in found if p != os.getpid()]


def kill_group_or_pid(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` (our processes are session leaders), else the PID alone."""
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def sweep_namespaces(namespaces: list[str], timeout: float = 3.0) -> list[int]:
    """SIGKILL every process still inside our namespaces (descendants of processes we started).

    Returns the PIDs that were found. Our namespaces have names no one else uses, so whatever runs in them
    was started by us or by a process we started (for example epmd auto-spawned by Erlang).
    """
    found: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for ns in namespaces for p in pids_in_netns(ns)]
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            return found
        for pid in pids:
            if pid not in found:
                found.append(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def delete_netns(ns: str) -> None:
    if not (NETNS_RUN / ns).exists():
        return
    res = subprocess.run(["ip", "netns", "delete", ns], capture_output=True, text=True, check=False)
    if res.returncode != 0 and (NETNS_RUN / ns).exists():
        raise OSError(f"ip netns delete {ns}: {res.stderr.strip()}")


def cleanup(data: dict[str, Any], *, keep_workdir: bool = False) -> list[str]:
    """Undo everything a state record lists. Idempotent; returns the errors met (never raises)."""
    errors: list[str] = []
    procs: list[dict[str, Any]] = list(data.get("procs", []))
    namespaces: list[str] = list(data.get("namespaces", []))
    live = [p for p in procs if same_process(int(p["pid"]), p.get("starttime"))]
    for p in live:
        kill_group_or_pid(int(p["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while any(pid_alive(int(p["pid"])) for p in live) and time.monotonic() < deadline:
        time.sleep(0.02)
    sweep_namespaces(namespaces)
    for ns in namespaces:
        try:
            delete_netns(ns)
        except OSError as exc:
            errors.append(str(exc))
    for d in data.get("etc_dirs", []):
        path = Path(d)
        if path.parent == ETC_NETNS:
            shutil.rmtree(path, ignore_errors=True)
    workdir = data.get("workdir")
    if workdir and not keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    for extra in data.get("extra_dirs", []):
        shutil.rmtree(extra, ignore_errors=True)
    return errors
