"""AlertService: list, show, acknowledge and resolve alerts."""

from __future__ import annotations

from serviceradar.admin.v1 import alert_service_pb2 as pb
from serviceradar.admin.v1 import alert_service_pb2_grpc as pb_grpc
from srcore.alerting.service import Alerting
from srcore.api import paging
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.domain import validation
from srcore.domain.alerts import AlertState, Rule, Severity
from srcore.domain.errors import InvalidArgument, NotFound
from srcore.security.principal import caller
from srcore.store.alerts import AlertFilter, AlertRecord, DeliveryRecord

STATES: dict[AlertState, pb.AlertState.ValueType] = {
    AlertState.PENDING: pb.ALERT_STATE_PENDING,
    AlertState.ACKNOWLEDGED: pb.ALERT_STATE_ACKNOWLEDGED,
    AlertState.ESCALATED: pb.ALERT_STATE_ESCALATED,
    AlertState.RESOLVED: pb.ALERT_STATE_RESOLVED,
}
RULES: dict[Rule, pb.AlertRule.ValueType] = {
    Rule.POLLER_OFFLINE: pb.ALERT_RULE_POLLER_OFFLINE,
    Rule.AGENT_DISCONNECTED: pb.ALERT_RULE_AGENT_DISCONNECTED,
    Rule.CHECK_FAILING: pb.ALERT_RULE_CHECK_FAILING,
    Rule.SWEEP_AVAILABILITY_DROP: pb.ALERT_RULE_SWEEP_AVAILABILITY_DROP,
    Rule.INGEST_REJECTS: pb.ALERT_RULE_INGEST_REJECTS,
}
SEVERITIES: dict[Severity, pb.AlertSeverity.ValueType] = {
    Severity.WARNING: pb.ALERT_SEVERITY_WARNING,
    Severity.CRITICAL: pb.ALERT_SEVERITY_CRITICAL,
}
_STATE_OF = {v: k for k, v in STATES.items()}
_RULE_OF = {v: k for k, v in RULES.items()}
NOTE_LIMIT = 200


def alert_message(alert: AlertRecord) -> pb.Alert:
    """The admin view of an alert."""
    return pb.Alert(
        tenant=alert.tenant,
        alert_id=alert.alert_id,
        rule=RULES.get(Rule(alert.rule), pb.ALERT_RULE_UNSPECIFIED),
        subject=alert.subject,
        severity=SEVERITIES.get(Severity(alert.severity), pb.ALERT_SEVERITY_UNSPECIFIED),
        state=STATES[alert.state],
        title=alert.title,
        detail=alert.detail,
        created_at=timestamp(alert.created_at),
        updated_at=timestamp(alert.updated_at),
        acknowledged_at=timestamp(alert.acknowledged_at),
        acknowledged_by=alert.acknowledged_by,
        escalated_at=timestamp(alert.escalated_at),
        resolved_at=timestamp(alert.resolved_at),
        resolved_by=alert.resolved_by,
        notified_at=timestamp(alert.notified_at),
        suppressed=alert.suppressed,
    )


def delivery_message(delivery: DeliveryRecord) -> pb.AlertDelivery:
    """The admin view of one notification attempt."""
    return pb.AlertDelivery(
        notifier=delivery.notifier,
        kind=delivery.kind,
        attempt=delivery.attempt,
        success=delivery.success,
        status_code=delivery.status_code,
        error=delivery.error,
        at=timestamp(delivery.at),
    )


def _alert_id(value: str) -> str:
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidArgument("alert_id", "must be 32 lowercase hex characters")
    return value


class AlertServicer(pb_grpc.AlertServiceServicer):
    """Alerts of the caller's tenant (of any tenant for a platform admin)."""

    def __init__(self, alerting: Alerting) -> None:
        self._alerting = alerting

    async def ListAlerts(self, request: pb.ListAlertsRequest, context: Context) -> pb.ListAlertsResponse:
        """One page of alerts, newest first."""
        tenant = caller().scope(request.tenant, all_tenants=True)
        size = paging.page_size(request.page_size)
        if request.state and request.state not in _STATE_OF:
            raise InvalidArgument("state", f"unknown state {request.state}")
        if request.rule and request.rule not in _RULE_OF:
            raise InvalidArgument("rule", f"unknown rule {request.rule}")
        after = None
        if request.page_token:
            created, alert_id = paging.decode_token(request.page_token, 2)
            after = (paging.decode_time(str(created)), str(alert_id))
        where = AlertFilter(
            tenant=tenant,
            state=_STATE_OF.get(request.state),
            rule=_RULE_OF.get(request.rule),
            open_only=request.open_only,
        )
        found = await self._alerting.repository.list_alerts(where, size + 1, after)
        page = found[:size]
        token = ""
        if len(found) > size:
            token = paging.encode_token([page[-1].created_at.isoformat(), page[-1].alert_id])
        return pb.ListAlertsResponse(alerts=[alert_message(a) for a in page], next_page_token=token)

    async def GetAlert(self, request: pb.GetAlertRequest, context: Context) -> pb.GetAlertResponse:
        """One alert with its notification attempts; NOT_FOUND for one the caller cannot see."""
        tenant = caller().tenant_for(request.tenant)
        try:
            alert, deliveries = await self._alerting.repository.get(tenant, _alert_id(request.alert_id))
        except InvalidArgument:
            raise NotFound(f"alert {request.alert_id[:64]!r} not found") from None
        return pb.GetAlertResponse(
            alert=alert_message(alert), deliveries=[delivery_message(d) for d in deliveries]
        )

    async def AcknowledgeAlert(
        self, request: pb.AcknowledgeAlertRequest, context: Context
    ) -> pb.AcknowledgeAlertResponse:
        """Acknowledge a pending or escalated alert."""
        principal = caller()
        tenant = principal.tenant_for(request.tenant)
        note = validation.text("note", request.note, NOTE_LIMIT)
        alert = await self._alerting.acknowledge(tenant, _alert_id(request.alert_id), principal.actor, note)
        return pb.AcknowledgeAlertResponse(alert=alert_message(alert))

    async def ResolveAlert(
        self, request: pb.ResolveAlertRequest, context: Context
    ) -> pb.ResolveAlertResponse:
        """Resolve an open alert by hand."""
        principal = caller()
        tenant = principal.tenant_for(request.tenant)
        note = validation.text("note", request.note, NOTE_LIMIT)
        alert = await self._alerting.resolve(tenant, _alert_id(request.alert_id), principal.actor, note)
        return pb.ResolveAlertResponse(alert=alert_message(alert))
