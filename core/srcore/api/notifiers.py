"""NotifierService: where a tenant's alerts are sent. URLs and headers are write-only."""

from __future__ import annotations

from serviceradar.admin.v1 import notifier_service_pb2 as pb
from serviceradar.admin.v1 import notifier_service_pb2_grpc as pb_grpc
from srcore.alerting.service import Alerting, NotifierChange
from srcore.api import paging
from srcore.api.alerts import delivery_message
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.domain import validation
from srcore.domain.alerts import NotifierKind
from srcore.domain.errors import InvalidArgument
from srcore.security.principal import caller
from srcore.store.alerts import DeliveryRecord, NotifierRecord

KINDS: dict[NotifierKind, pb.NotifierKind.ValueType] = {
    NotifierKind.WEBHOOK: pb.NOTIFIER_KIND_WEBHOOK,
    NotifierKind.DISCORD: pb.NOTIFIER_KIND_DISCORD,
}
_KIND_OF = {v: k for k, v in KINDS.items()}


def notifier_message(notifier: NotifierRecord) -> pb.Notifier:
    """The admin view of a notifier: never its URL or header values."""
    return pb.Notifier(
        tenant=notifier.tenant,
        name=notifier.name,
        kind=KINDS[notifier.kind],
        enabled=notifier.enabled,
        endpoint=notifier.endpoint,
        header_names=list(notifier.header_names),
        created_at=timestamp(notifier.created_at),
        updated_at=timestamp(notifier.updated_at),
    )


def _kind(value: int, required: bool) -> NotifierKind | None:
    if value == pb.NOTIFIER_KIND_UNSPECIFIED and not required:
        return None
    if value not in _KIND_OF:
        raise InvalidArgument("kind", "must be NOTIFIER_KIND_WEBHOOK or NOTIFIER_KIND_DISCORD")
    return _KIND_OF[value]  # type: ignore[index]


class NotifierServicer(pb_grpc.NotifierServiceServicer):
    """Notifiers of the caller's tenant (of any tenant for a platform admin)."""

    def __init__(self, alerting: Alerting) -> None:
        self._alerting = alerting

    async def CreateNotifier(
        self, request: pb.CreateNotifierRequest, context: Context
    ) -> pb.CreateNotifierResponse:
        """Create a notifier; its URL and headers are sealed and never shown again."""
        tenant = caller().tenant_for(request.tenant)
        kind = _kind(request.kind, required=True)
        assert kind is not None
        created = await self._alerting.create_notifier(
            tenant, request.name, kind, request.url, dict(request.headers), not request.disabled
        )
        return pb.CreateNotifierResponse(notifier=notifier_message(created))

    async def GetNotifier(self, request: pb.GetNotifierRequest, context: Context) -> pb.GetNotifierResponse:
        """One notifier; NOT_FOUND for one the caller cannot see."""
        tenant = caller().tenant_for(request.tenant)
        notifier = await self._alerting.repository.get_notifier(tenant, validation.slug("name", request.name))
        return pb.GetNotifierResponse(notifier=notifier_message(notifier))

    async def ListNotifiers(
        self, request: pb.ListNotifiersRequest, context: Context
    ) -> pb.ListNotifiersResponse:
        """One page of notifiers, by tenant and name."""
        tenant = caller().scope(request.tenant, all_tenants=True)
        size = paging.page_size(request.page_size)
        after = paging.text_key(request.page_token, 2)
        found = await self._alerting.repository.list_notifiers(
            tenant, size + 1, (after[0], after[1]) if after else None
        )
        page = found[:size]
        token = paging.encode_token([page[-1].tenant, page[-1].name]) if len(found) > size else ""
        return pb.ListNotifiersResponse(notifiers=[notifier_message(n) for n in page], next_page_token=token)

    async def UpdateNotifier(
        self, request: pb.UpdateNotifierRequest, context: Context
    ) -> pb.UpdateNotifierResponse:
        """Change a notifier; empty fields keep their value."""
        tenant = caller().tenant_for(request.tenant)
        change = NotifierChange(
            kind=_kind(request.kind, required=False),
            url=request.url or None,
            headers=dict(request.headers) if request.replace_headers else None,
            enabled=request.enabled if request.HasField("enabled") else None,
        )
        if request.headers and not request.replace_headers:
            raise InvalidArgument("replace_headers", "must be true when headers are given")
        updated = await self._alerting.update_notifier(tenant, validation.slug("name", request.name), change)
        return pb.UpdateNotifierResponse(notifier=notifier_message(updated))

    async def DeleteNotifier(
        self, request: pb.DeleteNotifierRequest, context: Context
    ) -> pb.DeleteNotifierResponse:
        """Delete a notifier."""
        tenant = caller().tenant_for(request.tenant)
        await self._alerting.repository.delete_notifier(tenant, validation.slug("name", request.name))
        return pb.DeleteNotifierResponse()

    async def TestNotifier(
        self, request: pb.TestNotifierRequest, context: Context
    ) -> pb.TestNotifierResponse:
        """Send a sample alert now and return every attempt."""
        tenant = caller().tenant_for(request.tenant)
        name = validation.slug("name", request.name)
        attempts = await self._alerting.test_notifier(tenant, name)
        records = [
            DeliveryRecord(tenant, "", name, "test", a.attempt, a.success, a.status_code, a.error, a.at)
            for a in attempts
        ]
        return pb.TestNotifierResponse(
            success=bool(attempts) and attempts[-1].success,
            attempts=[delivery_message(r) for r in records],
        )
