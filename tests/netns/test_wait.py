"""wait_until: bounded polling (no namespaces needed)."""

from __future__ import annotations

import time

import pytest

from netns import WaitTimeout, wait_until


def test_returns_first_truthy_value() -> None:
    values = iter([0, None, "", 7, 8])
    assert wait_until(lambda: next(values), timeout=1, interval=0.001) == 7


def test_timeout_reports_last_value() -> None:
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: [], timeout=0.2, interval=0.01, what="a list")
    assert 0.2 <= time.monotonic() - t0 < 1.0
    assert info.value.last == []
    assert "a list" in str(info.value)


def test_exceptions_count_as_not_yet() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionRefusedError("not yet")
        return "up"

    assert wait_until(flaky, timeout=1, interval=0.001) == "up"
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: 1 / 0, timeout=0.05, interval=0.01)
    assert isinstance(info.value.last, ZeroDivisionError)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
