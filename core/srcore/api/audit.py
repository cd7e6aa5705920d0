"""AuditService: the audit log, newest first, filtered, scoped to the caller's tenant."""

from __future__ import annotations

import grpc

from serviceradar.admin.v1 import audit_service_pb2 as pb
from serviceradar.admin.v1 import audit_service_pb2_grpc as pb_grpc
from srcore.api import paging
from srcore.api.access import Access
from srcore.api.context import Context
from srcore.api.convert import from_timestamp, timestamp
from srcore.domain import validation
from srcore.domain.errors import InvalidArgument
from srcore.domain.tenancy import AuditEvent
from srcore.security.principal import caller
from srcore.store.audit import AuditFilter

OUTCOMES = frozenset({"denied", *(code.name for code in grpc.StatusCode)})


def event_message(event: AuditEvent) -> pb.AuditEvent:
    """The admin view of an audit event."""
    return pb.AuditEvent(
        id=event.id,
        time=timestamp(event.at),
        actor=event.actor,
        tenant=event.tenant,
        method=event.method,
        target=event.target,
        outcome=event.outcome,
        message=event.message,
        peer=event.peer,
    )


class AuditServicer(pb_grpc.AuditServiceServicer):
    """Reads the audit log."""

    def __init__(self, access: Access) -> None:
        self._access = access

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        """One page of audit events matching every filter, newest first."""
        tenant = caller().scope(request.tenant, all_tenants=True)
        if request.outcome and request.outcome not in OUTCOMES:
            raise InvalidArgument("outcome", "must be 'denied' or a gRPC status code name such as OK")
        where = AuditFilter(
            tenant=tenant,
            actor=validation.text("actor", request.actor, 300),
            method_contains=validation.text("method", request.method, 200),
            outcome=request.outcome,
            since=from_timestamp(request.since) if request.HasField("since") else None,
            until=from_timestamp(request.until) if request.HasField("until") else None,
        )
        size = paging.page_size(request.page_size)
        after = paging.text_key(request.page_token, 1)
        try:
            before = int(after[0]) if after else None
        except ValueError:
            raise InvalidArgument("page_token", "not a token this server issued for this list") from None
        found = await self._access.audit.repository.list_events(where, size + 1, before)
        page = found[:size]
        return pb.ListAuditEventsResponse(
            events=[event_message(e) for e in page],
            next_page_token=paging.encode_token([str(page[-1].id)]) if len(found) > size else "",
        )
