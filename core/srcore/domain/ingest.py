"""The ReportResults protocol: batches, chunk ordering, credits and budgets. Pure rules.

A batch is a sequence of chunks 0..N sent strictly in order. The durable high-water mark
`committed_index` (advanced in the same transaction as the rows) is the idempotency record:
a chunk at or below it was stored already and is only acknowledged again.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime

from srcore.domain.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


class ResultKind(enum.StrEnum):
    """What a batch carries."""

    SWEEP_HOSTS = "sweep_hosts"
    SERVICE_CHECKS = "service_checks"
    DEVICE_UPDATES = "device_updates"


class BatchState(enum.StrEnum):
    """Life of a batch: open until its final chunk commits, or expired when abandoned."""

    OPEN = "open"
    COMMITTED = "committed"
    EXPIRED = "expired"


class SweepCompletion(enum.StrEnum):
    """How a sweep execution ended, as the final chunk of a sweep batch says."""

    NONE = ""
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Protocol limits and budgets; every one is a setting."""

    max_results_per_chunk: int = 10_000
    max_chunks_per_batch: int = 1_000_000
    credit_window: int = 32
    resume_window_seconds: float = 3600.0
    global_budget_rows: int = 400_000
    tenant_budget_rows: int = 200_000


@dataclass(frozen=True, slots=True)
class BatchOpening:
    """A validated BatchOpen."""

    batch_id: str
    kind: ResultKind
    agent_id: str
    partition: str
    expected_chunks: int
    execution_id: str = ""
    sweep_id: str = ""
    target_network: str = ""


@dataclass(slots=True)
class BatchRecord:
    """A batch as stored in the ledger."""

    tenant: str
    poller_id: str
    batch_id: str
    kind: ResultKind
    agent_id: str
    partition: str
    expected_chunks: int
    committed_index: int
    state: BatchState
    accepted: int = 0
    rejected: int = 0
    first_reject: str = ""
    execution_id: str = ""
    sweep_id: str = ""
    target_network: str = ""
    completion: SweepCompletion = SweepCompletion.NONE
    opened_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None


def batch_id(value: str) -> str:
    """A batch id must be a UUID (hex, with or without dashes); returned lower-case."""
    if not _UUID.fullmatch(value):
        raise InvalidArgument("open.batch_id", "must be a UUID")
    return value.lower()


def check_reopen(record: BatchRecord, opening: BatchOpening) -> None:
    """Reopening must describe the same batch; an expired batch cannot be resumed."""
    if record.state == BatchState.EXPIRED:
        raise FailedPrecondition(
            f"batch {record.batch_id} expired after staying half-open too long: start a new batch id"
        )
    if record.kind != opening.kind:
        raise FailedPrecondition(
            f"batch {record.batch_id} was opened with result type {record.kind.value}, "
            f"not {opening.kind.value}"
        )


@dataclass(slots=True)
class StreamBatch:
    """One batch as one stream sees it: what was received, committed and allowed."""

    record: BatchRecord
    next_index: int
    allowed_max: int
    final_received: bool = False

    @classmethod
    def opened(cls, record: BatchRecord, credits: int) -> StreamBatch:
        """The stream-side view right after an open (or reopen) was acknowledged."""
        return cls(
            record=record,
            next_index=record.committed_index + 1,
            allowed_max=record.committed_index + credits,
            final_received=record.state == BatchState.COMMITTED,
        )

    def grant(self, committed_index: int, credits: int) -> None:
        """Record the window an ack grants. A smaller window never takes back credit already
        granted: chunks the client sent under an earlier ack stay acceptable."""
        self.allowed_max = max(self.allowed_max, committed_index + credits)

    def classify(self, index: int, limits: IngestLimits) -> bool:
        """Check a chunk's index. True: new, store it. False: a duplicate, acknowledge again.

        Raises FAILED_PRECONDITION for a gap, a chunk after the final one, or a chunk beyond
        the credit window; INVALID_ARGUMENT for an index past the batch size limit.
        """
        if index >= limits.max_chunks_per_batch:
            raise InvalidArgument("chunk.index", f"a batch has at most {limits.max_chunks_per_batch} chunks")
        if index <= self.record.committed_index:
            return False
        if self.final_received:
            raise FailedPrecondition(
                f"batch {self.record.batch_id} already received its final chunk {self.next_index - 1}"
            )
        if index < self.next_index:
            raise FailedPrecondition(
                f"chunk {index} of batch {self.record.batch_id} was already received on this stream"
            )
        if index > self.next_index:
            raise FailedPrecondition(
                f"chunk {index} of batch {self.record.batch_id} is out of order: "
                f"expected chunk index {self.next_index}"
            )
        if index > self.allowed_max:
            raise FailedPrecondition(
                f"chunk {index} of batch {self.record.batch_id} is beyond the credit window "
                f"(send at most up to index {self.allowed_max}, then wait for acks)"
            )
        return True


class Budget:
    """Rows received but not yet committed, globally and per tenant.

    Memory is bounded by this budget and the per-stream credit window, never by how long a
    stream is. Over budget, new batches are refused with a retry delay and streams in flight
    get fewer credits.
    """

    def __init__(self, limits: IngestLimits) -> None:
        self._limits = limits
        self.total = 0
        self._tenants: dict[str, int] = {}
        self._streams: dict[str, int] = {}

    def stream_started(self, tenant: str) -> None:
        """A stream of `tenant` began; its streams share the tenant's windows."""
        self._streams[tenant] = self._streams.get(tenant, 0) + 1

    def stream_ended(self, tenant: str) -> None:
        """A stream of `tenant` ended."""
        left = self._streams.get(tenant, 0) - 1
        if left > 0:
            self._streams[tenant] = left
        else:
            self._streams.pop(tenant, None)

    def tenant_rows(self, tenant: str) -> int:
        """Rows of one tenant in flight."""
        return self._tenants.get(tenant, 0)

    def admit(self, tenant: str) -> None:
        """Refuse a new batch while the server or the tenant is over its budget."""
        if self.total >= self._limits.global_budget_rows:
            raise ResourceExhausted("the core is over its ingest budget: retry later", retry_after=1.0)
        if self.tenant_rows(tenant) >= self._limits.tenant_budget_rows:
            raise ResourceExhausted(
                f"tenant {tenant!r} is over its ingest budget: retry later", retry_after=2.0
            )

    def take(self, tenant: str, rows: int) -> None:
        """Count rows received."""
        self.total += rows
        self._tenants[tenant] = self._tenants.get(tenant, 0) + rows

    def release(self, tenant: str, rows: int) -> None:
        """Count rows committed (or dropped)."""
        self.total -= rows
        left = self._tenants.get(tenant, 0) - rows
        if left > 0:
            self._tenants[tenant] = left
        else:
            self._tenants.pop(tenant, None)

    def credits(self, tenant: str, chunk_rows: int = 500) -> int:
        """Credit window for the next ack of a stream of `tenant` sending `chunk_rows` per chunk.

        A tenant's streams share a quarter of its budget as their windows: a tenant with one
        stream keeps enough chunks queued to take its full share of every flush, a tenant
        with twenty gets narrow windows per stream (and costs the server less to receive).
        The window then shrinks further as the server or the tenant nears its budget.
        """
        streams = max(1, self._streams.get(tenant, 0))
        share = self._limits.tenant_budget_rows // 4 // (streams * max(1, chunk_rows))
        window = max(1, min(self._limits.credit_window, share))
        pressure = max(
            self.total / self._limits.global_budget_rows,
            self.tenant_rows(tenant) / self._limits.tenant_budget_rows,
        )
        if pressure <= 0.5:
            return window
        return max(1, int(window * (1 - pressure) * 2))
