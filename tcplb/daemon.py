"""Process lifecycle: event loop choice, signals, reload, graceful stop."""

from __future__ import annotations

import asyncio


def new_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """A new event loop: ``uvloop`` (default) or stock ``asyncio``."""
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    if kind == "asyncio":
        return asyncio.new_event_loop()
    raise ValueError(f"unknown loop {kind!r} (uvloop or asyncio)")
