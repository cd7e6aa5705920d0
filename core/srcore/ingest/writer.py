"""The batching writer: chunks from many streams, one transaction per flush, fair by tenant.

Chunks wait in one FIFO per tenant. A flush takes chunks round-robin across tenants until
it holds `flush_rows` results, so one tenant's flood cannot starve another: every tenant
with work gets a turn in every flush, including a tenant whose one stream already has chunks
in the flush being committed. Two flushes may then hold chunks of one batch; the later one
moves that batch's ledger only after the earlier one has finished, so committed_index always
advances in order (and if the earlier one failed, the later one's chunks of that batch are
refused as out of order: the edge resumes from its last acknowledged chunk).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from serviceradar.edge.v1 import results_pb2
from srcore.domain.errors import Aborted, Unavailable
from srcore.domain.ingest import BatchRecord, BatchState, Budget, ResultKind, SweepCompletion
from srcore.ingest.rows import ChunkOrigin, Tally, check_rows, device_rows, payload_results, sweep_rows
from srcore.observability.metrics import (
    INGEST_FLUSH_ROWS,
    INGEST_FLUSH_SECONDS,
    INGEST_INFLIGHT_ROWS,
    INGEST_RESULTS,
)
from srcore.store.ingest import IngestStore, LedgerAdvance

log = logging.getLogger(__name__)

_ROW_BUILDERS = {
    ResultKind.SWEEP_HOSTS: sweep_rows,
    ResultKind.SERVICE_CHECKS: check_rows,
    ResultKind.DEVICE_UPDATES: device_rows,
}

BatchKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What the ack of a committed chunk reports."""

    committed_index: int
    accepted: int
    rejected: int
    first_reject: str
    state: BatchState


@dataclass(slots=True, eq=False)
class PendingChunk:
    """A chunk received and validated for order, waiting for its flush."""

    record: BatchRecord
    index: int
    final: bool
    completion: SweepCompletion
    chunk: results_pb2.ResultChunk
    size: int
    future: asyncio.Future[ChunkOutcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def key(self) -> BatchKey:
        """The batch this chunk belongs to."""
        return (self.record.tenant, self.record.poller_id, self.record.batch_id)


@dataclass(frozen=True, slots=True)
class CommittedFlush:
    """A flush just committed: its id and the rows it wrote, by result kind.

    Stages after the writer (processing, device identity) may use the rows while they are in
    memory instead of reading them back; the rows are in TABLES[kind] column order
    (srcore.store.ingest) and must not be modified.
    """

    flush_id: int
    rows: Mapping[ResultKind, Sequence[tuple[Any, ...]]]


@dataclass(slots=True)
class _Moves:
    """What one flush's ledger moves produced: rows to write, acks to give, chunks refused."""

    rows_by_kind: dict[ResultKind, list[tuple[Any, ...]]] = field(default_factory=dict)
    outcomes: list[tuple[PendingChunk, Tally]] = field(default_factory=list)
    conflicts: list[PendingChunk] = field(default_factory=list)
    advances: list[tuple[LedgerAdvance, list[PendingChunk]]] = field(default_factory=list)


class BatchingWriter:
    """Coalesces chunks into flushes; acks (resolves futures) only after commit."""

    def __init__(
        self,
        store: IngestStore,
        budget: Budget,
        clock: Callable[[], datetime],
        flush_rows: int = 5000,
        flush_delay: float = 0.002,
        writers: int = 1,
        on_flush: Callable[[CommittedFlush], None] | None = None,
    ) -> None:
        self._store = store
        self._budget = budget
        self._clock = clock
        self._flush_rows = flush_rows
        self._flush_delay = flush_delay
        self._writers = writers
        self._on_flush = on_flush
        self._queues: dict[str, deque[PendingChunk]] = {}
        self._rotation: deque[str] = deque()
        # The flush that last took chunks of each batch, until it finishes.
        self._inflight: dict[BatchKey, asyncio.Future[None]] = {}
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        """Start the writer tasks."""
        self._tasks = [
            asyncio.create_task(self._run(), name=f"ingest-writer-{i}") for i in range(self._writers)
        ]

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        self._stopping = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, pending: PendingChunk) -> None:
        """Queue a chunk; its future resolves once it is committed (or fails)."""
        tenant = pending.record.tenant
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = deque()
            self._rotation.append(tenant)
        queue.append(pending)
        self._budget.take(tenant, pending.size)
        self._queued_rows += pending.size
        INGEST_INFLIGHT_ROWS.set(self._budget.total)
        self._wakeup.set()

    def _take(self) -> list[PendingChunk]:
        """Chunks for one flush: each waiting tenant gets an equal share of the rows first.

        Max-min fairness: a tenant with less than its share leaves the rest to the others,
        and a share is at least one chunk so every waiting tenant progresses in every flush.
        """
        taken: list[PendingChunk] = []
        rows = 0
        share = self._flush_rows // max(1, len(self._rotation))
        for _ in range(2):
            for tenant in list(self._rotation):
                rows += self._take_from(tenant, share, taken)
            if rows >= self._flush_rows or not self._rotation:
                break
            # Second pass: what the first one left over goes to whoever still has work.
            share = self._flush_rows - rows
        # Whoever went first this time goes last next time.
        self._rotation.rotate(-1)
        self._queued_rows -= rows
        return taken

    def _take_from(self, tenant: str, share: int, taken: list[PendingChunk]) -> int:
        queue = self._queues[tenant]
        rows = 0
        while queue and rows < share:
            pending = queue.popleft()
            taken.append(pending)
            rows += pending.size
        if not queue:
            del self._queues[tenant]
            self._rotation.remove(tenant)
        return rows

    async def _run(self) -> None:
        while True:
            if not self._queues:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._queued_rows < self._flush_rows and not self._stopping:
                # A moment for more chunks to arrive, so a flush carries many of them.
                await asyncio.sleep(self._flush_delay)
            taken = self._take()
            if not taken:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            keys = {p.key for p in taken}
            earlier = {key: self._inflight[key] for key in keys if key in self._inflight}
            finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._inflight.update(dict.fromkeys(keys, finished))
            try:
                await self._flush(taken, earlier)
            except Exception as exc:
                log.warning("ingest flush of %d chunks failed: %s", len(taken), exc)
                failure = Unavailable(
                    "the store is unavailable: reconnect and resume from the last acknowledged chunk"
                )
                for pending in taken:
                    if not pending.future.done():
                        pending.future.set_exception(failure)
            finally:
                finished.set_result(None)
                for key in keys:
                    if self._inflight.get(key) is finished:
                        del self._inflight[key]
                for pending in taken:
                    self._budget.release(pending.record.tenant, pending.size)
                INGEST_INFLIGHT_ROWS.set(self._budget.total)
                self._wakeup.set()

    async def _prepare(
        self, chunks: list[PendingChunk], flush_id: int, now: datetime, received: Any
    ) -> tuple[list[tuple[Any, ...]], list[Tally], LedgerAdvance]:
        """Rows and counts of consecutive chunks of one batch, and the ledger move they make.

        The event loop gets a turn between chunks: building a whole flush's rows takes tens of
        milliseconds, which other calls (heartbeats, other streams' reads) should not wait out.
        """
        record = chunks[0].record
        encode = self._store.encode_timestamp
        build = _ROW_BUILDERS[record.kind]
        rows: list[tuple[Any, ...]] = []
        tallies = []
        for n, pending in enumerate(chunks):
            if n:
                await asyncio.sleep(0)
            chunk = pending.chunk
            observed = (
                encode(chunk.observed_at.ToDatetime(now.tzinfo))
                if chunk.HasField("observed_at")
                else received
            )
            origin = ChunkOrigin(
                record.tenant, record.partition, record.poller_id, record.agent_id,
                record.batch_id, pending.index, flush_id, record.execution_id,
            )  # fmt: skip
            tally = Tally()
            build(payload_results(chunk), origin, observed, received, encode, rows, tally)
            tallies.append(tally)
        last = chunks[-1]
        advance = LedgerAdvance(
            record=record,
            previous_index=chunks[0].index - 1,
            last_index=last.index,
            accepted=sum(t.accepted for t in tallies),
            rejected=sum(t.rejected for t in tallies),
            first_reject=next((t.first_reject for t in tallies if t.first_reject), ""),
            final=last.final,
            completion=last.completion,
        )
        return rows, tallies, advance

    async def _advance(
        self,
        conn: Any,
        group: list[PendingChunk],
        flush_id: int,
        now: datetime,
        received: Any,
        moves: _Moves,
    ) -> None:
        """Move one batch's ledger over its chunks in this flush and keep their rows.

        The group holds the chunks of every stream that sent the batch since the last flush:
        an edge that reconnected while its old stream still had chunks queued sends them
        again on the new one. Each stream's chunks (one ledger record per opening) are
        consecutive; they are applied stream by stream, so what an earlier stream commits, a
        later one finds committed and acknowledges as a duplicate instead of storing it again.
        """
        streams: dict[int, list[PendingChunk]] = {}
        for pending in group:
            streams.setdefault(id(pending.record), []).append(pending)
        for chunks in streams.values():
            await self._advance_stream(conn, chunks, flush_id, now, received, moves)

    async def _advance_stream(
        self,
        conn: Any,
        chunks: list[PendingChunk],
        flush_id: int,
        now: datetime,
        received: Any,
        moves: _Moves,
    ) -> None:
        record = chunks[0].record
        while chunks:
            rows, tallies, advance = await self._prepare(chunks, flush_id, now, received)
            if await self._store.advance(conn, advance, now):
                moves.rows_by_kind.setdefault(record.kind, []).extend(rows)
                moves.outcomes.extend(zip(chunks, tallies, strict=True))
                moves.advances.append((advance, chunks))
                return
            # Another stream moved the ledger (the edge reconnected while its old stream still
            # had chunks in flight), or the earlier flush holding this batch failed. What is
            # committed is acknowledged as a duplicate; the rest goes on from the new committed
            # index if it can.
            await self._store.refresh(conn, record)
            moves.conflicts.extend(p for p in chunks if p.index <= record.committed_index)
            chunks = [p for p in chunks if p.index > record.committed_index]
            if chunks and (chunks[0].index != record.committed_index + 1 or record.state != BatchState.OPEN):
                moves.conflicts.extend(chunks)
                return

    async def _flush(self, taken: list[PendingChunk], earlier: dict[BatchKey, asyncio.Future[None]]) -> None:
        started = time.perf_counter()
        now = self._clock()
        received = self._store.encode_timestamp(now)
        groups: dict[BatchKey, list[PendingChunk]] = {}
        for pending in taken:
            groups.setdefault(pending.key, []).append(pending)
        moves = _Moves()
        async with self._store.db.begin() as conn:
            flush_id = await self._store.begin_flush(conn, now)
            later = []
            # One order for every flush, so two overlapping flushes never lock ledger rows crosswise.
            for key in sorted(groups):
                if key in earlier:
                    later.append(groups[key])
                else:
                    await self._advance(conn, groups[key], flush_id, now, received, moves)
            if later:
                # These batches have chunks in a flush still running: theirs must move first.
                await asyncio.gather(*{id(f): f for f in earlier.values()}.values())
                for group in later:
                    await self._advance(conn, group, flush_id, now, received, moves)
            for kind, rows in moves.rows_by_kind.items():
                await self._store.write_rows(conn, kind, rows)
        for advance, _chunks in moves.advances:
            record = advance.record
            record.committed_index = advance.last_index
            record.accepted += advance.accepted
            record.rejected += advance.rejected
            record.first_reject = record.first_reject or advance.first_reject
            if advance.final:
                record.state = BatchState.COMMITTED
                record.completion = advance.completion
        for pending, tally in moves.outcomes:
            INGEST_RESULTS.labels(pending.record.kind.value, "accepted").inc(tally.accepted)
            if tally.rejected:
                INGEST_RESULTS.labels(pending.record.kind.value, "rejected").inc(tally.rejected)
            state = BatchState.COMMITTED if pending.final else BatchState.OPEN
            # A stream whose client went away cancelled its wait; the chunk is committed anyway.
            if not pending.future.done():
                pending.future.set_result(
                    ChunkOutcome(pending.index, tally.accepted, tally.rejected, tally.first_reject, state)
                )
        for pending in moves.conflicts:
            if pending.future.done():
                continue
            if pending.index <= pending.record.committed_index:
                # The superseded stream committed this very chunk first: it is stored, so
                # acknowledge it as the duplicate it is, as its own commit would have: the other
                # stream may have committed the final chunk too, and a "committed" batch state
                # beside this earlier index is a contradiction the client rightly rejects.
                state = BatchState.COMMITTED if pending.final else BatchState.OPEN
                pending.future.set_result(ChunkOutcome(pending.index, 0, 0, "", state))
            else:
                pending.future.set_exception(
                    Aborted(
                        f"batch {pending.record.batch_id} was written by another stream: reopen it to resume"
                    )
                )
        INGEST_FLUSH_ROWS.observe(sum(p.size for p in taken))
        INGEST_FLUSH_SECONDS.observe(time.perf_counter() - started)
        if self._on_flush is not None:
            self._on_flush(CommittedFlush(flush_id, moves.rows_by_kind))
