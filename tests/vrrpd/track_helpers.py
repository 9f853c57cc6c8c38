"""Shared by the track/script tests: a loop fixture (stock asyncio and uvloop) and bounded polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from helpers import wait_for as wait_for  # re-exported (one copy: tests/helpers.py)

T = TypeVar("T")
Runner = Callable[[Callable[[], Awaitable[Any]]], Any]


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
