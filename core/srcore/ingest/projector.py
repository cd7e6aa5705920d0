"""Result processing off the ack path: latest host and check state, checker states, sweep totals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from srcore.domain.processing import ProcessingPolicy
from srcore.store.database import Database
from srcore.store.processing import process_pending

log = logging.getLogger(__name__)


class Projector:
    """Runs after each local flush, and periodically for flushes other replicas left behind.

    The periodic round also closes sweep executions whose last flushes another replica
    projected, so no execution waits for new traffic to be closed.
    """

    def __init__(
        self,
        db: Database,
        policy: ProcessingPolicy,
        clock: Callable[[], datetime],
        replica_id: str,
        fencing_token: Callable[[], int],
        poll_interval: float = 5.0,
    ) -> None:
        self._db = db
        self._policy = policy
        self._clock = clock
        self._replica_id = replica_id
        self._fencing_token = fencing_token
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
        """Process every pending flush (and close every ready execution) now; returns how many."""
        total = 0
        while handled := await process_pending(
            self._db, self._policy, self._clock(), self._replica_id, self._fencing_token()
        ):
            total += handled
        return total

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.drain()
            except Exception as exc:
                log.warning("result processing failed, will retry: %s", exc)
            if self._stopping:
                return
