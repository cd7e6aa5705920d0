"""Result processing off the ack path: latest host and check state, checker states, sweep totals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from srcore.domain.processing import ProcessingPolicy
from srcore.ingest.rounds import RoundLoop
from srcore.ingest.writer import CommittedFlush
from srcore.store.database import Database
from srcore.store.flush_reads import FLUSH_INDEXES, TIME_INDEXES, RangeSummarizer
from srcore.store.processing import process_pending

# A pause this long between flushes ends a burst: processing starts then.
BURST_GAP = 0.1
# How often the raw tables' observation-time indexes are brought up to date (store/flush_reads):
# time-filtered reads scan at most this much unsummarised tail.
TIME_INDEX_INTERVAL = 60.0


class Projector(RoundLoop):
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
        super().__init__("latest-state-projector", poll_interval)
        self._db = db
        self._policy = policy
        self._clock = clock
        self._replica_id = replica_id
        self._fencing_token = fencing_token
        self._max_lag = max_lag
        self._first_pending: float | None = None
        self._last_flush = 0.0
        self._summarizer = RangeSummarizer(db)
        self._time_indexes_at = -TIME_INDEX_INTERVAL

    def notify(self, _flush: CommittedFlush) -> None:
        """A flush committed: project soon."""
        now = time.monotonic()
        if self._first_pending is None:
            self._first_pending = now
        self._last_flush = now
        self._wakeup.set()

    async def drain(self) -> int:
        """Process every pending flush (and close every ready execution) now; returns how many."""
        total = 0
        while True:
            await self._summarizer.catch_up(self._indexes_to_summarize())
            handled = await process_pending(
                self._db, self._policy, self._clock(), self._replica_id, self._fencing_token()
            )
            if not handled:
                return total
            total += handled

    def _indexes_to_summarize(self) -> tuple[str, ...]:
        """The flush indexes the round reads by, plus the time indexes when they are due."""
        now = time.monotonic()
        if now - self._time_indexes_at < TIME_INDEX_INTERVAL:
            return FLUSH_INDEXES
        self._time_indexes_at = now
        return FLUSH_INDEXES + TIME_INDEXES

    async def _before_drain(self) -> None:
        """Wait while flushes keep coming, at most until the oldest is `max_lag` old."""
        while not self._stopping and self._first_pending is not None:
            now = time.monotonic()
            lull, due = self._last_flush + BURST_GAP, self._first_pending + self._max_lag
            if now >= lull or now >= due:
                break
            await asyncio.sleep(min(lull, due) - now)
        self._first_pending = None
