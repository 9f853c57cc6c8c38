"""vrrpd.procwatch: track_process on real processes. An exit is seen through the process's pidfd (not a scan:
the scan interval here is a minute), new processes are found by the /proc scan. Runs on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from track_helpers import Runner, run_loop, wait_for

from vrrpd.config import ProcessConfig
from vrrpd.procwatch import ProcessTracker, ProcessWatcher, ProcInfo, matches, read_proc

__all__ = ["run_loop"]


def sleeper(tag: str) -> subprocess.Popen[bytes]:
    # `sleep` with a unique argument: only this test's processes match; Popen does not reap it on its own,
    # so a killed one stays a zombie until wait() (zombies must not count)
    proc = subprocess.Popen(["sleep", f"1000.{tag}"])
    # Popen may return (vfork) before the kernel has set up the new program's argv: /proc/PID/cmdline is
    # empty for that moment, and a scan would not match. Wait (bounded) until the process shows its argv.
    want = f"sleep\0{'1000.' + tag}\0".encode()
    deadline = time.monotonic() + 10.0
    while True:
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                if f.read() == want:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"sleeper {proc.pid} never showed its argv")
        time.sleep(0.005)


def spec(tag: str, **kw: object) -> ProcessConfig:
    return ProcessConfig(
        name="sl",
        process="sleep",
        params=(f"1000.{tag}",),
        full_command=True,
        **kw,  # type: ignore[arg-type]
    )


def tag() -> str:
    return str(uuid.uuid4().int % 10**9)


def test_exit_is_seen_at_once_through_the_pidfd(run_loop: Runner) -> None:
    t = tag()
    procs = [sleeper(t)]
    try:

        async def go() -> tuple[list[bool], float, float]:
            loop = asyncio.get_running_loop()
            changes: list[bool] = []
            changed = asyncio.Event()

            def on_change(name: str, up: bool) -> None:
                changes.append(up)
                changed.set()

            tr = ProcessTracker([spec(t, scan_interval=60.0)], on_change)
            tr.start()  # the first scan: UP at once
            assert changes == [True] and tr.verdict("sl") is True
            assert tr.status("sl")["pids"] == [procs[0].pid]
            changed.clear()
            t0 = loop.time()
            procs[0].send_signal(signal.SIGKILL)  # not reaped: a zombie
            await asyncio.wait_for(changed.wait(), 5.0)
            took = loop.time() - t0
            scans = tr.watcher.scans
            tr.stop()
            return changes, took, float(scans)

        changes, took, scans = run_loop(go)
        assert changes == [True, False]
        assert took < 1.0  # generous: one loop iteration in practice
        assert scans == 1  # the exit came from the pidfd, not from a scan
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_new_processes_are_found_by_the_scan_and_quorum_applies(run_loop: Runner) -> None:
    t = tag()
    procs: list[subprocess.Popen[bytes]] = []
    try:

        async def go() -> list[bool]:
            changes: list[bool] = []
            tr = ProcessTracker(
                [spec(t, quorum=2, quorum_max=2, scan_interval=0.05)], lambda n, up: changes.append(up)
            )
            tr.start()
            assert changes == [False]  # none running
            procs.append(sleeper(t))
            await wait_for(lambda: tr.quorum["sl"].count == 1, what="first process found")
            assert changes == [False]
            procs.append(sleeper(t))
            await wait_for(lambda: changes == [False, True], what="quorum gained")
            procs.append(sleeper(t))
            await wait_for(lambda: changes == [False, True, False], what="quorum_max exceeded")
            procs[-1].kill()
            await wait_for(lambda: changes == [False, True, False, True], what="back within quorum")
            tr.stop()
            return changes

        assert run_loop(go) == [False, True, False, True]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_terminate_delay_absorbs_a_quick_restart(run_loop: Runner) -> None:
    t = tag()
    procs = [sleeper(t)]
    try:

        async def go() -> list[bool]:
            changes: list[bool] = []
            tr = ProcessTracker(
                [spec(t, terminate_delay=1.0, scan_interval=0.02)], lambda n, up: changes.append(up)
            )
            tr.start()
            procs[0].kill()
            procs.append(sleeper(t))  # restarted before the delay ends: nothing happens
            await wait_for(lambda: tr.quorum["sl"].count == 1 and tr.watcher.pids("sl") == [procs[1].pid])
            assert changes == [True] and tr.quorum["sl"].next_deadline() is None  # the delay was cancelled
            procs[1].kill()
            await wait_for(lambda: changes == [True, False], what="down after terminate_delay")
            tr.stop()
            return changes

        assert run_loop(go) == [True, False]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_matching_rules_and_proc_reading() -> None:
    me = read_proc(os.getpid(), True)
    assert me is not None and me.pid == os.getpid() and me.argv is not None and me.comm
    by_comm = ProcessConfig("a", "tcplb")
    assert matches(by_comm, ProcInfo(1, "tcplb", None))
    assert not matches(by_comm, ProcInfo(1, "tcplb2", None))
    full = ProcessConfig(
        "b", "/usr/bin/python3", params=("-m", "tcplb"), param_match="partial", full_command=True
    )
    assert matches(full, ProcInfo(1, "python3", ("/usr/bin/python3", "-m", "tcplb", "-c", "x")))
    assert not matches(full, ProcInfo(1, "python3", ("/usr/bin/python3", "-m", "vrrpd")))
    assert not matches(full, ProcInfo(1, "python3", None))
    argv0 = ProcessConfig("c", "/usr/bin/tcplb", full_command=True)
    assert matches(argv0, ProcInfo(1, "tcplb", ("/usr/bin/tcplb", "-c", "x")))
    assert read_proc(2**22 + 7, False) is None


def test_reconfigure_rematches(run_loop: Runner) -> None:
    t = tag()
    procs = [sleeper(t)]
    try:

        async def go() -> list[tuple[str, bool]]:
            changes: list[tuple[str, bool]] = []
            tr = ProcessTracker([spec(t, scan_interval=60.0)], lambda n, up: changes.append((n, up)))
            tr.start()
            other = ProcessConfig("sl", "sleep", params=("nope",), full_command=True, scan_interval=60.0)
            tr.reconfigure([other])  # the same name, another process: re-matched at once, verdict kept
            assert tr.quorum["sl"].count == 0
            tr.stop()
            return changes

        assert run_loop(go) == [("sl", True), ("sl", False)]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_watcher_without_specs_never_scans_again(run_loop: Runner) -> None:
    async def go() -> int:
        w = ProcessWatcher([], lambda c: None)
        w.start()
        await asyncio.sleep(0)
        w.stop()
        return w.scans

    assert run_loop(go) == 1


@pytest.mark.parametrize("stat", [b"12 (a b) Z 1", b"garbage"])
def test_read_proc_skips_zombies_and_garbage(tmp_path: Path, stat: bytes) -> None:
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "stat").write_bytes(stat)
    assert read_proc(12, False, str(tmp_path)) is None


def test_without_pidfds_the_scan_sees_exits(run_loop: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    """pidfd_open refused (kernel < 5.3, seccomp): logged, and an exit is seen by the next scan instead."""
    import errno

    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused)
    t = tag()
    procs = [sleeper(t)]
    try:

        async def go() -> tuple[list[bool], bool]:
            changes: list[bool] = []
            tr = ProcessTracker([spec(t, scan_interval=0.05)], lambda n, up: changes.append(up))
            tr.start()
            procs[0].kill()  # a zombie until wait(): still "gone" for the scan (state Z)
            await wait_for(lambda: changes == [True, False], what="exit seen by the scan")
            tr.stop()
            return changes, tr.watcher.pidfds

        changes, pidfds = run_loop(go)
        assert changes == [True, False] and not pidfds
    finally:
        for p in procs:
            p.kill()
            p.wait()
