"""ResultService: stored raw results, newest first, scoped to the caller's tenant."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from serviceradar.admin.v1 import result_service_pb2 as pb
from serviceradar.admin.v1 import result_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.api.auth import require_operator
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.api.paging import decode_time, decode_token, encode_token, page_size
from srcore.api.pollers import scoped_tenant
from srcore.domain import validation
from srcore.domain.errors import InvalidArgument
from srcore.domain.ingest import ResultKind
from srcore.ingest.stream import KINDS
from srcore.store.database import Database
from srcore.store.ingest import list_results
from srcore.store.pollers import utc


def _sweep_host(row: sa.Row[Any]) -> rpb.SweepHostResult:
    result = rpb.SweepHostResult(
        ip=row.ip,
        mac=row.mac,
        hostname=row.hostname,
        available=row.available,
        icmp_packet_loss=row.icmp_loss,
        observed_at=timestamp(utc(row.observed_at)),
        ports=[rpb.PortResult(port=int(p), open=True) for p in row.open_ports.split(",") if p],
    )
    if row.icmp_rtt_us is not None:
        result.icmp_rtt.FromMicroseconds(row.icmp_rtt_us)
    return result


def _service_check(row: sa.Row[Any]) -> rpb.ServiceCheckResult:
    result = rpb.ServiceCheckResult(
        name=row.name,
        check_type=row.check_type,
        available=row.available,
        message=row.message,
        agent_id=row.agent_id,
        check_id=row.check_id,
        observed_at=timestamp(utc(row.observed_at)),
    )
    if row.response_time_us is not None:
        result.response_time.FromMicroseconds(row.response_time_us)
    return result


def _device_update(row: sa.Row[Any]) -> rpb.DeviceUpdate:
    return rpb.DeviceUpdate(
        ip=row.ip,
        mac=row.mac,
        hostname=row.hostname,
        external_ids=json.loads(row.external_ids),
        source=row.source,
        available=row.available,
        metadata=json.loads(row.metadata),
        observed_at=timestamp(utc(row.observed_at)),
    )


def stored_result(kind: ResultKind, row: sa.Row[Any]) -> pb.StoredResult:
    """A raw row as a StoredResult with its origin."""
    message = pb.StoredResult(
        tenant=row.tenant,
        partition=row.partition,
        poller_id=row.poller_id,
        agent_id=row.agent_id,
        batch_id=row.batch_id,
        chunk_index=row.chunk_index,
        received_at=timestamp(utc(row.received_at)),
    )
    if kind == ResultKind.SWEEP_HOSTS:
        message.sweep_host.CopyFrom(_sweep_host(row))
    elif kind == ResultKind.SERVICE_CHECKS:
        message.service_check.CopyFrom(_service_check(row))
    else:
        message.device_update.CopyFrom(_device_update(row))
    return message


class ResultServicer(pb_grpc.ResultServiceServicer):
    """Reads raw result tables."""

    def __init__(self, db: Database, trust_domain: str) -> None:
        self._db = db
        self._trust_domain = trust_domain

    async def ListResults(self, request: pb.ListResultsRequest, context: Context) -> pb.ListResultsResponse:
        """One page of results of one type."""
        identity = require_operator(context, self._trust_domain)
        kind = KINDS.get(request.result_type)
        if kind is None:
            raise InvalidArgument("result_type", "required: sweep hosts, service checks or device updates")
        tenant = scoped_tenant(identity, request.tenant, default_all=False)
        assert tenant is not None
        partition = validation.slug("partition", request.partition) if request.partition else None
        poller = validation.identifier("poller_id", request.poller_id) if request.poller_id else None
        since = request.since.ToDatetime() if request.HasField("since") else None
        until = request.until.ToDatetime() if request.HasField("until") else None
        size = page_size(request.page_size)
        after = None
        if request.page_token:
            observed, poller_key, batch, chunk, seq = decode_token(request.page_token, 5)
            after = (decode_time(observed), poller_key, batch, int(chunk), int(seq))
        rows = await list_results(self._db, kind, tenant, partition, poller, since, until, size + 1, after)
        more = len(rows) > size
        rows = rows[:size]
        token = ""
        if more:
            last = rows[-1]
            token = encode_token(
                [str(last.observed_at), last.poller_id, last.batch_id, last.chunk_index, last.seq]
            )
        return pb.ListResultsResponse(results=[stored_result(kind, r) for r in rows], next_page_token=token)
