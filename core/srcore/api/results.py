"""ResultService: stored raw results and the state processed from them, scoped to the caller's tenant."""

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
from srcore.api.paging import decode_time, decode_token, encode_token, page_size, text_key
from srcore.api.pollers import scoped_tenant
from srcore.domain import validation
from srcore.domain.errors import InvalidArgument
from srcore.domain.ingest import ResultKind
from srcore.domain.model import CheckerState
from srcore.ingest.stream import KINDS
from srcore.store.database import Database
from srcore.store.ingest import list_results
from srcore.store.pollers import utc
from srcore.store.processing import list_check_states, list_host_states, list_sweep_executions


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


def _duration_field(message: Any, field: str, micros: int | None) -> None:
    if micros is not None:
        getattr(message, field).FromMicroseconds(micros)


def host_state(row: sa.Row[Any]) -> pb.HostState:
    """A host_latest row as a HostState."""
    message = pb.HostState(
        tenant=row.tenant,
        partition=row.partition,
        ip=row.ip,
        mac=row.mac,
        hostname=row.hostname,
        available=row.available,
        icmp_packet_loss=row.icmp_loss,
        open_ports=[int(p) for p in row.open_ports.split(",") if p],
        ports_truncated=row.ports_truncated,
        poller_id=row.poller_id,
        execution_id=row.execution_id,
        observed_at=timestamp(utc(row.observed_at)),
    )
    _duration_field(message, "response_time", row.response_time_us)
    _duration_field(message, "icmp_rtt", row.icmp_rtt_us)
    return message


def check_state(row: sa.Row[Any]) -> pb.CheckState:
    """A check_latest row as a CheckState."""
    message = pb.CheckState(
        tenant=row.tenant,
        poller_id=row.poller_id,
        agent_id=row.agent_id,
        name=row.name,
        check_id=row.check_id,
        check_type=row.check_type,
        state=row.state,
        consecutive_failures=row.consecutive_failures,
        available=row.available,
        message=row.message,
        observed_at=timestamp(utc(row.observed_at)),
    )
    if row.state_changed_at is not None:
        message.state_changed_at.FromDatetime(row.state_changed_at)
    _duration_field(message, "response_time", row.response_time_us)
    return message


def sweep_execution(row: sa.Row[Any]) -> pb.SweepExecution:
    """A sweep_executions row as a SweepExecution."""
    message = pb.SweepExecution(
        tenant=row.tenant,
        poller_id=row.poller_id,
        execution_id=row.execution_id,
        partition=row.partition,
        sweep_id=row.sweep_id,
        target_network=row.target_network,
        state=row.state,
        started_at=timestamp(utc(row.started_at)),
        hosts_total=row.hosts_total or 0,
        hosts_available=row.hosts_available or 0,
        hosts_unavailable=row.hosts_unavailable or 0,
        hosts_marked_unseen=row.hosts_marked_unseen or 0,
    )
    if row.completed_at is not None:
        message.completed_at.FromDatetime(row.completed_at)
    if row.closed_at is not None:
        message.closed_at.FromDatetime(row.closed_at)
    return message


_AVAILABILITY = {
    pb.AVAILABILITY_FILTER_UNSPECIFIED: None,
    pb.AVAILABILITY_FILTER_AVAILABLE: True,
    pb.AVAILABILITY_FILTER_UNAVAILABLE: False,
}


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
        check_name = validation.text("check_name", request.check_name, 255) if request.check_name else None
        if check_name is not None and kind != ResultKind.SERVICE_CHECKS:
            raise InvalidArgument("check_name", "only applies to service check results")
        since = request.since.ToDatetime() if request.HasField("since") else None
        until = request.until.ToDatetime() if request.HasField("until") else None
        size = page_size(request.page_size)
        after = None
        if request.page_token:
            observed, poller_key, batch, chunk, seq = decode_token(request.page_token, 5)
            after = (decode_time(observed), poller_key, batch, int(chunk), int(seq))
        rows = await list_results(
            self._db, kind, tenant, partition, poller, since, until, size + 1, after, check_name
        )
        more = len(rows) > size
        rows = rows[:size]
        token = ""
        if more:
            last = rows[-1]
            token = encode_token(
                [str(last.observed_at), last.poller_id, last.batch_id, last.chunk_index, last.seq]
            )
        return pb.ListResultsResponse(results=[stored_result(kind, r) for r in rows], next_page_token=token)

    async def ListHostStates(
        self, request: pb.ListHostStatesRequest, context: Context
    ) -> pb.ListHostStatesResponse:
        """One page of latest host states."""
        identity = require_operator(context, self._trust_domain)
        tenant = scoped_tenant(identity, request.tenant, default_all=False)
        assert tenant is not None
        partition = validation.slug("partition", request.partition) if request.partition else None
        if request.availability not in _AVAILABILITY:
            raise InvalidArgument("availability", "unknown availability filter")
        size = page_size(request.page_size)
        key = text_key(request.page_token, 2)
        after = (key[0], key[1]) if key else None
        rows = await list_host_states(
            self._db, tenant, partition, _AVAILABILITY[request.availability], size + 1, after
        )
        token = encode_token([rows[size - 1].partition, rows[size - 1].ip]) if len(rows) > size else ""
        return pb.ListHostStatesResponse(hosts=[host_state(r) for r in rows[:size]], next_page_token=token)

    async def ListCheckStates(
        self, request: pb.ListCheckStatesRequest, context: Context
    ) -> pb.ListCheckStatesResponse:
        """One page of check states."""
        identity = require_operator(context, self._trust_domain)
        tenant = scoped_tenant(identity, request.tenant, default_all=False)
        assert tenant is not None
        poller = validation.identifier("poller_id", request.poller_id) if request.poller_id else None
        state = None
        if request.state:
            try:
                state = CheckerState(request.state)
            except ValueError:
                raise InvalidArgument(
                    "state", f"{request.state[:32]!r}: one of {', '.join(s.value for s in CheckerState)}"
                ) from None
        size = page_size(request.page_size)
        key = text_key(request.page_token, 3)
        after = (key[0], key[1], key[2]) if key else None
        rows = await list_check_states(self._db, tenant, poller, state, size + 1, after)
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = encode_token([last.poller_id, last.agent_id, last.name])
        return pb.ListCheckStatesResponse(checks=[check_state(r) for r in rows[:size]], next_page_token=token)

    async def ListSweepExecutions(
        self, request: pb.ListSweepExecutionsRequest, context: Context
    ) -> pb.ListSweepExecutionsResponse:
        """One page of sweep executions, newest first."""
        identity = require_operator(context, self._trust_domain)
        tenant = scoped_tenant(identity, request.tenant, default_all=False)
        assert tenant is not None
        partition = validation.slug("partition", request.partition) if request.partition else None
        sweep_id = validation.text("sweep_id", request.sweep_id, 128) if request.sweep_id else None
        size = page_size(request.page_size)
        key = text_key(request.page_token, 3)
        after = (decode_time(key[0]), key[1], key[2]) if key else None
        rows = await list_sweep_executions(self._db, tenant, partition, sweep_id, size + 1, after)
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = encode_token([str(last.started_at), last.poller_id, last.execution_id])
        return pb.ListSweepExecutionsResponse(
            executions=[sweep_execution(r) for r in rows[:size]], next_page_token=token
        )
