"""EventService: list and watch infrastructure events, scoped to what the caller may see."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator

from serviceradar.admin.v1 import event_service_pb2 as pb
from serviceradar.admin.v1 import event_service_pb2_grpc as pb_grpc
from srcore.api.auth import require_operator
from srcore.api.context import Context
from srcore.api.convert import from_timestamp, timestamp
from srcore.api.pollers import scoped_tenant
from srcore.domain import validation
from srcore.domain.errors import InvalidArgument
from srcore.events.config import TOKEN
from srcore.events.metrics import WATCHERS
from srcore.events.outbox import EventFilter, Outbox, OutboxSignal, StoredEvent
from srcore.events.watch import follow, open_follower

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode()


def _decode_page_token(token: str) -> int:
    try:
        kind, _, seq = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind != "seq" or not seq.isdigit():
            raise ValueError(token)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token", "not a token this server issued for this list") from exc
    return int(seq)


def _token(field: str, value: str) -> str:
    if value and not TOKEN.fullmatch(value):
        raise InvalidArgument(field, "must be 1-63 characters of [A-Za-z0-9_-]")
    return value


def event_filter(request: pb.ListEventsRequest | pb.WatchEventsRequest, tenant: str | None) -> EventFilter:
    """Validate the filter fields both requests share, naming any bad one."""
    entity_type = _token("entity_type", request.entity_type)
    if request.entity_id:
        if not entity_type:
            raise InvalidArgument("entity_id", "needs entity_type (an id is unique per entity type)")
        validation.text("entity_id", request.entity_id, 300)
    return EventFilter(
        tenant=tenant,
        entity_type=entity_type,
        event_type=_token("event_type", request.event_type),
        entity_id=request.entity_id,
        since=from_timestamp(request.since) if request.HasField("since") else None,
    )


def record_message(stored: StoredEvent) -> pb.EventRecord:
    """The admin view of an outbox event."""
    return pb.EventRecord(
        event=stored.event, sequence=stored.seq, published_at=timestamp(stored.published_at)
    )


class EventServicer(pb_grpc.EventServiceServicer):
    """Reads events from the outbox; WatchEvents follows it."""

    def __init__(self, outbox: Outbox, signal: OutboxSignal, poll_interval: float, trust_domain: str) -> None:
        self._outbox = outbox
        self._signal = signal
        self._poll_interval = poll_interval
        self._trust_domain = trust_domain

    async def ListEvents(self, request: pb.ListEventsRequest, context: Context) -> pb.ListEventsResponse:
        """One page of events, oldest first."""
        identity = require_operator(context, self._trust_domain)
        tenant = scoped_tenant(identity, request.tenant, default_all=True)
        flt = event_filter(request, tenant)
        if request.page_size > MAX_PAGE:
            raise InvalidArgument("page_size", f"at most {MAX_PAGE}")
        size = request.page_size or DEFAULT_PAGE
        after = _decode_page_token(request.page_token) if request.page_token else 0
        events = await self._outbox.page(flt, after, size + 1)
        more = len(events) > size
        events = events[:size]
        return pb.ListEventsResponse(
            events=[record_message(e) for e in events],
            next_page_token=_encode_page_token(events[-1].seq) if more else "",
        )

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        """Replay from `since` (or the resume token), then follow new events."""
        identity = require_operator(context, self._trust_domain)
        tenant = scoped_tenant(identity, request.tenant, default_all=True)
        flt = event_filter(request, tenant)
        follower = await open_follower(self._outbox, flt, flt.since, request.resume_token)
        WATCHERS.inc()
        try:
            async for stored, resume_token in follow(follower, self._signal, self._poll_interval):
                yield pb.WatchEventsResponse(record=record_message(stored), resume_token=resume_token)
        finally:
            WATCHERS.dec()
