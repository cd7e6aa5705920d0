"""Keeps the latest-state tables (host_latest, check_latest) up to date, off the ack path."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from srcore.store.database import Database
from srcore.store.ingest import project_pending

log = logging.getLogger(__name__)


class Projector:
    """Runs after each local flush, and periodically for flushes other replicas left behind."""

    def __init__(self, db: Database, poll_interval: float = 5.0) -> None:
        self._db = db
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def notify(self, _flush_id: int) -> None:
        """A flush committed: project soon."""
        self._wakeup.set()

    def start(self) -> None:
        """Start the projection loop."""
        self._task = asyncio.create_task(self._run(), name="latest-state-projector")

    async def stop(self) -> None:
        """Project what is pending, then stop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def drain(self) -> int:
        """Project every pending flush now; returns how many."""
        total = 0
        while projected := await project_pending(self._db):
            total += projected
        return total

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)
            self._wakeup.clear()
            try:
                await self.drain()
            except Exception as exc:
                log.warning("latest-state projection failed, will retry: %s", exc)
            if self._stopping:
                return
