"""Issue 11 regressions in the script runner: notify_stop at SIGTERM (defect 7), a hung notify script holding
back later ones, a changed script definition on SIGHUP clearing a FAULT (defect 8), scripts that cannot be
executed (defect 4). Each test failed before its fix. Every test runs on stock asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from track_helpers import Runner, run_loop, wait_for

from vrrpd.config import ScriptConfig
from vrrpd.scripts import NotifyQueue, RunAs, TrackScript, resolve_user

__all__ = ["run_loop"]


def me() -> RunAs:
    return resolve_user(None)


def sh(cmd: str) -> list[str]:
    return ["/bin/sh", "-c", cmd]


# ------------------------------------------------------------------------------------ defect 7: notify_stop


def test_notify_stop_runs_even_when_a_notify_master_hangs_at_sigterm(
    run_loop: Runner, tmp_path: Path
) -> None:
    out = tmp_path / "out"

    async def go() -> tuple[float, list[str], int]:
        loop = asyncio.get_running_loop()
        q = NotifyQueue(me(), 10.0, security=False)
        q.start()
        q.put(sh(f"echo master >> {out}; exec sleep 30"), "VI_1 notify_master")
        await wait_for(lambda: out.exists(), what="notify_master started")
        q.put(sh(f"echo stop >> {out}"), "VI_1 notify_stop", final=True)
        t0 = loop.time()
        await q.close(0.3)  # the shutdown budget
        return loop.time() - t0, out.read_text().split(), q.killed

    took, lines, killed = run_loop(go)
    assert lines == ["master", "stop"] and killed == 1
    assert took < 3.0  # budget 0.3 s + the stop notify (own timeout), not notify_master's 10 s


def test_stop_notify_has_its_own_timeout_and_skipped_ones_are_counted(
    run_loop: Runner, tmp_path: Path
) -> None:
    out = tmp_path / "out"

    async def go() -> tuple[float, list[str], int, int]:
        loop = asyncio.get_running_loop()
        # stop_timeout 1 s (was 0.4 s): stop1 must have started and written its line before it is killed
        q = NotifyQueue(me(), 10.0, security=False, stop_timeout=1.0)
        q.start()
        q.put(sh("exec sleep 30"), "VI_1 notify_master")
        q.put(sh(f"echo backup >> {out}"), "VI_1 notify_backup")
        q.put(sh(f"echo stop1 >> {out}; exec sleep 30"), "VI_1 notify_stop", final=True)
        q.put(sh(f"echo stop2 >> {out}"), "VI_2 notify_stop", final=True)
        t0 = loop.time()
        await q.close(0.2)
        return loop.time() - t0, out.read_text().split(), q.skipped, q.killed

    took, lines, skipped, killed = run_loop(go)
    assert lines == ["stop1", "stop2"] and skipped == 1 and killed == 2
    assert took < 4.0


# -------------------------------------------------------------------------- defect 8: a hung notify script


def test_a_hung_notify_does_not_hold_back_the_next_one_by_its_whole_timeout(
    run_loop: Runner, tmp_path: Path
) -> None:
    out = tmp_path / "out"

    async def go() -> tuple[float, list[str]]:
        loop = asyncio.get_running_loop()
        q = NotifyQueue(me(), 20.0, security=False, handoff=0.3)
        q.start()
        q.put(sh(f"echo master >> {out}; exec sleep 30"), "VI_1 notify_master")
        await wait_for(lambda: out.exists(), what="notify_master started")
        t0 = loop.time()
        q.put(sh(f"echo backup >> {out}"), "VI_1 notify_backup")
        await wait_for(lambda: "backup" in out.read_text(), timeout=10, what="notify_backup ran")
        took = loop.time() - t0
        q.stop()
        return took, out.read_text().split()

    took, lines = run_loop(go)
    assert lines == ["master", "backup"]  # the order is kept
    assert took < 5.0  # handoff 0.3 s (+ kill), not notify_timeout 20 s


def test_a_lone_slow_notify_keeps_its_full_timeout(run_loop: Runner, tmp_path: Path) -> None:
    out = tmp_path / "out"

    async def go() -> int:
        q = NotifyQueue(me(), 5.0, security=False, handoff=0.05)
        q.start()
        q.put(sh(f"sleep 0.3; echo done >> {out}"), "VI_1 notify_master")
        assert await q.drain(5)
        q.stop()
        return q.killed

    assert run_loop(go) == 0 and out.read_text().split() == ["done"]


# ------------------------------------------------------------------- defect 8: SIGHUP and a script's state


def failing_script(tmp_path: Path, rise: int = 1, fall: int = 1, interval: float = 0.05) -> ScriptConfig:
    flag = tmp_path / "ok"  # never created: the check fails
    return ScriptConfig(
        "chk", ("/usr/bin/test", "-e", str(flag)), interval=interval, timeout=1, rise=rise, fall=fall
    )


def test_reload_with_a_changed_definition_keeps_a_fault(run_loop: Runner, tmp_path: Path) -> None:
    changes: list[bool] = []

    async def go() -> list[object]:
        cfg = failing_script(tmp_path, rise=2, fall=2)
        ts = TrackScript(cfg, me(), lambda n, ok: changes.append(ok), security=False)
        ts.start()
        await wait_for(lambda: changes == [False], what="first failure")
        seen: list[object] = [ts.status()["state"]]
        # interval and rise change: the same command, the state is kept (keepalived keeps it too)
        ts.reconfigure(failing_script(tmp_path, rise=3, fall=2, interval=0.04), me(), security=False)
        seen.append(ts.status()["state"])
        runs = ts.runs
        await wait_for(lambda: ts.runs >= runs + 3, what="more runs")
        seen.append(ts.ok)
        # a changed command: INIT, holding FAIL until the new command's first result
        ok_cmd = ScriptConfig("chk", ("/bin/sh", "-c", "exec sleep 0.3"), interval=0.05, timeout=2, rise=3)
        ts.reconfigure(ok_cmd, me(), security=False)
        seen.append(ts.ok)
        seen.append((ts.status()["state"], ts.status()["first_result_pending"]))
        await wait_for(lambda: len(changes) == 2, what="the new command's first result")
        seen.append(ts.ok)
        ts.stop()
        return seen

    seen = run_loop(go)
    assert seen == ["FAIL", "FAIL", False, False, ("FAIL", True), True]
    assert changes == [False, True]  # never OK before a result; the first success decides (INIT)


def test_reload_without_changes_is_a_no_op(run_loop: Runner, tmp_path: Path) -> None:
    async def go() -> bool:
        cfg = failing_script(tmp_path)
        ts = TrackScript(cfg, me(), lambda n, ok: None, security=False)
        ts.start()
        task = ts._task
        ts.reconfigure(cfg, me(), security=False)
        same = ts._task is task
        ts.stop()
        return same

    assert run_loop(go)


# ----------------------------------------------------------------- defect 4: a script that cannot be run


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: (p.write_text("#!/bin/sh\nexit 0\n"), p.chmod(0o644), (str(p),))[2], "cannot run"),
        (lambda p: (str(p),), "cannot run"),  # missing file
        (lambda p: ("/bin/sh", "-c", "exit 127"), "was not found (exit 127)"),
        (lambda p: ("/bin/sh", "-c", "exit 126"), "cannot be executed (exit 126"),
    ],
)
def test_a_script_that_cannot_be_executed_fails_and_says_so(
    run_loop: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture, make: object, needle: str
) -> None:
    argv = make(tmp_path / "check.sh")  # type: ignore[operator]
    changes: list[bool] = []

    async def go() -> object:
        ts = TrackScript(
            ScriptConfig("chk", argv, interval=0.05, timeout=1, fall=3),
            me(),
            lambda n, ok: changes.append(ok),
            security=False,
        )
        ts.start()
        await wait_for(lambda: changes, what="a verdict")
        ts.stop()
        return ts.status()["state"]

    with caplog.at_level(logging.INFO, logger="vrrpd"):
        state = run_loop(go)
    assert changes == [False] and state == "FAIL"  # the first result counts at once (INIT), fall 3 or not
    assert any(needle in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["quick", "slow", "hung"]), min_size=1, max_size=5))
def test_notify_order_is_kept_and_no_script_is_starved(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[str]
) -> None:
    """Whatever mix of quick, slow and hung scripts: each one starts after the previous one ended (the order
    of the state changes), every one starts, and a hung one holds the next back by the handoff only."""
    out = tmp_path_factory.mktemp("order") / "out"
    body = {"quick": "", "slow": "sleep 0.1", "hung": "exec sleep 30"}

    async def go() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        # handoff 0.5 s (was 0.2 s): each script must have started and written its line before a handoff kills
        # it, and a busy machine may take a few hundred ms to start /bin/sh
        q = NotifyQueue(me(), 20.0, security=False, handoff=0.5)
        q.start()
        t0 = loop.time()
        for i, k in enumerate(kinds):
            q.put(sh(f"echo start{i} >> {out}; {body[k]}"), f"n{i}")
        await wait_for(lambda: out.exists() and f"start{len(kinds) - 1}" in out.read_text(), timeout=20)
        took = loop.time() - t0
        q.stop()
        return out.read_text().split(), took

    lines, took = asyncio.run(go())
    assert lines == [f"start{i}" for i in range(len(kinds))]
    assert took < 3.0 + 0.8 * len(kinds)  # at most a handoff (+ kill) per hung script, never notify_timeout
