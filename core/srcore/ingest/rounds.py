"""The lifecycle shared by the stages that run after the writer's flushes (projection, identity)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)


class RoundLoop(ABC):
    """Drains pending work when woken (after a local flush) and every `poll_interval` seconds.

    The periodic drain picks up flushes other replicas left behind. Stopping wakes the loop for
    one last drain, so work pending when `stop` is called is done before it returns. A failed
    drain is logged and retried at the next wake-up.
    """

    def __init__(self, name: str, poll_interval: float) -> None:
        self._name = name
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Drain what is pending, then stop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    @abstractmethod
    async def drain(self) -> int:
        """Do every pending piece of work now; returns how many."""

    async def _before_drain(self) -> None:
        """Runs between a wake-up and its drain; a stage that batches bursts waits here."""
        return

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            await self._before_drain()
            try:
                await self.drain()
            except Exception as exc:
                log.warning("%s failed, will retry: %s", self._name, exc)
            if self._stopping:
                return
