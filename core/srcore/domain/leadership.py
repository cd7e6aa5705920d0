"""Leader-only work: the handle a job runs under, and the fence that refuses a deposed leader.

Exactly one replica runs the singleton jobs (liveness monitor, expiries, later reassignment and
escalation). Leadership comes from coordination, and coordination can only say who led a moment
ago: a leader paused between "am I leader?" and its write (a GC pause, SIGSTOP, a slow disk)
may wake up deposed. So every write made on behalf of leadership also passes the fence in the
store, in the same transaction: it records the newest leadership that wrote, and refuses a
write under an older one (`Fenced`). The job runner (coord/jobs.py) stops the jobs of a
leadership the fence refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from srcore.domain.coordination import LeaderInfo


class Fenced(Exception):
    """A write made on behalf of a leadership was refused: a later leadership has written."""


class LeadershipFence(Protocol):
    """The store's record of the newest leadership (store/fence.py implements it)."""

    async def claim(self, leader: LeaderInfo) -> None:
        """Record `leader` as the newest leadership; raises Fenced when a later one wrote."""


class Leadership:
    """The leadership one job runs under: its fencing token, and the signal to stop.

    Jobs stop cooperatively: at their next `sleep()` they learn that leadership ended and
    return. A write in flight when leadership ends is not cut off half way; it reaches the
    fence, which refuses it if a later leader has written meanwhile.
    """

    def __init__(self, info: LeaderInfo) -> None:
        self.info = info
        self._stopping = False
        self._wakeup = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """Whether the job should return."""
        return self._stopping

    def stop(self) -> None:
        """Tell the job to return at its next sleep (or at once when it sleeps now)."""
        self._stopping = True
        self._wakeup.set()

    def wake(self) -> None:
        """End the job's current sleep early (something happened that it should look at)."""
        self._wakeup.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, less when woken; False once the job should stop."""
        if not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._wakeup.wait()
            self._wakeup.clear()
        return not self._stopping


LeaderJob = Callable[[Leadership], Awaitable[None]]
"""A leader-only job: runs until `leadership.stopping`, then returns."""


def every(period: float, step: Callable[[LeaderInfo], Awaitable[object]]) -> LeaderJob:
    """A job that runs `step(leader)` once per `period` seconds, the first time at once."""

    async def job(leadership: Leadership) -> None:
        while not leadership.stopping:
            await step(leadership.info)
            if not await leadership.sleep(period):
                return

    return job
