"""Waiting in tests: `until` polls a condition and fails loudly; `fence` proves "nothing more".

Never "sleep, then assert nothing more came": a sleep that is too short passes a broken build.
A fence publishes a sentinel after the thing that must not arrive and waits for the sentinel;
streams deliver in order, so once it is there anything that was coming has come.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], bool],
    timeout: float = 10.0,
    what: str | Callable[[], str] = "the condition",
    interval: float = 0.01,
) -> None:
    """Return once condition() is true; fail, naming `what`, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {described}")
        await asyncio.sleep(interval)


async def fence(
    publish_sentinel: Callable[[], Awaitable[object]],
    seen: Callable[[], bool],
    timeout: float = 10.0,
) -> None:
    """Publish a sentinel and wait until seen() reports it: everything before it has arrived."""
    await publish_sentinel()
    await until(seen, timeout, "the fence's sentinel")
