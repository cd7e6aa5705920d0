"""Waiting for something another process or task does, without timing assertions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> bool:
    """Poll `predicate()` (sync or async) until it is true; False when `timeout` passes first.

    The timeout only bounds how long a broken system is waited for: callers assert the result.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
