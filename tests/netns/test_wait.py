"""wait_until: bounded polling (no namespaces needed)."""

from __future__ import annotations

import time

import pytest

from netns import LabError, WaitAborted, WaitTimeout, dead, wait_until
from netns.stack import UNKNOWN, VipMonitor


def test_returns_first_truthy_value() -> None:
    values = iter([0, None, "", 7, 8])
    assert wait_until(lambda: next(values), timeout=30, interval=0.001) == 7  # returns at the 4th poll


def test_timeout_reports_last_value() -> None:
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: [], timeout=0.2, interval=0.01, what="a list")
    assert time.monotonic() - t0 >= 0.2  # no early give-up (the upper bound is the scheduler's business)
    assert info.value.last == []
    assert "a list" in str(info.value)


def test_exceptions_count_as_not_yet() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionRefusedError("not yet")
        return "up"

    assert wait_until(flaky, timeout=30, interval=0.001) == "up"  # returns at the 3rd poll
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: 1 / 0, timeout=0.05, interval=0.01)
    assert isinstance(info.value.last, ZeroDivisionError)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_fail_if_aborts_at_once() -> None:
    polls: list[int] = []
    alive = iter([True, True, False])

    def pred() -> bool:
        polls.append(1)
        return False

    with pytest.raises(WaitAborted) as info:
        wait_until(
            pred, timeout=3600, interval=0.001, what="flow", fail_if=lambda: None if next(alive) else "died"
        )
    assert len(polls) == 2  # checked before every poll; no poll after it failed
    assert info.value.reason == "died" and "gave up waiting for flow: died" in str(info.value)


def test_fail_if_success_still_returns() -> None:
    assert wait_until(lambda: 5, timeout=30, fail_if=lambda: None) == 5


class _Proc:
    def __init__(self, name: str, code: int | None) -> None:
        self.name, self.returncode = name, code

    def alive(self) -> bool:
        return self.returncode is None

    def output(self) -> str:
        return "line1\ntraceback: boom\n"


def test_dead_names_the_first_exited_process() -> None:
    running, gone = _Proc("pub0", None), _Proc("pub1", 2)
    assert dead(running, None) is None
    why = dead(running, gone)  # type: ignore[arg-type]
    assert why is not None and why.startswith("pub1 exited with 2:") and "boom" in why


class _LB:
    def __init__(self, name: str) -> None:
        self.name = name
        self.vip: bool | Exception = False

    def has_vip(self) -> bool:
        if isinstance(self.vip, Exception):
            raise self.vip
        return self.vip


def test_vip_monitor_marks_a_failed_read_unknown_and_reports_it() -> None:
    lb1, lb2 = _LB("lb1"), _LB("lb2")
    mon = VipMonitor([lb1, lb2])  # type: ignore[list-item]
    lb1.vip = True
    mon.sample()
    mon.check()  # no error yet
    lb1.vip = OSError("netlink socket gone")
    mon.sample()
    assert mon.holders() == UNKNOWN  # not the last known holders
    lb1.vip, lb2.vip = False, True
    mon.sample()
    assert [h for _t, h in mon.transitions] == [("lb1",), UNKNOWN, ("lb2",)]
    assert mon.first_holding_after(mon.transitions[1][0], "lb2") == mon.transitions[2][0]
    assert "<unknown>" in mon.timeline()[1]
    with pytest.raises(LabError, match=r"could not read the VIP 1 times: .*OSError: netlink socket gone"):
        mon.check()


def test_wait_master_gives_up_when_the_expected_master_is_dead() -> None:
    from netns.stack import Stack

    lb1, lb2 = _LB("lb1"), _LB("lb2")
    lb1.vip = True  # the crashed master still has the VIP configured
    lb2.vrrp, lb2.balancer = _Proc("vrrpd-1", -9), _Proc("tcplb-1", None)  # type: ignore[attr-defined]
    st = Stack(None, None, None, None, lbs={"lb1": lb1, "lb2": lb2})  # type: ignore[arg-type,dict-item]
    t0 = time.monotonic()
    with pytest.raises(WaitAborted, match="vrrpd-1 exited with -9"):
        st.wait_master("lb2", timeout=3600)
    assert time.monotonic() - t0 < 60
