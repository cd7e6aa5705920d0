"""One ReportResults stream: reads opens and chunks, writes acks in order as chunks commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import results_pb2
from srcore.domain import validation
from srcore.domain.errors import Aborted, FailedPrecondition, InvalidArgument
from srcore.domain.ingest import (
    BatchOpening,
    BatchRecord,
    BatchState,
    Budget,
    IngestLimits,
    ResultKind,
    StreamBatch,
    SweepCompletion,
    batch_id,
    check_reopen,
)
from srcore.ingest.projector import Projector
from srcore.ingest.rows import payload_results
from srcore.ingest.writer import BatchingWriter, ChunkOutcome, PendingChunk
from srcore.observability.metrics import INGEST_BATCHES
from srcore.store.ingest import IngestStore

KINDS = {
    results_pb2.RESULT_TYPE_SWEEP_HOSTS: ResultKind.SWEEP_HOSTS,
    results_pb2.RESULT_TYPE_SERVICE_CHECKS: ResultKind.SERVICE_CHECKS,
    results_pb2.RESULT_TYPE_DEVICE_UPDATES: ResultKind.DEVICE_UPDATES,
}
PB_KINDS = {kind: value for value, kind in KINDS.items()}
COMPLETIONS = {
    results_pb2.SWEEP_COMPLETION_UNSPECIFIED: SweepCompletion.NONE,
    results_pb2.SWEEP_COMPLETION_IN_PROGRESS: SweepCompletion.IN_PROGRESS,
    results_pb2.SWEEP_COMPLETION_COMPLETED: SweepCompletion.COMPLETED,
    results_pb2.SWEEP_COMPLETION_FAILED: SweepCompletion.FAILED,
    results_pb2.SWEEP_COMPLETION_CANCELLED: SweepCompletion.CANCELLED,
}
PB_COMPLETIONS = {c: v for v, c in COMPLETIONS.items()}
PB_STATES = {
    BatchState.OPEN: results_pb2.BATCH_STATE_OPEN,
    BatchState.COMMITTED: results_pb2.BATCH_STATE_COMMITTED,
    BatchState.EXPIRED: results_pb2.BATCH_STATE_EXPIRED,
}
# A chunk's payload case must match its batch's result type.
PAYLOAD_CASE = {
    ResultKind.SWEEP_HOSTS: "sweep_hosts",
    ResultKind.SERVICE_CHECKS: "service_checks",
    ResultKind.DEVICE_UPDATES: "device_updates",
}


def opening_from(message: results_pb2.BatchOpen) -> BatchOpening:
    """Validate a BatchOpen, naming the offending field."""
    kind = KINDS.get(message.result_type)
    if kind is None:
        raise InvalidArgument("open.result_type", f"must be one of {', '.join(k.value for k in ResultKind)}")
    sweep = message.sweep
    if message.HasField("sweep"):
        if kind != ResultKind.SWEEP_HOSTS:
            raise InvalidArgument("open.sweep", "only sweep batches carry sweep information")
        if sweep.execution_id:
            validation.identifier("open.sweep.execution_id", sweep.execution_id)
        validation.text("open.sweep.target_network", sweep.target_network, 64)
        validation.text("open.sweep.sweep_id", sweep.sweep_id, 128)
    return BatchOpening(
        batch_id=batch_id(message.batch_id),
        kind=kind,
        agent_id=validation.identifier("open.agent_id", message.agent_id) if message.agent_id else "",
        partition=validation.slug("open.partition", message.partition),
        expected_chunks=message.expected_chunks,
        execution_id=sweep.execution_id,
        sweep_id=sweep.sweep_id,
        target_network=sweep.target_network,
    )


class IngestService:
    """What every stream shares: limits, budget, ledger, writer, and who holds which batch."""

    def __init__(
        self,
        store: IngestStore,
        writer: BatchingWriter,
        budget: Budget,
        limits: IngestLimits,
        clock: Callable[[], datetime],
        projector: Projector,
    ) -> None:
        self.store = store
        self.projector = projector
        self.writer = writer
        self.budget = budget
        self.limits = limits
        self.clock = clock
        self._holders: dict[tuple[str, str, str], ResultStream] = {}

    async def open(self, stream: ResultStream, opening: BatchOpening) -> tuple[BatchRecord, int]:
        """Open or reopen a batch for `stream`; returns its ledger record and the credits."""
        self.budget.admit(stream.tenant)
        record = await self.store.open_batch(stream.tenant, stream.poller_id, opening, self.clock())
        check_reopen(record, opening)
        key = (stream.tenant, stream.poller_id, opening.batch_id)
        previous = self._holders.get(key)
        if previous is not None and previous is not stream:
            # The edge reconnected while its old stream lingers: the newest stream owns the batch.
            previous.supersede(opening.batch_id)
        self._holders[key] = stream
        INGEST_BATCHES.labels("reopened" if record.committed_index >= 0 else "opened").inc()
        return record, self.budget.credits(stream.tenant, stream.chunk_rows)

    def release(self, stream: ResultStream, batch: str) -> None:
        """Forget that `stream` holds `batch`."""
        key = (stream.tenant, stream.poller_id, batch)
        if self._holders.get(key) is stream:
            del self._holders[key]


@dataclass(slots=True)
class _Awaited:
    pending: PendingChunk
    batch: StreamBatch


_END = object()


def _observe(future: asyncio.Future[ChunkOutcome]) -> None:
    # A stream that already ended (with an earlier error) never awaits its later chunks'
    # futures; reading the outcome here keeps asyncio from reporting it as lost.
    if not future.cancelled():
        future.exception()


def ack(
    record: BatchRecord, chunk_index: int, credits: int, outcome: ChunkOutcome | None = None
) -> pb.ReportResultsResponse:
    """An acknowledgement of `record` as it stands, optionally with one chunk's counts."""
    message = results_pb2.BatchAck(
        batch_id=record.batch_id,
        committed_index=record.committed_index,
        credits=credits,
        state=PB_STATES[record.state],
        chunk_index=chunk_index,
    )
    if outcome is not None:
        # Each chunk's ack reports the ledger as its own commit left it, so acks of a batch
        # count up one by one even when several chunks committed in one flush.
        message.committed_index = outcome.committed_index
        message.state = PB_STATES[outcome.state]
        message.accepted = outcome.accepted
        message.rejected = outcome.rejected
        message.first_reject = outcome.first_reject
    return pb.ReportResultsResponse(ack=message)


class ResultStream:
    """The server side of one ReportResults call for one poller."""

    def __init__(self, service: IngestService, tenant: str, poller_id: str) -> None:
        self.service = service
        self.tenant = tenant
        self.poller_id = poller_id
        self._batches: dict[str, StreamBatch] = {}
        self._superseded: set[str] = set()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        # Results per chunk this stream sends (its latest chunk), for sizing its window.
        self.chunk_rows = 500

    def supersede(self, batch: str) -> None:
        """Another stream reopened `batch`: this one may no longer send its chunks."""
        if self._batches.pop(batch, None) is not None:
            self._superseded.add(batch)

    async def responses(
        self, requests: AsyncIterator[pb.ReportResultsRequest]
    ) -> AsyncIterator[pb.ReportResultsResponse]:
        """Acks in the order their chunks arrived; ends with the first error, after earlier acks."""
        reader = asyncio.create_task(self._read(requests))
        self.service.budget.stream_started(self.tenant)
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Awaited):
                    outcome = await item.pending.future
                    credits = self.service.budget.credits(self.tenant, self.chunk_rows)
                    item.batch.grant(outcome.committed_index, credits)
                    yield ack(item.batch.record, item.pending.index, credits, outcome)
                else:
                    assert isinstance(item, pb.ReportResultsResponse)
                    yield item
        finally:
            reader.cancel()
            self.service.budget.stream_ended(self.tenant)
            for batch in list(self._batches):
                self.service.release(self, batch)

    async def _read(self, requests: AsyncIterator[pb.ReportResultsRequest]) -> None:
        try:
            async for request in requests:
                case = request.WhichOneof("message")
                if case == "open":
                    await self._open(request.open)
                elif case == "chunk":
                    self._chunk(request.chunk)
                else:
                    raise InvalidArgument("message", "set either open or chunk")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._queue.put_nowait(exc)
            return
        self._queue.put_nowait(_END)

    async def _open(self, message: results_pb2.BatchOpen) -> None:
        opening = opening_from(message)
        record, credits = await self.service.open(self, opening)
        self._superseded.discard(opening.batch_id)
        batch = StreamBatch.opened(record, credits)
        self._batches[opening.batch_id] = batch
        self._queue.put_nowait(ack(record, -1, credits))

    def _chunk(self, chunk: results_pb2.ResultChunk) -> None:
        batch = self._batches.get(chunk.batch_id)
        if batch is None:
            if chunk.batch_id in self._superseded:
                raise Aborted(f"batch {chunk.batch_id} was reopened on another stream; this stream lost it")
            raise FailedPrecondition(f"batch {chunk.batch_id!r} is not open on this stream: send open first")
        limits = self.service.limits
        if not batch.classify(chunk.index, limits):
            credits = self.service.budget.credits(self.tenant, self.chunk_rows)
            self._queue.put_nowait(ack(batch.record, chunk.index, credits))
            return
        record = batch.record
        case = chunk.WhichOneof("payload")
        if case is not None and case != PAYLOAD_CASE[record.kind]:
            raise InvalidArgument(
                "chunk.payload", f"batch {record.batch_id} carries {PAYLOAD_CASE[record.kind]}, not {case}"
            )
        results = payload_results(chunk)
        if len(results) > limits.max_results_per_chunk:
            raise InvalidArgument(
                f"chunk.{case}.results",
                f"{len(results)} results; a chunk carries at most {limits.max_results_per_chunk}",
            )
        completion = COMPLETIONS.get(chunk.completion)
        if completion is None:
            raise InvalidArgument("chunk.completion", f"unknown completion {chunk.completion}")
        if completion is not SweepCompletion.NONE and not chunk.final:
            raise InvalidArgument("chunk.completion", "only the final chunk carries a completion")
        batch.next_index = chunk.index + 1
        batch.final_received = chunk.final
        self.chunk_rows = max(1, len(results))
        pending = PendingChunk(record, chunk.index, chunk.final, completion, chunk, self.chunk_rows)
        pending.future.add_done_callback(_observe)
        self.service.writer.submit(pending)
        self._queue.put_nowait(_Awaited(pending, batch))
