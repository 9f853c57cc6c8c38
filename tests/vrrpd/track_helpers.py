"""Shared by the track/script tests: a loop fixture (stock asyncio and uvloop) and bounded polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from helpers import wait_for as _wait_for

T = TypeVar("T")
Runner = Callable[[Callable[[], Awaitable[Any]]], Any]

READY = 30.0  # the default bound: these waits are for a script or process to run, which a busy machine delays


async def wait_for(pred: Callable[[], object], timeout: float = READY, what: str = "") -> Any:
    """tests/helpers.py's bounded polling, with a bound generous enough for process start-up under load."""
    return await _wait_for(pred, timeout, what)


@pytest.fixture(params=["asyncio", "uvloop"])
def run_loop(request: pytest.FixtureRequest) -> Runner:
    factory: Any = None
    if request.param == "uvloop":
        import uvloop  # a dependency: missing is an error, not a skip

        factory = uvloop.new_event_loop

    def runner(fn: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            return await fn()

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(main())

    return runner
