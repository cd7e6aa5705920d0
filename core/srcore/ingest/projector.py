"""Result processing off the ack path: latest host and check state, checker states, sweep totals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from srcore.domain.processing import ProcessingPolicy
from srcore.ingest.writer import CommittedFlush
from srcore.store.database import Database
from srcore.store.processing import process_pending

log = logging.getLogger(__name__)


# A pause this long between flushes ends a burst: processing starts then.
BURST_GAP = 0.1


class Projector:
    """Runs after local flushes, and periodically for flushes other replicas left behind.

    During a burst of flushes it waits for a lull, or until the oldest unprocessed flush is
    `max_lag` seconds old, then processes everything pending in large rounds: the writer keeps
    the CPU while edges stream, and the latest state is never more than about `max_lag` behind.
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
        max_lag: float = 1.0,
    ) -> None:
        self._db = db
        self._policy = policy
        self._clock = clock
        self._replica_id = replica_id
        self._fencing_token = fencing_token
        self._poll_interval = poll_interval
        self._max_lag = max_lag
        self._first_pending: float | None = None
        self._last_flush = 0.0
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def notify(self, _flush: CommittedFlush) -> None:
        """A flush committed: project soon."""
        now = time.monotonic()
        if self._first_pending is None:
            self._first_pending = now
        self._last_flush = now
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
            await self._lull()
            self._first_pending = None
            try:
                await self.drain()
            except Exception as exc:
                log.warning("result processing failed, will retry: %s", exc)
            if self._stopping:
                return

    async def _lull(self) -> None:
        """Wait while flushes keep coming, at most until the oldest is `max_lag` old."""
        while not self._stopping and self._first_pending is not None:
            now = time.monotonic()
            lull, due = self._last_flush + BURST_GAP, self._first_pending + self._max_lag
            if now >= lull or now >= due:
                return
            await asyncio.sleep(min(lull, due) - now)
