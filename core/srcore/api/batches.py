"""BatchService: progress of result batches, scoped to the caller's tenant."""

from __future__ import annotations

from serviceradar.admin.v1 import batch_service_pb2 as pb
from serviceradar.admin.v1 import batch_service_pb2_grpc as pb_grpc
from srcore.api.auth import require_operator
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.api.paging import decode_time, decode_token, encode_token, page_size
from srcore.api.pollers import scoped_tenant
from srcore.domain import validation
from srcore.domain.errors import InvalidArgument, NotFound
from srcore.domain.ingest import BatchRecord, BatchState, batch_id
from srcore.ingest.stream import KINDS, PB_COMPLETIONS, PB_KINDS, PB_STATES
from srcore.store.ingest import IngestStore

_STATES = {value: state for state, value in PB_STATES.items()}


def batch_message(record: BatchRecord) -> pb.Batch:
    """The admin view of a batch."""
    return pb.Batch(
        tenant=record.tenant,
        poller_id=record.poller_id,
        batch_id=record.batch_id,
        result_type=PB_KINDS[record.kind],
        agent_id=record.agent_id,
        partition=record.partition,
        state=PB_STATES[record.state],
        committed_index=record.committed_index,
        expected_chunks=record.expected_chunks,
        accepted=record.accepted,
        rejected=record.rejected,
        first_reject=record.first_reject,
        opened_at=timestamp(record.opened_at),
        updated_at=timestamp(record.updated_at),
        completed_at=timestamp(record.completed_at),
        execution_id=record.execution_id,
        completion=PB_COMPLETIONS[record.completion],
    )


class BatchServicer(pb_grpc.BatchServiceServicer):
    """Reads the batch ledger."""

    def __init__(self, store: IngestStore, trust_domain: str) -> None:
        self._store = store
        self._trust_domain = trust_domain

    async def ListBatches(self, request: pb.ListBatchesRequest, context: Context) -> pb.ListBatchesResponse:
        """One page of batches, newest first."""
        identity = require_operator(context, self._trust_domain)
        tenant = scoped_tenant(identity, request.tenant, default_all=True)
        poller = validation.identifier("poller_id", request.poller_id) if request.poller_id else None
        state: BatchState | None = None
        if request.state:
            if request.state not in _STATES:
                raise InvalidArgument("state", f"unknown batch state {request.state}")
            state = _STATES[request.state]
        kind = None
        if request.result_type:
            if request.result_type not in KINDS:
                raise InvalidArgument("result_type", f"unknown result type {request.result_type}")
            kind = KINDS[request.result_type]
        size = page_size(request.page_size)
        after = None
        if request.page_token:
            opened, *rest = decode_token(request.page_token, 4)
            after = (decode_time(opened), *rest)
        records = await self._store.list_batches(tenant, poller, state, kind, size + 1, after)
        more = len(records) > size
        records = records[:size]
        token = ""
        if more:
            last = records[-1]
            token = encode_token([str(last.opened_at), last.tenant, last.poller_id, last.batch_id])
        return pb.ListBatchesResponse(batches=[batch_message(r) for r in records], next_page_token=token)

    async def GetBatch(self, request: pb.GetBatchRequest, context: Context) -> pb.GetBatchResponse:
        """One batch."""
        identity = require_operator(context, self._trust_domain)
        tenant = scoped_tenant(identity, request.tenant, default_all=False)
        assert tenant is not None
        poller = validation.identifier("poller_id", request.poller_id)
        try:
            batch = batch_id(request.batch_id)
        except InvalidArgument as exc:
            raise InvalidArgument("batch_id", exc.problem) from None
        record = await self._store.get_batch(tenant, poller, batch)
        if record is None:
            raise NotFound(f"batch {batch} of poller {poller!r} not found")
        return pb.GetBatchResponse(batch=batch_message(record))
